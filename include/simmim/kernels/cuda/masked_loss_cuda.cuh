#pragma once
// The fused masked loss on CUDA, torch-free: raw pointers and element strides in, a cudaError_t out.
//
// Three kernels per forward, no host synchronization:
//   1. weight_sums: the weight sum of each sample (one block per sample, patch resolution: tiny);
//   2. the main pass, one read of pred and target and one write of the gradient: per block, the scale
//      1 / (den * unit_elems) from the weight sums (the same fixed-order sum in every block), then
//      w * l(pred - t) summed and w * l'(pred - t) * scale written. Plain targets: a block per chunk of a
//      sample's elements, 16-byte vectors where layout and alignment allow, scalars where not. Norm-pix:
//      a warp per mask cell (its mean and unbiased variance first, from the cell's values, which stay in
//      L1 between the warp's three sweeps);
//   3. finalize: one block sums each sample's block partials in index order and writes the loss.
// Every sum is fixed-order (per-thread sequential, then CUB's block reduction, then index order): the same
// inputs give bitwise the same loss and gradient on every run. No float atomics anywhere.
//
// The per-element math is kernels/masked_loss_math.hpp, shared with the CPU kernel.

#include <cub/block/block_reduce.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "simmim/kernels/cuda/fast_divmod.hpp"
#include "simmim/kernels/cuda/masked_loss_cuda.hpp"
#include "simmim/kernels/masked_loss_math.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace kernels {
namespace cuda {

// Block size of every kernel here: CUB's BlockReduce takes it at compile time.
inline constexpr int kThreads = 256;
inline constexpr int kWarps = kThreads / 32;
// Norm-pix: one warp per cell, kWarps cells per block.

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_type = typename AccType<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

// Round once to the element type (to nearest even, as c10's conversions).
template <typename T>
__device__ __forceinline__ T from_acc(acc_type<T> v) {
  if constexpr (std::is_same<T, __half>::value) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same<T, __nv_bfloat16>::value) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}

// The loss itself is computed in double; torch's .to(dtype) from double goes through float for the
// reduced types, and so does this.
template <typename T>
__device__ __forceinline__ T from_double(double v) {
  if constexpr (std::is_same<T, double>::value) {
    return v;
  } else {
    return from_acc<T>(static_cast<float>(v));
  }
}

// 16 bytes of elements, loaded and stored as one vector.
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

// Where the elements of one tensor are: offset = b * sample + y * row + r * run + k * elem, with run r of
// image row y holding the elements k of one channel (planar view, any strides) or all channels of the row
// (interleaved view: channels-last, the patchified tokens).
struct TensorStrides {
  int64_t sample = 0, row = 0, run = 0, elem = 0;
  __host__ __device__ int64_t offset(int64_t b, int64_t y, int64_t r, int64_t k) const {
    return b * sample + y * row + r * run + k * elem;
  }
};

// Everything a launch needs, computed once on the host (plan_masked_loss) and passed by value.
struct PassPlan {
  int64_t batch = 0;
  uint32_t sample_elems = 0;  // H * runs * run_len
  uint32_t run_len = 0;       // elements of one run: W (planar) or W * C (interleaved)
  uint32_t runs = 0;          // runs per image row: C (planar) or 1 (interleaved)
  uint32_t patch = 1;
  uint32_t cells = 0;       // weight cells per sample
  uint32_t cell_elems = 0;  // patch * patch * C
  FastDivmod div_run_len, div_runs, div_patch, div_cell_run, div_cells_w;
  FastDivmod div_cell_row, div_chunks;  // norm-pix: elements of one cell row (runs * cell_run); chunks
  uint32_t cell_run = 1;  // elements of one cell within one run: patch (planar) or patch * C (interleaved)
  TensorStrides pred, target, grad;
  int64_t weight_stride[3] = {0, 0, 0};
  bool vectorized = false;  // plain pass with 16-byte vectors
  int64_t chunk_elems = 0;  // plain pass: elements per block
  int64_t chunks = 0;       // blocks (partial sums) per sample
  LossKind kind = LossKind::kL1;
  bool norm_pix = false;
  bool grad_on = false;
  LossReduction reduction = LossReduction::kMean;
  double beta = 1, norm_eps = 1e-6, eps = 1e-5;
  double units_per_cell = 1, unit_elems = 1;
};

