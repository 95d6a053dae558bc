#pragma once
// Masked reconstruction losses (SimMIM's masked L1, MAE's masked L2 with optional norm-pix targets,
// smooth-L1): options, the functional form and the MaskedReconstructionLoss module, in the shape of the
// PyTorch C++ frontend's losses. The work happens in dispatch/ (reference or fused backends).
//
//   loss = sum(w * l(pred - target)) / (K * (sum(w_unit) + eps))
// with w the mask weight of each element, w_unit the weight of each mask unit (a pixel in the images
// layout, K = C; a token in the patchified layout, K = D). docs/losses.md derives both originals from it.

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/dispatch/backend.hpp"
#include "simmim/dispatch/masked_loss_dispatch.hpp"
#include "simmim/dispatch/masked_loss_problem.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MaskedLossOptions {
  // The per-element loss: kL1 (SimMIM), kL2 (MAE), kSmoothL1 (beta).
  TORCH_ARG(LossKind, kind) = LossKind::kL1;
  // Images layout: one mask cell covers patch_size x patch_size pixels. Unused by the patchified layout.
  TORCH_ARG(int64_t, patch_size) = 1;
  // MAE's norm-pix target: each patch (p x p x C values, or a token's D) standardized by its mean and
  // unbiased variance: t = (t - mean) / sqrt(var + norm_eps).
  TORCH_ARG(bool, norm_pix) = false;
  TORCH_ARG(double, norm_eps) = 1e-6;
  // Smooth-L1's beta, as torch.nn.functional.smooth_l1_loss (0 gives L1).
  TORCH_ARG(double, beta) = 1.0;
  // Added to the mask sum in the denominator (SimMIM's 1e-5; MAE uses 0).
  TORCH_ARG(double, eps) = 1e-5;
  // kMean: a scalar over the batch, as the originals; kPerSample: [B].
  TORCH_ARG(LossReduction, reduction) = LossReduction::kMean;
  // kAuto picks a fused backend where one runs (docs/losses.md); the others force one.
  TORCH_ARG(Backend, backend) = Backend::kAuto;

 public:  // TORCH_ARG leaves the access at private
  // SimMIM's loss exactly: L1, sum(|x - x_rec| * m) / (sum(m) + 1e-5) / C with m the patch mask
  // upsampled by patch_size. Call with x_rec, x [B, C, H, W] and the mask [B, H/p, W/p].
  static MaskedLossOptions simmim(int64_t patch_size) {
    return MaskedLossOptions().kind(LossKind::kL1).patch_size(patch_size).eps(1e-5);
  }
  // MAE's loss exactly: L2, mean over each patch, then sum(loss * mask) / sum(mask) (eps 0: an empty mask
  // gives 0 instead of the original's NaN). Call with pred, patchify(x, p) [B, L, p*p*C] and the mask [B, L].
  static MaskedLossOptions mae(bool norm_pix = false) {
    return MaskedLossOptions().kind(LossKind::kL2).norm_pix(norm_pix).eps(0.0);
  }
};

namespace detail {
inline at::Tensor masked_reconstruction_loss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& mask,
                                             LossKind kind, int64_t patch_size, bool norm_pix, double norm_eps,
                                             double beta, double eps, LossReduction reduction, Backend backend) {
  dispatch::MaskedLossSpec spec;
  spec.kind = kind;
  spec.patch_size = patch_size;
  spec.norm_pix = norm_pix;
  spec.norm_eps = norm_eps;
  spec.beta = beta;
  spec.eps = eps;
  spec.reduction = reduction;
  return dispatch::masked_loss(pred, target, mask, spec, backend, "simmim::masked_reconstruction_loss");
}
}  // namespace detail

// The masked reconstruction loss of pred against target. Layout by pred.dim():
//   4: images pred/target [B, C, H, W], mask [B, h, w] with h * patch_size == H, w * patch_size == W;
//   3: patchified pred/target [B, L, D], mask [B, L].
// mask: bool, uint8 or floating (weights). Gradients reach pred and a target that requires grad, never
// the mask. Returns a scalar (kMean) or [B] (kPerSample) in pred's dtype.
inline at::Tensor masked_reconstruction_loss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& mask,
                                             const MaskedLossOptions& options = {}) {
  return detail::masked_reconstruction_loss(pred, target, mask, options.kind(), options.patch_size(),
                                            options.norm_pix(), options.norm_eps(), options.beta(), options.eps(),
                                            options.reduction(), options.backend());
}

class MaskedReconstructionLossImpl : public torch::nn::Cloneable<MaskedReconstructionLossImpl> {
 public:
  explicit MaskedReconstructionLossImpl(MaskedLossOptions options_ = {}) : options(std::move(options_)) {}

  void reset() override {}

  void pretty_print(std::ostream& stream) const override {
    stream << "simmim::MaskedReconstructionLoss(kind=" << options.kind() << ", patch_size=" << options.patch_size()
           << ", norm_pix=" << (options.norm_pix() ? "true" : "false") << ", eps=" << options.eps()
           << ", reduction=" << options.reduction() << ", backend=" << options.backend() << ")";
  }

  at::Tensor forward(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& mask) {
    return masked_reconstruction_loss(pred, target, mask, options);
  }

  MaskedLossOptions options;
};

TORCH_MODULE(MaskedReconstructionLoss);

SIMMIM_NAMESPACE_END
