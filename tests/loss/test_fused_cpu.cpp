// The fused CPU backend against the reference on hundreds of seeded random cases (every dtype, kind,
// norm-pix, mask dtype, reduction, layout and memory layout), thread-count independence, and a
// finite-difference gradient check of both backends in double.
#include <c10/core/CPUAllocator.h>
#include <torch/torch.h>

#include <algorithm>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <random>
#include <sstream>
#include <vector>

#include "../support/gradcheck.hpp"
#include "loss_test_util.hpp"
#include "simmim/simmim.hpp"

using loss_test::Memory;
using loss_test::run_loss;
using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;

namespace {

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
       << loss_test::to_string(pred_memory) << "/" << loss_test::to_string(target_memory) << "/"
       << loss_test::to_string(mask_memory) << " target_grad=" << target_grad;
    return os.str();
  }
};

template <typename T>
T pick(std::mt19937& rng, const std::vector<T>& from) {
  return from[std::uniform_int_distribution<size_t>(0, from.size() - 1)(rng)];
}
template <typename T>
T pick(std::mt19937& rng, std::initializer_list<T> from) {
  return pick(rng, std::vector<T>(from));
}

int64_t uniform(std::mt19937& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

Case draw(std::mt19937& rng) {
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
  c.mask_dtype = pick(rng, {torch::kBool, torch::kByte, torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16});
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

torch::Tensor make_mask(const Case& c, at::Generator& gen) {
  const auto shape = c.mask_shape();
  torch::Tensor m;
  if (c.mask_fill == 1) {
    m = torch::zeros(shape, torch::kDouble);
  } else if (c.mask_fill == 2) {
    m = torch::ones(shape, torch::kDouble);
  } else if (c.mask_dtype == torch::kBool || c.mask_dtype == torch::kByte) {
    m = (torch::rand(shape, gen, torch::kDouble) < 0.6).to(torch::kDouble);
  } else {
    m = torch::rand(shape, gen, torch::kDouble) * (torch::rand(shape, gen, torch::kDouble) < 0.7);
  }
  if (c.mask_memory == Memory::kExpanded) m = m.narrow(0, 0, 1).expand(shape).contiguous();
  return loss_test::arrange(m.to(c.mask_dtype), c.mask_memory);
}

// Records the size of every CPU tensor allocation while installed (delegating to the allocator it
// replaces), so a test can see what a computation allocates.
class AllocationRecorder : public c10::Allocator {
 public:
  AllocationRecorder() : base_(c10::GetCPUAllocator()) { c10::SetCPUAllocator(this, /*priority=*/0); }
  ~AllocationRecorder() override { c10::SetCPUAllocator(base_, /*priority=*/0); }
  AllocationRecorder(const AllocationRecorder&) = delete;
  AllocationRecorder& operator=(const AllocationRecorder&) = delete;

#if SIMMIM_TORCH_VERSION >= 203
  c10::DataPtr allocate(size_t n) override { return record(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#else
  c10::DataPtr allocate(size_t n) const override { return record(n); }
#endif
  c10::DeleterFnPtr raw_deleter() const override { return base_->raw_deleter(); }

  std::vector<size_t> sizes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return sizes_;
  }

 private:
  c10::DataPtr record(size_t n) const {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      sizes_.push_back(n);
    }
    return base_->allocate(n);
  }
  c10::Allocator* base_;
  mutable std::mutex mutex_;
  mutable std::vector<size_t> sizes_;
};

}  // namespace

TEST_CASE("the fused pass allocates no pixel-level mask: one gradient buffer, the rest at patch resolution",
          "[loss][fused]") {
  const int64_t B = 4, C = 3, H = 64, W = 64, p = 4;
  const torch::Tensor pred = torch::randn({B, C, H, W}).requires_grad_(true);
  const torch::Tensor target = torch::randn({B, C, H, W});
  const torch::Tensor mask = torch::rand({B, H / p, W / p}) < 0.6;
  const size_t grad_bytes = static_cast<size_t>(pred.numel()) * sizeof(float);
  const size_t pixel_mask_bytes = static_cast<size_t>(B * H * W);  // even as bool
  const auto allocations = [&](Backend backend) {
    pred.mutable_grad().reset();
    AllocationRecorder recorder;
    simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions::simmim(p).backend(backend)).backward();
    return recorder.sizes();
  };
  const std::vector<size_t> fused = allocations(Backend::kFusedCPU);
  // The gradient written in the forward pass, which backward hands out as is (grad_output 1, no
  // retain_graph): one pred-sized buffer in all.
  CHECK(std::count(fused.begin(), fused.end(), grad_bytes) == 1);
  for (const size_t n : fused) {
    if (n != grad_bytes) CHECK(n < pixel_mask_bytes);
  }
  // The recorder sees what the originals' op sequence allocates: the upsampled mask among the rest.
  const std::vector<size_t> reference = allocations(Backend::kReference);
  CHECK(std::count_if(reference.begin(), reference.end(),
                      [&](size_t n) { return n >= pixel_mask_bytes && n != grad_bytes; }) >= 1);
}