inline std::size_t element_size(DType dtype) {
  switch (dtype) {
    case DType::kDouble:
      return 8;
    case DType::kFloat:
      return 4;
    case DType::kHalf:
    case DType::kBFloat16:
      return 2;
  }
  return 4;
}

// The launch plan of P (host). Returns false when the problem cannot be indexed in 32 bits per sample.
inline bool plan_masked_loss(const MaskedLossParams& P, DType dtype, const MaskedLossTuning& tuning, PassPlan& plan) {
  if (!masked_loss_indexable(P) || P.batch <= 0 || P.patch <= 0 || P.height % P.patch != 0 ||
      P.width % P.patch != 0) {
    return false;
  }
  const int64_t C = P.channels, H = P.height, W = P.width, p = P.patch;
  auto interleaved_ok = [&](const int64_t* s) { return (C == 1 || s[1] == 1) && (W == 1 || s[3] == C); };
  const bool interleaved = interleaved_ok(P.pred_stride) && interleaved_ok(P.target_stride) &&
                           (P.grad == nullptr || interleaved_ok(P.grad_stride));
  auto strides_of = [&](const int64_t* s) {
    return interleaved ? TensorStrides{s[0], s[2], 0, 1} : TensorStrides{s[0], s[2], s[1], s[3]};
  };
  plan.batch = P.batch;
  plan.run_len = static_cast<uint32_t>(interleaved ? W * C : W);
  plan.runs = static_cast<uint32_t>(interleaved ? 1 : C);
  plan.sample_elems = static_cast<uint32_t>(H * C * W);
  plan.patch = static_cast<uint32_t>(p);
  plan.cell_run = static_cast<uint32_t>(interleaved ? p * C : p);
  plan.cells = static_cast<uint32_t>((H / p) * (W / p));
  plan.cell_elems = static_cast<uint32_t>(p * p * C);
  plan.div_run_len = FastDivmod(plan.run_len);
  plan.div_runs = FastDivmod(plan.runs);
  plan.div_patch = FastDivmod(plan.patch);
  plan.div_cell_run = FastDivmod(plan.cell_run);
  plan.div_cells_w = FastDivmod(static_cast<uint32_t>(W / p));
  plan.div_cell_row = FastDivmod(plan.runs * plan.cell_run);
  plan.pred = strides_of(P.pred_stride);
  plan.target = strides_of(P.target_stride);
  plan.grad = P.grad != nullptr ? strides_of(P.grad_stride) : TensorStrides{};
  for (int d = 0; d < 3; ++d) plan.weight_stride[d] = P.weight_stride[d];

  const int64_t V = static_cast<int64_t>(16 / element_size(dtype));
  auto vector_ok = [&](const void* ptr, const TensorStrides& s) {
    return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && s.elem == 1 && s.sample % V == 0 && s.row % V == 0 &&
           s.run % V == 0;
  };
  plan.vectorized = !P.norm_pix && plan.run_len % V == 0 && vector_ok(P.pred, plan.pred) &&
                    vector_ok(P.target, plan.target) && (P.grad == nullptr || vector_ok(P.grad, plan.grad));
  const int64_t per_item = plan.vectorized ? V : 1;
  plan.chunk_elems = int64_t{kThreads} * tuning.items_per_thread * per_item;
  plan.chunks = P.norm_pix ? (plan.cells + kWarps - 1) / kWarps
                           : (plan.sample_elems + plan.chunk_elems - 1) / plan.chunk_elems;
  if (plan.chunks * P.batch >= (int64_t{1} << 31) || plan.chunks >= (int64_t{1} << 31)) return false;
  plan.div_chunks = FastDivmod(static_cast<uint32_t>(plan.chunks));
  plan.kind = P.kind;
  plan.norm_pix = P.norm_pix;
  plan.grad_on = P.grad != nullptr;
  plan.reduction = P.reduction;
  plan.beta = P.beta;
  plan.norm_eps = P.norm_eps;
  plan.eps = P.eps;
  plan.units_per_cell = static_cast<double>(P.units_per_cell);
  plan.unit_elems = static_cast<double>(P.unit_elems);
  return true;
}

