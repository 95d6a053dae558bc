#pragma once
// The fused CPU masked-loss pass: one sweep over the pixels computes each sample's weighted loss sum and
// d(loss)/d(pred) together, reading the mask at patch resolution (one row of weights per patch row, never
// a pixel mask). Deterministic for any thread count: the work is cut into fixed chunks (sample, group of
// patch rows) that depend on the shape only, each summed alone, then combined in index order.
//
// The inner loops are plain lane-parallel C++ that the compiler vectorizes. Not at::vec::Vectorized: in a
// consumer's translation unit ATen's CPU_CAPABILITY_* defines are unset, so it falls back to its portable
// implementation, whose compares and blends compile to per-lane branches (measured on 32x3x192x192 fp32,
// L1, one thread: 43 ms with blendv, 12 ms branch-free, 2.5 ms here). A consumer's default flags target
// the x86-64 baseline (SSE2), so with GCC or Clang on x86-64 the per-chunk work is compiled a second time
// for AVX2 and picked at run time. Both builds make the same operations in the same order (no FMA), so
// they give bitwise the same results.
//
// One-definition rule: a translation unit compiled with -mavx2 (or -march=native) compiles the "baseline"
// templates with AVX2 too, and the linker keeps one copy of each inline function or template for the whole
// program, so a baseline translation unit could end up running that AVX2 copy on a CPU without AVX2. To
// make that impossible, every function of the pass lives in an inline namespace named after the ISA macros
// of the translation unit (SIMMIM_CPU_ISA_NAMESPACE: `isa` for the x86-64 baseline, `isa_..._avx2...` for
// wider flags): copies compiled under different -m flags have different symbols and never replace each
// other. The names are inline namespaces, so code spells them simmim::kernels::cpu::masked_loss_cpu as
// before, and the generated code is unchanged (docs/losses.md).

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "simmim/kernels/masked_loss_math.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

// The hot helpers must be inlined into the AVX2 build of their caller, or they run as baseline code.
#if defined(__GNUC__)
#define SIMMIM_CPU_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define SIMMIM_CPU_ALWAYS_INLINE inline
#endif

// GCC and Clang on x86-64 build the per-chunk work a second time for AVX2 (the function attribute
// compiles one function for a wider target; the CPU is asked at run time).
#if defined(__GNUC__) && defined(__x86_64__)
#define SIMMIM_CPU_DISPATCH_AVX2 1
#define SIMMIM_CPU_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define SIMMIM_CPU_DISPATCH_AVX2 0
#endif

