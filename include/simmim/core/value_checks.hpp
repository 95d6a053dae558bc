#pragma once
// The debug switch for value checks. Checks that read tensor values (mask weights in range, ids a
// permutation) are free on the CPU, where the data is at hand, but on a GPU reading a value back
// synchronizes the host with the device every step (STYLE.md rule 10). So on CPU tensors simmim always
// runs them; on other devices only while value_checks() is on:
//   simmim::set_value_checks(true);      // or run the program with SIMMIM_VALUE_CHECKS=1
// Shape, dtype and device checks are always on, everywhere.

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "simmim/core/abi.hpp"

SIMMIM_NAMESPACE_BEGIN

namespace detail {
// -1: not decided yet (read SIMMIM_VALUE_CHECKS on first use); 0: off; 1: on.
inline std::atomic<int>& value_checks_state() {
  static std::atomic<int> state{-1};
  return state;
}
}  // namespace detail

// Whether value checks also run on non-CPU tensors. Default: off, unless the environment variable
// SIMMIM_VALUE_CHECKS is set to anything but "" or "0".
inline bool value_checks() {
  int s = detail::value_checks_state().load(std::memory_order_relaxed);
  if (s < 0) {
    const char* env = std::getenv("SIMMIM_VALUE_CHECKS");
    s = env != nullptr && *env != '\0' && std::strcmp(env, "0") != 0 ? 1 : 0;
    detail::value_checks_state().store(s, std::memory_order_relaxed);
  }
  return s == 1;
}

// Turns value checks on non-CPU tensors on or off for the whole process (overrides the environment).
inline void set_value_checks(bool on) { detail::value_checks_state().store(on ? 1 : 0, std::memory_order_relaxed); }

// Whether to read `t`'s values to validate them: always on the CPU, elsewhere when value_checks() is on
// (never for meta tensors, which have no values).
inline bool check_values_of(const at::Tensor& t) {
  if (!t.defined() || t.is_meta()) return false;
  return t.device().is_cpu() || value_checks();
}

SIMMIM_NAMESPACE_END
