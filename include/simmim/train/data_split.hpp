#pragma once
// A train or evaluation split ready for a BatchLoader, with what a model and a trainer need to know about
// its images (channels, size, normalization, a fixed preview for reconstruction grids), built from
// Fashion-MNIST, an image folder (one subfolder per class, or images directly; 1, 3 or 4 channels), or
// in-memory / safetensors tensors of any channel count (multispectral). Any H x W.

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <algorithm>
#include <memory>
#include <tuple>
#include <utility>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/fashion_mnist.hpp"
#include "simmim/train/image_folder.hpp"
#include "simmim/train/image_transform.hpp"
#include "simmim/train/labeled_images.hpp"

SIMMIM_NAMESPACE_BEGIN

struct DataSplit {
  int64_t size = 0;
  BatchFn batches;
  int64_t channels = 1;
  Size2d image_size;
  std::vector<double> mean, stddev;
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // one per class (a folder's subfolder names), for reports
  // The first images (up to 8), normalized [n, C, H, W], without augmentation: for reconstruction grids.
  at::Tensor preview;
};

// Where a split's per-channel normalization comes from.
enum class NormalizationStats {
  kAuto,      // ImageNet's for 3-channel images, else kFromData (Fashion-MNIST: its own published values)
  kImageNet,  // ImageNet's mean and std (3 channels only)
  kFromData,  // mean and std of each channel over the first options.stats_images images of the split
};

struct SplitOptions {
  // Use only the first N items (-1: all).
  TORCH_ARG(int64_t, limit) = -1;
  // Random resized crop (area in [crop_min, 1]) and horizontal flip; else center crop / resize only.
  TORCH_ARG(bool, augment) = false;
  TORCH_ARG(double, crop_min) = 0.67;
  // Image folders and tensors: the size (H, W) images are cropped / resized to; an int is a square side.
  // Tensors keep their own size when this is Size2d(0) (Fashion-MNIST is always 28).
  TORCH_ARG(Size2d, image_size) = Size2d(224);
  // Image folders: channels to decode (1 gray, 3 RGB, 4 RGBA); tensors have their own.
  TORCH_ARG(int64_t, channels) = 3;
  // Normalization statistics (not used by Fashion-MNIST).
  TORCH_ARG(NormalizationStats, normalization) = NormalizationStats::kAuto;
  // kFromData: how many images (without augmentation) the statistics are computed from.
  TORCH_ARG(int64_t, stats_images) = 1000;
};

inline void check_split_options(const SplitOptions& o, const char* api, bool zero_size_ok = false) {
  SIMMIM_CHECK_VALUE(o.limit() == -1 || o.limit() > 0, api, "options.limit", "positive, or -1 for all", o.limit());
  SIMMIM_CHECK_VALUE(o.crop_min() > 0 && o.crop_min() <= 1, api, "options.crop_min", "in (0, 1]", o.crop_min());
  const Size2d s = o.image_size();
  SIMMIM_CHECK_VALUE((zero_size_ok && s.h == 0 && s.w == 0) || (s.h > 0 && s.w > 0 && s.h <= 8192 && s.w <= 8192), api,
                     "options.image_size", "in [1, 8192] per side", s);
  SIMMIM_CHECK_ENUM(o.normalization(), 3, "NormalizationStats", api, "options.normalization",
                    "NormalizationStats::kAuto, kImageNet or kFromData");
  SIMMIM_CHECK_VALUE(o.stats_images() > 0, api, "options.stats_images", "positive", o.stats_images());
}

// Mean and standard deviation of each channel of images [N, C, H, W] (uint8 read as /255, or float), over
// all pixels, accumulated in double. A channel that is constant gets std 1 (normalizing must not divide by 0).
inline std::pair<std::vector<double>, std::vector<double>> channel_stats(const at::Tensor& images) {
  constexpr const char* api = "simmim::channel_stats";
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.numel() > 0, api, "images",
               "a non-empty [N, C, H, W] tensor", describe(images));
  at::Tensor x = images.to(at::kDouble);
  if (images.scalar_type() == at::kByte) x = x / 255.0;
  x = x.transpose(0, 1).reshape({images.size(1), -1});
  const at::Tensor mean = x.mean(1), stddev = x.std(1, /*unbiased=*/false);
  std::vector<double> m, s;
  for (int64_t c = 0; c < images.size(1); ++c) {
    m.push_back(mean[c].item<double>());
    const double sd = stddev[c].item<double>();
    s.push_back(sd > 1e-12 ? sd : 1.0);
  }
  return {m, s};
}

namespace detail {

// The statistics a split of `channels` uses; `first` gives up to n images [n, C, H, W] in [0, 1] for kFromData.
template <typename First>
inline void choose_normalization(DataSplit& s, const SplitOptions& o, const char* api, First first) {
  const bool imagenet = o.normalization() == NormalizationStats::kImageNet ||
                        (o.normalization() == NormalizationStats::kAuto && s.channels == 3);
  if (imagenet) {
    SIMMIM_CHECK_VALUE(s.channels == 3, api, "options.normalization", "kAuto or kFromData for images of " +
                       std::to_string(s.channels) + " channels (ImageNet's statistics are for RGB)", "kImageNet");
    s.mean = imagenet_mean();
    s.stddev = imagenet_std();
    return;
  }
  std::tie(s.mean, s.stddev) = channel_stats(first(std::min(o.stats_images(), s.size)));
}

}  // namespace detail