// The ISA part of the names: one piece per x86 extension macro the compiler predefines for this TU.
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__SSE3__)
#define SIMMIM_ISA_P1 _sse3
#else
#define SIMMIM_ISA_P1
#endif
#if defined(__SSSE3__)
#define SIMMIM_ISA_P2 _ssse3
#else
#define SIMMIM_ISA_P2
#endif
#if defined(__SSE4_1__)
#define SIMMIM_ISA_P3 _sse41
#else
#define SIMMIM_ISA_P3
#endif
#if defined(__SSE4_2__)
#define SIMMIM_ISA_P4 _sse42
#else
#define SIMMIM_ISA_P4
#endif
#if defined(__AVX__)
#define SIMMIM_ISA_P5 _avx
#else
#define SIMMIM_ISA_P5
#endif
#if defined(__AVX2__)
#define SIMMIM_ISA_P6 _avx2
#else
#define SIMMIM_ISA_P6
#endif
#if defined(__FMA__)
#define SIMMIM_ISA_P7 _fma
#else
#define SIMMIM_ISA_P7
#endif
#if defined(__F16C__)
#define SIMMIM_ISA_P8 _f16c
#else
#define SIMMIM_ISA_P8
#endif
#if defined(__BMI2__)
#define SIMMIM_ISA_P9 _bmi2
#else
#define SIMMIM_ISA_P9
#endif
#if defined(__AVX512F__)
#define SIMMIM_ISA_P10 _avx512f
#else
#define SIMMIM_ISA_P10
#endif
#if defined(__AVX512BW__)
#define SIMMIM_ISA_P11 _avx512bw
#else
#define SIMMIM_ISA_P11
#endif
#if defined(__AVX512VL__)
#define SIMMIM_ISA_P12 _avx512vl
#else
#define SIMMIM_ISA_P12
#endif
#else  // other architectures: one build, no run-time choice
#define SIMMIM_ISA_P1
#define SIMMIM_ISA_P2
#define SIMMIM_ISA_P3
#define SIMMIM_ISA_P4
#define SIMMIM_ISA_P5
#define SIMMIM_ISA_P6
#define SIMMIM_ISA_P7
#define SIMMIM_ISA_P8
#define SIMMIM_ISA_P9
#define SIMMIM_ISA_P10
#define SIMMIM_ISA_P11
#define SIMMIM_ISA_P12
#endif
#define SIMMIM_ISA_PASTE_(a, b, c, d, e, f, g, h, i, j, k, l, m) a##b##c##d##e##f##g##h##i##j##k##l##m
#define SIMMIM_ISA_PASTE(...) SIMMIM_ISA_PASTE_(__VA_ARGS__)
#define SIMMIM_ISA_STR_(x) #x
#define SIMMIM_ISA_STR(x) SIMMIM_ISA_STR_(x)
#define SIMMIM_CPU_ISA_TOKEN                                                                                \
  SIMMIM_ISA_PASTE(isa, SIMMIM_ISA_P1, SIMMIM_ISA_P2, SIMMIM_ISA_P3, SIMMIM_ISA_P4, SIMMIM_ISA_P5, SIMMIM_ISA_P6, \
                   SIMMIM_ISA_P7, SIMMIM_ISA_P8, SIMMIM_ISA_P9, SIMMIM_ISA_P10, SIMMIM_ISA_P11, SIMMIM_ISA_P12)
// What this TU's flags are, as a string (reported by the pass, see last_cpu_pass_build()).
#define SIMMIM_CPU_ISA_NAME SIMMIM_ISA_STR(SIMMIM_CPU_ISA_TOKEN)
// The namespace the pass compiles into: e.g. `isa` (x86-64 baseline),
// `isa_sse3_ssse3_sse41_sse42_avx_avx2_fma_f16c_bmi2` (-march=haswell).
#define SIMMIM_CPU_ISA_NAMESPACE SIMMIM_CPU_ISA_TOKEN

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cpu {

// Process-wide state, outside the ISA namespace so that every translation unit shares it.

// Which build of the per-chunk work runs. kAuto: AVX2 where the compiler made one and the CPU has it,
// else the baseline. Tests and benchmarks force one to cover both on one machine.
enum class CpuIsa { kAuto, kBaseline, kAVX2 };

// The process-wide choice (not thread-safe to change while a pass runs).
inline CpuIsa& cpu_isa_override() {
  static CpuIsa isa = CpuIsa::kAuto;
  return isa;
}

// Whether this CPU can run an AVX2 build.
inline bool cpu_has_avx2() {
#if defined(__GNUC__) && defined(__x86_64__)
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
#else
  return false;
#endif
}

// Which build ran the last pass, e.g. "isa/baseline" or "isa_..._avx2.../baseline": the ISA namespace of
// the copy that ran, then the variant. For tests and benchmarks (which copy the linker kept).
inline std::atomic<const char*>& last_cpu_pass_build() {
  static std::atomic<const char*> build{""};
  return build;
}

inline namespace SIMMIM_CPU_ISA_NAMESPACE {

// The ISA namespace this translation unit compiles the pass into.
inline const char* compiled_isa() { return SIMMIM_CPU_ISA_NAME; }

// Elements per chunk. Small enough that a chunk's target block stays in L2 for the norm-pix passes and
// that B * chunks keeps every core busy, large enough that per-chunk overhead vanishes.
inline constexpr int64_t kChunkElements = int64_t{1} << 14;

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

// Sum of the weights of each sample, out[b] (double, in (i, j) order: deterministic), and in bad[b] the
// count of weights that are negative or NaN (the value check of the weights, made in the same pass: a
// negative weight would make the loss negative). `weights` is acc_t [B, h, w] with element strides `stride`.
template <typename acc_t>
inline void masked_weight_sums_cpu(const acc_t* weights, const int64_t* stride, int64_t batch, int64_t rows,
                                   int64_t cols, double* out, int64_t* bad) {
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      double s = 0;
      int64_t n_bad = 0;
      for (int64_t i = 0; i < rows; ++i) {
        const acc_t* row = weights + b * stride[0] + i * stride[1];
        for (int64_t j = 0; j < cols; ++j) {
          const acc_t w = row[j * stride[2]];
          n_bad += w >= acc_t(0) ? 0 : 1;  // NaN compares false
          s += static_cast<double>(w);
        }
      }
      out[b] = s;
      bad[b] = n_bad;
    }
  });
}

