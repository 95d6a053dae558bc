#pragma once
// The fused CPU masked-loss pass: one sweep over the pixels computes each sample's weighted loss sum and
// d(loss)/d(pred) together, reading the mask at patch resolution (one row of weights per patch row, never
// a pixel mask). Deterministic for any thread count: the work is cut into fixed chunks (sample, group of
// patch rows) that depend on the shape only, each summed alone, then combined in index order.

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cpu {

// Elements per chunk. Small enough that a chunk's target block stays in L2 for the norm-pix passes and
// that B * chunks keeps every core busy, large enough that per-chunk overhead vanishes.
inline constexpr int64_t kChunkElements = int64_t{1} << 14;
// Elements converted per block when scalar_t is half or bfloat16 (stack buffers).
inline constexpr int64_t kConvertBlock = 256;

// How the (c, x) elements of one image row lie in memory; the kernel walks them as contiguous runs.
enum class RunLayout {
  kInterleaved,  // c stride 1, x stride C: one run of W*C per row (channels-last; the patchified view)
  kPlanar,       // x stride 1: one run of W per channel (NCHW)
  kStrided,      // neither: the dispatch layer copies to one of the above first
};

// `stride` in (b, c, y, x) order. Strides of size-1 dimensions do not matter.
inline RunLayout run_layout(int64_t channels, int64_t width, const int64_t* stride) {
  const bool c_unit = channels == 1 || stride[1] == 1;
  const bool x_after_c = width == 1 || stride[3] == channels;
  if (c_unit && x_after_c) return RunLayout::kInterleaved;
  // Planar runs of one element (W == 1, C > 1) would be all overhead: report them as strided.
  if (width > 1 && stride[3] == 1) return RunLayout::kPlanar;
  return RunLayout::kStrided;
}

namespace detail {

template <typename acc_t>
using Vec = at::vec::Vectorized<acc_t>;

template <typename acc_t>
struct LossConstants {
  Vec<acc_t> zero{acc_t(0)};
  Vec<acc_t> one{acc_t(1)};
  Vec<acc_t> minus_one{acc_t(-1)};
  Vec<acc_t> two{acc_t(2)};
  Vec<acc_t> half{acc_t(0.5)};
  Vec<acc_t> beta;
  Vec<acc_t> minus_beta;
  Vec<acc_t> half_beta;
  explicit LossConstants(double b) : beta(acc_t(b)), minus_beta(acc_t(-b)), half_beta(acc_t(0.5 * b)) {}
};

// l(d) and l'(d), written as torch writes them so that ties and NaN behave the same: the loss of a NaN is
// NaN; the L1 slope of a NaN is 0 (torch's sgn), the L2 and smooth-L1 slopes are NaN.
template <LossKind K, typename acc_t>
inline void loss_and_slope(const Vec<acc_t>& d, const LossConstants<acc_t>& c, Vec<acc_t>& l, Vec<acc_t>& dl) {
  using V = Vec<acc_t>;
  if constexpr (K == LossKind::kL1) {
    l = d.abs();
    dl = V::blendv(c.zero, c.one, c.zero < d) - V::blendv(c.zero, c.one, d < c.zero);
  } else if constexpr (K == LossKind::kL2) {
    l = d * d;
    dl = c.two * d;
  } else {
    static_assert(K == LossKind::kSmoothL1, "loss_and_slope: unhandled LossKind");
    const V z = d.abs();
    l = V::blendv(z - c.half_beta, c.half * z * z / c.beta, z < c.beta);
    dl = V::blendv(V::blendv(d / c.beta, c.one, d > c.beta), c.minus_one, d < c.minus_beta);
  }
}

// One contiguous run of n elements already in acc_t: returns sum(w * l) and, when g is set, writes
// g = w * l' * scale. mean/rstd are the per-element norm-pix statistics (only read when kNorm).
template <LossKind K, bool kNorm, typename acc_t>
inline double run_acc(const acc_t* p, const acc_t* t, acc_t* g, int64_t n, const acc_t* w, const acc_t* mean,
                      const acc_t* rstd, acc_t scale, const LossConstants<acc_t>& c) {
  using V = Vec<acc_t>;
  constexpr int64_t kLanes = V::size();
  const V vscale(scale);
  V sum(acc_t(0));
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    V vt = V::loadu(t + i);
    if constexpr (kNorm) vt = (vt - V::loadu(mean + i)) * V::loadu(rstd + i);
    const V vw = V::loadu(w + i);
    V l, dl;
    loss_and_slope<K>(V::loadu(p + i) - vt, c, l, dl);
    sum = sum + l * vw;
    if (g != nullptr) (dl * vw * vscale).store(g + i);
  }
  if (i < n) {
    // The missing lanes load as zeros: d = 0 and w = 0 add exactly nothing.
    const int64_t r = n - i;
    V vt = V::loadu(t + i, r);
    if constexpr (kNorm) vt = (vt - V::loadu(mean + i, r)) * V::loadu(rstd + i, r);
    const V vw = V::loadu(w + i, r);
    V l, dl;
    loss_and_slope<K>(V::loadu(p + i, r) - vt, c, l, dl);
    sum = sum + l * vw;
    if (g != nullptr) (dl * vw * vscale).store(g + i, static_cast<int>(r));
  }
  acc_t lanes[kLanes];
  sum.store(lanes);
  double s = 0;
  for (int64_t k = 0; k < kLanes; ++k) s += static_cast<double>(lanes[k]);
  return s;
}

// A run in scalar_t: float and double go straight to run_acc; half and bfloat16 are widened to float in
// stack blocks (accumulation stays in float, the gradient is rounded once on the way out).
template <LossKind K, bool kNorm, typename scalar_t, typename acc_t>
inline double run(const scalar_t* p, const scalar_t* t, scalar_t* g, int64_t n, const acc_t* w, const acc_t* mean,
                  const acc_t* rstd, acc_t scale, const LossConstants<acc_t>& c) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    return run_acc<K, kNorm>(p, t, g, n, w, mean, rstd, scale, c);
  } else {
    acc_t bp[kConvertBlock], bt[kConvertBlock], bg[kConvertBlock];
    double s = 0;
    for (int64_t i0 = 0; i0 < n; i0 += kConvertBlock) {
      const int64_t m = std::min(kConvertBlock, n - i0);
      for (int64_t k = 0; k < m; ++k) {
        bp[k] = static_cast<acc_t>(p[i0 + k]);
        bt[k] = static_cast<acc_t>(t[i0 + k]);
      }
      s += run_acc<K, kNorm>(bp, bt, g != nullptr ? bg : nullptr, m, w + i0, kNorm ? mean + i0 : nullptr,
                             kNorm ? rstd + i0 : nullptr, scale, c);
      if (g != nullptr) {
        for (int64_t k = 0; k < m; ++k) g[i0 + k] = static_cast<scalar_t>(bg[k]);
      }
    }
    return s;
  }
}

}  // namespace detail

