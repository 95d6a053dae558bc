#pragma once
// simmim's version and ABI namespace (the macros live in the torch-free core/abi.hpp), plus the LibTorch
// version this build compiles against.

#include <torch/version.h>

#include "simmim/core/abi.hpp"

// LibTorch version as MAJOR*100+MINOR (Debian's 1.13 -> 113, pip 2.11 -> 211). Debian's version.h says
// 1.13.0 although the package is 1.13.1, so never compare patch levels.
#define SIMMIM_TORCH_VERSION (TORCH_VERSION_MAJOR * 100 + TORCH_VERSION_MINOR)

SIMMIM_NAMESPACE_BEGIN

inline constexpr int kVersionMajor = SIMMIM_VERSION_MAJOR;
inline constexpr int kVersionMinor = SIMMIM_VERSION_MINOR;
inline constexpr int kVersionPatch = SIMMIM_VERSION_PATCH;
inline constexpr const char* kVersionString = "0.1.0";

SIMMIM_NAMESPACE_END
