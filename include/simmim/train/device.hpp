#pragma once
// Device choice for training programs: "auto" takes the first CUDA device when there is one, else the
// CPU; "cpu", "cuda", "cuda:1" are taken as asked, with a clear error when CUDA is not there.

#include <c10/core/Device.h>
#include <ATen/Context.h>
#include <torch/cuda.h>

#include <string>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

inline c10::Device resolve_device(const std::string& spec = "auto") {
  constexpr const char* api = "simmim::resolve_device";
  if (spec.empty() || spec == "auto") return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  c10::optional<c10::Device> d;
  try {
    d = c10::Device(spec);
  } catch (const c10::Error&) {
  }
  SIMMIM_CHECK_VALUE(d.has_value() && (d->is_cpu() || d->is_cuda()), api, "device", "auto, cpu, cuda or cuda:<index>",
                     "'" + spec + "'");
  if (d->is_cuda()) {
    SIMMIM_CHECK_VALUE(at::hasCUDA(), api, "device",
                       "auto or cpu: this LibTorch is a CPU-only build (a CUDA device needs a CUDA-enabled LibTorch)",
                       "'" + spec + "'");
    const auto n = static_cast<int64_t>(torch::cuda::device_count());
    SIMMIM_CHECK_VALUE(n > 0, api, "device", "auto or cpu: this machine has no CUDA device", "'" + spec + "'");
    const int64_t index = d->has_index() ? d->index() : 0;
    SIMMIM_CHECK_VALUE(index < n, api, "device", "an index below the device count " + std::to_string(n), "'" + spec + "'");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return *d;
}

SIMMIM_NAMESPACE_END
