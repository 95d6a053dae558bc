#pragma once
// Error helpers: every user-facing error names the API, the argument, what was expected and what arrived
// (STYLE.md rule 2). TORCH_CHECK-style exceptions (c10::Error / c10::ValueError) so LibTorch users can
// catch them the way they already do.

#include <c10/util/Exception.h>
#include <ATen/Context.h>
#include <torch/types.h>

#include <sstream>
#include <string>
#include <vector>

#include "simmim/core/version.hpp"

SIMMIM_NAMESPACE_BEGIN

// "[8, 3, 224, 224]"; "undefined" for an undefined tensor.
inline std::string shape_str(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

inline std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

// "float tensor [8, 3, 224, 224] on cpu": what a message says about an argument that arrived.
inline std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::ostringstream os;
  os << c10::toString(t.scalar_type()) << " tensor " << t.sizes() << " on " << t.device();
  return os.str();
}

// Whether an enum value (possibly made by a cast from an int, or read from a file) is one of the `count`
// enumerators 0..count-1 of a sequential enum.
template <class E>
constexpr bool enum_in_range(E value, int count) {
  const auto v = static_cast<long long>(value);
  return v >= 0 && v < count;
}

SIMMIM_NAMESPACE_END

// SIMMIM_CHECK_ENUM(value, count, type, api, arg, expected): an out-of-range enum value is a
// c10::ValueError "<api>: <arg> must be <expected>; got <type>(<int>)", not an internal assertion later.
#define SIMMIM_CHECK_ENUM(value, count, type, api, arg, expected)                                          \
  SIMMIM_CHECK_VALUE(::simmim::enum_in_range((value), (count)), api, arg, expected, type "(",               \
                     static_cast<long long>(value), ")")

// SIMMIM_CHECK_HAS_DATA(tensor, api, arg): a meta tensor (shape only, no data) is a clear error.
#define SIMMIM_CHECK_HAS_DATA(tensor, api, arg)                                                              \
  SIMMIM_CHECK(!(tensor).defined() || !(tensor).is_meta(), api, arg,                                         \
               "a tensor with data on the CPU or a GPU (a meta tensor has only a shape)", ::simmim::describe(tensor))

// SIMMIM_CHECK(cond, api, arg, expected, got...): user error -> c10::Error with
// "<api>: <arg> must be <expected>; got <got>".
#define SIMMIM_CHECK(cond, api, arg, expected, ...) \
  TORCH_CHECK((cond), api, ": ", arg, " must be ", expected, "; got ", __VA_ARGS__)

// SIMMIM_CHECK_VALUE: same shape of message for a bad option value -> c10::ValueError.
#define SIMMIM_CHECK_VALUE(cond, api, arg, expected, ...) \
  TORCH_CHECK_VALUE((cond), api, ": ", arg, " must be ", expected, "; got ", __VA_ARGS__)

// Checks an argument is a defined tensor with the given number of dimensions.
#define SIMMIM_CHECK_DIM(tensor, ndim, api, arg, layout)                                        \
  SIMMIM_CHECK((tensor).defined() && (tensor).dim() == (ndim), api, arg,                        \
               "a " #ndim "-D tensor " layout, ::simmim::describe(tensor))

SIMMIM_NAMESPACE_BEGIN

// Errors unless `device` is one this LibTorch build and machine can use: a CUDA device on a CPU-only
// LibTorch, or an index past the device count, is a simmim error instead of LibTorch's lazy-init one.
inline void check_device_available(c10::Device device, const char* api, const char* arg) {
  if (device.is_cpu() || device.is_meta()) return;
  if (device.is_cuda()) {
    SIMMIM_CHECK(at::hasCUDA(), api, arg, "a device this LibTorch can use (it is a CPU-only build: use cpu)",
                 device);
    const auto n = static_cast<int64_t>(at::getNumGPUs());
    SIMMIM_CHECK(!device.has_index() || device.index() < n, api, arg,
                 "a CUDA device below the device count " + std::to_string(n), device);
  }
}

SIMMIM_NAMESPACE_END
