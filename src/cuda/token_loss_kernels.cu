// simmim::cuda, device half of the token loss kinds: the host entry point token_loss_forward of
// kernels/cuda/masked_loss_cuda.hpp, instantiating kernels/cuda/token_loss_cuda.cuh for every element type.
// Compiled by nvcc alone (no torch header), like masked_loss_kernels.cu.

#include "simmim/kernels/cuda/token_loss_cuda.cuh"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cuda {

bool token_loss_launchable(const MaskedLossParams& P) {
  TokenPlan plan;
  return plan_token_loss(P, plan);
}

cudaError_t token_loss_forward(const MaskedLossParams& P, DType dtype, double* token_losses, cudaStream_t stream) {
  TokenPlan plan;
  if (!plan_token_loss(P, plan) || token_losses == nullptr || P.grad_scale == nullptr) return cudaErrorInvalidValue;
  switch (dtype) {
    case DType::kFloat:
      return launch_token_loss<float>(P, plan, token_losses, stream);
    case DType::kDouble:
      return launch_token_loss<double>(P, plan, token_losses, stream);
    case DType::kHalf:
      return launch_token_loss<__half>(P, plan, token_losses, stream);
    case DType::kBFloat16:
      return launch_token_loss<__nv_bfloat16>(P, plan, token_losses, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace kernels
SIMMIM_NAMESPACE_END
