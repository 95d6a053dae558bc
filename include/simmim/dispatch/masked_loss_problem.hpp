#pragma once
// A validated masked-loss problem: the argument checks every backend shares, the image view the fused
// kernels take (patchified [B, L, D] is viewed as [B, D, L, 1] with patch 1), and the loss denominator,
// so that the reference and the fused backends apply one definition of the formula.

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/core/value_checks.hpp"
#include "simmim/dispatch/masked_loss_options.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN

// Picked from pred.dim(): 4 -> images, 3 -> patchified.
enum class LossLayout {
  kImages,      // pred/target [B, C, H, W], mask [B, h, w] with h*p == H, w*p == W
  kPatchified,  // pred/target [B, L, D], mask [B, L]
};

namespace dispatch {

struct MaskedLossProblem {
  MaskedLossOptions options;  // kSmoothL1 with beta 0 is stored as kL1, as torch.nn.functional.smooth_l1_loss does
  LossLayout layout = LossLayout::kImages;
  at::Tensor pred, target, mask;     // as the caller passed them
  at::Tensor pred4, target4, mask3;  // image view: [B, C, H, W] and [B, H / patch, W / patch]
  int64_t patch = 1;                 // of the view: patch_size for images, 1 for patchified
  int64_t unit_elems = 1;            // elements per mask unit (pixel or token): C for images, D for patchified;
                                     // 1 for kCosine, G (ids per token) for kCrossEntropy
  int64_t units_per_cell = 1;        // mask units one mask cell covers: p*p for images, 1 for patchified
  int64_t classes = 0;               // kCrossEntropy: K, the logits per class id (D / G)

  int64_t batch() const { return pred.size(0); }

  // The denominator of the loss from the per-sample sums of the unit weights (double [B]): the sum, over
  // the batch for kMean ([1]) or per sample ([B]), plus eps. An exact zero (an empty mask with eps = 0,
  // where the originals return 0/0 = NaN) is replaced by 1, so the loss is its numerator: 0 for finite
  // inputs, NaN when an input is NaN.
  at::Tensor denominator(const at::Tensor& unit_sums) const {
    at::Tensor d = options.reduction() == LossReduction::kMean ? unit_sums.sum().reshape({1}) : unit_sums;
    d = d + options.eps();
    return d.masked_fill(d == 0, 1.0);
  }

  // The loss from the per-sample sums of w * l (double [B]) and the denominator: sum / den / unit_elems,
  // as a scalar (kMean) or [B] (kPerSample), in pred's dtype.
  at::Tensor finish(const at::Tensor& loss_sums, const at::Tensor& den) const {
    if (options.reduction() == LossReduction::kMean) {
      return (loss_sums.sum() / den.reshape({}) / static_cast<double>(unit_elems)).to(pred.scalar_type());
    }
    return (loss_sums / den / static_cast<double>(unit_elems)).to(pred.scalar_type());
  }

  // d(loss)/d(Σ w·l of sample b) for every b: 1 / (den * unit_elems), double [B].
  at::Tensor grad_scale(const at::Tensor& den) const {
    return (1.0 / (den * static_cast<double>(unit_elems))).expand({batch()}).contiguous();
  }

