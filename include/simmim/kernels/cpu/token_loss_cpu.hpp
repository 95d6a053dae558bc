#pragma once
// The fused CPU pass of the token loss kinds (kCosine, kCrossEntropy) on the patchified layout: for each
// token, one read of its D predictions (and its target values or class ids) gives the token's loss and,
// in the same visit, d(loss)/d(pred). Deterministic for any thread count, as the element pass: the tokens
// are cut into fixed chunks that depend on the shape only, each summed alone (double), then combined in
// index order. A token is first widened into a small contiguous buffer (it stays in L1), so any strides
// and every dtype share one loop the compiler vectorizes.
//
// Same one-definition-rule care as kernels/cpu/masked_loss_cpu.hpp: everything lives in its ISA namespace.

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// One token of kCrossEntropy: G groups of K logits z, class ids y[g * y_stride]. Returns the sum over the
// groups of lse - z_y (NaN for an id outside [0, K), counted in *bad) and writes w * scale * dl/dz.
template <bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t cross_entropy_token_cpu(const acc_t* __restrict z, const int64_t* y, int64_t y_stride,
                                                       int64_t G, int64_t K, acc_t ws, scalar_t* g, int64_t g_stride,
                                                       int64_t* bad) {
  acc_t total = 0;
  for (int64_t grp = 0; grp < G; ++grp) {
    const acc_t* zg = z + grp * K;
    acc_t m = zg[0];
    for (int64_t k = 1; k < K; ++k) m = nan_max(m, zg[k]);
    acc_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += std::exp(zg[k] - m);
    const acc_t lse = log_sum_exp(m, s);
    const int64_t label = y[grp * y_stride];
    const bool valid = label >= 0 && label < K;
    *bad += valid ? 0 : 1;
    total += valid ? lse - zg[label] : std::numeric_limits<acc_t>::quiet_NaN();
    if constexpr (kGrad) {
      scalar_t* gg = g + grp * K * g_stride;
      for (int64_t k = 0; k < K; ++k) {
        const acc_t onehot = k == label ? acc_t(1) : acc_t(0);
        gg[k * g_stride] = narrow<scalar_t>(ws * (std::exp(zg[k] - lse) - onehot));
      }
    }
  }
  return total;
}

template <typename scalar_t, LossKind K, bool kGrad>
inline int64_t token_loss_cpu(const MaskedLossParams& P) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = P.batch, D = P.channels, L = P.height;
  const int64_t tokens_per_chunk = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(D, 1));
  const int64_t chunks_per_sample = (L + tokens_per_chunk - 1) / tokens_per_chunk;
  const int64_t chunks = B * chunks_per_sample;
  std::vector<double> chunk_sums(static_cast<size_t>(chunks), 0.0);
  std::vector<int64_t> chunk_bad(static_cast<size_t>(chunks), 0);
  const auto* pred = static_cast<const scalar_t*>(P.pred);
  const auto* weights = static_cast<const acc_t*>(P.weights);
  auto* grad = static_cast<scalar_t*>(P.grad);
  const int64_t* ps = P.pred_stride;
  const int64_t* ts = P.target_stride;
  const int64_t* gs = P.grad_stride;
  const int64_t* ws = P.weight_stride;
  const int64_t G = K == LossKind::kCrossEntropy ? D / P.classes : 0;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> pbuf(static_cast<size_t>(D)), tbuf(K == LossKind::kCosine ? static_cast<size_t>(D) : 0);
    for (int64_t c = begin; c < end; ++c) {
      const int64_t b = c / chunks_per_sample;
      const int64_t l0 = (c % chunks_per_sample) * tokens_per_chunk, l1 = std::min(L, l0 + tokens_per_chunk);
      const acc_t scale = static_cast<acc_t>(P.grad_scale[b]);
      double sum = 0;
      int64_t bad = 0;
      for (int64_t l = l0; l < l1; ++l) {
        const acc_t w = weights[b * ws[0] + l * ws[1]];
        const scalar_t* p = pred + b * ps[0] + l * ps[2];
        for (int64_t d = 0; d < D; ++d) pbuf[d] = widen<acc_t>(p[d * ps[1]]);
        scalar_t* g = kGrad ? grad + b * gs[0] + l * gs[2] : nullptr;
        acc_t loss;
        if constexpr (K == LossKind::kCosine) {
          const scalar_t* t = static_cast<const scalar_t*>(P.target) + b * ts[0] + l * ts[2];
          for (int64_t d = 0; d < D; ++d) tbuf[d] = widen<acc_t>(t[d * ts[1]]);
          loss = cosine_token_cpu<kGrad>(pbuf.data(), tbuf.data(), D, static_cast<acc_t>(P.norm_eps), w * scale, g,
                                         gs[1]);
        } else {
          static_assert(K == LossKind::kCrossEntropy, "token_loss_cpu: a token kind");
          const int64_t* y = static_cast<const int64_t*>(P.target) + b * ts[0] + l * ts[2];
          loss = cross_entropy_token_cpu<kGrad>(pbuf.data(), y, ts[1], G, P.classes, w * scale, g, gs[1], &bad);
        }
        sum += static_cast<double>(loss * w);
      }
      chunk_sums[static_cast<size_t>(c)] = sum;
      chunk_bad[static_cast<size_t>(c)] = bad;
    }
  });
  int64_t bad = 0;
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t k = 0; k < chunks_per_sample; ++k) s += chunk_sums[static_cast<size_t>(b * chunks_per_sample + k)];
    P.loss_sum[b] = s;
  }
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
