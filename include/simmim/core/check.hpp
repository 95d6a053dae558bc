#pragma once
// Error helpers: every user-facing error names the API, the argument, what was expected and what arrived
// (STYLE.md rule 2). TORCH_CHECK-style exceptions (c10::Error / c10::ValueError) so LibTorch users can
// catch them the way they already do.

#include <c10/util/Exception.h>
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

SIMMIM_NAMESPACE_END

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