TEST_CASE("fused CPU equals the reference on 500 random cases", "[loss][fused]") {
  std::mt19937 rng(20261123);
  for (int i = 0; i < 500; ++i) {
    const Case c = draw(rng);
    INFO("case " << i << ": " << c.str());
    auto gen = simmim::make_generator(1000 + i);
    // Values drawn in double and rounded to the dtype, so the double oracle sees exactly the same inputs.
    const torch::Tensor pred_values = torch::randn(c.shape(), gen, torch::kDouble).to(c.dtype);
    const torch::Tensor target_values = torch::randn(c.shape(), gen, torch::kDouble).to(c.dtype);
    const torch::Tensor mask = make_mask(c, gen);
    const torch::Tensor pred = loss_test::arrange(pred_values, c.pred_memory);
    const torch::Tensor target = loss_test::arrange(target_values, c.target_memory);
    torch::Tensor grad_out;
    if (c.reduction == LossReduction::kPerSample) grad_out = torch::randn({c.B}, gen, torch::kDouble);

    const auto fused = run_loss(pred, target, mask, c.options(Backend::kFusedCPU), c.target_grad, grad_out);
    const auto ref = run_loss(pred, target, mask, c.options(Backend::kReference), c.target_grad, grad_out);
    REQUIRE(fused.loss.sizes() == ref.loss.sizes());
    REQUIRE(fused.loss.scalar_type() == c.dtype);
    REQUIRE(fused.grad_pred.sizes() == pred.sizes());
    const auto tol = loss_test::same_dtype_tolerance(c.dtype);
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
      const auto exact = run_loss(pred_values.to(torch::kDouble), target_values.to(torch::kDouble), mask,
                                  c.options(Backend::kReference), c.target_grad, grad_out);
      const auto tight = loss_test::tight_tolerance(c.dtype);
      LOSS_CHECK_CLOSE(fused.loss, exact.loss, tight);
      LOSS_CHECK_CLOSE(fused.grad_pred, exact.grad_pred, tight);
      LOSS_CHECK_CLOSE(fused.grad_target, exact.grad_target, tight);
    }
  }
}

TEST_CASE("fused CPU results do not depend on the thread count", "[loss][fused]") {
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  auto gen = simmim::make_generator(77);
  const std::vector<int64_t> shape = images ? std::vector<int64_t>{5, 3, 96, 80} : std::vector<int64_t>{5, 197, 48};
  const torch::Tensor pred = torch::randn(shape, gen).to(dtype);
  const torch::Tensor target = torch::randn(shape, gen).to(dtype);
  const torch::Tensor mask = images ? torch::rand({5, 24, 20}, gen) < 0.6 : torch::rand({5, 197}, gen) < 0.75;
  const auto options = MaskedLossOptions::simmim(4).kind(LossKind::kL2).norm_pix(norm_pix);
  const int threads = at::get_num_threads();
  std::vector<loss_test::LossRun> runs;
  for (int n : {1, 2, 3, 4}) {
    at::set_num_threads(n);
    runs.push_back(run_loss(pred, target, mask, options));
  }
  at::set_num_threads(threads);
  for (size_t k = 1; k < runs.size(); ++k) {
    CHECK(torch::equal(runs[k].loss, runs[0].loss));
    CHECK(torch::equal(runs[k].grad_pred, runs[0].grad_pred));
  }
}

