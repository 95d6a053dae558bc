#pragma once
// SIMMIM_HOST_DEVICE_INLINE: the per-element math shared by the CPU and CUDA kernels (masked_loss_math.hpp).
// Under nvcc it also carries __host__ __device__, so nvcc emits a device copy; the host body is the same
// text and compiles to the same code in every translation unit, so g++ and nvcc translation units of one
// program agree on it (the one-definition rule holds; STYLE.md rule 11). Forced inline: the CPU kernel
// relies on these being inlined into its AVX2 build.

#if defined(__CUDACC__)
#define SIMMIM_HOST_DEVICE __host__ __device__
#else
#define SIMMIM_HOST_DEVICE
#endif

#if defined(__CUDACC__)
// nvcc's __forceinline__ is `__inline__ __attribute__((always_inline))` on the host side: the same host code.
#define SIMMIM_HOST_DEVICE_INLINE __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define SIMMIM_HOST_DEVICE_INLINE inline __attribute__((always_inline))
#else
#define SIMMIM_HOST_DEVICE_INLINE SIMMIM_HOST_DEVICE inline
#endif
