#pragma once
// Small macros that turn a runtime value into a compile-time constant for a kernel specialization (the
// way AT_DISPATCH_* does for dtypes). Each default branch names the value that was not handled.
//
//   SIMMIM_DISPATCH_LOSS_KIND(kind, kKind, api, [&] { kernel<scalar_t, kKind>(params); });  (element kinds)
//   SIMMIM_DISPATCH_BOOL(norm_pix, kNorm, [&] { kernel<kNorm>(params); });

#include <c10/util/Exception.h>

#include "simmim/kernels/masked_loss_params.hpp"

#define SIMMIM_DISPATCH_BOOL(VALUE, NAME, ...) \
  [&] {                                        \
    if (VALUE) {                               \
      constexpr bool NAME = true;              \
      return __VA_ARGS__();                    \
    } else {                                   \
      constexpr bool NAME = false;             \
      return __VA_ARGS__();                    \
    }                                          \
  }()

#define SIMMIM_DISPATCH_LOSS_KIND_CASE(KIND_VALUE, NAME, ...) \
  case KIND_VALUE: {                                          \
    constexpr ::simmim::LossKind NAME = KIND_VALUE;           \
    return __VA_ARGS__();                                     \
  }

#define SIMMIM_DISPATCH_LOSS_KIND(KIND, NAME, API, ...)                                                    \
  [&] {                                                                                                    \
    const ::simmim::LossKind simmim_dispatch_kind_ = (KIND);                                               \
    switch (simmim_dispatch_kind_) {                                                                       \
      SIMMIM_DISPATCH_LOSS_KIND_CASE(::simmim::LossKind::kL1, NAME, __VA_ARGS__)                           \
      SIMMIM_DISPATCH_LOSS_KIND_CASE(::simmim::LossKind::kL2, NAME, __VA_ARGS__)                           \
      SIMMIM_DISPATCH_LOSS_KIND_CASE(::simmim::LossKind::kSmoothL1, NAME, __VA_ARGS__)                     \
      default: /* the token kinds have their own pass */                                                  \
        break;                                                                                             \
    }                                                                                                      \
    TORCH_CHECK_VALUE(false, API, ": options.kind must be an element kind (LossKind::kL1, kL2 or "        \
                      "kSmoothL1) here; got LossKind(", static_cast<int>(simmim_dispatch_kind_), ")");      \
  }()
