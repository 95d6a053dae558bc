#pragma once
// Per-image augmentation for pretraining data, as SimMIM / MAE use it: random resized crop, horizontal
// flip, per-channel normalization. Every draw comes from a generator, so a seed fixes the result.

#include <torch/arg.h>
#include <torch/nn/functional/upsampling.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

// ImageNet's statistics: the default normalization of RGB images.
inline const std::vector<double>& imagenet_mean() {
  static const std::vector<double> m{0.485, 0.456, 0.406};
  return m;
}
inline const std::vector<double>& imagenet_std() {
  static const std::vector<double> s{0.229, 0.224, 0.225};
  return s;
}

// A crop box in pixels.
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
};

// torchvision's RandomResizedCrop.get_params: up to 10 tries of an area fraction in `scale` and a log-uniform
// aspect ratio (w / h) in `ratio`; falls back to the largest centered crop with a ratio in range.
inline CropBox sample_resized_crop(Size2d image, ScalarRng& rng, std::pair<double, double> scale,
                                   std::pair<double, double> ratio) {
  const double area = static_cast<double>(image.area());
  const double log_r0 = std::log(ratio.first), log_r1 = std::log(ratio.second);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target = area * rng.uniform(scale.first, scale.second);
    const double aspect = std::exp(rng.uniform(log_r0, log_r1));
    const auto w = static_cast<int64_t>(std::llround(std::sqrt(target * aspect)));
    const auto h = static_cast<int64_t>(std::llround(std::sqrt(target / aspect)));
    if (w > 0 && w <= image.w && h > 0 && h <= image.h) {
      const int64_t top = rng.randint(0, image.h - h);
      const int64_t left = rng.randint(0, image.w - w);
      return {top, left, h, w};
    }
  }
  const double in_ratio = static_cast<double>(image.w) / static_cast<double>(image.h);
  int64_t w = image.w, h = image.h;
  if (in_ratio < ratio.first) {
    h = std::max<int64_t>(1, std::llround(static_cast<double>(w) / ratio.first));
  } else if (in_ratio > ratio.second) {
    w = std::max<int64_t>(1, std::llround(static_cast<double>(h) * ratio.second));
  }
  return {(image.h - h) / 2, (image.w - w) / 2, h, w};
}

// Bilinear resize of a float [C, H, W] image (align_corners = false, like torchvision).
inline at::Tensor resize_image(const at::Tensor& image, Size2d size) {
  SIMMIM_CHECK_DIM(image, 3, "simmim::resize_image", "image", "[C, H, W]");
  SIMMIM_CHECK_VALUE(size.h > 0 && size.w > 0 && size.h <= kMaxImageSide && size.w <= kMaxImageSide,
                     "simmim::resize_image", "size", "positive and at most " + std::to_string(kMaxImageSide) + " per side",
                     size);
  if (image.size(1) == size.h && image.size(2) == size.w) return image;
  namespace F = torch::nn::functional;
  return F::interpolate(image.unsqueeze(0), F::InterpolateFuncOptions()
                                                .size(std::vector<int64_t>{size.h, size.w})
                                                .mode(torch::kBilinear)
                                                .align_corners(false))
      .squeeze(0);
}

// (x - mean) / std per channel of a [C, H, W] or [B, C, H, W] float image; one value may serve all channels.
inline at::Tensor normalize_image(const at::Tensor& image, const std::vector<double>& mean,
                                  const std::vector<double>& stddev) {
  constexpr const char* api = "simmim::normalize_image";
  SIMMIM_CHECK(image.defined() && (image.dim() == 3 || image.dim() == 4), api, "image", "[C, H, W] or [B, C, H, W]",
               describe(image));
  const int64_t C = image.size(image.dim() - 3);
  SIMMIM_CHECK_VALUE(mean.size() == stddev.size() && (static_cast<int64_t>(mean.size()) == C || mean.size() == 1),
                     api, "mean / std", "one value per channel (" + std::to_string(C) + ") or one for all",
                     std::to_string(mean.size()) + " means, " + std::to_string(stddev.size()) + " stds");
  for (double s : stddev) SIMMIM_CHECK_VALUE(s > 0.0, api, "std", "positive", s);
  std::vector<int64_t> shape(static_cast<size_t>(image.dim()), 1);
  shape[static_cast<size_t>(image.dim() - 3)] = static_cast<int64_t>(mean.size());
  const auto opts = image.options().dtype(at::kDouble);
  const at::Tensor m = at::tensor(mean, opts).to(image.scalar_type()).reshape(shape);
  const at::Tensor s = at::tensor(stddev, opts).to(image.scalar_type()).reshape(shape);
  return (image - m) / s;
}