// Whether the AVX2 build exists and this CPU can run it.
inline bool cpu_avx2_available() { return SIMMIM_CPU_DISPATCH_AVX2 && cpu_has_avx2(); }

// Whether a pass about to run takes its AVX2 build: where cpu_isa_override() forces it, or (kAuto) where it
// exists and the CPU has it; an override this build or CPU cannot honour is an error. Recorded in
// last_cpu_pass_build(). Every fused CPU pass (the element kinds here, the token kinds in token_loss_cpu.hpp,
// HOG in hog_cpu.hpp) asks this once per call.
inline bool use_avx2_build() {
  const CpuIsa isa = cpu_isa_override();
  TORCH_CHECK_VALUE(isa == CpuIsa::kAuto || isa == CpuIsa::kBaseline || isa == CpuIsa::kAVX2,
                    "simmim::kernels::cpu: cpu_isa_override() must be CpuIsa::kAuto, kBaseline or kAVX2; got CpuIsa(",
                    static_cast<int>(isa), ")");
  TORCH_CHECK(isa != CpuIsa::kAVX2 || cpu_avx2_available(),
              "simmim::kernels::cpu: CpuIsa::kAVX2 forced, but this build or CPU has no AVX2 path");
  const bool avx2 = isa == CpuIsa::kAVX2 || (isa == CpuIsa::kAuto && cpu_avx2_available());
  last_cpu_pass_build().store(avx2 ? SIMMIM_CPU_ISA_NAME "/avx2" : SIMMIM_CPU_ISA_NAME "/baseline",
                              std::memory_order_relaxed);
  return avx2;
}

