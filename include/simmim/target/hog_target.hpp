#pragma once
// HOG targets (MaskFeat, Wei et al. 2022): histograms of oriented gradients of the clean image, per
// channel, over cell x cell pixels, L2-normalized per cell; the student regresses the histograms of the
// cells of each masked patch with an L2 loss. Computed on the images' device by tensor ops (a depthwise
// convolution for the gradients, a scatter for the orientation bins, a reshape-sum for the cells), in the
// training step, without grad.
//
// Our choices, where MaskFeat's description leaves room: centered differences [-1, 0, 1] (Dalal and
// Triggs' best gradient filter) with reflected borders; unsigned orientations in [0, pi) cut into `bins`
// equal bins, each pixel voting its gradient magnitude into one bin (no interpolation between bins or
// cells); no Gaussian weighting of the magnitudes inside a patch; per (channel, cell) the histogram is
// divided by max(|h|_2, norm_eps).

#include <torch/arg.h>

#include <cmath>
#include <string>
#include <utility>

#include "simmim/core/check.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

// The normalized histograms of images [B, C, H, W] (cell | H, W): [B, C, bins, H / cell, W / cell], in
// float (double for double images).
inline at::Tensor hog_cells(const at::Tensor& images, int64_t bins, int64_t cell, double norm_eps) {
  constexpr const char* api = "simmim::hog_cells";
  constexpr double kPi = 3.14159265358979323846;
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && at::isFloatingType(images.scalar_type()), api, "images",
               "a floating-point [B, C, H, W] tensor", describe(images));
  SIMMIM_CHECK_VALUE(bins >= 1, api, "bins", "positive", bins);
  SIMMIM_CHECK_VALUE(cell >= 1, api, "cell", "positive", cell);
  SIMMIM_CHECK_VALUE(std::isfinite(norm_eps) && norm_eps > 0, api, "norm_eps", "finite and > 0", norm_eps);
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  SIMMIM_CHECK(H >= 2 && W >= 2 && H % cell == 0 && W % cell == 0, api, "images",
               "at least 2 x 2 pixels and a size divisible by the cell " + std::to_string(cell), describe(images));
  const at::Tensor x = (images.scalar_type() == at::kDouble ? images : images.to(at::kFloat)).reshape({B * C, 1, H, W});
  const at::Tensor padded = at::reflection_pad2d(x, {1, 1, 1, 1});
  const at::Tensor diff = at::tensor({-1.0, 0.0, 1.0}, x.options());
  const at::Tensor gx = at::conv2d(padded.narrow(2, 1, H), diff.view({1, 1, 1, 3}));  // [BC, 1, H, W]
  const at::Tensor gy = at::conv2d(padded.narrow(3, 1, W), diff.view({1, 1, 3, 1}));
  const at::Tensor magnitude = (gx * gx + gy * gy).sqrt();
  at::Tensor angle = at::atan2(gy, gx);                                    // (-pi, pi]
  angle = at::where(angle < 0, angle + kPi, angle);                       // [0, pi]: unsigned
  const at::Tensor bin = (angle * (static_cast<double>(bins) / kPi)).floor().clamp(0, bins - 1).to(at::kLong);
  at::Tensor hist = at::zeros({B * C, bins, H, W}, x.options()).scatter_(1, bin, magnitude);
  hist = hist.reshape({B, C, bins, H / cell, cell, W / cell, cell}).sum(at::IntArrayRef({4, 6}));
  const at::Tensor norm = hist.norm(2, at::IntArrayRef({2}), /*keepdim=*/true).clamp_min(norm_eps);
  return hist / norm;
}

struct HOGTargetOptions {
  // Orientation bins over [0, pi) and the cell's side in pixels (MaskFeat: 9 bins, 8 x 8 cells).
  TORCH_ARG(int64_t, bins) = 9;
  TORCH_ARG(int64_t, cell) = 8;
  // The floor of a cell histogram's norm (a flat cell stays 0).
  TORCH_ARG(double, norm_eps) = 1e-6;
  // MaskFeat regresses with L2 (an element kind; eps as MaskedLossOptions::eps).
  TORCH_ARG(LossKind, loss) = LossKind::kL2;
  TORCH_ARG(double, eps) = 0.0;
};

class HOGTarget : public Target {
 public:
  explicit HOGTarget(HOGTargetOptions options_ = {}) : options(std::move(options_)) {
    constexpr const char* api = "simmim::HOGTarget";
    SIMMIM_CHECK_VALUE(options.bins() >= 1, api, "options.bins", "positive", options.bins());
    SIMMIM_CHECK_VALUE(options.cell() >= 1, api, "options.cell", "positive", options.cell());
    SIMMIM_CHECK_VALUE(std::isfinite(options.norm_eps()) && options.norm_eps() > 0, api, "options.norm_eps",
                       "finite and > 0", options.norm_eps());
    SIMMIM_CHECK_VALUE(is_valid(options.loss()) && !is_token_kind(options.loss()), api, "options.loss",
                       "an element kind (LossKind::kL1, kL2 or kSmoothL1)",
                       "LossKind(" + std::to_string(static_cast<int>(options.loss())) + ")");
  }

  std::string name() const override {
    return "hog(" + std::to_string(options.bins()) + " bins, " + std::to_string(options.cell()) + "x" +
           std::to_string(options.cell()) + " cells)";
  }

  // (patch / cell)^2 cells of C histograms of `bins` values.
  int64_t prediction_dim(int64_t patch, int64_t channels) const override {
    check_patch(patch, "simmim::HOGTarget::prediction_dim");
    const int64_t s = patch / options.cell();
    return s * s * channels * options.bins();
  }

  // [B, L, (p/cell)^2 * C * bins], each token ordered (cell row, cell column, channel, bin).
  at::Tensor compute(const at::Tensor& images, int64_t patch) const override {
    constexpr const char* api = "simmim::HOGTarget::compute";
    const Size2d grid = check_target_images(images, patch, api);
    check_patch(patch, api);
    at::NoGradGuard no_grad;
    const int64_t B = images.size(0), C = images.size(1), K = options.bins(), s = patch / options.cell();
    return hog_cells(images, K, options.cell(), options.norm_eps())
        .reshape({B, C, K, grid.h, s, grid.w, s})
        .permute({0, 3, 5, 4, 6, 1, 2})
        .reshape({B, grid.area(), s * s * C * K});
  }

  MaskedLossOptions loss_options() const override {
    return MaskedLossOptions().kind(options.loss()).eps(options.eps());
  }

  // Histograms have no pixel space.
  at::Tensor to_image(const at::Tensor&, const at::Tensor&, int64_t) const override { return {}; }

  HOGTargetOptions options;

 private:
  void check_patch(int64_t patch, const char* api) const {
    SIMMIM_CHECK_VALUE(patch > 0 && patch % options.cell() == 0, api, "patch",
                       "a multiple of the HOG cell " + std::to_string(options.cell()), patch);
  }
};

SIMMIM_NAMESPACE_END
