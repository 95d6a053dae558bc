#pragma once
// Division by a run-time divisor as a multiply-high and a shift (Granlund and Montgomery's method), for
// the index arithmetic of the CUDA kernels, where a true integer division costs tens of instructions.
// Host and device share the code, so the CPU tests check it exhaustively on the sizes the kernels see.
// Valid for dividends below 2^31 and divisors in [1, 2^31).

#include <cstdint>

#include "simmim/core/abi.hpp"
#include "simmim/kernels/cuda/host_device.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cuda {

struct FastDivmod {
  uint32_t divisor = 1;
  uint32_t multiplier = 1;
  uint32_t shift = 0;

  FastDivmod() = default;
  // shift = ceil(log2(d)); multiplier = floor(2^32 * (2^shift - d) / d) + 1, so that
  // n / d == (mulhi(n, multiplier) + n) >> shift for every n < 2^31.
  explicit FastDivmod(uint32_t d) : divisor(d) {
    while ((uint64_t{1} << shift) < d) ++shift;
    multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }

  SIMMIM_HOST_DEVICE_INLINE uint32_t div(uint32_t n) const {
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> 32);
    return static_cast<uint32_t>((static_cast<uint64_t>(hi) + n) >> shift);
  }

  // n / d, and n % d into `rem`.
  SIMMIM_HOST_DEVICE_INLINE uint32_t divmod(uint32_t n, uint32_t& rem) const {
    const uint32_t q = div(n);
    rem = n - q * divisor;
    return q;
  }
};

}  // namespace cuda
}  // namespace kernels
SIMMIM_NAMESPACE_END
