#pragma once
// The per-token math of the token loss kinds (kCosine, kCrossEntropy): the loss of one token and the
// coefficients of its gradient, from sums the kernel makes over the token's values. Torch-free and
// __host__ __device__, like masked_loss_math.hpp: the CPU pass (kernels/cpu/token_loss_cpu.hpp) and the
// CUDA pass (kernels/cuda/token_loss_cuda.cuh) share it.

#include <cmath>

#include "simmim/kernels/cuda/host_device.hpp"
#include "simmim/kernels/masked_loss_math.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {

// kCosine from pp = sum p^2, tt = sum t^2, pt = sum p t over a token: l = 1 - pt / (np nt) with each norm
// floored at eps (np = max(sqrt(pp), eps), as F.normalize), and dl/dp_i = a t_i + b p_i. Where p's norm
// sits below the floor, np is a constant and b is 0 (torch's clamp_min passes no gradient there).
template <typename acc_t>
SIMMIM_HOST_DEVICE_INLINE void cosine_token(acc_t pp, acc_t tt, acc_t pt, acc_t eps, acc_t& loss, acc_t& a, acc_t& b) {
  const acc_t np_raw = std::sqrt(pp), nt_raw = std::sqrt(tt);
  const acc_t np = select(np_raw > eps, np_raw, eps);
  const acc_t nt = select(nt_raw > eps, nt_raw, eps);
  const acc_t inv = acc_t(1) / (np * nt);
  const acc_t c = pt * inv;
  loss = acc_t(1) - c;
  a = -inv;
  b = select(np_raw > eps, c / (np * np), acc_t(0));
}

// Running max that lets a NaN through (so that a NaN logit makes the loss NaN, as log_softmax does).
template <typename acc_t>
SIMMIM_HOST_DEVICE_INLINE acc_t nan_max(acc_t m, acc_t z) {
  return select(z > m || z != z, z, m);
}

// kCrossEntropy of one group: lse = max + log(sum exp(z - max)); the loss is lse - z_y and
// dl/dz_k = exp(z_k - max) / sum_exp - [k == y] (= exp(z_k - lse) - [k == y]).
template <typename acc_t>
SIMMIM_HOST_DEVICE_INLINE acc_t log_sum_exp(acc_t max, acc_t sum_exp) {
  return max + std::log(sum_exp);
}

}  // namespace kernels
SIMMIM_NAMESPACE_END