// Fashion-MNIST's training (60000) or test (10000) images, normalized with its mean and std.
inline DataSplit fashion_mnist_split(bool train, const SplitOptions& options = {}) {
  check_split_options(options, "simmim::fashion_mnist_split");
  auto data = take_first(load_fashion_mnist(train), options.limit());
  DataSplit s;
  s.size = data.size();
  s.channels = 1;
  s.image_size = Size2d(28);
  s.mean = {kFashionMnistMean};
  s.stddev = {kFashionMnistStd};
  s.num_classes = 10;
  s.class_names.assign(kFashionMnistClasses.begin(), kFashionMnistClasses.end());
  const auto transform_options = options.augment()
                                     ? ImageTransformOptions().size(28).mean(s.mean).stddev(s.stddev).scale_min(
                                           options.crop_min())
                                     : ImageTransformOptions::eval(28, s.mean, s.stddev);
  s.preview = normalize_image(data.images.slice(0, 0, std::min<int64_t>(8, s.size)), s.mean, s.stddev);
  s.batches = make_batch_fn(std::move(data), std::make_shared<const ImageTransform>(transform_options));
  return s;
}

// The images of `root` decoded to options.channels (1, 3 or 4) at options.image_size (any H x W), normalized
// with ImageNet's statistics (RGB) or each channel's own over the first images (options.normalization).
inline DataSplit image_folder_split(const std::string& root, const SplitOptions& options = {}) {
  constexpr const char* api = "simmim::image_folder_split";
  check_split_options(options, api);
  auto folder = std::make_shared<ImageFolder>(root, static_cast<int>(options.channels()));
  const Size2d size = options.image_size();
  DataSplit s;
  s.size = options.limit() >= 0 ? std::min(folder->size(), options.limit()) : folder->size();
  s.channels = options.channels();
  s.image_size = size;
  s.num_classes = static_cast<int64_t>(folder->classes().size());
  s.class_names = folder->classes();
  detail::choose_normalization(s, options, api, [&](int64_t n) {
    const ImageTransform raw(ImageTransformOptions::eval(size, {}, {}));
    std::vector<at::Tensor> images;
    for (int64_t i = 0; i < n; ++i) images.push_back(raw(folder->load(i)));
    return at::stack(images);
  });
  const auto transform_options =
      options.augment() ? ImageTransformOptions().size(size).scale_min(options.crop_min()).mean(s.mean).stddev(s.stddev)
                        : ImageTransformOptions::eval(size, s.mean, s.stddev);
  const ImageTransform eval(ImageTransformOptions::eval(size, s.mean, s.stddev));
  std::vector<at::Tensor> preview;
  for (int64_t i = 0; i < std::min<int64_t>(8, s.size); ++i) preview.push_back(eval(folder->load(i)));
  s.preview = at::stack(preview);
  s.batches = make_batch_fn(std::shared_ptr<const ImageFolder>(folder),
                            std::make_shared<const ImageTransform>(transform_options));
  return s;
}

// In-memory images of any channel count (multispectral: 13 bands, RGB-NIR, ...): images [N, C, H, W] uint8
// (read as /255) or float (taken as they are), labels [N] int64 or undefined. Resized to options.image_size
// (Size2d(0): kept), normalized per channel (kAuto: ImageNet's when C = 3, else from the data).
inline DataSplit tensor_split(LabeledImages data, const SplitOptions& options = {}) {
  constexpr const char* api = "simmim::tensor_split";
  check_split_options(options, api, /*zero_size_ok=*/true);
  SIMMIM_CHECK(data.images.defined() && data.images.dim() == 4 && data.images.size(0) > 0 && data.images.size(1) > 0 &&
                   (data.images.scalar_type() == at::kByte || at::isFloatingType(data.images.scalar_type())),
               api, "data.images", "a non-empty uint8 or floating [N, C, H, W] tensor", describe(data.images));
  SIMMIM_CHECK(!data.labels.defined() || (data.labels.dim() == 1 && data.labels.size(0) == data.images.size(0) &&
                                          data.labels.scalar_type() == at::kLong),
               api, "data.labels", "an int64 tensor [N] with N = " + std::to_string(data.images.size(0)),
               describe(data.labels));
  data = take_first(data, options.limit());
  DataSplit s;
  s.size = data.size();
  s.channels = data.images.size(1);
  const Size2d own(data.images.size(2), data.images.size(3));
  s.image_size = options.image_size().h == 0 ? own : options.image_size();
  s.num_classes = data.labels.defined() && s.size > 0 ? data.labels.max().item<int64_t>() + 1 : 0;
  const auto unit = [&](const at::Tensor& t) {
    return t.scalar_type() == at::kByte ? t.to(at::kFloat).div(255.0) : t.to(at::kFloat);
  };
  const auto resized = [&](int64_t n) {  // the first n images in [0, 1] at the split's size
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(resize_image(unit(data.images[i]), s.image_size));
    return at::stack(out);
  };
  detail::choose_normalization(s, options, api, resized);
  const auto transform_options = options.augment() ? ImageTransformOptions()
                                                         .size(s.image_size)
                                                         .scale_min(options.crop_min())
                                                         .mean(s.mean)
                                                         .stddev(s.stddev)
                                                   : ImageTransformOptions::eval(s.image_size, s.mean, s.stddev);
  s.preview = normalize_image(resized(std::min<int64_t>(8, s.size)), s.mean, s.stddev);
  s.batches = make_batch_fn(std::move(data), std::make_shared<const ImageTransform>(transform_options));
  return s;
}

SIMMIM_NAMESPACE_END
