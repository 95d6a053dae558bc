#pragma once
// The fused CPU pass of the HOG target (target/hog_target.hpp): for each (image, channel) plane and row of
// cells, one sweep over its pixel rows computes the centered differences (reflected borders), the
// magnitudes and the unsigned orientation bins, and adds the magnitudes straight into the cells'
// histograms, then L2-normalizes each cell. No full-resolution temporary: a task holds a few rows and
// bins x W partial sums (L1-sized for MaskFeat's 9 bins at 224 px). Deterministic for any thread count:
// a task is one (plane, cell row), it alone writes its cells, and its additions come in a fixed order.
//
// The orientation bin without atan2: (gx, gy) is folded into the upper half plane, (u, v) = sign(gy) (gx, gy)
// (sign(-0) = -1, as atan2(-0, x < 0) = -pi folds to 0), and its bin is the number of boundaries
// phi_j = j pi / bins (j = 1 .. bins-1) it lies at or past: v cos(phi_j) - u sin(phi_j) >= 0. That is
// floor(angle * bins / pi) of the exact angle, where the tensor path rounds atan2 and the product first:
// the two can differ only for a gradient within rounding of a boundary. Exact ties (gx == +-gy, gx == 0,
// possible only at 45, 90 and 135 degrees) use exact boundary directions and go to the upper bin, as floor
// of the exact angle does. The tensor path is not consistent there: ATen's vectorized atan2 returns pi/4
// one ulp low for gx == gy > 0 (lower bin), its scalar tail rounds it up (upper bin), so with bins a
// multiple of 4 the two paths differ at every such pixel the vector loop handled (libtorch 1.13, tested).
// Bins are counted in acc_t, exact for bins <= 2^24 (hog_cells sends more to the tensor path).
//
// Plain loops the compiler vectorizes (see kernels/cpu/masked_loss_cpu.hpp), compiled a second time for
// AVX2 on x86-64 with GCC or Clang and picked at run time: the same operations in the same order (no FMA,
// no reassociated sums), so both builds give bitwise the same results. The square roots take SSE2 where
// x86-64 has it (see hog_row_sqrt). Same one-definition-rule care as masked_loss_cpu.hpp: everything lives
// in its ISA namespace.

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "simmim/kernels/cpu/masked_loss_cpu.hpp"
#include "simmim/kernels/masked_loss_math.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cpu {

// What one HOG pass needs: the contract between target/hog_target.hpp and the kernel (no torch type).
struct HogCellsParams {
  // The most bins the pass takes: bin indices are counted in float, exact up to 2^24.
  static constexpr int64_t kMaxBins = int64_t{1} << 24;

  const void* images = nullptr;  // scalar_t [B, C, H, W] with element strides `stride` (any, >= 0)
  int64_t stride[4] = {0, 0, 0, 0};
  int64_t batch = 0, channels = 0, height = 0, width = 0;  // H, W >= 2 and multiples of `cell`
  int64_t bins = 0, cell = 0;                              // >= 1
  double norm_eps = 0;                                     // each cell's histogram / max(|h|_2, norm_eps)
  void* out = nullptr;  // acc_t [B, C, bins, H / cell, W / cell], contiguous (acc_t: double for double, else float)
};

