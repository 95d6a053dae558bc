#pragma once
// MaskedLossOptions: the one representation of a masked loss's options, from the public API (loss/) down to
// the dispatch layer, which fills the kernels' MaskedLossParams from it in one step. Re-exported by
// loss/masked_loss.hpp, where users meet it; it lives here so that the arrows point down (loss -> dispatch).

#include <torch/arg.h>

#include <cstdint>

#include "simmim/dispatch/backend.hpp"
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
  // Fused CPU backend only: write d(loss)/d(pred) into memory kept from the previous call on this thread
  // once nothing uses it any more, instead of a fresh allocation whose first touch page-faults (one fault
  // per 4 KiB page where the allocator hands back unmapped memory). Costs one gradient's memory per
  // calling thread, held until the thread ends (docs/losses.md). Ignored by the other backends.
  TORCH_ARG(bool, reuse_grad_memory) = false;

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

SIMMIM_NAMESPACE_END
