#pragma once
// simmim's version and ABI namespace. Everything public lives in simmim::SIMMIM_ABI_NAMESPACE (inline),
// so that two simmim versions linked into one program do not collide on inline symbols.

#define SIMMIM_VERSION_MAJOR 0
#define SIMMIM_VERSION_MINOR 1
#define SIMMIM_VERSION_PATCH 0
#define SIMMIM_VERSION (SIMMIM_VERSION_MAJOR * 10000 + SIMMIM_VERSION_MINOR * 100 + SIMMIM_VERSION_PATCH)

#define SIMMIM_ABI_NAMESPACE v0_1
#define SIMMIM_NAMESPACE_BEGIN \
  namespace simmim {           \
  inline namespace SIMMIM_ABI_NAMESPACE {
#define SIMMIM_NAMESPACE_END \
  }                          \
  }

#include <torch/version.h>

// LibTorch version as MAJOR*100+MINOR (Debian's 1.13 -> 113, pip 2.11 -> 211). Debian's version.h says
// 1.13.0 although the package is 1.13.1, so never compare patch levels.
#define SIMMIM_TORCH_VERSION (TORCH_VERSION_MAJOR * 100 + TORCH_VERSION_MINOR)

SIMMIM_NAMESPACE_BEGIN

inline constexpr int kVersionMajor = SIMMIM_VERSION_MAJOR;
inline constexpr int kVersionMinor = SIMMIM_VERSION_MINOR;
inline constexpr int kVersionPatch = SIMMIM_VERSION_PATCH;
inline constexpr const char* kVersionString = "0.1.0";

SIMMIM_NAMESPACE_END