namespace detail {

// Loads widen to acc_t and stores narrow from it. Half gets its own inline copies of c10's conversions
// (the same bit manipulations, so the same results) with bit-mask selects, because c10's compile to a
// branch per element and stay scalar (6 ns per element for the whole pass instead of 1.2).
SIMMIM_CPU_ALWAYS_INLINE float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
SIMMIM_CPU_ALWAYS_INLINE uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

template <typename acc_t, typename scalar_t>
SIMMIM_CPU_ALWAYS_INLINE acc_t widen(scalar_t v) {
  if constexpr (std::is_same<scalar_t, c10::Half>::value) {
    const uint32_t w = static_cast<uint32_t>(v.x) << 16;
    const uint32_t sign = w & UINT32_C(0x80000000);
    const uint32_t two_w = w + w;
    const float normalized = bits_to_float((two_w >> 4) + (UINT32_C(0xE0) << 23)) * 0x1.0p-112f;
    const float denormalized = bits_to_float((two_w >> 17) | (UINT32_C(126) << 23)) - 0.5f;
    // Selects as bit masks: GCC will not if-convert a ?: whose arms it has sunk float math into (the math
    // might trap), and a branch per element does not vectorize.
    const uint32_t use_denormalized = UINT32_C(0) - static_cast<uint32_t>(two_w < (UINT32_C(1) << 27));
    return bits_to_float(sign | (float_to_bits(denormalized) & use_denormalized) |
                         (float_to_bits(normalized) & ~use_denormalized));
  } else {
    return static_cast<acc_t>(v);
  }
}

template <typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE scalar_t narrow(acc_t v) {
  if constexpr (std::is_same<scalar_t, c10::Half>::value) {
    float base = (std::abs(v) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = float_to_bits(v);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & UINT32_C(0x80000000);
    uint32_t bias = shl1_w & UINT32_C(0xFF000000);
    bias = bias < UINT32_C(0x71000000) ? UINT32_C(0x71000000) : bias;
    base = bits_to_float((bias >> 1) + UINT32_C(0x07800000)) + base;
    const uint32_t bits = float_to_bits(base);
    const uint32_t nonsign = ((bits >> 13) & UINT32_C(0x00007C00)) + (bits & UINT32_C(0x00000FFF));
    const uint32_t is_nan = UINT32_C(0) - static_cast<uint32_t>(shl1_w > UINT32_C(0xFF000000));
    const uint32_t h = (sign >> 16) | (UINT32_C(0x7E00) & is_nan) | (nonsign & ~is_nan);
    return c10::Half(static_cast<uint16_t>(h), c10::Half::from_bits());
  } else {
    return static_cast<scalar_t>(v);
  }
}

// Independent partial sums per run: one 64-byte vector of acc_t (AVX-512 wide, two AVX or four SSE
// registers), so the loops vectorize at any width and the order of the additions is the same at all.
template <typename acc_t>
inline constexpr int kLanes = static_cast<int>(64 / sizeof(acc_t));

// Element i of a run, into lane k (see run).
template <LossKind K, bool kNorm, bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE void run_element(const scalar_t* __restrict p, const scalar_t* __restrict t,
                                          scalar_t* __restrict g, const acc_t* __restrict w,
                                          const acc_t* __restrict mean, const acc_t* __restrict rstd, acc_t scale,
                                          acc_t beta, int64_t i, acc_t& lane) {
  acc_t tv = widen<acc_t>(t[i]);
  if constexpr (kNorm) tv = (tv - mean[i]) * rstd[i];
  const acc_t gv = kernels::masked_element<K>(widen<acc_t>(p[i]), tv, w[i], scale, beta, lane);
  if constexpr (kGrad) g[i] = narrow<scalar_t>(gv);
}

// One contiguous run of n elements: returns sum(w * l) and, when kGrad, writes g = w * l' * scale.
// mean/rstd are the per-element norm-pix statistics (only read when kNorm). Half and bfloat16 values are
// widened to float as they are loaded, and the gradient is rounded once as it is stored.
template <LossKind K, bool kNorm, bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE double run(const scalar_t* __restrict p, const scalar_t* __restrict t, scalar_t* __restrict g,
                                    int64_t n, const acc_t* __restrict w, const acc_t* __restrict mean,
                                    const acc_t* __restrict rstd, acc_t scale, acc_t beta) {
  constexpr int kL = kLanes<acc_t>;
  if constexpr (std::is_same<scalar_t, c10::Half>::value) {
    // Half converts faster in loops of its own than inside the fused loop (1.2 against 1.7 ns per
    // element): stage blocks through float buffers.
    constexpr int64_t kBlock = 16 * kL;
    acc_t bp[kBlock], bt[kBlock], bg[kBlock];
    double s = 0;
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      const int64_t m = std::min(kBlock, n - i0);
      for (int64_t k = 0; k < m; ++k) bp[k] = widen<acc_t>(p[i0 + k]);
      for (int64_t k = 0; k < m; ++k) bt[k] = widen<acc_t>(t[i0 + k]);
      s += run<K, kNorm, kGrad, acc_t, acc_t>(bp, bt, bg, m, w + i0, kNorm ? mean + i0 : nullptr,
                                              kNorm ? rstd + i0 : nullptr, scale, beta);
      if constexpr (kGrad) {
        for (int64_t k = 0; k < m; ++k) g[i0 + k] = narrow<scalar_t>(bg[k]);
      }
    }
    return s;
  }
  acc_t lanes[kL] = {};
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    for (int k = 0; k < kL; ++k) {
      run_element<K, kNorm, kGrad>(p, t, g, w, mean, rstd, scale, beta, i + k, lanes[k]);
    }
  }
  for (int k = 0; i + k < n; ++k) run_element<K, kNorm, kGrad>(p, t, g, w, mean, rstd, scale, beta, i + k, lanes[k]);
  double s = 0;
  for (int k = 0; k < kL; ++k) s += static_cast<double>(lanes[k]);
  return s;
}