  // A tensor in the caller's layout as the image view, and back (a gradient).
  at::Tensor to_view(const at::Tensor& t) const {
    return layout == LossLayout::kImages ? t : t.transpose(1, 2).unsqueeze(3);
  }
  at::Tensor from_view(const at::Tensor& t4) const {
    return layout == LossLayout::kImages ? t4 : t4.squeeze(3).transpose(1, 2);
  }
};

// What a fused forward returns: the loss (pred's dtype; scalar or [B]) and, when asked for, d(loss)/d(pred)
// for grad_output = 1, in pred's layout ([B, C, H, W] or [B, L, D]).
struct FusedLossForward {
  at::Tensor loss;
  at::Tensor grad;
};

inline bool is_supported_loss_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// The value check of the mask: weights must be non-negative (a negative weight makes the loss negative) and
// not NaN. It reads the mask, so it runs where that is free (CPU tensors) and elsewhere only under
// value_checks() (STYLE.md rule 10). The fused CPU pass makes it while summing the weights instead.
inline void check_mask_weights(const at::Tensor& mask, const char* api) {
  if (mask.scalar_type() == at::kBool || mask.scalar_type() == at::kByte || !check_values_of(mask)) return;
  const int64_t bad = mask.detach().ge(0).logical_not().sum().item<int64_t>();
  SIMMIM_CHECK(bad == 0, api, "mask", "non-negative weights (0 = visible)", bad, " negative or NaN weight(s) in ",
               describe(mask));
}

// The value check of kCrossEntropy's class ids: each in [0, K). Reads the ids, so it runs where that is
// free (CPU tensors) and elsewhere only under value_checks(); the fused CPU pass counts them as it reads.
inline void check_class_ids(const MaskedLossProblem& pb, const char* api) {
  if (pb.options.kind() != LossKind::kCrossEntropy || !check_values_of(pb.target)) return;
  const int64_t bad = (pb.target.lt(0) | pb.target.ge(pb.classes)).sum().item<int64_t>();
  SIMMIM_CHECK(bad == 0, api, "target", "class ids in [0, K) with K = " + std::to_string(pb.classes), bad,
               " id(s) outside it in ", describe(pb.target));
}

// Validates the arguments (each failure names `api`, the argument, what was expected and what arrived)
// and builds the problem.
inline MaskedLossProblem make_masked_loss_problem(const at::Tensor& pred, const at::Tensor& target,
                                                  const at::Tensor& mask, const MaskedLossOptions& options,
                                                  const char* api) {
  SIMMIM_CHECK(pred.defined() && (pred.dim() == 4 || pred.dim() == 3), api, "pred",
               "a 4-D tensor [B, C, H, W] (images) or a 3-D tensor [B, L, D] (patchified)", describe(pred));
  SIMMIM_CHECK(is_supported_loss_dtype(pred.scalar_type()), api, "pred", "a float, double, half or bfloat16 tensor",
               describe(pred));
  SIMMIM_CHECK(pred.numel() > 0, api, "pred", "non-empty", describe(pred));
  SIMMIM_CHECK_VALUE(is_valid(options.kind()), api, "options.kind",
                     "LossKind::kL1, kL2, kSmoothL1, kCosine or kCrossEntropy",
                     "LossKind(" + std::to_string(static_cast<int>(options.kind())) + ")");
  const bool token_kind = is_token_kind(options.kind());
  const bool cross_entropy = options.kind() == LossKind::kCrossEntropy;
  if (token_kind) {
    SIMMIM_CHECK(pred.dim() == 3, api, "pred",
                 std::string("a 3-D tensor [B, L, D] (patchified) for LossKind::k") + to_string(options.kind()) +
                     ", which scores whole tokens",
                 describe(pred));
    SIMMIM_CHECK_VALUE(!options.norm_pix(), api, "options.norm_pix",
                       std::string("false for LossKind::k") + to_string(options.kind()) +
                           " (norm-pix standardizes pixel targets; a Target normalizes its own)",
                       "true");
  }
  if (cross_entropy) {
    // Logits [B, L, G*K] against G class ids per token.
    SIMMIM_CHECK(target.defined() && at::isIntegralType(target.scalar_type(), /*includeBool=*/false) &&
                     target.dim() == 3 && target.size(0) == pred.size(0) && target.size(1) == pred.size(1) &&
                     target.size(2) >= 1 && pred.size(2) % target.size(2) == 0,
                 api, "target",
                 "integer class ids [B, L, G] = [" + std::to_string(pred.size(0)) + ", " +
                     std::to_string(pred.size(1)) + ", G] with G dividing pred's D = " + std::to_string(pred.size(2)) +
                     " (LossKind::kCrossEntropy: K = D / G logits per id)",
                 describe(target));
  } else {
    SIMMIM_CHECK(target.defined() && target.sizes() == pred.sizes(), api, "target",
                 "a tensor of pred's shape " + shape_str(pred), describe(target));
    SIMMIM_CHECK(target.scalar_type() == pred.scalar_type(), api, "target",
                 std::string("a float, double, half or bfloat16 tensor (pred is ") +
                     c10::toString(pred.scalar_type()) + ")",
                 describe(target));
  }
  SIMMIM_CHECK(target.device() == pred.device(), api, "target", "on pred's device " + pred.device().str(),
               describe(target));
  SIMMIM_CHECK(mask.defined() && (mask.scalar_type() == at::kBool || at::isIntegralType(mask.scalar_type(), false) ||
                                  at::isFloatingType(mask.scalar_type())),
               api, "mask", "a bool, integer (uint8, int32, int64, ...) or floating-point (weights) tensor",
               describe(mask));
  SIMMIM_CHECK_HAS_DATA(pred, api, "pred");
  SIMMIM_CHECK(mask.device() == pred.device(), api, "mask", "on pred's device " + pred.device().str(), describe(mask));
  SIMMIM_CHECK_VALUE(is_valid(options.reduction()), api, "options.reduction", "LossReduction::kMean or kPerSample",
                     "LossReduction(" + std::to_string(static_cast<int>(options.reduction())) + ")");
  SIMMIM_CHECK_ENUM(options.backend(), 4, "Backend", api, "options.backend",
                    "Backend::kAuto, kReference, kFusedCPU or kFusedCUDA");
  SIMMIM_CHECK_VALUE(options.patch_size() > 0, api, "options.patch_size", "positive", options.patch_size());
  SIMMIM_CHECK_VALUE(std::isfinite(options.eps()) && options.eps() >= 0, api, "options.eps", "finite and >= 0", options.eps());
  SIMMIM_CHECK_VALUE(std::isfinite(options.norm_eps()) && options.norm_eps() >= 0, api, "options.norm_eps", "finite and >= 0",
                     options.norm_eps());
  SIMMIM_CHECK_VALUE(std::isfinite(options.beta()) && options.beta() >= 0, api, "options.beta", "finite and >= 0", options.beta());

  MaskedLossProblem pb;
  pb.options = options;
  if (options.kind() == LossKind::kSmoothL1 && options.beta() == 0) pb.options.kind(LossKind::kL1);
  pb.pred = pred;
  pb.target = target;
  pb.mask = mask;
  const int64_t B = pred.size(0);
  if (pred.dim() == 4) {
    const int64_t p = options.patch_size();
    const Size2d grid = patch_grid({pred.size(2), pred.size(3)}, p, api, "pred's image size");
    SIMMIM_CHECK(mask.dim() == 3 && mask.size(0) == B && mask.size(1) == grid.h && mask.size(2) == grid.w, api, "mask",
                 "[B, h, w] with h*p == H and w*p == W, i.e. " + shape_str({B, grid.h, grid.w}) + " for pred " +
                     shape_str(pred) + " with p = " + std::to_string(p),
                 "mask " + shape_str(mask));
    pb.layout = LossLayout::kImages;
    pb.pred4 = pred;
    pb.target4 = target;
    pb.mask3 = mask;
    pb.patch = p;
    pb.unit_elems = pred.size(1);
    pb.units_per_cell = p * p;
  } else {
    SIMMIM_CHECK(mask.dim() == 2 && mask.size(0) == B && mask.size(1) == pred.size(1), api, "mask",
                 "[B, L] = " + shape_str({B, pred.size(1)}) + " for pred " + shape_str(pred),
                 "mask " + shape_str(mask));
    pb.layout = LossLayout::kPatchified;
    pb.pred4 = pb.to_view(pred);
    pb.target4 = pb.to_view(target);
    pb.mask3 = mask.unsqueeze(2);
    pb.patch = 1;
    pb.unit_elems = pred.size(2);
    pb.units_per_cell = 1;
    // A token kind's loss is per token (kCosine) or per class id (kCrossEntropy: the mean over the G ids
    // of a token, as MAE's mean over a patch's values).
    if (options.kind() == LossKind::kCosine) pb.unit_elems = 1;
    if (cross_entropy) {
      pb.unit_elems = target.size(2);
      pb.classes = pred.size(2) / target.size(2);
    }
  }
  if (options.norm_pix()) {
    const int64_t group = pb.patch * pb.patch * pb.pred4.size(1);
    SIMMIM_CHECK_VALUE(group >= 2, api, "a norm_pix patch (p*p*C values, or D for patchified)",
                       "at least 2 values (the variance is unbiased)", group);
  }
  return pb;
}

}  // namespace dispatch
SIMMIM_NAMESPACE_END
