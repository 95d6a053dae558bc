#pragma once
// The reference masked losses: the originals' op sequences (SimMIM's repeat_interleave'd pixel mask, MAE's
// per-patch mean then masked mean) as composite ATen ops. Autograd-native, any device, any derivative
// order: the oracle the fused backends are tested against, and the fallback kAuto uses.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Reduction.h>

#include <array>

#include "simmim/core/patchify.hpp"
#include "simmim/dispatch/masked_loss_problem.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace dispatch {

// MAE's norm-pix target: each token [.., D] standardized by its own mean and unbiased variance.
inline at::Tensor normalize_patches(const at::Tensor& tokens, double eps) {
  const int64_t last = -1;
  const at::Tensor mean = tokens.mean(at::IntArrayRef(last), /*keepdim=*/true);
  const at::Tensor var = tokens.var(at::IntArrayRef(last), /*unbiased=*/true, /*keepdim=*/true);
  return (tokens - mean) / (var + eps).pow(0.5);
}

// The per-element loss l(pred - target), unreduced, as torch computes it.
inline at::Tensor elementwise_loss(const at::Tensor& pred, const at::Tensor& target, const MaskedLossOptions& options,
                                   const char* api) {
  switch (options.kind()) {
    case LossKind::kL1:
      return at::l1_loss(pred, target, at::Reduction::None);
    case LossKind::kL2:
      return (pred - target).pow(2);
    case LossKind::kSmoothL1:
      // LibTorch 1.13 has no CPU half kernel for smooth_l1_loss's backward: run half in float.
      if (pred.scalar_type() == at::kHalf) {
        return at::smooth_l1_loss(pred.to(at::kFloat), target.to(at::kFloat), at::Reduction::None, options.beta())
            .to(at::kHalf);
      }
      return at::smooth_l1_loss(pred, target, at::Reduction::None, options.beta());
    case LossKind::kCosine:
    case LossKind::kCrossEntropy:
      break;  // token kinds: token_loss below
  }
  TORCH_CHECK_VALUE(false, api, ": options.kind must be an element kind (LossKind::kL1, kL2 or kSmoothL1) here; got ",
                    "LossKind(", static_cast<int>(options.kind()), ")");
}

// The per-token loss of a token kind, [B, L], in the accumulation type (float for half and bfloat16, as
// the fused pass computes it):
//   kCosine: 1 - <F.normalize(p), F.normalize(t)> with F.normalize's floor norm_eps on each norm;
//   kCrossEntropy: logits [B, L, G*K] seen as [B, L, G, K], the sum over the G ids of -log_softmax(z)[y].
inline at::Tensor token_loss(const MaskedLossProblem& pb) {
  const at::ScalarType acc = at::toOpMathType(pb.pred.scalar_type());
  const at::Tensor pred = pb.pred.to(acc);
  const int64_t last = -1;
  if (pb.options.kind() == LossKind::kCosine) {
    const double eps = pb.options.norm_eps();
    const at::Tensor target = pb.target.to(acc);
    const at::Tensor p = pred / pred.norm(2, at::IntArrayRef(last), /*keepdim=*/true).clamp_min(eps);
    const at::Tensor t = target / target.norm(2, at::IntArrayRef(last), /*keepdim=*/true).clamp_min(eps);
    return 1.0 - (p * t).sum(at::IntArrayRef(last));
  }
  TORCH_INTERNAL_ASSERT(pb.options.kind() == LossKind::kCrossEntropy);
  const int64_t B = pred.size(0), L = pred.size(1), G = pb.target.size(2);
  const at::Tensor log_p = pred.reshape({B, L, G, pb.classes}).log_softmax(last);
  const at::Tensor ids = pb.target.to(at::kLong).unsqueeze(last);
  return log_p.gather(last, ids).squeeze(last).neg().sum(at::IntArrayRef(last));
}

// The loss of a validated problem. No gradient reaches the mask (it is detached), as in the fused path.
inline at::Tensor masked_loss_reference(const MaskedLossProblem& pb, const char* api) {
  const MaskedLossOptions& s = pb.options;
  const at::Tensor& pred = pb.pred;
  const at::Tensor mask = pb.mask.detach().to(pred.scalar_type());
  // Sums of half/bfloat16 values accumulate and land in float: the loss of a large batch overflows half's
  // 65504 long before its mean does.
  const at::ScalarType acc = at::toOpMathType(pred.scalar_type());
  const bool mean = s.reduction() == LossReduction::kMean;
  at::Tensor numerator, unit_sums;
  double divisor = 1;
  if (pb.layout == LossLayout::kImages) {
    // SimMIM: loss = sum(l * m) / (sum(m) + eps) / C with m the patch mask upsampled to pixels.
    const int64_t p = s.patch_size();
    const at::Tensor m = mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1);
    at::Tensor target = pb.target;
    if (s.norm_pix()) {
      const Size2d grid{pred.size(2) / p, pred.size(3) / p};
      target = unpatchify(normalize_patches(patchify(target, p), s.norm_eps()), p, grid);
    }
    const at::Tensor weighted = elementwise_loss(pred, target, s, api) * m;
    const std::array<int64_t, 3> dims{1, 2, 3};
    numerator = mean ? weighted.sum(acc) : weighted.sum(at::IntArrayRef(dims), false, acc);
    // The original sums the pixel mask (int64). The same count is p * p times the patch mask's sum, taken
    // at patch resolution: summing the pixel mask in double would convert it to a pixel-sized double copy
    // first (ATen's CPU reductions cast their input to the result type), a pred-sized allocation the
    // original does not make (issue 15: the reference ran at 0.4-0.7x the original).
    const std::array<int64_t, 2> cells{1, 2};
    unit_sums = mask.sum(at::IntArrayRef(cells), false, at::kDouble) * static_cast<double>(p * p);
    divisor = static_cast<double>(pred.size(1));
  } else if (is_token_kind(s.kind())) {
    // Token kinds: loss = sum_L(l_L * mask) / (sum(mask) + eps) / unit_elems (1 for kCosine, G for
    // kCrossEntropy: the mean over a token's ids).
    const at::Tensor weighted = token_loss(pb) * mask.to(acc);
    const int64_t tokens = 1;
    numerator = mean ? weighted.sum(acc) : weighted.sum(at::IntArrayRef(tokens), false, acc);
    unit_sums = mask.sum(at::IntArrayRef(tokens), false, at::kDouble);
    divisor = static_cast<double>(pb.unit_elems);
  } else {
    // MAE: loss = sum(mean_D(l) * mask) / (sum(mask) + eps).
    const at::Tensor target = s.norm_pix() ? normalize_patches(pb.target, s.norm_eps()) : pb.target;
    const int64_t last = -1;
    const at::Tensor weighted = elementwise_loss(pred, target, s, api).mean(at::IntArrayRef(last)) * mask;
    const int64_t tokens = 1;
    numerator = mean ? weighted.sum(acc) : weighted.sum(at::IntArrayRef(tokens), false, acc);
    unit_sums = mask.sum(at::IntArrayRef(tokens), false, at::kDouble);
  }
  at::Tensor den = pb.denominator(unit_sums);
  if (mean) den = den.reshape({});
  return (numerator.to(at::kDouble) / den / divisor).to(pred.scalar_type());
}

}  // namespace dispatch
SIMMIM_NAMESPACE_END