// Sum of n contiguous values, and sum of their squared deviations from `mean`, in acc_t lanes (the
// norm-pix statistics of one segment of a cell).
template <typename acc_t, typename scalar_t>
SIMMIM_CPU_ALWAYS_INLINE double segment_sum(const scalar_t* t, int64_t n) {
  constexpr int kL = kLanes<acc_t>;
  acc_t lanes[kL] = {};
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    for (int k = 0; k < kL; ++k) lanes[k] += widen<acc_t>(t[i + k]);
  }
  for (int k = 0; i + k < n; ++k) lanes[k] += widen<acc_t>(t[i + k]);
  double s = 0;
  for (int k = 0; k < kL; ++k) s += static_cast<double>(lanes[k]);
  return s;
}

template <typename acc_t, typename scalar_t>
SIMMIM_CPU_ALWAYS_INLINE double segment_m2(const scalar_t* t, int64_t n, acc_t mean) {
  constexpr int kL = kLanes<acc_t>;
  acc_t lanes[kL] = {};
  int64_t i = 0;
  for (; i + kL <= n; i += kL) {
    for (int k = 0; k < kL; ++k) {
      const acc_t dev = widen<acc_t>(t[i + k]) - mean;
      lanes[k] += dev * dev;
    }
  }
  for (int k = 0; i + k < n; ++k) {
    const acc_t dev = widen<acc_t>(t[i + k]) - mean;
    lanes[k] += dev * dev;
  }
  double s = 0;
  for (int k = 0; k < kL; ++k) s += static_cast<double>(lanes[k]);
  return s;
}

// What every chunk of one pass shares.
template <typename scalar_t>
struct Pass {
  using acc_t = at::opmath_type<scalar_t>;
  const MaskedLossParams* P = nullptr;
  const scalar_t* pred = nullptr;
  const scalar_t* target = nullptr;
  scalar_t* grad = nullptr;
  const acc_t* weights = nullptr;
  acc_t beta = 0;
  int64_t rows = 0, cols = 0;  // of the weight grid
  int64_t rows_per_chunk = 0, chunks_per_sample = 0;
  int64_t run_len = 0, runs_per_row = 0;
  int64_t seg = 0;         // elements of one cell in one run
  int64_t cell_elems = 0;  // p * p * C
};

// One worker's per-row expansions of the patch-resolution data: an element's weight (and norm-pix mean
// and reciprocal std) by its position in a run. Within a run, cell j owns [j*seg, (j+1)*seg).
template <typename acc_t>
struct PassScratch {
  std::vector<acc_t> w_run, mean_run, rstd_run;
  std::vector<double> cell_mean, cell_m2;
};

