#pragma once
// The runtime table through which the compiled simmim::cuda library (src/cuda) offers its fused CUDA
// entry points to the header-only dispatch. The library fills it when it is loaded (a static initializer
// in libsimmim_cuda.so); the headers only read it, so "is fused CUDA available" is a run-time question and
// every header body is the same whether or not a program links simmim::cuda (no #ifdef, no ODR trap).
//
// One table per process: the slot is a function-local static of an inline function with default
// visibility, which the dynamic linker unifies across the executable and every shared library (also when
// they are compiled with -fvisibility=hidden).

#include <ATen/core/Tensor.h>

#include <atomic>

#include "simmim/core/abi.hpp"

#if defined(__GNUC__)
#define SIMMIM_VISIBLE __attribute__((visibility("default")))
#else
#define SIMMIM_VISIBLE
#endif

SIMMIM_NAMESPACE_BEGIN
namespace dispatch {

struct MaskedLossProblem;
struct FusedLossForward;

// What simmim::cuda provides. `abi` guards against a library built from other headers (2: masked_loss_forward
// also runs the token kinds, kCosine and kCrossEntropy).
struct CudaEntryPoints {
  static constexpr int kAbi = 2;
  int abi = kAbi;
  // The fused masked-loss forward of a validated problem on CUDA tensors (same contract as the CPU's), for
  // every LossKind.
  FusedLossForward (*masked_loss_forward)(const MaskedLossProblem& pb, bool want_grad, const char* api) = nullptr;
  // grad *= grad_out in place, per sample (grad_out [B]) or for all (grad_out [1]), reading grad_out on the
  // device and leaving grad untouched where it is 1: a dense (contiguous or channels-last) CUDA grad.
  void (*scale_by_grad_output)(const at::Tensor& grad, const at::Tensor& grad_out) = nullptr;
  // What it was built for, for messages: e.g. "CUDA 13.0, sm_80 sm_90".
  const char* built_for = "";
};

SIMMIM_VISIBLE inline std::atomic<const CudaEntryPoints*>& cuda_entry_points_slot() {
  static std::atomic<const CudaEntryPoints*> slot{nullptr};
  return slot;
}

// Called by simmim::cuda when it is loaded (its own copy of this function, compiled from the library's
// headers).
inline void register_cuda_entry_points(const CudaEntryPoints* entry_points) {
  if (entry_points != nullptr && entry_points->abi == CudaEntryPoints::kAbi) {
    cuda_entry_points_slot().store(entry_points, std::memory_order_release);
  }
}

// The registered table, or nullptr when simmim::cuda is not linked (or not loaded), or was built from
// headers of another ABI: checked here, in the program's copy, since the library registers itself with
// its own (`abi` is the first member, so reading it from an older table is safe).
inline const CudaEntryPoints* cuda_entry_points() {
  const CudaEntryPoints* entry_points = cuda_entry_points_slot().load(std::memory_order_acquire);
  return entry_points != nullptr && entry_points->abi == CudaEntryPoints::kAbi ? entry_points : nullptr;
}

}  // namespace dispatch

// Whether the fused CUDA kernels are available in this process: the program links simmim::cuda (which
// registers them when it is loaded). Whether a GPU is present is a separate question (torch::cuda).
inline bool fused_cuda_available() { return dispatch::cuda_entry_points() != nullptr; }

SIMMIM_NAMESPACE_END
