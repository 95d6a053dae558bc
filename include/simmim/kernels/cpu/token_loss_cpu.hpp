#pragma once
// The fused CPU pass of the token loss kinds (kCosine, kCrossEntropy) on the patchified layout: for each
// token, one read of its D predictions (and its target values or class ids) gives the token's loss and,
// in the same visit, d(loss)/d(pred). Deterministic for any thread count, as the element pass: the tokens
// are cut into fixed chunks that depend on the shape only, each summed alone (double), then combined in
// index order. A token is first widened into a small contiguous buffer (it stays in L1), so any strides
// and every dtype share one loop the compiler vectorizes. Like the element pass, each chunk is compiled
// for the consumer's target and once more for AVX2, chosen at run time (use_avx2_build()).
//
// Same one-definition-rule care as kernels/cpu/masked_loss_cpu.hpp: everything lives in its ISA namespace.

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "simmim/kernels/cpu/masked_loss_cpu.hpp"
#include "simmim/kernels/masked_loss_params.hpp"
#include "simmim/kernels/token_loss_math.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cpu {
inline namespace SIMMIM_CPU_ISA_NAMESPACE {
namespace detail {

// Sum of a[i] * b[i] in 8 lanes, then the lanes in order: a fixed order at every vector width.
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t lane_dot(const acc_t* __restrict a, const acc_t* __restrict b, int64_t n) {
  constexpr int kL = 8;
  acc_t lanes[kL] = {};
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    for (int k = 0; k < kL; ++k) lanes[k] += a[i + k] * b[i + k];
  }
  for (int k = 0; i + k < n; ++k) lanes[k] += a[i + k] * b[i + k];
  acc_t s = 0;
  for (int k = 0; k < kL; ++k) s += lanes[k];
  return s;
}

// Sum and NaN-propagating max of a[0..n) in 8 lanes, then the lanes in order (fixed order; vectorizes
// where a running float reduction cannot, as its additions may not be reordered).
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t lane_sum(const acc_t* __restrict a, int64_t n) {
  constexpr int kL = 8;
  acc_t lanes[kL] = {};
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    for (int k = 0; k < kL; ++k) lanes[k] += a[i + k];
  }
  for (int k = 0; i + k < n; ++k) lanes[k] += a[i + k];
  acc_t s = 0;
  for (int k = 0; k < kL; ++k) s += lanes[k];
  return s;
}
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t lane_max(const acc_t* __restrict a, int64_t n) {
  constexpr int kL = 8;
  acc_t lanes[kL];
  for (int k = 0; k < kL; ++k) lanes[k] = a[0];
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    for (int k = 0; k < kL; ++k) lanes[k] = nan_max(lanes[k], a[i + k]);
  }
  for (int k = 0; i + k < n; ++k) lanes[k] = nan_max(lanes[k], a[i + k]);
  acc_t m = lanes[0];
  for (int k = 1; k < kL; ++k) m = nan_max(m, lanes[k]);
  return m;
}

// One token of kCosine: returns l and, when g is set, writes w * scale * dl/dp (pred's dtype).
template <bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t cosine_token_cpu(const acc_t* __restrict p, const acc_t* __restrict t, int64_t D,
                                                acc_t eps, acc_t ws, scalar_t* g, int64_t g_stride) {
  acc_t l, a, b;
  cosine_token(lane_dot(p, p, D), lane_dot(t, t, D), lane_dot(p, t, D), eps, l, a, b);
  if constexpr (kGrad) {
    for (int64_t d = 0; d < D; ++d) g[d * g_stride] = narrow<scalar_t>(ws * (a * t[d] + b * p[d]));
  }
  return l;
}

// exp(x) for x <= 0 (the logits minus their max), in plain float arithmetic the compiler vectorizes at
// the x86-64 baseline (std::exp stays one libm call per element: the pass would spend most of its time
// there). Range reduction x = n ln2 + r with n rounded to nearest by adding 1.5 * 2^23, Cephes' degree-6
// polynomial on r, and 2^n put into the exponent bits: within 2 ulp of std::exp; x below -87 (e^x under
// float's normal range) gives about 1e-38 instead of a subnormal, and NaN stays NaN. Doubles use std::exp.
SIMMIM_CPU_ALWAYS_INLINE float exp_nonpositive(float x) {
  const float xc = select(x < -87.0f, -87.0f, x);
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t scale_bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &scale_bits, sizeof(scale));
  return select(x != x, x, p * scale);
}
SIMMIM_CPU_ALWAYS_INLINE double exp_nonpositive(double x) { return std::exp(x); }

// Below this, a group's sum of exp(z - token max) has lost its precision (or underflowed): the group is
// redone with its own max.
template <typename acc_t>
inline constexpr acc_t kTokenShiftMinSum = acc_t(1.0 / (1ULL << 40));

