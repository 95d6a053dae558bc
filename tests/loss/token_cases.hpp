#pragma once
// Random cases of the token loss kinds (kCosine, kCrossEntropy) shared by the fused backends' tests (CPU in
// test_token_loss.cpp, CUDA in tests/cuda): a case generator over dtypes, token counts, widths, groups and
// classes (fewer and more than a warp's 32 lanes), masks, reductions and memory layouts, and the comparison
// of a fused backend with the reference on one case, on any device.

#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "loss_cases.hpp"
#include "loss_test_util.hpp"
#include "simmim/simmim.hpp"

namespace loss_test {

using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;

inline MaskedLossOptions token_options(LossKind kind, Backend backend) {
  return MaskedLossOptions().kind(kind).eps(0).backend(backend);
}

// Integer class ids [B, L, G] in [0, K).
inline torch::Tensor random_ids(std::vector<int64_t> shape, int64_t K, at::Generator& gen) {
  return torch::randint(0, K, shape, gen, torch::kLong);
}

struct TokenCase {
  LossKind kind = LossKind::kCosine;
  torch::ScalarType dtype = torch::kFloat;
  int64_t B = 1, L = 1, D = 1, G = 1;  // kCrossEntropy: D = G * K
  double eps = 0, norm_eps = 1e-6;
  LossReduction reduction = LossReduction::kMean;
  torch::ScalarType mask_dtype = torch::kBool, id_dtype = torch::kLong;
  int mask_fill = 0;  // 0 random, 1 empty, 2 full
  Memory pred_memory = Memory::kContiguous, target_memory = Memory::kContiguous, mask_memory = Memory::kContiguous;

