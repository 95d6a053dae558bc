// simmim::cuda, device half: the host entry points of kernels/cuda/masked_loss_cuda.hpp, instantiating the
// torch-free kernels of masked_loss_cuda.cuh for every element type and loss kind. Compiled by nvcc alone
// (no torch header), for the architectures in CMAKE_CUDA_ARCHITECTURES.

#include "simmim/kernels/cuda/masked_loss_cuda.cuh"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cuda {
namespace {

template <typename T>
cudaError_t forward_of(const MaskedLossParams& P, const PassPlan& plan, cudaStream_t stream) {
  switch (P.kind) {
    case LossKind::kL1:
      return launch_masked_loss<T, LossKind::kL1>(P, plan, stream);
    case LossKind::kL2:
      return launch_masked_loss<T, LossKind::kL2>(P, plan, stream);
    case LossKind::kSmoothL1:
      return launch_masked_loss<T, LossKind::kSmoothL1>(P, plan, stream);
    default:  // the token kinds (kCosine, kCrossEntropy) run token_loss_forward (token_loss_kernels.cu)
      break;
  }
  return cudaErrorInvalidValue;
}

template <typename T>
cudaError_t scale_of(void* grad, int64_t batch, int64_t sample_elems, const void* grad_out, bool per_sample,
                     cudaStream_t stream) {
  constexpr int64_t kChunk = int64_t{kThreads} * 16;
  const int64_t chunks = (sample_elems + kChunk - 1) / kChunk;
  if (batch <= 0 || chunks <= 0) return cudaSuccess;
  if (batch * chunks >= (int64_t{1} << 31)) return cudaErrorInvalidValue;
  scale_kernel<T><<<static_cast<unsigned>(batch * chunks), kThreads, 0, stream>>>(
      static_cast<T*>(grad), sample_elems, kChunk, chunks, static_cast<const T*>(grad_out), per_sample);
  return cudaGetLastError();
}

}  // namespace

std::size_t masked_loss_workspace_bytes(const MaskedLossParams& P, DType dtype, const MaskedLossTuning& tuning) {
  PassPlan plan;
  return plan_masked_loss(P, dtype, tuning, plan) ? workspace_bytes(plan) : 0;
}

cudaError_t masked_loss_forward(const MaskedLossParams& P, DType dtype, const MaskedLossTuning& tuning,
                                cudaStream_t stream) {
  PassPlan plan;
  if (!plan_masked_loss(P, dtype, tuning, plan) || P.workspace == nullptr || P.loss == nullptr) {
    return cudaErrorInvalidValue;
  }
  switch (dtype) {
    case DType::kFloat:
      return forward_of<float>(P, plan, stream);
    case DType::kDouble:
      return forward_of<double>(P, plan, stream);
    case DType::kHalf:
      return forward_of<__half>(P, plan, stream);
    case DType::kBFloat16:
      return forward_of<__nv_bfloat16>(P, plan, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t scale_by_grad_output(void* grad, DType dtype, int64_t batch, int64_t sample_elems, const void* grad_out,
                                 bool per_sample, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat:
      return scale_of<float>(grad, batch, sample_elems, grad_out, per_sample, stream);
    case DType::kDouble:
      return scale_of<double>(grad, batch, sample_elems, grad_out, per_sample, stream);
    case DType::kHalf:
      return scale_of<__half>(grad, batch, sample_elems, grad_out, per_sample, stream);
    case DType::kBFloat16:
      return scale_of<__nv_bfloat16>(grad, batch, sample_elems, grad_out, per_sample, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace kernels
SIMMIM_NAMESPACE_END
