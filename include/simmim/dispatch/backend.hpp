#pragma once
// Backend: which implementation of a fused op runs (reference composite, fused CPU, fused CUDA), whether it
// is available in this process, and the one check that turns "not available" into a clear error.

#include <ATen/ATen.h>

#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/dispatch/cuda_registry.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class Backend {
  kAuto,       // fused CPU for CPU tensors, fused CUDA for CUDA tensors when compiled in, else reference
  kReference,  // composite ATen ops: autograd-native, any device, any order of derivative; the test oracle
  kFusedCPU,   // one pass over the pixels (kernels/cpu)
  kFusedCUDA,  // the same on the GPU (kernels/cuda); needs the simmim::cuda library linked
};

inline constexpr const char* to_string(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "Backend::kAuto";
    case Backend::kReference:
      return "Backend::kReference";
    case Backend::kFusedCPU:
      return "Backend::kFusedCPU";
    case Backend::kFusedCUDA:
      return "Backend::kFusedCUDA";
  }
  return "unknown Backend";
}

inline std::ostream& operator<<(std::ostream& os, Backend backend) { return os << to_string(backend); }

namespace dispatch {

// Errors unless `backend` (a concrete one, not kAuto) can run on `t`'s device in this build. Asking for
// the fused CUDA path in a build without it is an error, never a silent fallback to a slower path.
inline void check_backend_available(Backend backend, const at::Tensor& t, const char* api) {
  switch (backend) {
    case Backend::kReference:
      return;
    case Backend::kFusedCPU:
      SIMMIM_CHECK(t.device().is_cpu(), api, "the inputs of Backend::kFusedCPU", "CPU tensors", describe(t));
      return;
    case Backend::kFusedCUDA:
      TORCH_CHECK(fused_cuda_available(), api,
                  ": Backend::kFusedCUDA is not available: this program does not link simmim's CUDA library; link "
                  "the simmim::cuda target (built where CMake finds CUDA and a CUDA-enabled LibTorch), or use "
                  "Backend::kAuto / Backend::kReference");
      SIMMIM_CHECK(t.device().is_cuda(), api, "the inputs of Backend::kFusedCUDA", "CUDA tensors", describe(t));
      return;
    case Backend::kAuto:
      break;
  }
  TORCH_INTERNAL_ASSERT(false, api, ": check_backend_available needs a concrete backend, got ", backend);
}

}  // namespace dispatch
SIMMIM_NAMESPACE_END