  MaskedLossOptions options(Backend backend) const {
    return MaskedLossOptions().kind(kind).eps(eps).norm_eps(norm_eps).reduction(reduction).backend(backend);
  }
  std::string str() const {
    std::ostringstream os;
    os << kind << " " << c10::toString(dtype) << " [" << B << ", " << L << ", " << D << "] G=" << G << " eps=" << eps
       << " norm_eps=" << norm_eps << " " << reduction << " mask " << c10::toString(mask_dtype) << " fill "
       << mask_fill << " ids " << c10::toString(id_dtype) << " memory pred/target/mask "
       << to_string(pred_memory) << "/" << to_string(target_memory) << "/"
       << to_string(mask_memory);
    return os.str();
  }
};

inline TokenCase draw_token_case(std::mt19937& rng) {
  TokenCase c;
  c.kind = pick(rng, {LossKind::kCosine, LossKind::kCrossEntropy});
  c.dtype = pick(rng, {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16});
  c.B = uniform(rng, 1, 3);
  c.L = pick<int64_t>(rng, {1, 7, 19, 49, 197});
  if (c.kind == LossKind::kCosine) {
    c.D = uniform(rng, 0, 2) == 0 ? uniform(rng, 1, 40) : pick<int64_t>(rng, {64, 108, 768});
  } else {
    c.G = pick<int64_t>(rng, {1, 2, 3, 12, 48});
    const int64_t K = pick<int64_t>(rng, {2, 3, 4, 8, 10, 31, 33, 100});
    c.D = c.G * K;
    c.id_dtype = pick(rng, {torch::kLong, torch::kInt, torch::kByte});
  }
  c.eps = pick(rng, {0.0, 1e-5, 0.1});
  c.norm_eps = pick(rng, {1e-6, 1e-12, 0.5});
  c.reduction = pick(rng, {LossReduction::kMean, LossReduction::kPerSample});
  c.mask_dtype = pick(rng, {torch::kBool, torch::kByte, torch::kInt, torch::kLong, torch::kFloat, torch::kDouble,
                            torch::kHalf, torch::kBFloat16});
  const int64_t fill = uniform(rng, 0, 19);
  c.mask_fill = fill == 0 ? 1 : (fill == 1 ? 2 : 0);
  c.pred_memory = pick(rng, {Memory::kContiguous, Memory::kTransposed, Memory::kSliced, Memory::kStepped});
  c.target_memory = pick(rng, {Memory::kContiguous, Memory::kTransposed, Memory::kSliced, Memory::kStepped});
  c.mask_memory = pick(rng, {Memory::kContiguous, Memory::kTransposed, Memory::kSliced, Memory::kExpanded});
  return c;
}

struct TokenInputs {
  torch::Tensor pred_values, target_values;  // pred's dtype (kCosine) or ids (kCrossEntropy)
  torch::Tensor pred, target, mask;          // arranged
  torch::Tensor grad_out;                    // [B] for kPerSample, else undefined
};

inline TokenInputs make_token_inputs(const TokenCase& c, int64_t seed, torch::Device device) {
  auto gen = simmim::make_generator(seed);
  TokenInputs in;
  // Drawn in double and rounded to the dtype, so the double oracle sees the same values. Logits spread
  // over a few units, so softmax is neither flat nor one-hot.
  in.pred_values = (torch::randn({c.B, c.L, c.D}, gen, torch::kDouble) * 2).to(c.dtype);
  if (c.kind == LossKind::kCosine) {
    in.target_values = torch::randn({c.B, c.L, c.D}, gen, torch::kDouble).to(c.dtype);
  } else {
    in.target_values = random_ids({c.B, c.L, c.G}, c.D / c.G, gen).to(c.id_dtype);
  }
  torch::Tensor m;
  if (c.mask_fill == 1) {
    m = torch::zeros({c.B, c.L}, torch::kDouble);
  } else if (c.mask_fill == 2) {
    m = torch::ones({c.B, c.L}, torch::kDouble);
  } else if (!at::isFloatingType(c.mask_dtype)) {
    m = (torch::rand({c.B, c.L}, gen, torch::kDouble) < 0.6).to(torch::kDouble);
  } else {
    m = torch::rand({c.B, c.L}, gen, torch::kDouble) * (torch::rand({c.B, c.L}, gen, torch::kDouble) < 0.7);
  }
  if (c.mask_memory == Memory::kExpanded) m = m.narrow(0, 0, 1).expand({c.B, c.L}).contiguous();
  in.mask = arrange(m.to(device, c.mask_dtype), c.mask_memory);
  in.pred = arrange(in.pred_values.to(device), c.pred_memory);
  in.target = arrange(in.target_values.to(device), c.target_memory);
  if (c.reduction == LossReduction::kPerSample) in.grad_out = torch::randn({c.B}, gen, torch::kDouble).to(device);
  return in;
}

// One case of `backend` on `device` against the reference on the same inputs (and, for half and bfloat16,
// against the reference in double on the same values): loss and pred's gradient.
inline void check_token_case(const TokenCase& c, int64_t seed, Backend backend, torch::Device device) {
  const TokenInputs in = make_token_inputs(c, seed, device);
  const auto fused = run_loss(in.pred, in.target, in.mask, c.options(backend), false, in.grad_out);
  const auto ref = run_loss(in.pred, in.target, in.mask, c.options(Backend::kReference), false, in.grad_out);
  REQUIRE(fused.loss.sizes() == ref.loss.sizes());
  REQUIRE(fused.loss.scalar_type() == c.dtype);
  REQUIRE(fused.grad_pred.sizes() == in.pred.sizes());
  // Both compute in float for half and bfloat16 and round once at the end, so the tight tolerance holds
  // in every dtype; and the reference in double on the same values bounds the rounding.
  auto tol = tight_tolerance(c.dtype);
  // D = 1: the cosine of two scalars is +-1, its gradient exactly 0, which both compute as a difference
  // of two equal terms: rounding residue (1e-8 in float), with nothing to be relative to.
  if (c.kind == LossKind::kCosine && c.D == 1) tol.atol_abs = c.dtype == torch::kDouble ? 1e-15 : 1e-6;
  LOSS_CHECK_CLOSE(fused.loss, ref.loss, tol);
  LOSS_CHECK_CLOSE(fused.grad_pred, ref.grad_pred, tol);
  if (c.dtype == torch::kHalf || c.dtype == torch::kBFloat16) {
    const torch::Tensor target64 =
        c.kind == LossKind::kCosine ? in.target_values.to(device, torch::kDouble) : in.target;
    const auto exact = run_loss(in.pred_values.to(device, torch::kDouble), target64, in.mask,
                                c.options(Backend::kReference), false, in.grad_out);
    LOSS_CHECK_CLOSE(fused.loss, exact.loss, tol);
    LOSS_CHECK_CLOSE(fused.grad_pred, exact.grad_pred, tol);
  }
}

}  // namespace loss_test
