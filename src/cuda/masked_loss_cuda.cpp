// simmim::cuda, torch half: the ATen glue of the fused CUDA masked loss (allocation, stream, dtype) and
// the registration of its entry points in dispatch/cuda_registry.hpp's table when the library is loaded.
// Compiled by the host compiler against a CUDA-enabled LibTorch; the kernels are in masked_loss_kernels.cu.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include <string>

#include "simmim/core/check.hpp"
#include "simmim/dispatch/cuda_registry.hpp"
#include "simmim/dispatch/masked_loss_fused.hpp"
#include "simmim/dispatch/masked_loss_problem.hpp"
#include "simmim/kernels/cuda/masked_loss_cuda.hpp"

#ifndef SIMMIM_CUDA_BUILT_FOR
#define SIMMIM_CUDA_BUILT_FOR "CUDA"
#endif

SIMMIM_NAMESPACE_BEGIN
namespace {

using kernels::cuda::DType;

DType dtype_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat;
    case at::kDouble:
      return DType::kDouble;
    case at::kHalf:
      return DType::kHalf;
    case at::kBFloat16:
      return DType::kBFloat16;
    default:
      break;
  }
  TORCH_INTERNAL_ASSERT(false, "simmim::cuda: unexpected dtype ", t, " (the problem checks admit it)");
}

void check_launch(cudaError_t err, const char* api, const char* what) {
  TORCH_CHECK(err == cudaSuccess, api, ": ", what, " failed: ", cudaGetErrorString(err), " (simmim::cuda built for ",
              SIMMIM_CUDA_BUILT_FOR, ")");
}

// The token kinds (kCosine, kCrossEntropy; patchified [B, L, D]): the weight sums, denominator and
// gradient scale by ATen on the device (fixed-order reductions, no host synchronization), the token pass
// (loss of each token, gradient), then each sample's token losses summed and the loss finished by ATen:
// the formula of the CPU glue (dispatch/masked_loss_fused.hpp), with its sums in another fixed order.
dispatch::FusedLossForward token_loss_forward(const dispatch::MaskedLossProblem& pb, bool want_grad,
                                              const char* api) {
  const at::Tensor& pred = pb.pred4;  // [B, D, L, 1]
  const at::Tensor target = pb.options.kind() == LossKind::kCrossEntropy ? pb.target4.to(at::kLong) : pb.target4;
  at::Tensor grad, grad4;
  if (want_grad) {
    grad = at::empty(pb.pred.sizes(), pb.pred.options());  // [B, L, D], contiguous
    grad4 = pb.to_view(grad);
  }
  const at::Tensor weights = pb.mask3.to(at::toOpMathType(pred.scalar_type()));  // [B, L, 1]
  const at::Tensor den = pb.denominator(at::sum(weights, {1, 2}, /*keepdim=*/false, at::kDouble));
  const at::Tensor grad_scale = pb.grad_scale(den);
  MaskedLossParams P = dispatch::masked_loss_params(pb, pred, target, grad4, weights);
  P.grad_scale = grad_scale.data_ptr<double>();
  SIMMIM_CHECK(kernels::cuda::token_loss_launchable(P), api, "pred",
               "at most 8 * (2^31 - 1) tokens (B * L) on Backend::kFusedCUDA (use Backend::kReference beyond)", describe(pb.pred));
  const at::Tensor token_losses = at::empty({pred.size(0), pred.size(2)}, pred.options().dtype(at::kDouble));
  check_launch(kernels::cuda::token_loss_forward(P, dtype_of(pred.scalar_type()), token_losses.data_ptr<double>(),
                                                 at::cuda::getCurrentCUDAStream()),
               api, "the fused CUDA token loss");
  return {pb.finish(token_losses.sum(1), den), grad};
}