inline namespace SIMMIM_CPU_ISA_NAMESPACE {

// The direction (cos phi_j, sin phi_j) of boundary j = 1 .. bins-1, phi_j = j pi / bins, into c[j - 1],
// s[j - 1]. Only the side of a direction matters, so 45, 90 and 135 degrees (the only angles with a
// rational slope, where a gradient can lie exactly on a boundary) get exact unnormalized directions.
template <typename acc_t>
inline void hog_boundaries(int64_t bins, acc_t* c, acc_t* s) {
  constexpr double kPi = 3.14159265358979323846;
  for (int64_t j = 1; j < bins; ++j) {
    double cj = std::cos(kPi * static_cast<double>(j) / static_cast<double>(bins));
    double sj = std::sin(kPi * static_cast<double>(j) / static_cast<double>(bins));
    if (2 * j == bins) cj = 0.0, sj = 1.0;
    if (4 * j == bins) cj = 1.0, sj = 1.0;
    if (4 * j == 3 * bins) cj = -1.0, sj = 1.0;
    c[j - 1] = static_cast<acc_t>(cj);
    s[j - 1] = static_cast<acc_t>(sj);
  }
}

// (gx, gy) folded into the upper half plane: (u, v) = sign(gy) (gx, gy), with v = |gy| (+0 for -0).
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_fold(acc_t gx, acc_t gy, acc_t& u, acc_t& v) {
  u = std::copysign(acc_t(1), gy) * gx;
  v = abs_value(gy);
}

// 1 where the folded gradient (u, v) lies at or past the boundary direction (c, s), else 0.
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t hog_past(acc_t u, acc_t v, acc_t c, acc_t s) {
  return select(v * c - u * s >= acc_t(0), acc_t(1), acc_t(0));
}

// The bin of one gradient, by the pass's own steps (for tests; the pass runs them over a row at a time).
// Always in [0, bins): NaN lies past no boundary and lands in bin 0.
template <typename acc_t>
inline int64_t hog_orientation_bin(acc_t gx, acc_t gy, int64_t bins) {
  std::vector<acc_t> c(static_cast<size_t>(std::max<int64_t>(bins - 1, 0))), s(c.size());
  hog_boundaries(bins, c.data(), s.data());
  acc_t u, v, count = 0;
  hog_fold(gx, gy, u, v);
  for (int64_t j = 0; j + 1 < bins; ++j) count += hog_past(u, v, c[j], s[j]);
  return static_cast<int64_t>(count);
}

namespace detail {

template <typename scalar_t, typename acc_t>
struct HogPass {
  const HogCellsParams* P;
  const scalar_t* images;
  acc_t* out;
  const acc_t* cos_phi;  // bins - 1 boundary directions
  const acc_t* sin_phi;
  int64_t rows, cols;  // cells per column and per row
  acc_t norm_eps;
};

// Per-thread scratch: three padded rows, the row's folded gradients, squared magnitudes, magnitudes and bins
// (as acc_t counts, so every loop works on one element type), bins x W partial sums, one cell's histogram.
template <typename acc_t>
struct HogScratch {
  std::vector<acc_t> rows, u, v, sq, mag, bin, acc, hist;
  HogScratch(int64_t W, int64_t bins)
      : rows(static_cast<size_t>(3 * (W + 2))),
        u(static_cast<size_t>(W)),
        v(static_cast<size_t>(W)),
        sq(static_cast<size_t>(W)),
        mag(static_cast<size_t>(W)),
        bin(static_cast<size_t>(W)),
        acc(static_cast<size_t>(bins * W)),
        hist(static_cast<size_t>(bins)) {}
};

// Image row y of `plane` (reflected at the borders: -1 -> 1, H -> H - 2) widened into buf[1 .. W], with its
// reflected neighbours in buf[0] (pixel 1) and buf[W + 1] (pixel W - 2).
template <typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_load_row(const HogPass<scalar_t, acc_t>& g, const scalar_t* plane, int64_t y,
                                           acc_t* __restrict buf) {
  const int64_t H = g.P->height, W = g.P->width, sx = g.P->stride[3];
  y = y < 0 ? -y : (y >= H ? 2 * (H - 1) - y : y);
  const scalar_t* row = plane + y * g.P->stride[2];
  if (sx == 1) {
    for (int64_t x = 0; x < W; ++x) buf[x + 1] = widen<acc_t>(row[x]);
  } else {
    for (int64_t x = 0; x < W; ++x) buf[x + 1] = widen<acc_t>(row[x * sx]);
  }
  buf[0] = buf[2];
  buf[W + 1] = buf[W - 1];
}

// The row loops, as functions of __restrict parameters (GCC ignores __restrict on local pointers, and
// without it the alias checks between the row's arrays are too many to version the loops).

// Centered differences of row `cr` (padded, pixel x at cr[x + 1]) and of rows `pr`, `nx` above and below:
// squared magnitudes, the folded gradients, and the bins' counts reset.
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_row_gradients(const acc_t* __restrict pr, const acc_t* __restrict cr,
                                                const acc_t* __restrict nx, acc_t* __restrict sq, acc_t* __restrict u,
                                                acc_t* __restrict v, acc_t* __restrict bin, int64_t W) {
  for (int64_t x = 0; x < W; ++x) {
    const acc_t gx = cr[x + 2] - cr[x];  // [-1, 0, 1] along x, as the tensor path's conv2d
    const acc_t gy = nx[x + 1] - pr[x + 1];
    sq[x] = gx * gx + gy * gy;
    hog_fold(gx, gy, u[x], v[x]);
    bin[x] = 0;
  }
}

// mag = sqrt(sq). With math errno (GCC's default) a loop of std::sqrt stays scalar (a libm call per
// negative argument keeps errno), which was a quarter of the pass; SSE2's square root (x86-64's baseline,
// correctly rounded like std::sqrt, so the same values) does four floats or two doubles at a time.
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_row_sqrt(const acc_t* __restrict sq, acc_t* __restrict mag, int64_t W) {
  int64_t x = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same<acc_t, float>::value) {
    for (; x + 4 <= W; x += 4) _mm_storeu_ps(mag + x, _mm_sqrt_ps(_mm_loadu_ps(sq + x)));
  } else {
    static_assert(std::is_same<acc_t, double>::value, "hog_row_sqrt: float or double");
    for (; x + 2 <= W; x += 2) _mm_storeu_pd(mag + x, _mm_sqrt_pd(_mm_loadu_pd(sq + x)));
  }
#endif
  for (; x < W; ++x) mag[x] = std::sqrt(sq[x]);
}

// bin[x] += 1 where pixel x lies at or past the boundary (c, s). A pass per boundary and one per bin (below):
// kept apart, each loop is a few vector instructions per 8 pixels; a block of pixels carried through all
// boundaries in a small array was 6x slower (GCC did not keep it in registers).
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_row_count(const acc_t* __restrict u, const acc_t* __restrict v,
                                            acc_t* __restrict bin, acc_t c, acc_t s, int64_t W) {
  for (int64_t x = 0; x < W; ++x) bin[x] += hog_past(u[x], v[x], c, s);
}

// acc[x] += mag[x] where the pixel's bin is k.
template <typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_row_vote(const acc_t* __restrict bin, const acc_t* __restrict mag,
                                           acc_t* __restrict acc, acc_t k, int64_t W) {
  for (int64_t x = 0; x < W; ++x) acc[x] += select(bin[x] == k, mag[x], acc_t(0));
}

// One task: cell row `cy` of plane `task / rows` (plane = b * C + c), into its bins x cols outputs.
template <typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void hog_task(const HogPass<scalar_t, acc_t>& g, HogScratch<acc_t>& s, int64_t task) {
  const HogCellsParams& P = *g.P;
  const int64_t W = P.width, bins = P.bins, cell = P.cell;
  const int64_t plane = task / g.rows, cy = task % g.rows;
  const scalar_t* image = g.images + (plane / P.channels) * P.stride[0] + (plane % P.channels) * P.stride[1];
  std::fill(s.acc.begin(), s.acc.end(), acc_t(0));

  // Three padded rows in turn: above, current, below.
  acc_t* prev = s.rows.data();
  acc_t* cur = prev + (W + 2);
  acc_t* next = cur + (W + 2);
  const int64_t y0 = cy * cell;
  hog_load_row(g, image, y0 - 1, prev);
  hog_load_row(g, image, y0, cur);
  for (int64_t y = y0; y < y0 + cell; ++y) {
    hog_load_row(g, image, y + 1, next);
    hog_row_gradients(prev, cur, next, s.sq.data(), s.u.data(), s.v.data(), s.bin.data(), W);
    hog_row_sqrt(s.sq.data(), s.mag.data(), W);
    for (int64_t j = 0; j + 1 < bins; ++j) hog_row_count(s.u.data(), s.v.data(), s.bin.data(), g.cos_phi[j], g.sin_phi[j], W);
    for (int64_t k = 0; k < bins; ++k) hog_row_vote(s.bin.data(), s.mag.data(), s.acc.data() + k * W, static_cast<acc_t>(k), W);
    acc_t* const freed = prev;
    prev = cur;
    cur = next;
    next = freed;
  }

  // Each cell: its columns' sums in order, then / max(|h|_2, eps) (NaN stays NaN, as clamp_min).
  acc_t* h = s.hist.data();
  const int64_t plane_stride = bins * g.rows * g.cols;
  for (int64_t cx = 0; cx < g.cols; ++cx) {
    acc_t sumsq = 0;
    for (int64_t k = 0; k < bins; ++k) {
      const acc_t* a = s.acc.data() + k * W + cx * cell;
      acc_t sum = 0;
      for (int64_t i = 0; i < cell; ++i) sum += a[i];
      h[k] = sum;
      sumsq += sum * sum;
    }
    const acc_t norm = std::sqrt(sumsq);
    const acc_t den = norm < g.norm_eps ? g.norm_eps : norm;
    acc_t* o = g.out + plane * plane_stride + cy * g.cols + cx;
    for (int64_t k = 0; k < bins; ++k) o[k * g.rows * g.cols] = h[k] / den;
  }
}

// hog_task compiled for the consumer's target, and once more for AVX2.
template <typename scalar_t, typename acc_t>
void hog_task_baseline(const HogPass<scalar_t, acc_t>& g, HogScratch<acc_t>& s, int64_t task) {
  hog_task(g, s, task);
}
#if SIMMIM_CPU_DISPATCH_AVX2
template <typename scalar_t, typename acc_t>
SIMMIM_CPU_TARGET_AVX2 void hog_task_avx2(const HogPass<scalar_t, acc_t>& g, HogScratch<acc_t>& s, int64_t task) {
  hog_task(g, s, task);
}
#endif

}  // namespace detail

