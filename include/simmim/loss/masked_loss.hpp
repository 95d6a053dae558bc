#pragma once
// Masked reconstruction losses (SimMIM's masked L1, MAE's masked L2 with optional norm-pix targets,
// smooth-L1): options, the functional form and the MaskedReconstructionLoss module, in the shape of the
// PyTorch C++ frontend's losses. The work happens in dispatch/ (reference or fused backends).
//
//   loss = sum(w * l(pred - target)) / (K * (sum(w_unit) + eps))
// with w the mask weight of each element, w_unit the weight of each mask unit (a pixel in the images
// layout, K = C; a token in the patchified layout, K = D). docs/losses.md derives both originals from it.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/dispatch/backend.hpp"
#include "simmim/dispatch/masked_loss_dispatch.hpp"
#include "simmim/dispatch/masked_loss_options.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN

// The masked reconstruction loss of pred against target. Layout by pred.dim():
//   4: images pred/target [B, C, H, W], mask [B, h, w] with h * patch_size == H, w * patch_size == W;
//   3: patchified pred/target [B, L, D], mask [B, L].
// mask: bool, any integer dtype or floating: each value is its cell's weight (0/1 for a plain mask). Gradients
// reach pred and a target that requires grad, never
// the mask. pred and target of two floating dtypes promote (bf16 pred under autocast, float images: a float
// loss, as the originals compute it). Returns a scalar (kMean) or [B] (kPerSample) in that dtype.
inline at::Tensor masked_reconstruction_loss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& mask,
                                             const MaskedLossOptions& options = {}) {
  return dispatch::masked_loss(pred, target, mask, options, "simmim::masked_reconstruction_loss");
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