TEST_CASE("the baseline and AVX2 builds of the CPU pass give bitwise the same results", "[loss][fused]") {
  using simmim::kernels::cpu::CpuIsa;
  if (!simmim::kernels::cpu::cpu_avx2_available()) SKIP("this build or CPU has no AVX2 path");
  const auto dtype = GENERATE(torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16);
  const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  auto gen = simmim::make_generator(5);
  // Odd sizes, so that runs end in partial lane groups.
  const std::vector<int64_t> shape = images ? std::vector<int64_t>{3, 3, 28, 42} : std::vector<int64_t>{3, 19, 37};
  const torch::Tensor pred = torch::randn(shape, gen).to(dtype);
  const torch::Tensor target = torch::randn(shape, gen).to(dtype);
  const torch::Tensor mask = images ? torch::rand({3, 2, 3}, gen) : torch::rand({3, 19}, gen);
  const auto options = MaskedLossOptions().kind(kind).beta(0.5).patch_size(14).norm_pix(norm_pix);
  struct Restore {
    ~Restore() { simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kAuto; }
  } restore;
  simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kBaseline;
  const auto baseline = run_loss(pred, target, mask, options, !norm_pix);
  simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kAVX2;
  const auto avx2 = run_loss(pred, target, mask, options, !norm_pix);
  CHECK(torch::equal(baseline.loss, avx2.loss));
  CHECK(torch::equal(baseline.grad_pred, avx2.grad_pred));
  if (!norm_pix) CHECK(torch::equal(baseline.grad_target, avx2.grad_target));
}

TEST_CASE("gradcheck in double: both backends, every kind, norm-pix, layout and reduction", "[loss][gradcheck]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  const auto reduction = GENERATE(LossReduction::kMean, LossReduction::kPerSample);
  INFO(backend << " " << kind << " norm_pix=" << norm_pix << " images=" << images << " " << reduction);
  auto gen = simmim::make_generator(31);
  const std::vector<int64_t> shape = images ? std::vector<int64_t>{2, 2, 4, 6} : std::vector<int64_t>{2, 3, 5};
  const torch::Tensor target = torch::randn(shape, gen, torch::kDouble);
  const torch::Tensor weights =
      images ? torch::rand({2, 2, 3}, gen, torch::kDouble) : torch::rand({2, 3}, gen, torch::kDouble);
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
  const torch::Tensor u = torch::rand(shape, gen, torch::kDouble);
  const torch::Tensor magnitude = torch::where(u < 0.5, 0.1 + 0.6 * u, 0.6 + 2 * (u - 0.5));
  const torch::Tensor sign = torch::where(torch::rand(shape, gen, torch::kDouble) < 0.5, -1.0, 1.0);
  const torch::Tensor pred = (t + sign * magnitude).detach().requires_grad_(true);
  // The target's gradient is checked where a fused backend gives one (not through norm_pix).
  const torch::Tensor target_leaf = target.clone().requires_grad_(!norm_pix || backend == Backend::kReference);
  const torch::Tensor grad_weights = torch::rand({2}, gen, torch::kDouble) + 0.5;

  const auto f = [&](const std::vector<torch::Tensor>& in) {
    torch::Tensor loss = simmim::masked_reconstruction_loss(in[0], in[1], weights, options);
    return reduction == LossReduction::kPerSample ? loss * grad_weights : loss;
  };
  const auto result = simmim_test::gradcheck(f, {pred, target_leaf}, 1e-6, 1e-7, 1e-4);
  INFO(result.report);
  CHECK(result.ok);
}
