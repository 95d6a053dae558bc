#pragma once
// A train or evaluation split ready for a BatchLoader, with what a model and a trainer need to know about
// its images (channels, size, normalization, a fixed preview for reconstruction grids), built from
// Fashion-MNIST or an image folder (one subfolder per class, or images directly).

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <algorithm>
#include <memory>
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

struct SplitOptions {
  // Use only the first N items (-1: all).
  TORCH_ARG(int64_t, limit) = -1;
  // Random resized crop (area in [crop_min, 1]) and horizontal flip; else center crop / resize only.
  TORCH_ARG(bool, augment) = false;
  TORCH_ARG(double, crop_min) = 0.67;
  // Image folders: the square side images are cropped / resized to (Fashion-MNIST is 28).
  TORCH_ARG(int64_t, image_size) = 224;
};

inline void check_split_options(const SplitOptions& o, const char* api) {
  SIMMIM_CHECK_VALUE(o.limit() == -1 || o.limit() > 0, api, "options.limit", "positive, or -1 for all", o.limit());
  SIMMIM_CHECK_VALUE(o.crop_min() > 0 && o.crop_min() <= 1, api, "options.crop_min", "in (0, 1]", o.crop_min());
  SIMMIM_CHECK_VALUE(o.image_size() > 0 && o.image_size() <= 8192, api, "options.image_size", "in [1, 8192]",
                     o.image_size());
}

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

// The images of `root` as RGB at options.image_size, normalized with ImageNet's mean and std.
inline DataSplit image_folder_split(const std::string& root, const SplitOptions& options = {}) {
  check_split_options(options, "simmim::image_folder_split");
  auto folder = std::make_shared<ImageFolder>(root, 3);
  const int64_t side = options.image_size();
  DataSplit s;
  s.size = options.limit() >= 0 ? std::min(folder->size(), options.limit()) : folder->size();
  s.channels = 3;
  s.image_size = Size2d(side);
  s.mean = imagenet_mean();
  s.stddev = imagenet_std();
  s.num_classes = static_cast<int64_t>(folder->classes().size());
  s.class_names = folder->classes();
  const auto transform_options = options.augment()
                                     ? ImageTransformOptions().size(side).scale_min(options.crop_min())
                                     : ImageTransformOptions::eval(side);
  const ImageTransform eval(ImageTransformOptions::eval(side));
  std::vector<at::Tensor> preview;
  for (int64_t i = 0; i < std::min<int64_t>(8, s.size); ++i) preview.push_back(eval(folder->load(i)));
  s.preview = at::stack(preview);
  s.batches = make_batch_fn(std::shared_ptr<const ImageFolder>(folder),
                            std::make_shared<const ImageTransform>(transform_options));
  return s;
}

SIMMIM_NAMESPACE_END