// Sum of w * l over one chunk (sample b, patch rows [i0, i1)), writing its gradient when kGrad.
template <LossKind K, bool kNorm, bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_ALWAYS_INLINE double chunk_sum(const Pass<scalar_t>& g, PassScratch<acc_t>& s, int64_t chunk) {
  const MaskedLossParams& P = *g.P;
  const int64_t p = P.patch;
  const int64_t b = chunk / g.chunks_per_sample;
  const int64_t i0 = (chunk % g.chunks_per_sample) * g.rows_per_chunk;
  const int64_t i1 = std::min(g.rows, i0 + g.rows_per_chunk);
  const acc_t scale = kGrad ? static_cast<acc_t>(P.grad_scale[b]) : acc_t(0);
  const scalar_t* pred_b = g.pred + b * P.pred_stride[0];
  const scalar_t* target_b = g.target + b * P.target_stride[0];
  scalar_t* grad_b = kGrad ? g.grad + b * P.grad_stride[0] : nullptr;
  // The run r of image row y starts here (runs are channels in the planar layout).
  auto at_run = [&](auto* base, const int64_t* stride, int64_t y, int64_t r) {
    return base + y * stride[2] + r * stride[1];
  };
  double sum = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const acc_t* w_row = g.weights + b * P.weight_stride[0] + i * P.weight_stride[1];
    for (int64_t j = 0; j < g.cols; ++j) std::fill_n(s.w_run.data() + j * g.seg, g.seg, w_row[j * P.weight_stride[2]]);
    if constexpr (kNorm) {
      // Mean, then the sum of squared deviations (two passes over the block, which sits in cache): as
      // accurate as torch's var, unlike a one-pass sum of squares.
      std::fill(s.cell_mean.begin(), s.cell_mean.end(), 0.0);
      std::fill(s.cell_m2.begin(), s.cell_m2.end(), 0.0);
      for (int64_t y = i * p; y < (i + 1) * p; ++y) {
        for (int64_t r = 0; r < g.runs_per_row; ++r) {
          const scalar_t* t = at_run(target_b, P.target_stride, y, r);
          for (int64_t j = 0; j < g.cols; ++j) s.cell_mean[j] += segment_sum<acc_t>(t + j * g.seg, g.seg);
        }
      }
      for (int64_t j = 0; j < g.cols; ++j) s.cell_mean[j] /= static_cast<double>(g.cell_elems);
      for (int64_t y = i * p; y < (i + 1) * p; ++y) {
        for (int64_t r = 0; r < g.runs_per_row; ++r) {
          const scalar_t* t = at_run(target_b, P.target_stride, y, r);
          for (int64_t j = 0; j < g.cols; ++j) {
            s.cell_m2[j] += segment_m2<acc_t>(t + j * g.seg, g.seg, static_cast<acc_t>(s.cell_mean[j]));
          }
        }
      }
      for (int64_t j = 0; j < g.cols; ++j) {
        const double var = s.cell_m2[j] / static_cast<double>(g.cell_elems - 1);
        std::fill_n(s.mean_run.data() + j * g.seg, g.seg, static_cast<acc_t>(s.cell_mean[j]));
        std::fill_n(s.rstd_run.data() + j * g.seg, g.seg, static_cast<acc_t>(1.0 / std::sqrt(var + P.norm_eps)));
      }
    }
    for (int64_t y = i * p; y < (i + 1) * p; ++y) {
      for (int64_t r = 0; r < g.runs_per_row; ++r) {
        sum += run<K, kNorm, kGrad>(at_run(pred_b, P.pred_stride, y, r), at_run(target_b, P.target_stride, y, r),
                                    kGrad ? at_run(grad_b, P.grad_stride, y, r) : nullptr, g.run_len, s.w_run.data(),
                                    s.mean_run.data(), s.rstd_run.data(), scale, g.beta);
      }
    }
  }
  return sum;
}

// chunk_sum compiled for the consumer's target, and once more for AVX2.
template <LossKind K, bool kNorm, bool kGrad, typename scalar_t, typename acc_t>
double chunk_sum_baseline(const Pass<scalar_t>& g, PassScratch<acc_t>& s, int64_t chunk) {
  return chunk_sum<K, kNorm, kGrad>(g, s, chunk);
}
#if SIMMIM_CPU_DISPATCH_AVX2
template <LossKind K, bool kNorm, bool kGrad, typename scalar_t, typename acc_t>
SIMMIM_CPU_TARGET_AVX2 double chunk_sum_avx2(const Pass<scalar_t>& g, PassScratch<acc_t>& s, int64_t chunk) {
  return chunk_sum<K, kNorm, kGrad>(g, s, chunk);
}
#endif