// One token of kCrossEntropy: G groups of K logits z, class ids y[g * y_stride]. Returns the sum over the
// groups of lse - z_y (NaN for an id outside [0, K), counted in *bad) and writes w * scale * dl/dz; e (D
// values) is scratch, and group_scale (G values). lse = M + log(sum exp(z - M)) holds for any shift M:
// the token's max M lets the max and the exponentials run in loops over all D = G * K logits, which
// vectorize whatever K is (SimMIM's 8 color bins as well as BEiT's 8192 visual tokens); only the sums and
// the labels run per group. A group whose logits sit so far below M that its sum falls under
// kTokenShiftMinSum, or holds a NaN or an infinity (then M or the sums are NaN), is redone with its own
// max, as log_softmax does: the same loss and NaN propagation group by group.
template <bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t cross_entropy_token_cpu(const acc_t* __restrict z, acc_t* __restrict e,
                                                       acc_t* __restrict group_scale, const int64_t* y,
                                                       int64_t y_stride, int64_t G, int64_t K, acc_t ws, scalar_t* g,
                                                       int64_t g_stride, int64_t* bad) {
  const int64_t D = G * K;
  const acc_t M = lane_max(z, D);
  for (int64_t d = 0; d < D; ++d) e[d] = exp_nonpositive(z[d] - M);
  acc_t total = 0;
  for (int64_t grp = 0; grp < G; ++grp) {
    const acc_t* zg = z + grp * K;
    acc_t* eg = e + grp * K;
    acc_t shift = M;
    acc_t s = lane_sum(eg, K);
    if (!(s >= kTokenShiftMinSum<acc_t>)) {
      shift = lane_max(zg, K);
      for (int64_t k = 0; k < K; ++k) eg[k] = exp_nonpositive(zg[k] - shift);
      s = lane_sum(eg, K);
    }
    const int64_t label = y[grp * y_stride];
    const bool valid = label >= 0 && label < K;
    *bad += valid ? 0 : 1;
    total += (std::log(s) + shift) - (valid ? zg[label] : std::numeric_limits<acc_t>::quiet_NaN());
    group_scale[grp] = ws / s;
  }
  if constexpr (kGrad) {
    // softmax * ws, minus ws at the label.
    for (int64_t grp = 0; grp < G; ++grp) {
      acc_t* eg = e + grp * K;
      const acc_t f = group_scale[grp];
      for (int64_t k = 0; k < K; ++k) eg[k] *= f;
      const int64_t label = y[grp * y_stride];
      if (label >= 0 && label < K) eg[label] -= ws;
    }
    if (g_stride == 1) {
      for (int64_t d = 0; d < D; ++d) g[d] = narrow<scalar_t>(e[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) g[d * g_stride] = narrow<scalar_t>(e[d]);
    }
  }
  return total;
}

// What every chunk of one token pass shares: tokens are cut into fixed chunks (per sample) that depend on
// the shape only, so the sums are the same for any thread count.
template <typename scalar_t>
struct TokenPass {
  const MaskedLossParams* P = nullptr;
  int64_t tokens_per_chunk = 1, chunks_per_sample = 1;
  int64_t groups = 0;  // kCrossEntropy: ids per token
};

template <typename acc_t>
struct TokenScratch {
  std::vector<acc_t> pbuf, tbuf, group_scale;  // tbuf: kCosine's target values, kCrossEntropy's exponentials
};

// The sum of w * l over one chunk of tokens (its gradient written when kGrad); ids outside [0, K) counted.
template <LossKind K, bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE double token_chunk(const TokenPass<scalar_t>& tp, TokenScratch<acc_t>& s, int64_t chunk,
                                            int64_t* bad) {
  const MaskedLossParams& P = *tp.P;
  const int64_t D = P.channels, L = P.height;
  const int64_t b = chunk / tp.chunks_per_sample;
  const int64_t l0 = (chunk % tp.chunks_per_sample) * tp.tokens_per_chunk;
  const int64_t l1 = std::min(L, l0 + tp.tokens_per_chunk);
  const auto* pred = static_cast<const scalar_t*>(P.pred);
  const auto* weights = static_cast<const acc_t*>(P.weights);
  auto* grad = static_cast<scalar_t*>(P.grad);
  const int64_t* ps = P.pred_stride;
  const int64_t* ts = P.target_stride;
  const int64_t* gs = P.grad_stride;
  const int64_t* ws = P.weight_stride;
  const acc_t scale = static_cast<acc_t>(P.grad_scale[b]);
  acc_t* pbuf = s.pbuf.data();
  double sum = 0;
  for (int64_t l = l0; l < l1; ++l) {
    const acc_t w = weights[b * ws[0] + l * ws[1]];
    const scalar_t* p = pred + b * ps[0] + l * ps[2];
    if (ps[1] == 1) {
      for (int64_t d = 0; d < D; ++d) pbuf[d] = widen<acc_t>(p[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) pbuf[d] = widen<acc_t>(p[d * ps[1]]);
    }
    scalar_t* g = kGrad ? grad + b * gs[0] + l * gs[2] : nullptr;
    acc_t loss;
    if constexpr (K == LossKind::kCosine) {
      const scalar_t* t = static_cast<const scalar_t*>(P.target) + b * ts[0] + l * ts[2];
      acc_t* tbuf = s.tbuf.data();
      for (int64_t d = 0; d < D; ++d) tbuf[d] = widen<acc_t>(t[d * ts[1]]);
      loss = cosine_token_cpu<kGrad>(pbuf, tbuf, D, static_cast<acc_t>(P.norm_eps), w * scale, g, gs[1]);
    } else {
      static_assert(K == LossKind::kCrossEntropy, "token_chunk: a token kind");
      const int64_t* y = static_cast<const int64_t*>(P.target) + b * ts[0] + l * ts[2];
      loss = cross_entropy_token_cpu<kGrad>(pbuf, s.tbuf.data(), s.group_scale.data(), y, ts[1], tp.groups,
                                            P.classes, w * scale, g, gs[1], bad);
    }
    sum += static_cast<double>(loss * w);
  }
  return sum;
}

// token_chunk compiled for the consumer's target, and once more for AVX2 (as masked_loss_cpu.hpp's chunks).
template <LossKind K, bool kGrad, typename scalar_t, typename acc_t>
double token_chunk_baseline(const TokenPass<scalar_t>& tp, TokenScratch<acc_t>& s, int64_t chunk, int64_t* bad) {
  return token_chunk<K, kGrad>(tp, s, chunk, bad);
}
#if SIMMIM_CPU_DISPATCH_AVX2
template <LossKind K, bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_TARGET_AVX2 double token_chunk_avx2(const TokenPass<scalar_t>& tp, TokenScratch<acc_t>& s, int64_t chunk,
                                               int64_t* bad) {
  return token_chunk<K, kGrad>(tp, s, chunk, bad);
}
#endif

template <typename scalar_t, LossKind K, bool kGrad>
inline int64_t token_loss_cpu(const MaskedLossParams& P) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = P.batch, D = P.channels, L = P.height;
  TokenPass<scalar_t> tp;
  tp.P = &P;
  tp.tokens_per_chunk = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(D, 1));
  tp.chunks_per_sample = (L + tp.tokens_per_chunk - 1) / tp.tokens_per_chunk;
  tp.groups = K == LossKind::kCrossEntropy ? D / P.classes : 0;
  const int64_t chunks = B * tp.chunks_per_sample;
  auto chunk_fn = &token_chunk_baseline<K, kGrad, scalar_t, acc_t>;
#if SIMMIM_CPU_DISPATCH_AVX2
  if (use_avx2_build()) chunk_fn = &token_chunk_avx2<K, kGrad, scalar_t, acc_t>;
#else
  use_avx2_build();
#endif
  std::vector<double> chunk_sums(static_cast<size_t>(chunks), 0.0);
  std::vector<int64_t> chunk_bad(static_cast<size_t>(chunks), 0);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    TokenScratch<acc_t> s;
    s.pbuf.resize(static_cast<size_t>(D));
    s.tbuf.resize(static_cast<size_t>(D));
    s.group_scale.resize(static_cast<size_t>(tp.groups));
    for (int64_t c = begin; c < end; ++c) chunk_sums[static_cast<size_t>(c)] = chunk_fn(tp, s, c, &chunk_bad[static_cast<size_t>(c)]);
  });
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t k = 0; k < tp.chunks_per_sample; ++k) sum += chunk_sums[static_cast<size_t>(b * tp.chunks_per_sample + k)];
    P.loss_sum[b] = sum;
  }
  int64_t bad = 0;
  for (const int64_t n : chunk_bad) bad += n;
  return bad;
}

}  // namespace detail

// The fused token pass: writes P.loss_sum[b] (the weighted sum of the token losses of sample b) and, when
// P.grad is set, w * scale[b] * dl/dpred. `P.target` holds scalar_t values (kCosine) or int64 class ids
// (kCrossEntropy, viewed [B, G, L, 1]). Returns the number of class ids outside [0, classes) (their
// tokens' losses are NaN); the caller turns a nonzero count into an error.
template <typename scalar_t, LossKind K>
inline int64_t token_loss_cpu(const MaskedLossParams& P) {
  static_assert(is_token_kind(K), "token_loss_cpu: kCosine or kCrossEntropy (the element kinds run masked_loss_cpu)");
  return P.grad != nullptr ? detail::token_loss_cpu<scalar_t, K, true>(P)
                           : detail::token_loss_cpu<scalar_t, K, false>(P);
}

}  // inline namespace SIMMIM_CPU_ISA_NAMESPACE
}  // namespace cpu
}  // namespace kernels
SIMMIM_NAMESPACE_END