// Workspace: the weight sums [B], then the partial sums [B, chunks] (doubles).
inline std::size_t workspace_bytes(const PassPlan& plan) {
  return sizeof(double) * static_cast<std::size_t>(plan.batch + plan.batch * plan.chunks);
}

// The weight of cell (i, j) of sample b.
template <typename acc_t>
__device__ __forceinline__ acc_t weight_at(const acc_t* w, const PassPlan& g, int64_t b, uint32_t i, uint32_t j) {
  return w[b * g.weight_stride[0] + i * g.weight_stride[1] + j * g.weight_stride[2]];
}

// den of sample b (or of the batch, for kMean), from the weight sums: the same fixed-order sum in every
// block that asks, so all blocks and the finalize kernel agree bitwise. Called by every thread of a block.
__device__ __forceinline__ double finish_denominator(double weight_sum, const PassPlan& g) {
  const double d = weight_sum + g.eps;
  return d == 0 ? 1.0 : d;
}

__device__ inline double block_denominator(const double* weight_sums, const PassPlan& g, int64_t b) {
  __shared__ double shared_sum;
  if (g.reduction == LossReduction::kMean) {
    if (threadIdx.x < 32) {
      double s = 0;
      for (int64_t k = threadIdx.x; k < g.batch; k += 32) s += weight_sums[k] * g.units_per_cell;
      for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
      if (threadIdx.x == 0) shared_sum = s;
    }
  } else if (threadIdx.x == 0) {
    shared_sum = weight_sums[b] * g.units_per_cell;
  }
  __syncthreads();
  return finish_denominator(shared_sum, g);
}

// Kernel 1: the weight sum of each sample, one block per sample.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) weight_sums_kernel(const acc_t* weights, PassPlan g, double* weight_sums) {
  const int64_t b = blockIdx.x;
  double s = 0;
  for (uint32_t c = threadIdx.x; c < g.cells; c += kThreads) {
    uint32_t j;
    const uint32_t i = g.div_cells_w.divmod(c, j);
    s += static_cast<double>(weight_at(weights, g, b, i, j));
  }
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const double total = Reduce(storage).Sum(s);
  if (threadIdx.x == 0) weight_sums[b] = total;
}

