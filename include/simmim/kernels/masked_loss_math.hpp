#pragma once
// The per-element math of the fused masked losses, shared by the CPU kernel (kernels/cpu) and the CUDA
// kernel (kernels/cuda): l(d), l'(d) and the branch-free select they use. One definition, so the CPU tests
// exercise the very code the GPU runs, and both agree with torch on ties and NaN. Torch-free.

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "simmim/kernels/cuda/host_device.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {

// c ? a : b as bit masks. GCC sinks the float math that only one arm of a ?: uses into a branch, then
// will not if-convert it (the math might trap), and a branch per element does not vectorize.
template <typename T>
SIMMIM_HOST_DEVICE_INLINE T select(bool c, T a, T b) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(Bits), "select: float or double");
  Bits ua, ub;
  std::memcpy(&ua, &a, sizeof(T));
  std::memcpy(&ub, &b, sizeof(T));
  const Bits m = Bits(0) - static_cast<Bits>(c);
  const Bits r = (ua & m) | (ub & ~m);
  T out;
  std::memcpy(&out, &r, sizeof(T));
  return out;
}

// |v| by clearing the sign bit: NaN stays NaN, -0 becomes +0, as std::abs (which nvcc has no device
// overload of in every host library).
template <typename T>
SIMMIM_HOST_DEVICE_INLINE T abs_value(T v) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  static_assert(sizeof(T) == sizeof(Bits), "abs_value: float or double");
  Bits u;
  std::memcpy(&u, &v, sizeof(T));
  u &= ~(Bits(1) << (8 * sizeof(T) - 1));
  T out;
  std::memcpy(&out, &u, sizeof(T));
  return out;
}

// l(d) and l'(d) as torch computes them, so that ties and NaN agree: the loss of a NaN is NaN; the L1
// slope of a NaN is 0 (torch's sgn), the L2 and smooth-L1 slopes are NaN.
template <LossKind K, typename acc_t>
SIMMIM_HOST_DEVICE_INLINE void loss_and_slope(acc_t d, acc_t beta, acc_t& l, acc_t& dl) {
  if constexpr (K == LossKind::kL1) {
    l = abs_value(d);
    dl = static_cast<acc_t>(d > acc_t(0)) - static_cast<acc_t>(d < acc_t(0));
  } else if constexpr (K == LossKind::kL2) {
    l = d * d;
    dl = acc_t(2) * d;
  } else {
    static_assert(K == LossKind::kSmoothL1, "loss_and_slope: unhandled LossKind");
    const acc_t z = abs_value(d);
    l = select(z < beta, acc_t(0.5) * z * z / beta, z - acc_t(0.5) * beta);
    dl = select(d <= -beta, acc_t(-1), select(d >= beta, acc_t(1), d / beta));
  }
}

// One element: adds w * l(p - t) to `sum` and returns w * l'(p - t) * scale (the gradient).
template <LossKind K, typename acc_t>
SIMMIM_HOST_DEVICE_INLINE acc_t masked_element(acc_t p, acc_t t, acc_t w, acc_t scale, acc_t beta, acc_t& sum) {
  acc_t l, dl;
  loss_and_slope<K>(p - t, beta, l, dl);
  sum += l * w;
  return dl * w * scale;
}

}  // namespace kernels
SIMMIM_NAMESPACE_END
