#pragma once
// Color-bin targets (the SimMIM paper's discretized-target ablation): every pixel value of every channel
// is quantized to one of K equal bins of its range, and the student classifies each with a cross-entropy
// over K logits (LossKind::kCrossEntropy, one class id per pixel and channel).

#include <torch/arg.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/patchify.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ColorBinsTargetOptions {
  // K, the bins per channel.
  TORCH_ARG(int64_t, bins) = 8;
  // The range of the raw pixel values, cut into K bins: [low, high) (values outside go to the end bins).
  TORCH_ARG(double, low) = 0.0;
  TORCH_ARG(double, high) = 1.0;
  // Images normalized per channel (x - mean) / std are mapped back first; empty: the images are raw.
  TORCH_ARG(std::vector<double>, mean) = {};
  TORCH_ARG(std::vector<double>, stddev) = {};
  // Added to the mask sum, as MaskedLossOptions::eps.
  TORCH_ARG(double, eps) = 0.0;
};

class ColorBinsTarget : public Target {
 public:
  explicit ColorBinsTarget(ColorBinsTargetOptions options_ = {}) : options(std::move(options_)) {
    constexpr const char* api = "simmim::ColorBinsTarget";
    SIMMIM_CHECK_VALUE(options.bins() >= 2, api, "options.bins", "at least 2", options.bins());
    SIMMIM_CHECK_VALUE(std::isfinite(options.low()) && std::isfinite(options.high()) && options.low() < options.high(),
                       api, "options.low / options.high", "finite with low < high", options.low(), " / ",
                       options.high());
    SIMMIM_CHECK_VALUE(options.mean().size() == options.stddev().size(), api, "options.mean / options.stddev",
                       "of one size (one value per channel, or both empty)", options.mean().size(), " / ",
                       options.stddev().size());
    for (const double s : options.stddev()) {
      SIMMIM_CHECK_VALUE(std::isfinite(s) && s > 0, api, "options.stddev", "finite and > 0 values", s);
    }
  }

  std::string name() const override { return "color-bins(" + std::to_string(options.bins()) + ")"; }

  // K logits for each of the p*p*C values of a patch.
  int64_t prediction_dim(int64_t patch, int64_t channels) const override {
    return patch * patch * channels * options.bins();
  }

  // Class ids [B, L, p*p*C] (int64) in patchify's order.
  at::Tensor compute(const at::Tensor& images, int64_t patch) const override {
    constexpr const char* api = "simmim::ColorBinsTarget::compute";
    check_target_images(images, patch, api);
    check_channels(images, api);
    at::NoGradGuard no_grad;
    const double K = static_cast<double>(options.bins());
    const at::Tensor raw = to_raw(images.to(images.scalar_type() == at::kDouble ? at::kDouble : at::kFloat));
    const at::Tensor ids = ((raw - options.low()) * (K / (options.high() - options.low())))
                               .floor()
                               .clamp(0, K - 1)
                               .to(at::kLong);
    return patchify(ids, patch);
  }

  MaskedLossOptions loss_options() const override {
    return MaskedLossOptions().kind(LossKind::kCrossEntropy).eps(options.eps());
  }

  // Each value's most likely bin, at the bin's center, in the images' (normalized) space.
  at::Tensor to_image(const at::Tensor& pred, const at::Tensor& images, int64_t patch) const override {
    constexpr const char* api = "simmim::ColorBinsTarget::to_image";
    const Size2d grid = check_target_images(images, patch, api);
    check_channels(images, api);
    at::NoGradGuard no_grad;
    const int64_t B = pred.size(0), L = pred.size(1), K = options.bins();
    const at::Tensor ids = pred.reshape({B, L, pred.size(2) / K, K}).argmax(-1);
    const double width = (options.high() - options.low()) / static_cast<double>(K);
    const at::Tensor raw = unpatchify(ids.to(images.scalar_type()) * width + (options.low() + 0.5 * width), patch, grid);
    return from_raw(raw);
  }

  ColorBinsTargetOptions options;

 private:
  void check_channels(const at::Tensor& images, const char* api) const {
    SIMMIM_CHECK(options.mean().empty() || static_cast<int64_t>(options.mean().size()) == images.size(1), api,
                 "images", "as many channels as options.mean has values (" + std::to_string(options.mean().size()) + ")",
                 describe(images));
  }
  at::Tensor channel_values(const std::vector<double>& v, const at::Tensor& like) const {
    return at::tensor(v, like.options()).view({1, -1, 1, 1});
  }
  at::Tensor to_raw(const at::Tensor& x) const {
    if (options.mean().empty()) return x;
    return x * channel_values(options.stddev(), x) + channel_values(options.mean(), x);
  }
  at::Tensor from_raw(const at::Tensor& x) const {
    if (options.mean().empty()) return x;
    return (x - channel_values(options.mean(), x)) / channel_values(options.stddev(), x);
  }
};

SIMMIM_NAMESPACE_END