// The block's sum into its partial slot, in a fixed order.
__device__ __forceinline__ void write_block_sum(double s, double* partials) {
  using Reduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename Reduce::TempStorage storage;
  const double total = Reduce(storage).Sum(s);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Kernel 2, plain targets: block blockIdx.x = b * chunks + chunk covers elements
// [chunk * chunk_elems, (chunk + 1) * chunk_elems) of sample b, in (row y, run r, element k) order.
template <typename T, LossKind K, bool kGrad, bool kVector>
__global__ void __launch_bounds__(kThreads)
    plain_pass_kernel(const T* __restrict__ pred, const T* __restrict__ target, T* __restrict__ grad,
                      const acc_type<T>* __restrict__ weights, const double* __restrict__ weight_sums, PassPlan g,
                      double* __restrict__ partials) {
  using acc_t = acc_type<T>;
  constexpr int V = kVector ? Vec16<T>::kSize : 1;
  uint32_t chunk;
  const int64_t b = g.div_chunks.divmod(blockIdx.x, chunk);
  const double den = block_denominator(weight_sums, g, b);
  const acc_t scale = static_cast<acc_t>(1.0 / (den * g.unit_elems));
  const acc_t beta = static_cast<acc_t>(g.beta);
  const uint32_t e0 = chunk * static_cast<uint32_t>(g.chunk_elems);
  const uint32_t e1 = min(g.sample_elems, e0 + static_cast<uint32_t>(g.chunk_elems));
  acc_t sum = 0;
  for (uint32_t e = e0 + threadIdx.x * V; e < e1; e += kThreads * V) {
    uint32_t k, r;
    const uint32_t row = g.div_run_len.divmod(e, k);
    const uint32_t y = g.div_runs.divmod(row, r);
    const uint32_t i = g.div_patch.div(y);
    uint32_t in_cell;
    uint32_t j = g.div_cell_run.divmod(k, in_cell);
    const int64_t po = g.pred.offset(b, y, r, k), to = g.target.offset(b, y, r, k);
    if constexpr (kVector) {
      const Vec16<T> pv = *reinterpret_cast<const Vec16<T>*>(pred + po);
      const Vec16<T> tv = *reinterpret_cast<const Vec16<T>*>(target + to);
      Vec16<T> gv;
#pragma unroll
      for (int u = 0; u < V; ++u) {
        const acc_t w = weight_at(weights, g, b, i, j);
        const acc_t gu = masked_element<K>(to_acc(pv.v[u]), to_acc(tv.v[u]), w, scale, beta, sum);
        if constexpr (kGrad) gv.v[u] = from_acc<T>(gu);
        if (++in_cell == g.cell_run) {
          in_cell = 0;
          ++j;
        }
      }
      if constexpr (kGrad) *reinterpret_cast<Vec16<T>*>(grad + g.grad.offset(b, y, r, k)) = gv;
    } else {
      const acc_t w = weight_at(weights, g, b, i, j);
      const acc_t gu = masked_element<K>(to_acc(pred[po]), to_acc(target[to]), w, scale, beta, sum);
      if constexpr (kGrad) grad[g.grad.offset(b, y, r, k)] = from_acc<T>(gu);
    }
  }
  write_block_sum(static_cast<double>(sum), partials);
}

// Sum over the lanes of a warp, the same butterfly order in every warp.
__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Kernel 2, norm-pix targets: warp w of block blockIdx.x = b * chunks + chunk handles cell chunk * kWarps + w
// of sample b. A cell's element t is (dy, r, kk): image row i * patch + dy, run r, element j * cell_run + kk.
template <typename T, LossKind K, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    norm_pass_kernel(const T* __restrict__ pred, const T* __restrict__ target, T* __restrict__ grad,
                     const acc_type<T>* __restrict__ weights, const double* __restrict__ weight_sums, PassPlan g,
                     double* __restrict__ partials) {
  using acc_t = acc_type<T>;
  uint32_t chunk;
  const int64_t b = g.div_chunks.divmod(blockIdx.x, chunk);
  const double den = block_denominator(weight_sums, g, b);
  const acc_t scale = static_cast<acc_t>(1.0 / (den * g.unit_elems));
  const acc_t beta = static_cast<acc_t>(g.beta);
  const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t cell = chunk * kWarps + warp;
  __shared__ double warp_sums[kWarps];
  double cell_sum = 0;
  if (cell < g.cells) {
    uint32_t j;
    const uint32_t i = g.div_cells_w.divmod(cell, j);
    const acc_t w = weight_at(weights, g, b, i, j);
    // Element t of the cell, as (image row, run, element in run).
    auto locate = [&](uint32_t t, uint32_t& y, uint32_t& r, uint32_t& k) {
      uint32_t rest, kk;
      y = i * g.patch + g.div_cell_row.divmod(t, rest);
      r = g.div_cell_run.divmod(rest, kk);
      k = j * g.cell_run + kk;
    };
    acc_t s = 0;
    for (uint32_t t = lane; t < g.cell_elems; t += 32) {
      uint32_t y, r, k;
      locate(t, y, r, k);
      s += to_acc(target[g.target.offset(b, y, r, k)]);
    }
    const double mean = warp_sum(static_cast<double>(s)) / g.cell_elems;
    const acc_t mean_acc = static_cast<acc_t>(mean);
    acc_t m2 = 0;
    for (uint32_t t = lane; t < g.cell_elems; t += 32) {
      uint32_t y, r, k;
      locate(t, y, r, k);
      const acc_t dev = to_acc(target[g.target.offset(b, y, r, k)]) - mean_acc;
      m2 += dev * dev;
    }
    const double var = warp_sum(static_cast<double>(m2)) / (g.cell_elems - 1);
    const acc_t rstd = static_cast<acc_t>(1.0 / sqrt(var + g.norm_eps));
    acc_t loss = 0;
    for (uint32_t t = lane; t < g.cell_elems; t += 32) {
      uint32_t y, r, k;
      locate(t, y, r, k);
      const acc_t tn = (to_acc(target[g.target.offset(b, y, r, k)]) - mean_acc) * rstd;
      const acc_t gu = masked_element<K>(to_acc(pred[g.pred.offset(b, y, r, k)]), tn, w, scale, beta, loss);
      if constexpr (kGrad) grad[g.grad.offset(b, y, r, k)] = from_acc<T>(gu);
    }
    cell_sum = warp_sum(static_cast<double>(loss));
  }
  if (lane == 0) warp_sums[warp] = cell_sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int k = 0; k < kWarps; ++k) total += warp_sums[k];
    partials[blockIdx.x] = total;
  }
}