// The HOG pass: writes P.out (acc_t, contiguous [B, C, bins, H / cell, W / cell]). scalar_t: float, double,
// c10::Half or c10::BFloat16 (widened to float as loaded); acc_t: double for double, else float. The caller
// checks the geometry; it is asserted again here.
template <typename scalar_t, typename acc_t>
inline void hog_cells_cpu(const HogCellsParams& P) {
  const int64_t B = P.batch, C = P.channels, H = P.height, W = P.width, bins = P.bins, cell = P.cell;
  TORCH_INTERNAL_ASSERT(B >= 0 && C >= 0 && bins >= 1 && bins <= HogCellsParams::kMaxBins && cell >= 1 && H >= 2 &&
                            W >= 2 && H % cell == 0 && W % cell == 0,
                        "hog_cells_cpu: bad geometry");
  std::vector<acc_t> cos_phi(static_cast<size_t>(bins - 1)), sin_phi(static_cast<size_t>(bins - 1));
  hog_boundaries(bins, cos_phi.data(), sin_phi.data());
  detail::HogPass<scalar_t, acc_t> g;
  g.P = &P;
  g.images = static_cast<const scalar_t*>(P.images);
  g.out = static_cast<acc_t*>(P.out);
  g.cos_phi = cos_phi.data();
  g.sin_phi = sin_phi.data();
  g.rows = H / cell;
  g.cols = W / cell;
  g.norm_eps = static_cast<acc_t>(P.norm_eps);

  auto task_fn = &detail::hog_task_baseline<scalar_t, acc_t>;
#if SIMMIM_CPU_DISPATCH_AVX2
  if (use_avx2_build()) task_fn = &detail::hog_task_avx2<scalar_t, acc_t>;
#else
  use_avx2_build();
#endif

  // A task is cell * W pixels; a thread takes at least ~16 K pixels at a time.
  const int64_t tasks = B * C * g.rows;
  const int64_t grain = std::max<int64_t>(1, kChunkElements / (cell * W));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    detail::HogScratch<acc_t> s(W, bins);
    for (int64_t t = begin; t < end; ++t) task_fn(g, s, t);
  });
}

}  // inline namespace SIMMIM_CPU_ISA_NAMESPACE
}  // namespace cpu
}  // namespace kernels
SIMMIM_NAMESPACE_END
