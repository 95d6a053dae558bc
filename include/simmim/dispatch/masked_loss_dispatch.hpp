#pragma once
// The one entry point of the masked losses below the public API: validates, picks the backend (kAuto's
// rule, or the caller's after checking it can run) and runs the reference composite or the fused Function.

#include <ATen/ATen.h>

#include "simmim/dispatch/backend.hpp"
#include "simmim/dispatch/masked_loss_fused.hpp"
#include "simmim/dispatch/masked_loss_problem.hpp"
#include "simmim/dispatch/masked_loss_reference.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace dispatch {

// kAuto: fused CPU for CPU tensors, fused CUDA for CUDA tensors when simmim::cuda is loaded, the reference
// otherwise. Also the reference where a target requires grad that the fused pass cannot give: through
// norm-pix's per-patch normalization, or kCosine's (its gradient in the target is not minus pred's), and
// for the token kinds on CUDA tensors: their CUDA pass (Backend::kFusedCUDA runs it when asked) has not yet
// run on a GPU, so kAuto keeps the reference there until scripts/gpu-check.sh has checked it against the
// reference (docs/losses.md). A forced backend must be able to run, else a clear error.

inline Backend resolve_masked_loss_backend(const MaskedLossProblem& pb, Backend requested, const char* api) {
  const LossKind kind = pb.options.kind();
  const bool target_grad_unfused = (pb.options.norm_pix() || kind == LossKind::kCosine) &&
                                   pb.target.requires_grad() && at::GradMode::is_enabled();
  if (requested == Backend::kAuto) {
    if (target_grad_unfused) return Backend::kReference;
    if (pb.pred.device().is_cpu()) return Backend::kFusedCPU;
    if (pb.pred.device().is_cuda() && fused_cuda_available() && !is_token_kind(kind)) return Backend::kFusedCUDA;
    return Backend::kReference;
  }
  check_backend_available(requested, pb.pred, api);
  SIMMIM_CHECK(requested == Backend::kReference || !target_grad_unfused, api, "target",
               std::string("free of grad with ") + (pb.options.norm_pix() ? "norm_pix" : "LossKind::kCosine") +
                   " on " + to_string(requested) + " (the fused pass gives the target no gradient through " +
                   (pb.options.norm_pix() ? "the per-patch normalization" : "the cosine") +
                   "; Backend::kAuto and Backend::kReference do)",
               describe(pb.target) + " that requires grad");
  return requested;
}

inline at::Tensor masked_loss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& mask,
                              const MaskedLossOptions& options, const char* api) {
  // Two floating dtypes promote, as PyTorch's losses and the originals do: a bf16 / fp16 prediction made
  // under autocast against float images is a float loss (the originals' l1_loss / (pred - target)**2 run in
  // float there), with pred's gradient cast back by autograd. Anything else is checked below.
  if (pred.defined() && target.defined() && pred.scalar_type() != target.scalar_type() &&
      is_supported_loss_dtype(pred.scalar_type()) && is_supported_loss_dtype(target.scalar_type())) {
    const at::ScalarType common = at::promote_types(pred.scalar_type(), target.scalar_type());
    return masked_loss(pred.to(common), target.to(common), mask, options, api);
  }
  const MaskedLossProblem pb = make_masked_loss_problem(pred, target, mask, options, api);
  const Backend chosen = resolve_masked_loss_backend(pb, options.backend(), api);
  if (chosen != Backend::kFusedCPU) {  // the fused CPU pass checks as it reads
    check_mask_weights(pb.mask, api);
    check_class_ids(pb, api);
  }
  if (chosen == Backend::kReference) return masked_loss_reference(pb, api);
  const bool want_grad = at::GradMode::is_enabled() && (pred.requires_grad() || target.requires_grad());
  return FusedMaskedLoss::apply(pred, target, mask, &pb, chosen, want_grad, api);
}

}  // namespace dispatch
SIMMIM_NAMESPACE_END