struct ImageTransformOptions {
  // Deterministic evaluation: resize and normalize only.
  static ImageTransformOptions eval(Size2d size, std::vector<double> mean = imagenet_mean(),
                                    std::vector<double> stddev = imagenet_std()) {
    return ImageTransformOptions().size(size).random_crop(false).hflip(0.0).mean(std::move(mean)).stddev(
        std::move(stddev));
  }

  TORCH_ARG(Size2d, size) = Size2d(224);  // output size
  // Random resized crop (SimMIM: scale (0.67, 1), ratio (3/4, 4/3)); off: plain resize to `size`.
  TORCH_ARG(bool, random_crop) = true;
  TORCH_ARG(double, scale_min) = 0.67;
  TORCH_ARG(double, scale_max) = 1.0;
  TORCH_ARG(double, ratio_min) = 3.0 / 4.0;
  TORCH_ARG(double, ratio_max) = 4.0 / 3.0;
  TORCH_ARG(double, hflip) = 0.5;  // probability
  // Normalization; empty = none (values stay in [0, 1]).
  TORCH_ARG(std::vector<double>, mean) = imagenet_mean();
  TORCH_ARG(std::vector<double>, stddev) = imagenet_std();
};

// image (uint8 in [0, 255] or float in [0, 1], [C, H, W]) -> float [C, size.h, size.w], augmented and
// normalized. Draws from `gen` (CPU); without one, from the global default generator.
class ImageTransform {
 public:
  explicit ImageTransform(ImageTransformOptions options = {}) : options_(std::move(options)) {
    constexpr const char* api = "simmim::ImageTransform";
    SIMMIM_CHECK_VALUE(options_.size().h > 0 && options_.size().w > 0 && options_.size().h <= kMaxImageSide &&
                           options_.size().w <= kMaxImageSide,
                       api, "options.size", "positive and at most " + std::to_string(kMaxImageSide) + " per side",
                       options_.size());
    SIMMIM_CHECK_VALUE(0.0 < options_.scale_min() && options_.scale_min() <= options_.scale_max() &&
                           options_.scale_max() <= 1.0,
                       api, "options.scale_min / scale_max", "0 < min <= max <= 1",
                       c10::str(options_.scale_min(), ", ", options_.scale_max()));
    SIMMIM_CHECK_VALUE(0.0 < options_.ratio_min() && options_.ratio_min() <= options_.ratio_max(), api,
                       "options.ratio_min / ratio_max", "0 < min <= max",
                       c10::str(options_.ratio_min(), ", ", options_.ratio_max()));
    SIMMIM_CHECK_VALUE(options_.hflip() >= 0.0 && options_.hflip() <= 1.0, api, "options.hflip", "in [0, 1]",
                       options_.hflip());
  }

  at::Tensor operator()(const at::Tensor& image, const c10::optional<at::Generator>& gen = c10::nullopt) const {
    constexpr const char* api = "simmim::ImageTransform";
    SIMMIM_CHECK_DIM(image, 3, api, "image", "[C, H, W]");
    SIMMIM_CHECK(image.size(1) > 0 && image.size(2) > 0, api, "image", "non-empty", describe(image));
    at::Tensor x = image.scalar_type() == at::kByte ? image.to(at::kFloat).div_(255.0) : image.to(at::kFloat);
    const bool random = options_.random_crop() || options_.hflip() > 0.0;
    if (random) {
      ScalarRng rng(resolve_generator(gen, api));
      if (options_.random_crop()) {
        const CropBox b = sample_resized_crop({x.size(1), x.size(2)}, rng, {options_.scale_min(), options_.scale_max()},
                                              {options_.ratio_min(), options_.ratio_max()});
        x = x.slice(1, b.top, b.top + b.height).slice(2, b.left, b.left + b.width);
      }
      // Draw the flip even when hflip is 0 or 1 so the stream of draws has one layout.
      if (rng.uniform() < options_.hflip()) x = x.flip({2});
    }
    x = resize_image(x, options_.size());
    if (!options_.mean().empty() || !options_.stddev().empty())
      x = normalize_image(x, options_.mean(), options_.stddev());
    return x.contiguous();
  }

  const ImageTransformOptions& options() const { return options_; }

 private:
  ImageTransformOptions options_;
};

SIMMIM_NAMESPACE_END
