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
#include "loss_cases.hpp"
#include "loss_test_util.hpp"
#include "odr_probe.hpp"
#include "simmim/simmim.hpp"

using loss_test::Memory;
using loss_test::run_loss;
using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;

namespace {

using loss_test::Case;

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
    const Case c = loss_test::draw(rng);
    INFO("case " << i << ": " << c.str());
    loss_test::check_fused_case(c, 1000 + i, Backend::kFusedCPU, torch::kCPU);
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

#if SIMMIM_TEST_ODR_PROBE
odr_probe::Report odr_probe_avx2_tu();  // odr_probe_avx2.cpp, compiled with -mavx2

TEST_CASE("a translation unit compiled with -mavx2 never lends its copy of the CPU pass to a baseline one",
          "[loss][fused][odr]") {
  // Both TUs force the baseline build; each must run its own copy. With one symbol for both (the linker
  // keeps one), the two reports would be equal and one TU would run the other's code.
  const odr_probe::Report here = odr_probe::forced_baseline_pass();
  const odr_probe::Report avx2 = odr_probe_avx2_tu();
  INFO("this TU: " << here.compiled_isa << " ran " << here.ran << "; -mavx2 TU: " << avx2.compiled_isa << " ran "
                   << avx2.ran);
  REQUIRE(avx2.compiled_isa.find("_avx2") != std::string::npos);
  REQUIRE(here.compiled_isa != avx2.compiled_isa);  // this TU is built without -mavx2
  CHECK(here.ran == here.compiled_isa + "/baseline");
  CHECK(avx2.ran == avx2.compiled_isa + "/baseline");
}
#endif

TEST_CASE("gradcheck in double: both backends, every kind, norm-pix, layout and reduction", "[loss][gradcheck]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  const auto reduction = GENERATE(LossReduction::kMean, LossReduction::kPerSample);
  loss_test::gradcheck_case(backend, kind, norm_pix, images, reduction, torch::kCPU);
}
