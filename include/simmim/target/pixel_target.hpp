#pragma once
// Pixel targets: the patch's raw pixels (SimMIM), MAE's norm-pix (each patch standardized by its own mean
// and unbiased variance) and SwinV2's local normalization (each pixel standardized by the mean and
// variance of the k x k window around it, as the SimMIM repository's norm_target for SwinV2).

#include <torch/arg.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/patchify.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class PixelNorm {
  kNone,   // raw pixels (SimMIM)
  kPatch,  // per-patch mean / unbiased std (MAE's norm-pix), done inside the fused loss
  kLocal,  // per-pixel mean / unbiased std over a k x k window (SwinV2's SimMIM)
};

inline constexpr const char* to_string(PixelNorm norm) {
  switch (norm) {
    case PixelNorm::kNone:
      return "raw";
    case PixelNorm::kPatch:
      return "norm-pix";
    case PixelNorm::kLocal:
      return "local-norm";
  }
  return "unknown PixelNorm";
}

// Sums of every window x window neighbourhood of t [N, C, H, W] (zeros outside the image), by running
// sums along each axis: O(1) per pixel whatever the window (a 47 x 47 avg_pool2d makes 2209 reads per
// pixel: 16 s for 32 x 3 x 192 x 192 on two cores, against well under a second here).
inline at::Tensor box_sums(const at::Tensor& t, int64_t window) {
  const int64_t r = window / 2;
  at::Tensor s = t;
  for (const int64_t dim : {2, 3}) {
    const int64_t n = s.size(dim);
    std::vector<int64_t> pad = dim == 3 ? std::vector<int64_t>{r + 1, r} : std::vector<int64_t>{0, 0, r + 1, r};
    const at::Tensor c = at::constant_pad_nd(s, pad, 0).cumsum(dim);
    // Window [i - r, i + r] of the original is padded [i + 1, i + 2r + 1]: c[i + 2r + 1] - c[i].
    s = c.narrow(dim, 2 * r + 1, n) - c.narrow(dim, 0, n);
  }
  return s;
}

// The mean and the standard deviation sqrt(var + eps) of the window x window neighbourhood of every pixel
// of images [B, C, H, W], each channel alone; the window is clipped at the borders (only pixels inside the
// image count) and var is unbiased over the n pixels it holds: (E[x^2] - E[x]^2) n / (n - 1), floored at 0.
// The sums run in double after shifting each image channel by its mean (E[x^2] - E[x]^2 does not cancel:
// a flat image gives variance 0 exactly); the results come back in float (double for double images).
// window must be odd and >= 3.
inline std::pair<at::Tensor, at::Tensor> local_mean_std(const at::Tensor& images, int64_t window, double eps) {
  constexpr const char* api = "simmim::local_mean_std";
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && at::isFloatingType(images.scalar_type()), api, "images",
               "a floating-point [B, C, H, W] tensor", describe(images));
  SIMMIM_CHECK_VALUE(window >= 3 && window % 2 == 1, api, "window", "odd and >= 3", window);
  SIMMIM_CHECK_VALUE(std::isfinite(eps) && eps >= 0, api, "eps", "finite and >= 0", eps);
  const at::ScalarType out = images.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor x0 = images.to(at::kDouble);
  const at::Tensor shift = x0.mean(at::IntArrayRef({2, 3}), /*keepdim=*/true);
  const at::Tensor x = x0 - shift;
  // n: how many pixels of the window lie inside the image (the same for every channel).
  const at::Tensor n = box_sums(at::ones_like(x.narrow(1, 0, 1).narrow(0, 0, 1)), window);
  const at::Tensor mean = box_sums(x, window) / n;
  const at::Tensor mean_sq = box_sums(x * x, window) / n;
  const at::Tensor var = ((mean_sq - mean * mean) * n / (n - 1)).clamp_min(0);
  return {(mean + shift).to(out), (var + eps).sqrt().to(out)};
}

// SwinV2's normalized pixels: (x - local mean) / local std.
inline at::Tensor local_normalize(const at::Tensor& images, int64_t window, double eps) {
  const auto stats = local_mean_std(images, window, eps);
  const at::Tensor x = images.scalar_type() == at::kDouble ? images : images.to(at::kFloat);
  return (x - stats.first) / stats.second;
}

