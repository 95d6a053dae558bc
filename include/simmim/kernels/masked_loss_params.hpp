#pragma once
// The masked losses' vocabulary (LossKind, LossReduction) and what one fused pass needs (MaskedLossParams:
// raw pointers, sizes, element strides): the contract between the dispatch layer and the fused kernels
// (kernels/cpu, kernels/cuda). No torch type, so nvcc compiles the CUDA kernels against it without torch;
// every layer above (dispatch, the public options in dispatch/masked_loss_options.hpp, loss/) reads the
// enums from here, their one home.

#include <cstdint>
#include <ostream>

#include "simmim/core/abi.hpp"

SIMMIM_NAMESPACE_BEGIN

// The loss. Element kinds, l(d) of each d = pred - target:
//   kL1:       |d|                                                  (SimMIM)
//   kL2:       d^2                                                  (MAE)
//   kSmoothL1: 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta   (torch.nn.functional.smooth_l1_loss)
// Token kinds, one loss per token of the patchified layout [B, L, D] (never the images layout):
//   kCosine:       1 - <p / max(|p|, e), t / max(|t|, e)> over the token's D values, e = norm_eps
//                  (BEiT v2's and MaskDistill's feature loss; F.normalize's clamp)
//   kCrossEntropy: the D logits are G groups of K classes; the target holds G class ids per token
//                  (integer [B, L, G], K = D / G); the loss is the sum over the groups of
//                  logsumexp(z_g) - z_g[y_g] (BEiT's visual tokens: G = 1; color bins: G = values per patch)
enum class LossKind { kL1, kL2, kSmoothL1, kCosine, kCrossEntropy };

// How the per-sample sums become the loss.
enum class LossReduction {
  kMean,       // one scalar over the whole batch, as the originals
  kPerSample,  // [B]: the same formula within each sample
};

inline constexpr const char* to_string(LossKind kind) {
  switch (kind) {
    case LossKind::kL1:
      return "L1";
    case LossKind::kL2:
      return "L2";
    case LossKind::kSmoothL1:
      return "SmoothL1";
    case LossKind::kCosine:
      return "Cosine";
    case LossKind::kCrossEntropy:
      return "CrossEntropy";
  }
  return "unknown LossKind";
}

inline constexpr const char* to_string(LossReduction reduction) {
  switch (reduction) {
    case LossReduction::kMean:
      return "LossReduction::kMean";
    case LossReduction::kPerSample:
      return "LossReduction::kPerSample";
  }
  return "unknown LossReduction";
}

// Whether a value read from an int (a file, a cast) is one of the enumerators.
inline constexpr bool is_valid(LossKind kind) {
  return kind == LossKind::kL1 || kind == LossKind::kL2 || kind == LossKind::kSmoothL1 || kind == LossKind::kCosine ||
         kind == LossKind::kCrossEntropy;
}

// Whether a kind scores whole tokens (kCosine, kCrossEntropy) rather than elements: those run on the
// patchified layout only, through their own pass (kernels/cpu/token_loss_cpu.hpp).
inline constexpr bool is_token_kind(LossKind kind) {
  return kind == LossKind::kCosine || kind == LossKind::kCrossEntropy;
}
inline constexpr bool is_valid(LossReduction reduction) {
  return reduction == LossReduction::kMean || reduction == LossReduction::kPerSample;
}

inline std::ostream& operator<<(std::ostream& os, LossKind k) { return os << "LossKind::k" << to_string(k); }
inline std::ostream& operator<<(std::ostream& os, LossReduction r) { return os << to_string(r); }

// One fused pass: per sample b, loss_sum[b] = sum over its elements of w * l(pred - t), and (if grad is
// set) grad = w * l'(pred - t) * scale[b], where t is the target, per-patch normalized when norm_pix, w
// the weight of the element's mask cell, and scale[b] = d(loss) / d(loss_sum[b]) = 1 / (den * unit_elems)
// with den = (sum of the unit weights, over the batch for kMean or of sample b) + eps (an exact 0 -> 1).
//
// Both layouts arrive as an image view [B, C, H, W] with a weight grid [B, H / patch, W / patch]: the
// patchified layout [B, L, D] is passed as [B, D, L, 1] with patch = 1 (one token = one "pixel" of D
// channels), which makes the norm-pix group (the p x p x C block of a cell) the token in both cases.
// Pointers live on the tensors' device; strides count elements, in (b, c, y, x) / (b, i, j) order.
struct MaskedLossParams {
  int64_t batch = 0;
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t patch = 1;  // one weight cell covers patch x patch pixels (all channels)

  const void* pred = nullptr;     // scalar_t: float, double, half or bfloat16
  const void* target = nullptr;   // scalar_t
  void* grad = nullptr;           // scalar_t; nullptr: forward only, no gradient written
  const void* weights = nullptr;  // acc_t (float; double when scalar_t is double), patch resolution
  int64_t pred_stride[4] = {0, 0, 0, 0};
  int64_t target_stride[4] = {0, 0, 0, 0};
  int64_t grad_stride[4] = {0, 0, 0, 0};
  int64_t weight_stride[3] = {0, 0, 0};

  LossKind kind = LossKind::kL1;
  bool norm_pix = false;   // t = (t - mean) / sqrt(var + norm_eps) over each cell's patch*patch*C values
  double norm_eps = 1e-6;  // var is unbiased (n - 1)
  double beta = 1.0;       // kSmoothL1 only; > 0 (beta == 0 is passed as kL1, as torch does)
  // Token kinds (patchified layout, viewed as above: channels = D, height = L, width = 1, patch = 1).
  // kCosine: norm_eps floors each vector's norm. kCrossEntropy: `target` holds int64 class ids viewed as
  // [B, G, L, 1] (target_stride in that order), channels = G * classes.
  int64_t classes = 0;     // kCrossEntropy: K, the logits per group

  // The reduction: den and scale[b] above, and the loss itself.
  LossReduction reduction = LossReduction::kMean;
  double eps = 1e-5;           // added to the weight sum in den
  int64_t unit_elems = 1;      // elements per mask unit: C (images) or D (patchified)
  int64_t units_per_cell = 1;  // mask units per weight cell: patch^2 (images) or 1 (patchified)

  // CPU: the caller computes scale[b] with ATen ops and passes it here; the pass writes loss_sum.
  const double* grad_scale = nullptr;  // [B]
  double* loss_sum = nullptr;          // [B] out
  // CUDA: the pass computes the weight sums, scale and the loss itself on the device (no host sync) and
  // writes the loss in pred's dtype, [] (kMean) or [B] (kPerSample), into `loss`. `workspace` holds
  // kernels::cuda::masked_loss_workspace_bytes(*this) bytes of device memory.
  void* loss = nullptr;
  void* workspace = nullptr;
};

SIMMIM_NAMESPACE_END