// Kernel 3: each sample's partials in index order, then the loss, in one block.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    finalize_kernel(const double* __restrict__ weight_sums, const double* __restrict__ partials, PassPlan g, T* loss,
                    double* loss_sums) {
  const double batch_den = block_denominator(weight_sums, g, 0);
  double mine = 0;
  for (int64_t b = threadIdx.x; b < g.batch; b += kThreads) {
    double s = 0;
    for (int64_t c = 0; c < g.chunks; ++c) s += partials[b * g.chunks + c];
    if (loss_sums != nullptr) loss_sums[b] = s;
    if (g.reduction == LossReduction::kPerSample) {
      const double den = finish_denominator(weight_sums[b] * g.units_per_cell, g);
      loss[b] = from_double<T>(s / den / g.unit_elems);
    }
    mine += s;
  }
  if (g.reduction == LossReduction::kMean) {
    using Reduce = cub::BlockReduce<double, kThreads>;
    __shared__ typename Reduce::TempStorage storage;
    const double total = Reduce(storage).Sum(mine);
    if (threadIdx.x == 0) loss[0] = from_double<T>(total / batch_den / g.unit_elems);
  }
}

// The backward's scaling: block blockIdx.x = b * chunks + chunk scales elements [chunk * chunk_elems, ...)
// of sample b; nothing is read or written where the factor is 1.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    scale_kernel(T* grad, int64_t sample_elems, int64_t chunk_elems, int64_t chunks, const T* grad_out,
                 bool per_sample) {
  const int64_t b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const acc_type<T> s = to_acc(grad_out[per_sample ? b : 0]);
  if (s == acc_type<T>(1)) return;
  T* g = grad + b * sample_elems;
  const int64_t e0 = chunk * chunk_elems;
  const int64_t e1 = e0 + chunk_elems < sample_elems ? e0 + chunk_elems : sample_elems;
  for (int64_t e = e0 + threadIdx.x; e < e1; e += kThreads) g[e] = from_acc<T>(to_acc(g[e]) * s);
}

// The three launches of one forward, for element type T (float, double, __half, __nv_bfloat16).
template <typename T, LossKind K>
cudaError_t launch_masked_loss(const MaskedLossParams& P, const PassPlan& g, cudaStream_t stream) {
  using acc_t = acc_type<T>;
  auto* weight_sums = static_cast<double*>(P.workspace);
  double* partials = weight_sums + g.batch;
  const T* pred = static_cast<const T*>(P.pred);
  const T* target = static_cast<const T*>(P.target);
  T* grad = static_cast<T*>(P.grad);
  const acc_t* weights = static_cast<const acc_t*>(P.weights);
  weight_sums_kernel<acc_t><<<static_cast<unsigned>(g.batch), kThreads, 0, stream>>>(weights, g, weight_sums);
  const unsigned blocks = static_cast<unsigned>(g.batch * g.chunks);
  if (g.norm_pix) {
    if (g.grad_on) {
      norm_pass_kernel<T, K, true><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, weight_sums, g, partials);
    } else {
      norm_pass_kernel<T, K, false><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, weight_sums, g,
                                                                     partials);
    }
  } else if (g.vectorized) {
    if (g.grad_on) {
      plain_pass_kernel<T, K, true, true><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, weight_sums, g,
                                                                           partials);
    } else {
      plain_pass_kernel<T, K, false, true><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, weight_sums,
                                                                            g, partials);
    }
  } else {
    if (g.grad_on) {
      plain_pass_kernel<T, K, true, false><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, weight_sums,
                                                                            g, partials);
    } else {
      plain_pass_kernel<T, K, false, false><<<blocks, kThreads, 0, stream>>>(pred, target, grad, weights, weight_sums,
                                                                             g, partials);
    }
  }
  finalize_kernel<T><<<1, kThreads, 0, stream>>>(weight_sums, partials, g, static_cast<T*>(P.loss), P.loss_sum);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace kernels
SIMMIM_NAMESPACE_END