// Sum of the weights of each sample, out[b] (double, in (i, j) order: deterministic).
// `weights` is acc_t [B, h, w] with element strides `stride`.
template <typename acc_t>
inline void masked_weight_sums_cpu(const acc_t* weights, const int64_t* stride, int64_t batch, int64_t rows,
                                   int64_t cols, double* out) {
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double s = 0;
      for (int64_t i = 0; i < rows; ++i) {
        const acc_t* row = weights + b * stride[0] + i * stride[1];
        for (int64_t j = 0; j < cols; ++j) s += static_cast<double>(row[j * stride[2]]);
      }
      out[b] = s;
    }
  });
}

// The fused pass of MaskedLossParams. Requires pred, target and grad to share one run layout, kPlanar or
// kInterleaved (the dispatch layer arranges it).
template <typename scalar_t, LossKind K, bool kNorm>
inline void masked_loss_cpu(const MaskedLossParams& P) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = P.batch, C = P.channels, H = P.height, W = P.width, p = P.patch;
  TORCH_INTERNAL_ASSERT(B > 0 && C > 0 && H > 0 && W > 0 && p > 0 && H % p == 0 && W % p == 0,
                        "masked_loss_cpu: bad geometry");
  const int64_t rows = H / p, cols = W / p;
  const RunLayout layout = run_layout(C, W, P.pred_stride);
  TORCH_INTERNAL_ASSERT(layout != RunLayout::kStrided && run_layout(C, W, P.target_stride) == layout &&
                            (P.grad == nullptr || run_layout(C, W, P.grad_stride) == layout),
                        "masked_loss_cpu: pred, target and grad must share a planar or interleaved layout");
  const bool interleaved = layout == RunLayout::kInterleaved;
  const int64_t run_len = interleaved ? W * C : W;
  const int64_t runs_per_row = interleaved ? 1 : C;
  const int64_t cell_elems = p * p * C;

  const auto* pred = static_cast<const scalar_t*>(P.pred);
  const auto* target = static_cast<const scalar_t*>(P.target);
  auto* grad = static_cast<scalar_t*>(P.grad);
  const auto* weights = static_cast<const acc_t*>(P.weights);

  const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkElements / (p * W * C));
  const int64_t chunks_per_sample = (rows + rows_per_chunk - 1) / rows_per_chunk;
  std::vector<double> partial(static_cast<size_t>(B * chunks_per_sample), 0.0);
  const detail::LossConstants<acc_t> consts(P.beta);

  at::parallel_for(0, B * chunks_per_sample, 1, [&](int64_t begin, int64_t end) {
    // Per-row expansions of the patch-resolution data: an element's weight (and norm-pix mean and
    // reciprocal std) by its position in a run.
    std::vector<acc_t> w_run(run_len), mean_run(kNorm ? run_len : 0), rstd_run(kNorm ? run_len : 0);
    std::vector<int64_t> cell_of(kNorm ? run_len : 0);
    std::vector<double> cell_sum(kNorm ? cols : 0), cell_m2(kNorm ? cols : 0);
    if constexpr (kNorm) {
      for (int64_t k = 0; k < run_len; ++k) cell_of[k] = (interleaved ? k / C : k) / p;
    }
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      const int64_t b = chunk / chunks_per_sample;
      const int64_t i0 = (chunk % chunks_per_sample) * rows_per_chunk;
      const int64_t i1 = std::min(rows, i0 + rows_per_chunk);
      const acc_t scale = grad != nullptr ? static_cast<acc_t>(P.grad_scale[b]) : acc_t(0);
      const scalar_t* pred_b = pred + b * P.pred_stride[0];
      const scalar_t* target_b = target + b * P.target_stride[0];
      scalar_t* grad_b = grad != nullptr ? grad + b * P.grad_stride[0] : nullptr;
      // The run r of image row y starts here (runs are channels in the planar layout).
      auto at_run = [&](auto* base, const int64_t* stride, int64_t y, int64_t r) {
        return base + y * stride[2] + r * stride[1];
      };
      double chunk_sum = 0;
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t* w_row = weights + b * P.weight_stride[0] + i * P.weight_stride[1];
        for (int64_t x = 0; x < W; ++x) {
          const acc_t wx = w_row[(x / p) * P.weight_stride[2]];
          if (interleaved) {
            std::fill_n(w_run.data() + x * C, C, wx);
          } else {
            w_run[x] = wx;
          }
        }
        if constexpr (kNorm) {
          // Mean, then the sum of squared deviations (two passes over the block, which sits in cache):
          // as accurate as torch's var, unlike a one-pass sum of squares.
          std::fill(cell_sum.begin(), cell_sum.end(), 0.0);
          std::fill(cell_m2.begin(), cell_m2.end(), 0.0);
          for (int64_t y = i * p; y < (i + 1) * p; ++y) {
            for (int64_t r = 0; r < runs_per_row; ++r) {
              const scalar_t* t = at_run(target_b, P.target_stride, y, r);
              for (int64_t k = 0; k < run_len; ++k) cell_sum[cell_of[k]] += static_cast<double>(t[k]);
            }
          }
          for (int64_t j = 0; j < cols; ++j) cell_sum[j] /= static_cast<double>(cell_elems);
          for (int64_t y = i * p; y < (i + 1) * p; ++y) {
            for (int64_t r = 0; r < runs_per_row; ++r) {
              const scalar_t* t = at_run(target_b, P.target_stride, y, r);
              for (int64_t k = 0; k < run_len; ++k) {
                const double dev = static_cast<double>(t[k]) - cell_sum[cell_of[k]];
                cell_m2[cell_of[k]] += dev * dev;
              }
            }
          }
          for (int64_t k = 0; k < run_len; ++k) {
            const int64_t j = cell_of[k];
            const double var = cell_m2[j] / static_cast<double>(cell_elems - 1);
            mean_run[k] = static_cast<acc_t>(cell_sum[j]);
            rstd_run[k] = static_cast<acc_t>(1.0 / std::sqrt(var + P.norm_eps));
          }
        }
        for (int64_t y = i * p; y < (i + 1) * p; ++y) {
          for (int64_t r = 0; r < runs_per_row; ++r) {
            chunk_sum += detail::run<K, kNorm>(
                at_run(pred_b, P.pred_stride, y, r), at_run(target_b, P.target_stride, y, r),
                grad_b != nullptr ? at_run(grad_b, P.grad_stride, y, r) : nullptr, run_len, w_run.data(),
                mean_run.data(), rstd_run.data(), scale, consts);
          }
        }
      }
      partial[chunk] = chunk_sum;
    }
  });

  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t k = 0; k < chunks_per_sample; ++k) s += partial[b * chunks_per_sample + k];
    P.loss_sum[b] = s;
  }
}

}  // namespace cpu
}  // namespace kernels
SIMMIM_NAMESPACE_END
