#pragma once
// The host entry points of the fused CUDA masked loss, as compiled into simmim::cuda (src/cuda): plain
// C++ declarations over the torch-free MaskedLossParams, a dtype tag, a stream and a cudaError_t back, so
// the torch-facing glue (compiled by the host compiler) calls kernels that nvcc compiled without torch.
// The kernels themselves are in masked_loss_cuda.cuh.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cuda {

// The element type of pred / target / grad. Weights are float (double for kDouble).
enum class DType { kFloat, kDouble, kHalf, kBFloat16 };

// Launch tuning, a value per architecture (CUB's way): 16-byte vectors (or scalars, on the unaligned path)
// each thread handles per chunk of the plain pass. The chunking, and so the order of the sums, depends on
// it and on the shape only: the same inputs give bitwise the same results on every run.
struct MaskedLossTuning {
  int items_per_thread = 4;
};
inline constexpr MaskedLossTuning masked_loss_tuning_for(int sm_major) {
  // Hopper keeps more bytes in flight per thread to reach its bandwidth; 4 elsewhere.
  return sm_major >= 9 ? MaskedLossTuning{8} : MaskedLossTuning{4};
}

// Device bytes P.workspace must hold for masked_loss_forward(P, dtype, ...).
std::size_t masked_loss_workspace_bytes(const MaskedLossParams& P, DType dtype, const MaskedLossTuning& tuning);

// The whole fused pass on `stream`: per-sample weight sums, the main pass (loss partial sums and, when
// P.grad is set, the scaled gradient), and the loss in P.loss. No host synchronization, no allocation:
// capturable in a CUDA graph. Returns cudaErrorInvalidValue for a problem the kernels cannot index
// (a sample of 2^31 elements or more; the glue checks first, with a clear message).
cudaError_t masked_loss_forward(const MaskedLossParams& P, DType dtype, const MaskedLossTuning& tuning,
                                cudaStream_t stream);

// grad[b, ...] *= grad_out[per_sample ? b : 0] for a dense grad of `batch` samples of `sample_elems`
// elements each, reading grad_out (dtype) on the device and leaving samples whose factor is 1 untouched.
cudaError_t scale_by_grad_output(void* grad, DType dtype, int64_t batch, int64_t sample_elems, const void* grad_out,
                                 bool per_sample, cudaStream_t stream);

// The fused token pass (LossKind::kCosine, kCrossEntropy; kernels/cuda/token_loss_cuda.cuh) on `stream`:
// writes w * l of each token into token_losses (device, B * L doubles, in (b, l) order) and, when P.grad
// is set, w * P.grad_scale[b] * dl/dpred (P.grad_scale: B doubles on the device). P.target holds pred's
// element type (kCosine) or int64 class ids viewed [B, G, L, 1] (kCrossEntropy; an id outside [0, K)
// makes its token's loss NaN). No host synchronization, no allocation. cudaErrorInvalidValue for a
// problem it cannot launch (token_loss_launchable).
cudaError_t token_loss_forward(const MaskedLossParams& P, DType dtype, double* token_losses, cudaStream_t stream);
bool token_loss_launchable(const MaskedLossParams& P);

// Whether the plain pass can index a problem (elements per sample and weight cells below 2^31).
inline bool masked_loss_indexable(const MaskedLossParams& P) {
  const int64_t limit = int64_t{1} << 31;
  const int64_t sample = P.channels * P.height * P.width;
  return sample < limit && (P.height / P.patch) * (P.width / P.patch) < limit;
}

}  // namespace cuda
}  // namespace kernels
SIMMIM_NAMESPACE_END
