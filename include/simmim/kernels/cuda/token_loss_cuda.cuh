#pragma once
// The fused token pass on CUDA (kCosine, kCrossEntropy; the patchified layout viewed [B, D, L, 1]),
// torch-free like masked_loss_cuda.cuh: one warp per token reads the token's D predictions (and its target
// values or class ids), reduces them across its lanes, and writes w * l of the token into token_losses
// [B * L] (double) and, when P.grad is set, w * grad_scale[b] * dl/dpred, in the same visit. The glue sums
// token_losses per sample with ATen and finishes the loss (src/cuda/masked_loss_cuda.cpp).
//
// Deterministic: each lane sums its own elements in index order and the lanes combine in the same butterfly
// in every warp (a + b == b + a in floating point, so every lane ends with the same bits); no atomics.
// kCrossEntropy with fewer than 32 logits per id gives each lane whole groups (SimMIM's color bins:
// K = 8, G = 768); with 32 or more the warp shares each group (BEiT's visual tokens: K = 8192, G = 1).
// The per-token math is kernels/token_loss_math.hpp, shared with the CPU pass.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "simmim/kernels/cuda/masked_loss_cuda.cuh"
#include "simmim/kernels/masked_loss_params.hpp"
#include "simmim/kernels/token_loss_math.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cuda {

// What a launch of the token pass needs, from the params (host).
struct TokenPlan {
  int64_t batch = 0, tokens = 0, dim = 0;  // B, L, D
  int64_t groups = 0, classes = 0;          // kCrossEntropy: G ids per token of K = D / G logits each
  int64_t pred[3] = {0, 0, 0};              // strides of (sample, element of the token, token)
  int64_t target[3] = {0, 0, 0};            // values (kCosine) or ids (sample, group, token)
  int64_t grad[3] = {0, 0, 0};
  int64_t weight[2] = {0, 0};  // (sample, token)
  double norm_eps = 0;
  bool grad_on = false;
};

// Groups of fewer logits than a warp's lanes go one to a lane.
inline constexpr int64_t kLaneGroupClasses = 32;

inline bool plan_token_loss(const MaskedLossParams& P, TokenPlan& g) {
  if (!is_token_kind(P.kind) || P.batch <= 0 || P.height <= 0 || P.channels <= 0 || P.width != 1 ||
      P.patch != 1) {
    return false;
  }
  if (P.kind == LossKind::kCrossEntropy && (P.classes <= 0 || P.channels % P.classes != 0)) return false;
  const int64_t blocks = (P.batch * P.height + kWarps - 1) / kWarps;
  if (blocks >= (int64_t{1} << 31)) return false;
  g.batch = P.batch;
  g.tokens = P.height;
  g.dim = P.channels;
  g.classes = P.kind == LossKind::kCrossEntropy ? P.classes : 0;
  g.groups = P.kind == LossKind::kCrossEntropy ? P.channels / P.classes : 0;
  for (int d = 0; d < 3; ++d) {  // (b, c, y) of the [B, D, L, 1] view
    g.pred[d] = P.pred_stride[d];
    g.target[d] = P.target_stride[d];
    g.grad[d] = P.grad_stride[d];
  }
  g.weight[0] = P.weight_stride[0];
  g.weight[1] = P.weight_stride[1];
  g.norm_eps = P.norm_eps;
  g.grad_on = P.grad != nullptr;
  return true;
}

