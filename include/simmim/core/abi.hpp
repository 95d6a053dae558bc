#pragma once
// simmim's version numbers and ABI namespace macros, with no torch include, so that torch-free code
// (kernels/cuda, compiled by nvcc alone; kernels' shared parameter structs) can live in simmim::.
// Everything public lives in simmim::SIMMIM_ABI_NAMESPACE (inline), so that two simmim versions linked
// into one program do not collide on inline symbols.

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