template <typename scalar_t, LossKind K, bool kNorm, bool kGrad>
inline void masked_loss_cpu(const MaskedLossParams& P) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = P.batch, C = P.channels, H = P.height, W = P.width, p = P.patch;
  TORCH_INTERNAL_ASSERT(B > 0 && C > 0 && H > 0 && W > 0 && p > 0 && H % p == 0 && W % p == 0,
                        "masked_loss_cpu: bad geometry");
  const RunLayout layout = run_layout(C, W, P.pred_stride);
  TORCH_INTERNAL_ASSERT(layout != RunLayout::kStrided && run_layout(C, W, P.target_stride) == layout &&
                            (P.grad == nullptr || run_layout(C, W, P.grad_stride) == layout),
                        "masked_loss_cpu: pred, target and grad must share a planar or interleaved layout");
  const bool interleaved = layout == RunLayout::kInterleaved;
  Pass<scalar_t> g;
  g.P = &P;
  g.pred = static_cast<const scalar_t*>(P.pred);
  g.target = static_cast<const scalar_t*>(P.target);
  g.grad = static_cast<scalar_t*>(P.grad);
  g.weights = static_cast<const acc_t*>(P.weights);
  g.beta = static_cast<acc_t>(P.beta);
  g.rows = H / p;
  g.cols = W / p;
  g.rows_per_chunk = std::max<int64_t>(1, kChunkElements / (p * W * C));
  g.chunks_per_sample = (g.rows + g.rows_per_chunk - 1) / g.rows_per_chunk;
  g.run_len = interleaved ? W * C : W;
  g.runs_per_row = interleaved ? 1 : C;
  g.seg = interleaved ? p * C : p;
  g.cell_elems = p * p * C;

  auto chunk_fn = &chunk_sum_baseline<K, kNorm, kGrad, scalar_t, acc_t>;
#if SIMMIM_CPU_DISPATCH_AVX2
  if (use_avx2_build()) chunk_fn = &chunk_sum_avx2<K, kNorm, kGrad, scalar_t, acc_t>;
#else
  use_avx2_build();
#endif
  std::vector<double> partial(static_cast<size_t>(B * g.chunks_per_sample), 0.0);
  at::parallel_for(0, B * g.chunks_per_sample, 1, [&](int64_t begin, int64_t end) {
    PassScratch<acc_t> s;
    s.w_run.resize(g.run_len);
    if (kNorm) {
      s.mean_run.resize(g.run_len);
      s.rstd_run.resize(g.run_len);
      s.cell_mean.resize(g.cols);
      s.cell_m2.resize(g.cols);
    }
    for (int64_t chunk = begin; chunk < end; ++chunk) partial[chunk] = chunk_fn(g, s, chunk);
  });

  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t k = 0; k < g.chunks_per_sample; ++k) sum += partial[b * g.chunks_per_sample + k];
    P.loss_sum[b] = sum;
  }
}

}  // namespace detail

// The fused pass of MaskedLossParams (a gradient is written when P.grad is set). Requires pred, target
// and grad to share one run layout, kPlanar or kInterleaved (the dispatch layer arranges it).
template <typename scalar_t, LossKind K, bool kNorm>
inline void masked_loss_cpu(const MaskedLossParams& P) {
  if (P.grad != nullptr) {
    detail::masked_loss_cpu<scalar_t, K, kNorm, true>(P);
  } else {
    detail::masked_loss_cpu<scalar_t, K, kNorm, false>(P);
  }
}

}  // inline namespace SIMMIM_CPU_ISA_NAMESPACE
}  // namespace cpu
}  // namespace kernels
SIMMIM_NAMESPACE_END
