#pragma once
// Mixed precision for training loops: a precision choice by name and an RAII autocast guard over the
// C++ autocast API, which changed shape in torch 2.4 (device-type arguments); this header is the one
// place that knows both. fp16 also needs a LossScaler (loss_scaler.hpp); bf16 does not.

#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class Precision { kFloat32, kBFloat16, kFloat16 };

// "fp32" / "float32", "bf16" / "bfloat16", "fp16" / "float16".
inline Precision parse_precision(const std::string& name) {
  if (name == "fp32" || name == "float32") return Precision::kFloat32;
  if (name == "bf16" || name == "bfloat16") return Precision::kBFloat16;
  if (name == "fp16" || name == "float16") return Precision::kFloat16;
  SIMMIM_CHECK_VALUE(false, "simmim::parse_precision", "name", "one of fp32, bf16, fp16", "'" + name + "'");
  return Precision::kFloat32;  // unreachable
}

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::kFloat32: return "fp32";
    case Precision::kBFloat16: return "bf16";
    case Precision::kFloat16: return "fp16";
  }
  return "?";
}

inline at::ScalarType precision_dtype(Precision p) {
  switch (p) {
    case Precision::kBFloat16: return at::kBFloat16;
    case Precision::kFloat16: return at::kHalf;
    case Precision::kFloat32: break;
  }
  return at::kFloat;
}

namespace detail {

// Autocast state of one device type, read and written through whichever API this torch has.
inline bool autocast_enabled(c10::DeviceType d) {
#if SIMMIM_TORCH_VERSION >= 204
  return at::autocast::is_autocast_enabled(d);
#else
  return d == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

inline void set_autocast_enabled(c10::DeviceType d, bool on) {
#if SIMMIM_TORCH_VERSION >= 204
  at::autocast::set_autocast_enabled(d, on);
#else
  if (d == c10::DeviceType::CUDA)
    at::autocast::set_enabled(on);
  else
    at::autocast::set_cpu_enabled(on);
#endif
}

inline at::ScalarType autocast_dtype(c10::DeviceType d) {
#if SIMMIM_TORCH_VERSION >= 204
  return at::autocast::get_autocast_dtype(d);
#else
  return d == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

inline void set_autocast_dtype(c10::DeviceType d, at::ScalarType t) {
#if SIMMIM_TORCH_VERSION >= 204
  at::autocast::set_autocast_dtype(d, t);
#else
  if (d == c10::DeviceType::CUDA)
    at::autocast::set_autocast_gpu_dtype(t);
  else
    at::autocast::set_autocast_cpu_dtype(t);
#endif
}

}  // namespace detail

// Runs the forward pass of its scope under autocast on `device` (CUDA: bf16 or fp16; CPU: bf16 only,
// which is what CPU autocast supports on every torch we build against). kFloat32 does nothing. Restores
// the previous state on exit, so guards nest. Run backward outside the scope, as in PyTorch.
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, Precision precision) : device_(device) {
    constexpr const char* api = "simmim::AutocastGuard";
    SIMMIM_CHECK_ENUM(precision, 3, "Precision", api, "precision", "Precision::kFloat32, kBFloat16 or kFloat16");
    if (precision == Precision::kFloat32) return;
    SIMMIM_CHECK_VALUE(device == c10::DeviceType::CUDA || device == c10::DeviceType::CPU, api, "device",
                       "cuda or cpu", c10::DeviceTypeName(device));
    SIMMIM_CHECK_VALUE(device == c10::DeviceType::CUDA || precision == Precision::kBFloat16, api, "precision",
                       "bf16 or fp32 on the CPU (fp16 autocast needs CUDA)", precision_name(precision));
    active_ = true;
    prev_enabled_ = detail::autocast_enabled(device_);
    prev_dtype_ = detail::autocast_dtype(device_);
    detail::set_autocast_enabled(device_, true);
    detail::set_autocast_dtype(device_, precision_dtype(precision));
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!active_) return;
    // The cast cache holds fp16/bf16 copies of weights; it must not outlive the outermost scope.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast_enabled(device_, prev_enabled_);
    detail::set_autocast_dtype(device_, prev_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

  bool active() const { return active_; }

 private:
  c10::DeviceType device_;
  bool active_ = false;
  bool prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

SIMMIM_NAMESPACE_END
