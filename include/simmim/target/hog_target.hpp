#pragma once
// HOG targets (MaskFeat, Wei et al. 2022): histograms of oriented gradients of the clean image, per
// channel, over cell x cell pixels, L2-normalized per cell; the student regresses the histograms of the
// cells of each masked patch with an L2 loss. Computed in the training step, without grad: on CPU tensors
// by one fused pass (kernels/cpu/hog_cpu.hpp: gradients, orientation bins and cell sums per row of cells,
// no full-resolution temporary); on other devices by tensor ops (hog_cells_reference: a depthwise
// convolution for the gradients, a scatter for the orientation bins, a reshape-sum for the cells), which
// stays in the tree as the CPU pass's oracle.
//
// Our choices, where MaskFeat's description leaves room: centered differences [-1, 0, 1] (Dalal and
// Triggs' best gradient filter) with reflected borders; unsigned orientations in [0, pi) cut into `bins`
// equal bins, each pixel voting its gradient magnitude into one bin (no interpolation between bins or
// cells); no Gaussian weighting of the magnitudes inside a patch; per (channel, cell) the histogram is
// divided by max(|h|_2, norm_eps). The two paths agree to rounding, except that a gradient within rounding
// of a bin boundary may fall on either side (the CPU pass bins the exact angle, the tensor path a rounded
// atan2; docs/targets.md).

#include <ATen/Dispatch.h>
#include <torch/arg.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "simmim/core/check.hpp"
#include "simmim/kernels/cpu/hog_cpu.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

namespace detail {

// The checks of hog_cells and hog_cells_reference (one place, one set of messages).
inline void check_hog_cells_args(const at::Tensor& images, int64_t bins, int64_t cell, double norm_eps,
                                 const char* api) {
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && at::isFloatingType(images.scalar_type()), api, "images",
               "a floating-point [B, C, H, W] tensor", describe(images));
  SIMMIM_CHECK_VALUE(bins >= 1, api, "bins", "positive", bins);
  SIMMIM_CHECK_VALUE(cell >= 1, api, "cell", "positive", cell);
  SIMMIM_CHECK_VALUE(std::isfinite(norm_eps) && norm_eps > 0, api, "norm_eps", "finite and > 0", norm_eps);
  const int64_t H = images.size(2), W = images.size(3);
  SIMMIM_CHECK(H >= 2 && W >= 2 && H % cell == 0 && W % cell == 0, api, "images",
               "at least 2 x 2 pixels and a size divisible by the cell " + std::to_string(cell), describe(images));
}

}  // namespace detail

// hog_cells by tensor ops (any device): what hog_cells runs on non-CPU tensors, and the CPU pass's oracle.
// The orientation bin is floor(atan2 * bins / pi) as computed in the images' precision.
inline at::Tensor hog_cells_reference(const at::Tensor& images, int64_t bins, int64_t cell, double norm_eps) {
  constexpr double kPi = 3.14159265358979323846;
  detail::check_hog_cells_args(images, bins, cell, norm_eps, "simmim::hog_cells_reference");
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
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

namespace detail {
// The CPU glue instantiates the kernel's templates, so it lives in the kernel's ISA namespace too (see
// kernels/cpu/masked_loss_cpu.hpp).
inline namespace SIMMIM_CPU_ISA_NAMESPACE {

// The fused CPU pass on a checked strided CPU tensor: reads any strides; float, double, half and bfloat16
// directly (the last two widened to float as loaded), any other floating type converted to float first.
inline at::Tensor hog_cells_cpu(const at::Tensor& images, int64_t bins, int64_t cell, double norm_eps) {
  const at::ScalarType type = images.scalar_type();
  const bool direct = type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16;
  const at::Tensor x = direct ? images : images.to(at::kFloat);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({B, C, bins, H / cell, W / cell},
                             x.options().dtype(type == at::kDouble ? at::kDouble : at::kFloat));
  kernels::cpu::HogCellsParams P;
  P.images = x.data_ptr();
  for (int d = 0; d < 4; ++d) P.stride[d] = x.stride(d);
  P.batch = B;
  P.channels = C;
  P.height = H;
  P.width = W;
  P.bins = bins;
  P.cell = cell;
  P.norm_eps = norm_eps;
  P.out = out.data_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "simmim::hog_cells", [&] {
    using acc_t = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;
    kernels::cpu::hog_cells_cpu<scalar_t, acc_t>(P);
  });
  return out;
}

}  // inline namespace SIMMIM_CPU_ISA_NAMESPACE
}  // namespace detail

// The normalized histograms of images [B, C, H, W] (cell | H, W): [B, C, bins, H / cell, W / cell], in
// float (double for double images). CPU tensors take the fused pass; other devices, images that autograd
// must differentiate (the pass has no backward) and more than 2^24 bins take hog_cells_reference.
inline at::Tensor hog_cells(const at::Tensor& images, int64_t bins, int64_t cell, double norm_eps) {
  detail::check_hog_cells_args(images, bins, cell, norm_eps, "simmim::hog_cells");
  const bool needs_graph = at::GradMode::is_enabled() && images.requires_grad();
  if (images.device().is_cpu() && images.layout() == at::kStrided && !needs_graph &&
      bins <= kernels::cpu::HogCellsParams::kMaxBins) {
    return detail::hog_cells_cpu(images, bins, cell, norm_eps);
  }
  return hog_cells_reference(images, bins, cell, norm_eps);
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
