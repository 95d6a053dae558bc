#pragma once
// Random masked-loss cases shared by the fused backends' tests (CPU here, CUDA in tests/cuda): a case
// generator covering every dtype, kind, norm-pix, mask dtype, reduction, layout and memory layout with odd
// sizes, the comparison of a fused backend with the reference on one case, and the double-precision
// gradcheck of one configuration, each on any device.

#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <initializer_list>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../support/gradcheck.hpp"
#include "loss_test_util.hpp"
#include "simmim/simmim.hpp"

namespace loss_test {

using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;


struct Case {
  torch::ScalarType dtype = torch::kFloat;
  bool images = true;
  int64_t B = 1, C = 1, p = 1, h = 1, w = 1;  // images: [B, C, h*p, w*p]; patchified: [B, L = h, D = C]
  LossKind kind = LossKind::kL1;
  double beta = 1.0;
  bool norm_pix = false;
  double eps = 1e-5;
  LossReduction reduction = LossReduction::kMean;
  torch::ScalarType mask_dtype = torch::kBool;
  int mask_fill = 0;  // 0 random, 1 empty, 2 full
  Memory pred_memory = Memory::kContiguous, target_memory = Memory::kContiguous, mask_memory = Memory::kContiguous;
  bool target_grad = false;

  std::vector<int64_t> shape() const {
    if (images) return {B, C, h * p, w * p};
    return {B, h, C};
  }
  std::vector<int64_t> mask_shape() const {
    if (images) return {B, h, w};
    return {B, h};
  }
  MaskedLossOptions options(Backend backend) const {
    return MaskedLossOptions()
        .kind(kind)
        .beta(beta)
        .patch_size(images ? p : 1)
        .norm_pix(norm_pix)
        .eps(eps)
        .reduction(reduction)
        .backend(backend);
  }
  std::string str() const {
    std::ostringstream os;
    os << c10::toString(dtype) << (images ? " images " : " patchified ") << torch::IntArrayRef(shape()) << " p=" << p
       << " " << kind << " beta=" << beta << " norm_pix=" << norm_pix << " eps=" << eps << " " << reduction << " mask "
       << c10::toString(mask_dtype) << " fill " << mask_fill << " memory pred/target/mask "
       << to_string(pred_memory) << "/" << to_string(target_memory) << "/"
       << to_string(mask_memory) << " target_grad=" << target_grad;
    return os.str();
  }
};

template <typename T>
inline T pick(std::mt19937& rng, const std::vector<T>& from) {
  return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
}
template <typename T>
inline T pick(std::mt19937& rng, std::initializer_list<T> from) {
  return pick(rng, std::vector<T>(from));
}

inline int64_t uniform(std::mt19937& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

inline Case draw(std::mt19937& rng) {
  Case c;
  c.dtype = pick(rng, {torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16});
  c.images = uniform(rng, 0, 1) == 1;
  c.B = uniform(rng, 1, 3);
  if (c.images) {
    c.p = pick<int64_t>(rng, {1, 2, 4, 8, 14, 16, 32});
    const int64_t max_cells = c.p >= 14 ? 3 : (c.p >= 8 ? 5 : 9);
    c.C = uniform(rng, 1, 4);
    c.h = uniform(rng, 1, max_cells);
    c.w = uniform(rng, 1, max_cells);
  } else {
    c.h = pick<int64_t>(rng, {1, 7, 19, 49, 197});  // tokens
    const int64_t p = pick<int64_t>(rng, {1, 2, 4, 8, 14, 16});
    c.C = uniform(rng, 0, 2) == 0 ? uniform(rng, 1, 40) : p * p * pick<int64_t>(rng, {1, 3});  // D, any
  }
  c.kind = pick(rng, {LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1});
  c.beta = c.kind == LossKind::kSmoothL1 ? pick(rng, {0.0, 0.5, 1.0, 2.0}) : 1.0;
  const int64_t group = c.images ? c.p * c.p * c.C : c.C;
  c.norm_pix = group >= 2 && uniform(rng, 0, 1) == 1;
  c.eps = pick(rng, {1e-5, 0.0, 0.1});
  c.reduction = pick(rng, {LossReduction::kMean, LossReduction::kPerSample});
  c.mask_dtype = pick(rng, {torch::kBool, torch::kByte, torch::kInt, torch::kLong, torch::kFloat, torch::kDouble,
                            torch::kHalf, torch::kBFloat16});
  const int64_t fill = uniform(rng, 0, 19);
  c.mask_fill = fill == 0 ? 1 : (fill == 1 ? 2 : 0);
  const std::vector<Memory> memories =
      c.images ? std::vector<Memory>{Memory::kContiguous, Memory::kChannelsLast, Memory::kTransposed, Memory::kSliced,
                                     Memory::kStepped}
               : std::vector<Memory>{Memory::kContiguous, Memory::kTransposed, Memory::kSliced, Memory::kStepped};
  c.pred_memory = pick(rng, memories);
  c.target_memory = uniform(rng, 0, 1) ? c.pred_memory : pick(rng, memories);
  c.mask_memory = pick(rng, {Memory::kContiguous, Memory::kTransposed, Memory::kSliced, Memory::kExpanded});
  c.target_grad = !c.norm_pix && uniform(rng, 0, 3) == 0;
  return c;
}

inline torch::Tensor make_mask(const Case& c, at::Generator& gen, torch::Device device = torch::kCPU) {
  const auto shape = c.mask_shape();
  torch::Tensor m;
  if (c.mask_fill == 1) {
    m = torch::zeros(shape, torch::kDouble);
  } else if (c.mask_fill == 2) {
    m = torch::ones(shape, torch::kDouble);
  } else if (!at::isFloatingType(c.mask_dtype)) {
    m = (torch::rand(shape, gen, torch::kDouble) < 0.6).to(torch::kDouble);
  } else {
    m = torch::rand(shape, gen, torch::kDouble) * (torch::rand(shape, gen, torch::kDouble) < 0.7);
  }
  if (c.mask_memory == Memory::kExpanded) m = m.narrow(0, 0, 1).expand(shape).contiguous();
  return arrange(m.to(device, c.mask_dtype), c.mask_memory);
}

// One random case: the fused backend `backend` against the reference in the same dtype (and, for half and
// bfloat16, against the reference in double), loss and gradients, on `device`.
inline void check_fused_case(const Case& c, int64_t seed, Backend backend, torch::Device device) {
  auto gen = simmim::make_generator(seed);
  // Values drawn in double and rounded to the dtype, so the double oracle sees exactly the same inputs.
  const torch::Tensor pred_values = torch::randn(c.shape(), gen, torch::kDouble).to(c.dtype);
  const torch::Tensor target_values = torch::randn(c.shape(), gen, torch::kDouble).to(c.dtype);
  const torch::Tensor mask = make_mask(c, gen, device);
  const torch::Tensor pred = arrange(pred_values.to(device), c.pred_memory);
  const torch::Tensor target = arrange(target_values.to(device), c.target_memory);
  torch::Tensor grad_out;
  if (c.reduction == LossReduction::kPerSample) grad_out = torch::randn({c.B}, gen, torch::kDouble).to(device);

  const auto fused = run_loss(pred, target, mask, c.options(backend), c.target_grad, grad_out);
  const auto ref = run_loss(pred, target, mask, c.options(Backend::kReference), c.target_grad, grad_out);
  REQUIRE(fused.loss.sizes() == ref.loss.sizes());
  REQUIRE(fused.loss.scalar_type() == c.dtype);
  REQUIRE(fused.grad_pred.sizes() == pred.sizes());
  const auto tol = same_dtype_tolerance(c.dtype);
  const bool reduced = c.dtype == torch::kHalf || c.dtype == torch::kBFloat16;
  // L1's slope jumps at d = 0. In half/bfloat16 the reference rounds the normalized target to the dtype,
  // so pred often ties with it exactly (slope 0) where the fused pass, normalizing in float, sees a tiny
  // d (slope +-1). Those gradients are checked against the double oracle below instead.
  const bool l1_slope = c.kind == LossKind::kL1 || (c.kind == LossKind::kSmoothL1 && c.beta == 0);
  const bool slope_ties = reduced && c.norm_pix && l1_slope;
  // With a (nearly) empty mask and a small eps, the reference's half backward overflows computing
  // 1 / (sum(w) + eps) and multiplies inf by zero weights: NaN. The fused pass gives 0 there.
  const torch::Tensor cell_sums = mask.to(torch::kDouble).reshape({c.B, -1}).sum(1);
  const double min_sum = (c.reduction == LossReduction::kMean ? cell_sums.sum() : cell_sums.min()).item<double>() *
                         (c.images ? c.p * c.p : 1);
  const bool half_overflow = c.dtype == torch::kHalf && min_sum + c.eps < 1e-3;
  LOSS_CHECK_CLOSE(fused.loss, ref.loss, tol);
  if (!slope_ties && !half_overflow) {
    LOSS_CHECK_CLOSE(fused.grad_pred, ref.grad_pred, tol);
    LOSS_CHECK_CLOSE(fused.grad_target, ref.grad_target, tol);
  }
  if (reduced) {
    const auto exact = run_loss(pred_values.to(device, torch::kDouble), target_values.to(device, torch::kDouble), mask,
                                c.options(Backend::kReference), c.target_grad, grad_out);
    const auto tight = tight_tolerance(c.dtype);
    LOSS_CHECK_CLOSE(fused.loss, exact.loss, tight);
    LOSS_CHECK_CLOSE(fused.grad_pred, exact.grad_pred, tight);
    LOSS_CHECK_CLOSE(fused.grad_target, exact.grad_target, tight);
  }
}

// Gradcheck in double of one configuration of `backend` on `device` (the reference's too, as oracle).
inline void gradcheck_case(Backend backend, LossKind kind, bool norm_pix, bool images, LossReduction reduction,
                           torch::Device device) {
  INFO(backend << " " << kind << " norm_pix=" << norm_pix << " images=" << images << " " << reduction);
  auto gen = simmim::make_generator(31);
  const std::vector<int64_t> shape = images ? std::vector<int64_t>{2, 2, 4, 6} : std::vector<int64_t>{2, 3, 5};
  const torch::Tensor target = torch::randn(shape, gen, torch::kDouble).to(device);
  const torch::Tensor weights =
      (images ? torch::rand({2, 2, 3}, gen, torch::kDouble) : torch::rand({2, 3}, gen, torch::kDouble)).to(device);
  const auto options = MaskedLossOptions()
                           .kind(kind)
                           .beta(0.5)
                           .patch_size(images ? 2 : 1)
                           .norm_pix(norm_pix)
                           .reduction(reduction)
                           .backend(backend);
  // Keep every |pred - t| away from the kinks of L1 (0) and smooth-L1 (beta = 0.5), where a central
  // difference straddles two slopes: |d| in [0.1, 0.4] or [0.6, 1.6].
  torch::Tensor t = target;
  if (norm_pix) {
    t = images ? simmim::unpatchify(simmim::dispatch::normalize_patches(simmim::patchify(target, 2), 1e-6), 2, {2, 3})
               : simmim::dispatch::normalize_patches(target, 1e-6);
  }
  const torch::Tensor u = torch::rand(shape, gen, torch::kDouble).to(device);
  const torch::Tensor magnitude = torch::where(u < 0.5, 0.1 + 0.6 * u, 0.6 + 2 * (u - 0.5));
  const torch::Tensor sign = torch::where(torch::rand(shape, gen, torch::kDouble).to(device) < 0.5, -1.0, 1.0);
  const torch::Tensor pred = (t + sign * magnitude).detach().requires_grad_(true);
  // The target's gradient is checked where a fused backend gives one (not through norm_pix).
  const torch::Tensor target_leaf = target.clone().requires_grad_(!norm_pix || backend == Backend::kReference);
  const torch::Tensor grad_weights = torch::rand({2}, gen, torch::kDouble).to(device) + 0.5;

  const auto f = [&](const std::vector<torch::Tensor>& in) {
    torch::Tensor loss = simmim::masked_reconstruction_loss(in[0], in[1], weights, options);
    return reduction == LossReduction::kPerSample ? loss * grad_weights : loss;
  };
  const auto result = simmim_test::gradcheck(f, {pred, target_leaf}, 1e-6, 1e-7, 1e-4);
  INFO(result.report);
  CHECK(result.ok);
}

}  // namespace loss_test