struct PixelTargetOptions {
  // Which normalization of the pixels.
  TORCH_ARG(PixelNorm, norm) = PixelNorm::kNone;
  // kLocal: the window's side k (odd); SwinV2's SimMIM uses 47.
  TORCH_ARG(int64_t, window) = 47;
  // kPatch and kLocal: added to the variance.
  TORCH_ARG(double, norm_eps) = 1e-6;
  // The per-element loss (an element kind) and its smooth-L1 beta; eps as MaskedLossOptions::eps.
  TORCH_ARG(LossKind, loss) = LossKind::kL1;
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(double, eps) = 0.0;

 public:
  // SimMIM: raw pixels, L1.
  static PixelTargetOptions raw() { return PixelTargetOptions(); }
  // MAE: norm-pix, L2.
  static PixelTargetOptions norm_pix() { return PixelTargetOptions().norm(PixelNorm::kPatch).loss(LossKind::kL2); }
  // SwinV2 with SimMIM: local normalization over window x window pixels, L1.
  static PixelTargetOptions local_norm(int64_t window = 47) {
    return PixelTargetOptions().norm(PixelNorm::kLocal).window(window);
  }
};

class PixelTarget : public Target {
 public:
  explicit PixelTarget(PixelTargetOptions options_ = {}) : options(std::move(options_)) {
    constexpr const char* api = "simmim::PixelTarget";
    SIMMIM_CHECK_ENUM(options.norm(), 3, "PixelNorm", api, "options.norm", "PixelNorm::kNone, kPatch or kLocal");
    SIMMIM_CHECK_VALUE(is_valid(options.loss()) && !is_token_kind(options.loss()), api, "options.loss",
                       "an element kind (LossKind::kL1, kL2 or kSmoothL1)",
                       "LossKind(" + std::to_string(static_cast<int>(options.loss())) + ")");
    SIMMIM_CHECK_VALUE(options.norm() != PixelNorm::kLocal || (options.window() >= 3 && options.window() % 2 == 1),
                       api, "options.window", "odd and >= 3 for PixelNorm::kLocal", options.window());
    SIMMIM_CHECK_VALUE(std::isfinite(options.norm_eps()) && options.norm_eps() >= 0, api, "options.norm_eps",
                       "finite and >= 0", options.norm_eps());
  }

  std::string name() const override {
    std::string s = std::string("pixels(") + to_string(options.norm());
    if (options.norm() == PixelNorm::kLocal) s += " " + std::to_string(options.window());
    return s + ")";
  }

  int64_t prediction_dim(int64_t patch, int64_t channels) const override { return patch * patch * channels; }

  at::Tensor compute(const at::Tensor& images, int64_t patch) const override {
    check_target_images(images, patch, "simmim::PixelTarget::compute");
    at::NoGradGuard no_grad;
    if (options.norm() == PixelNorm::kLocal) {
      return patchify(local_normalize(images, options.window(), options.norm_eps()).to(images.scalar_type()), patch);
    }
    return patchify(images, patch);  // kPatch: the loss standardizes each token (norm_pix)
  }

  MaskedLossOptions loss_options() const override {
    return MaskedLossOptions()
        .kind(options.loss())
        .beta(options.beta())
        .eps(options.eps())
        .norm_pix(options.norm() == PixelNorm::kPatch)
        .norm_eps(options.norm_eps());
  }

  at::Tensor to_image(const at::Tensor& pred, const at::Tensor& images, int64_t patch) const override {
    const Size2d grid = check_target_images(images, patch, "simmim::PixelTarget::to_image");
    at::NoGradGuard no_grad;
    switch (options.norm()) {
      case PixelNorm::kNone:
        return unpatchify(pred, patch, grid);
      case PixelNorm::kPatch: {
        // Back with the target patch's own mean and std (MAE's view of a norm-pix prediction).
        const at::Tensor t = patchify(images, patch);
        const int64_t last = -1;
        const at::Tensor mean = t.mean(at::IntArrayRef(last), true);
        const at::Tensor var = t.var(at::IntArrayRef(last), /*unbiased=*/true, true);
        return unpatchify(pred * (var + options.norm_eps()).sqrt() + mean, patch, grid);
      }
      case PixelNorm::kLocal: {
        const auto stats = local_mean_std(images, options.window(), options.norm_eps());
        return (unpatchify(pred, patch, grid) * stats.second + stats.first).to(pred.scalar_type());
      }
    }
    return {};
  }

  PixelTargetOptions options;
};

SIMMIM_NAMESPACE_END