dispatch::FusedLossForward masked_loss_forward(const dispatch::MaskedLossProblem& pb, bool want_grad,
                                               const char* api) {
  const c10::cuda::CUDAGuard guard(pb.pred.device());
  if (is_token_kind(pb.options.kind())) return token_loss_forward(pb, want_grad, api);
  const at::Tensor& pred = pb.pred;
  // The gradient is dense in the caller's layout: channels-last images stay channels-last (one vector pass),
  // anything else is contiguous. The backward's scaling relies on it being dense per sample.
  at::Tensor grad;
  if (want_grad) {
    const bool channels_last = pb.layout == LossLayout::kImages && !pred.is_contiguous() &&
                               pred.is_contiguous(at::MemoryFormat::ChannelsLast);
    grad = at::empty(pred.sizes(),
                     pred.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                : at::MemoryFormat::Contiguous));
  }
  const at::Tensor weights = pb.mask3.to(at::toOpMathType(pred.scalar_type()));
  MaskedLossParams P =
      dispatch::masked_loss_params(pb, pb.pred4, pb.target4, grad.defined() ? pb.to_view(grad) : grad, weights);
  SIMMIM_CHECK(kernels::cuda::masked_loss_indexable(P), api, "pred",
               "fewer than 2^31 elements per sample on Backend::kFusedCUDA (use Backend::kReference beyond)",
               describe(pred));
  const at::Tensor loss = pb.options.reduction() == LossReduction::kMean ? at::empty({}, pred.options())
                                                                          : at::empty({pb.batch()}, pred.options());
  P.loss = loss.data_ptr();
  const DType dtype = dtype_of(pred.scalar_type());
  const auto tuning = kernels::cuda::masked_loss_tuning_for(at::cuda::getCurrentDeviceProperties()->major);
  const auto bytes = static_cast<int64_t>(kernels::cuda::masked_loss_workspace_bytes(P, dtype, tuning));
  TORCH_INTERNAL_ASSERT(bytes > 0, api, ": no launch plan for ", describe(pred));
  const at::Tensor workspace = at::empty({bytes}, pred.options().dtype(at::kByte));
  P.workspace = workspace.data_ptr();
  check_launch(kernels::cuda::masked_loss_forward(P, dtype, tuning, at::cuda::getCurrentCUDAStream()), api,
               "the fused CUDA masked loss");
  return {loss, grad};
}

void scale_by_grad_output(const at::Tensor& grad, const at::Tensor& grad_out) {
  const c10::cuda::CUDAGuard guard(grad.device());
  TORCH_INTERNAL_ASSERT(grad.is_cuda() && grad.is_non_overlapping_and_dense() && grad.dim() >= 1,
                        "simmim::cuda: the saved gradient must be a dense CUDA tensor");
  TORCH_INTERNAL_ASSERT(grad_out.scalar_type() == grad.scalar_type() && grad_out.device() == grad.device());
  const int64_t batch = grad.size(0);
  const bool per_sample = grad_out.numel() != 1;
  TORCH_INTERNAL_ASSERT(!per_sample || grad_out.numel() == batch, "simmim::cuda: grad_output must be [] or [B]");
  const at::Tensor factors = grad_out.contiguous();
  check_launch(kernels::cuda::scale_by_grad_output(grad.data_ptr(), dtype_of(grad.scalar_type()), batch,
                                                   batch > 0 ? grad.numel() / batch : 0, factors.data_ptr(),
                                                   per_sample, at::cuda::getCurrentCUDAStream()),
               "simmim: backward of the fused masked loss", "scaling the gradient on CUDA");
}

const dispatch::CudaEntryPoints kEntryPoints = [] {
  dispatch::CudaEntryPoints e;
  e.masked_loss_forward = &masked_loss_forward;
  e.scale_by_grad_output = &scale_by_grad_output;
  e.built_for = SIMMIM_CUDA_BUILT_FOR;
  return e;
}();

// Registers the table when libsimmim_cuda is loaded.
const bool kRegistered = [] {
  dispatch::register_cuda_entry_points(&kEntryPoints);
  return true;
}();

}  // namespace
SIMMIM_NAMESPACE_END
