#pragma once
// What one fused masked-loss pass needs, as raw pointers, sizes and element strides: the contract between
// the dispatch layer and the fused kernels (CPU here, CUDA in kernels/cuda). No torch type, so nvcc can
// compile the CUDA kernels against it without torch. LossKind lives here because kernels specialize on it.

#include <cstdint>

#include "simmim/core/abi.hpp"

SIMMIM_NAMESPACE_BEGIN

// The per-element loss l(d) of d = pred - target.
//   kL1:       |d|                                                  (SimMIM)
//   kL2:       d^2                                                  (MAE)
//   kSmoothL1: 0.5 d^2 / beta if |d| < beta, else |d| - 0.5 beta   (torch.nn.functional.smooth_l1_loss)
enum class LossKind { kL1, kL2, kSmoothL1 };

inline constexpr const char* to_string(LossKind kind) {
  switch (kind) {
    case LossKind::kL1:
      return "L1";
    case LossKind::kL2:
      return "L2";
    case LossKind::kSmoothL1:
      return "SmoothL1";
  }
  return "unknown LossKind";
}

// One fused pass: per sample b, loss_sum[b] = sum over its elements of w * l(pred - t), and (if grad is
// set) grad = w * l'(pred - t) * grad_scale[b], where t is the target, per-patch normalized when
// norm_pix, and w the weight of the element's mask cell.
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

  const double* grad_scale = nullptr;  // [B]: d(loss) / d(loss_sum[b])
  double* loss_sum = nullptr;          // [B] out
};

SIMMIM_NAMESPACE_END