// The butterfly over a warp's lanes: every lane ends with the same sum (or NaN-propagating max).
template <typename acc_t>
__device__ __forceinline__ acc_t warp_all_sum(acc_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
template <typename acc_t>
__device__ __forceinline__ acc_t warp_all_max(acc_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

__device__ __forceinline__ float exp_of(float v) { return expf(v); }
__device__ __forceinline__ double exp_of(double v) { return exp(v); }
__device__ __forceinline__ float quiet_nan(float) { return __int_as_float(0x7fc00000); }
__device__ __forceinline__ double quiet_nan(double) { return __longlong_as_double(0x7ff8000000000000LL); }

// kCosine: warp w of the block handles token blockIdx.x * kWarps + w.
template <typename T, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    cosine_token_kernel(const T* __restrict__ pred, const T* __restrict__ target, T* __restrict__ grad,
                        const acc_type<T>* __restrict__ weights, const double* __restrict__ grad_scale, TokenPlan g,
                        double* __restrict__ token_losses) {
  using acc_t = acc_type<T>;
  const int64_t token = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (token >= g.batch * g.tokens) return;  // the whole warp leaves together
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t b = token / g.tokens, l = token % g.tokens;
  const T* p = pred + b * g.pred[0] + l * g.pred[2];
  const T* t = target + b * g.target[0] + l * g.target[2];
  acc_t pp = 0, tt = 0, pt = 0;
  for (int64_t d = lane; d < g.dim; d += 32) {
    const acc_t pv = to_acc(p[d * g.pred[1]]), tv = to_acc(t[d * g.target[1]]);
    pp += pv * pv;
    tt += tv * tv;
    pt += pv * tv;
  }
  pp = warp_all_sum(pp);
  tt = warp_all_sum(tt);
  pt = warp_all_sum(pt);
  acc_t loss, a, c;
  cosine_token(pp, tt, pt, static_cast<acc_t>(g.norm_eps), loss, a, c);
  const acc_t w = weights[b * g.weight[0] + l * g.weight[1]];
  if constexpr (kGrad) {
    const acc_t ws = w * static_cast<acc_t>(grad_scale[b]);
    T* out = grad + b * g.grad[0] + l * g.grad[2];
    for (int64_t d = lane; d < g.dim; d += 32) {
      const acc_t pv = to_acc(p[d * g.pred[1]]), tv = to_acc(t[d * g.target[1]]);
      out[d * g.grad[1]] = from_acc<T>(ws * (a * tv + c * pv));
    }
  }
  if (lane == 0) token_losses[token] = static_cast<double>(loss * w);
}

// kCrossEntropy of one group of K logits z[k * zs] with class id `label`, by one thread (kLane) or by the
// 32 lanes of a warp together: returns lse - z_label (NaN for an id outside [0, K); on every lane in the
// warp case) and, with kGrad, writes ws * (softmax - onehot) to out[k * os] (NaN for such an id too, so
// that code watching only the gradients for non-finite values sees it).
template <bool kLane, bool kGrad, typename T, typename acc_t>
__device__ __forceinline__ acc_t cross_entropy_group(const T* z, int64_t zs, int64_t K, int64_t label, acc_t ws,
                                                     T* out, int64_t os, int lane) {
  const int64_t k0 = kLane ? 0 : lane, step = kLane ? 1 : 32;
  acc_t m = -static_cast<acc_t>(INFINITY);
  for (int64_t k = k0; k < K; k += step) m = nan_max(m, to_acc(z[k * zs]));
  if (!kLane) m = warp_all_max(m);
  acc_t s = 0;
  for (int64_t k = k0; k < K; k += step) s += exp_of(to_acc(z[k * zs]) - m);
  if (!kLane) s = warp_all_sum(s);
  const bool valid = label >= 0 && label < K;
  const acc_t z_label = valid ? to_acc(z[label * zs]) : quiet_nan(acc_t{});
  if constexpr (kGrad) {
    const acc_t ws_over_s = ws / s;
    for (int64_t k = k0; k < K; k += step) {
      acc_t v = exp_of(to_acc(z[k * zs]) - m) * ws_over_s;
      if (k == label) v -= ws;
      out[k * os] = from_acc<T>(valid ? v : z_label);
    }
  }
  return log_sum_exp(m, s) - z_label;
}

// kCrossEntropy: warp w of the block handles token blockIdx.x * kWarps + w; its lanes take whole groups
// (kLaneGroups, K < 32) or share each group in turn.
template <typename T, bool kGrad, bool kLaneGroups>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_token_kernel(const T* __restrict__ pred, const int64_t* __restrict__ ids, T* __restrict__ grad,
                               const acc_type<T>* __restrict__ weights, const double* __restrict__ grad_scale,
                               TokenPlan g, double* __restrict__ token_losses) {
  using acc_t = acc_type<T>;
  const int64_t token = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (token >= g.batch * g.tokens) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t b = token / g.tokens, l = token % g.tokens;
  const int64_t K = g.classes, zs = g.pred[1], os = g.grad[1];
  const T* z = pred + b * g.pred[0] + l * g.pred[2];
  const int64_t* y = ids + b * g.target[0] + l * g.target[2];
  T* out = kGrad ? grad + b * g.grad[0] + l * g.grad[2] : nullptr;
  const acc_t w = weights[b * g.weight[0] + l * g.weight[1]];
  const acc_t ws = kGrad ? w * static_cast<acc_t>(grad_scale[b]) : acc_t(0);
  acc_t total = 0;
  if constexpr (kLaneGroups) {
    for (int64_t grp = lane; grp < g.groups; grp += 32) {
      total += cross_entropy_group<true, kGrad>(z + grp * K * zs, zs, K, y[grp * g.target[1]], ws,
                                                kGrad ? out + grp * K * os : out, os, lane);
    }
    total = warp_all_sum(total);
  } else {
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      total += cross_entropy_group<false, kGrad>(z + grp * K * zs, zs, K, y[grp * g.target[1]], ws,
                                                 kGrad ? out + grp * K * os : out, os, lane);
    }
  }
  if (lane == 0) token_losses[token] = static_cast<double>(total * w);
}

// The launch of the token pass for element type T: P.target holds T values (kCosine) or int64 ids
// (kCrossEntropy), P.grad_scale and token_losses live on the device.
template <typename T>
cudaError_t launch_token_loss(const MaskedLossParams& P, const TokenPlan& g, double* token_losses,
                              cudaStream_t stream) {
  using acc_t = acc_type<T>;
  const auto blocks = static_cast<unsigned>((g.batch * g.tokens + kWarps - 1) / kWarps);
  const T* pred = static_cast<const T*>(P.pred);
  T* grad = static_cast<T*>(P.grad);
  const acc_t* weights = static_cast<const acc_t*>(P.weights);
  if (P.kind == LossKind::kCosine) {
    const T* target = static_cast<const T*>(P.target);
    if (g.grad_on) {
      cosine_token_kernel<T, true><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, P.grad_scale, g,
                                                                    token_losses);
    } else {
      cosine_token_kernel<T, false><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, P.grad_scale, g,
                                                                     token_losses);
    }
  } else {
    const auto* ids = static_cast<const int64_t*>(P.target);
    const bool lane_groups = g.classes < kLaneGroupClasses;
    if (g.grad_on && lane_groups) {
      cross_entropy_token_kernel<T, true, true>
          <<<blocks, kThreads, 0, stream>>>(pred, ids, grad, weights, P.grad_scale, g, token_losses);
    } else if (g.grad_on) {
      cross_entropy_token_kernel<T, true, false>
          <<<blocks, kThreads, 0, stream>>>(pred, ids, grad, weights, P.grad_scale, g, token_losses);
    } else if (lane_groups) {
      cross_entropy_token_kernel<T, false, true>
          <<<blocks, kThreads, 0, stream>>>(pred, ids, grad, weights, P.grad_scale, g, token_losses);
    } else {
      cross_entropy_token_kernel<T, false, false>
          <<<blocks, kThreads, 0, stream>>>(pred, ids, grad, weights, P.grad_scale, g, token_losses);
    }
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
SIMMIM_NAMESPACE_END
