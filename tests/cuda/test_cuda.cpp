// The fused CUDA backend (simmim::cuda): registration (runs anywhere this program is built, no GPU needed),
// and, tagged [cuda] (skipped where no GPU is), equality with the reference on 1000 random cases across
// dtypes, layouts, strides and odd sizes, gradcheck in double, bitwise-identical repeats, no host
// synchronization, and a SimMIM training step captured in a CUDA graph; the same for the token kinds'
// pass (kCosine, kCrossEntropy). [sanitize] marks the small cases
// scripts/gpu-check.sh runs under compute-sanitizer.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "../loss/loss_cases.hpp"
#include "../loss/loss_test_util.hpp"
#include "../loss/token_cases.hpp"
#include "simmim/simmim.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;

namespace {

#define SIMMIM_REQUIRE_GPU() \
  if (!torch::cuda::is_available()) SKIP("no CUDA device")

// Makes any host-device synchronization inside its scope an error (c10's sync debug mode).
struct NoSyncGuard {
  NoSyncGuard() { c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_ERROR); }
  ~NoSyncGuard() { c10::cuda::warning_state().set_sync_debug_mode(c10::cuda::SyncDebugMode::L_DISABLED); }
};

}  // namespace

TEST_CASE("simmim::cuda registers its kernels when the program links it", "[cuda-registry]") {
  REQUIRE(simmim::fused_cuda_available());
  const auto* entry = simmim::dispatch::cuda_entry_points();
  REQUIRE(entry != nullptr);
  CHECK_THAT(entry->built_for, ContainsSubstring("sm_"));
  // Forcing the CUDA backend on CPU tensors is a clear error, not a crash.
  const torch::Tensor x = torch::randn({2, 3, 8, 8});
  const torch::Tensor m = torch::ones({2, 4, 4}, torch::kBool);
  REQUIRE_THROWS_WITH(simmim::masked_reconstruction_loss(x, x, m, MaskedLossOptions::simmim(2).backend(Backend::kFusedCUDA)),
                      ContainsSubstring("the inputs of Backend::kFusedCUDA must be CUDA tensors; got Float tensor"));
}

TEST_CASE("fused CUDA equals the reference on 1000 random cases", "[cuda]") {
  SIMMIM_REQUIRE_GPU();
  std::mt19937 rng(20261126);
  for (int i = 0; i < 1000; ++i) {
    const loss_test::Case c = loss_test::draw(rng);
    INFO("case " << i << ": " << c.str());
    loss_test::check_fused_case(c, 5000 + i, Backend::kFusedCUDA, torch::kCUDA);
  }
}

TEST_CASE("kAuto picks fused CUDA for CUDA tensors", "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const torch::Tensor pred = torch::randn({2, 3, 8, 8}, torch::kCUDA).requires_grad_(true);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}, torch::kCUDA);
  const torch::Tensor mask = torch::rand({2, 4, 4}, torch::kCUDA) < 0.5;
  const auto loss = simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions::simmim(2));
  CHECK_THAT(loss.grad_fn()->name(), ContainsSubstring("FusedMaskedLoss"));
  loss.backward();
  const auto ref = loss_test::run_loss(pred, target, mask, MaskedLossOptions::simmim(2).backend(Backend::kReference));
  LOSS_CHECK_CLOSE(loss.detach(), ref.loss, loss_test::same_dtype_tolerance(torch::kFloat));
  LOSS_CHECK_CLOSE(pred.grad(), ref.grad_pred, loss_test::same_dtype_tolerance(torch::kFloat));
}

TEST_CASE("token kinds on CUDA tensors: kAuto keeps the reference, kFusedCUDA runs the token pass, both equal "
          "to the CPU's fused pass",
          "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  const int64_t K = GENERATE(8, 40);  // kCrossEntropy: a group per lane, and a group per warp
  if (kind == LossKind::kCosine && K == 40) SKIP("one cosine case is enough");
  INFO(kind << " K=" << K);
  auto gen = simmim::make_generator(21);
  const torch::Tensor pred = torch::randn({3, 49, 3 * K}, gen);
  const torch::Tensor target = kind == LossKind::kCosine ? torch::randn({3, 49, 3 * K}, gen)
                                                         : torch::randint(0, K, {3, 49, 3}, gen, torch::kLong);
  const torch::Tensor mask = torch::rand({3, 49}, gen) < 0.6;
  const auto options = MaskedLossOptions().kind(kind).eps(0);
  const auto cpu = loss_test::run_loss(pred, target, mask, MaskedLossOptions(options).backend(Backend::kFusedCPU));
  for (const Backend backend : {Backend::kAuto, Backend::kFusedCUDA}) {
    INFO(backend);
    const torch::Tensor p = pred.to(torch::kCUDA).requires_grad_(true);
    const torch::Tensor loss = simmim::masked_reconstruction_loss(p, target.to(torch::kCUDA), mask.to(torch::kCUDA),
                                                                  MaskedLossOptions(options).backend(backend));
    if (backend == Backend::kAuto) {
      CHECK_THAT(loss.grad_fn()->name(), !ContainsSubstring("FusedMaskedLoss"));
    } else {
      CHECK_THAT(loss.grad_fn()->name(), ContainsSubstring("FusedMaskedLoss"));
    }
    loss.backward();
    LOSS_CHECK_CLOSE(loss.detach().cpu(), cpu.loss, loss_test::same_dtype_tolerance(torch::kFloat));
    LOSS_CHECK_CLOSE(p.grad().cpu(), cpu.grad_pred, loss_test::same_dtype_tolerance(torch::kFloat));
  }
}

TEST_CASE("the fused CUDA token pass equals the reference on 300 random cases", "[cuda]") {
  SIMMIM_REQUIRE_GPU();
  std::mt19937 rng(20261127);
  for (int i = 0; i < 300; ++i) {
    const loss_test::TokenCase c = loss_test::draw_token_case(rng);
    INFO("case " << i << ": " << c.str());
    loss_test::check_token_case(c, 9000 + i, Backend::kFusedCUDA, torch::kCUDA);
  }
}

TEST_CASE("gradcheck in double on CUDA: the token kinds' fused pass", "[cuda][gradcheck]") {
  SIMMIM_REQUIRE_GPU();
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  const auto reduction = GENERATE(LossReduction::kMean, LossReduction::kPerSample);
  const int64_t K = GENERATE(3, 33);  // kCrossEntropy: a group per lane, a group per warp
  if (kind == LossKind::kCosine && K == 33) SKIP("one cosine width is enough");
  INFO(kind << " " << reduction << " K=" << K);
  auto gen = simmim::make_generator(12);
  const int64_t B = 2, L = 3, G = 2, D = kind == LossKind::kCosine ? 5 : G * K;
  const torch::Tensor pred = torch::randn({B, L, D}, gen, torch::kDouble).to(torch::kCUDA).requires_grad_(true);
  const torch::Tensor target = kind == LossKind::kCosine ? torch::randn({B, L, D}, gen, torch::kDouble).to(torch::kCUDA)
                                                         : loss_test::random_ids({B, L, G}, K, gen).to(torch::kCUDA);
  const torch::Tensor weights = torch::rand({B, L}, gen, torch::kDouble).to(torch::kCUDA);
  const torch::Tensor grad_weights = torch::rand({B}, gen, torch::kDouble).to(torch::kCUDA) + 0.5;
  const auto options = MaskedLossOptions().kind(kind).reduction(reduction).eps(1e-5).backend(Backend::kFusedCUDA);
  const auto f = [&](const std::vector<torch::Tensor>& in) {
    const torch::Tensor loss = simmim::masked_reconstruction_loss(in[0], target, weights, options);
    return reduction == LossReduction::kPerSample ? loss * grad_weights : loss;
  };
  const auto result = simmim_test::gradcheck(f, {pred}, 1e-6, 1e-7, 1e-4);
  INFO(result.report);
  CHECK(result.ok);
}

TEST_CASE("the fused CUDA token pass is right at full size, deterministic, and never synchronizes with the host",
          "[cuda]") {
  SIMMIM_REQUIRE_GPU();
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16, torch::kHalf);
  const int64_t G = GENERATE(1, 96);  // kCrossEntropy: 8192 classes (a warp per group) or 96 x 8 bins per token
  if (kind == LossKind::kCosine && G == 96) SKIP("one cosine width is enough");
  INFO(kind << " " << c10::toString(dtype) << " G=" << G);
  auto gen = simmim::make_generator(23);
  const int64_t B = 4, L = 49, D = kind == LossKind::kCosine ? 768 : (G == 1 ? 8192 : 96 * 8);
  const torch::Tensor target = kind == LossKind::kCosine
                                   ? torch::randn({B, L, D}, gen).to(torch::kCUDA, dtype)
                                   : loss_test::random_ids({B, L, G}, D / G, gen).to(torch::kCUDA);
  const torch::Tensor mask = (torch::rand({B, L}, gen) < 0.6).to(torch::kCUDA);
  const torch::Tensor pred_values = torch::randn({B, L, D}, gen).to(torch::kCUDA, dtype);
  const auto options = MaskedLossOptions().kind(kind).reduction(LossReduction::kPerSample).backend(Backend::kFusedCUDA);
  torch::Tensor first_loss, first_grad;
  for (int run = 0; run < 20; ++run) {
    const torch::Tensor pred = pred_values.clone().requires_grad_(true);
    torch::Tensor loss;
    {
      NoSyncGuard no_sync;
      loss = simmim::masked_reconstruction_loss(pred, target, mask, options);
      loss.sum().backward();
    }
    if (run == 0) {
      first_loss = loss.detach();
      first_grad = pred.grad();
      CHECK(torch::isfinite(first_loss).all().item<bool>());
      // Against the reference in double on the same values (8192 classes: 256 logits per lane).
      const auto exact = loss_test::run_loss(pred_values.to(torch::kDouble), kind == LossKind::kCosine ? target.to(torch::kDouble) : target,
                                             mask, MaskedLossOptions(options).backend(Backend::kReference));
      LOSS_CHECK_CLOSE(first_loss, exact.loss, loss_test::tight_tolerance(dtype));
      LOSS_CHECK_CLOSE(first_grad, exact.grad_pred, loss_test::tight_tolerance(dtype));
    } else {
      REQUIRE(torch::equal(loss.detach(), first_loss));
      REQUIRE(torch::equal(pred.grad(), first_grad));
    }
  }
}

TEST_CASE("the fused CUDA cross-entropy: an id outside [0, K) makes its token's loss NaN, value checks make it an "
          "error",
          "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const torch::Tensor pred = torch::randn({2, 4, 6}, torch::kCUDA);
  torch::Tensor ids = torch::zeros({2, 4, 2}, torch::TensorOptions(torch::kCUDA).dtype(torch::kLong));
  ids[1][2][1] = 3;  // K = 3
  const torch::Tensor mask = torch::ones({2, 4}, torch::kCUDA);
  const auto options = MaskedLossOptions()
                           .kind(LossKind::kCrossEntropy)
                           .reduction(LossReduction::kPerSample)
                           .backend(Backend::kFusedCUDA);
  struct RestoreChecks {
    bool on = simmim::value_checks();
    ~RestoreChecks() { simmim::set_value_checks(on); }
  } restore;
  simmim::set_value_checks(false);
  const torch::Tensor p = pred.clone().requires_grad_(true);
  const torch::Tensor loss = simmim::masked_reconstruction_loss(p, ids, mask, options);
  loss.sum().backward();
  CHECK(std::isfinite(loss[0].item<double>()));
  CHECK(std::isnan(loss[1].item<double>()));
  // The bad id's group has a NaN gradient; every other group a finite one.
  const torch::Tensor nan_grad = torch::isnan(p.grad()).cpu();
  CHECK(nan_grad[1][2].narrow(0, 3, 3).all().item<bool>());
  CHECK(nan_grad.sum().item<int64_t>() == 3);
  simmim::set_value_checks(true);
  REQUIRE_THROWS_WITH(simmim::masked_reconstruction_loss(pred, ids, mask, options),
                      ContainsSubstring("class ids in [0, K) with K = 3"));
}

TEST_CASE("fused CUDA, small cases of every dtype, kind, layout and norm-pix", "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const auto dtype = GENERATE(torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16);
  const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  const bool channels_last = GENERATE(false, true);
  if (channels_last && !images) SKIP("channels-last is an images layout");
  INFO(c10::toString(dtype) << " " << kind << " norm_pix=" << norm_pix << " images=" << images
                            << " channels_last=" << channels_last);
  auto gen = simmim::make_generator(9);
  // Odd sizes: runs that end in partial vectors, cells that straddle them.
  const std::vector<int64_t> shape = images ? std::vector<int64_t>{3, 3, 12, 20} : std::vector<int64_t>{3, 19, 37};
  torch::Tensor pred = torch::randn(shape, gen).to(torch::kCUDA, dtype);
  torch::Tensor target = torch::randn(shape, gen).to(torch::kCUDA, dtype);
  if (channels_last) {
    pred = pred.contiguous(at::MemoryFormat::ChannelsLast);
    target = target.contiguous(at::MemoryFormat::ChannelsLast);
  }
  const torch::Tensor mask = (images ? torch::rand({3, 3, 5}, gen) : torch::rand({3, 19}, gen)).to(torch::kCUDA);
  const auto options = MaskedLossOptions().kind(kind).beta(0.5).patch_size(images ? 4 : 1).norm_pix(norm_pix);
  const auto fused = loss_test::run_loss(pred, target, mask, MaskedLossOptions(options).backend(Backend::kFusedCUDA));
  const auto ref = loss_test::run_loss(pred.to(torch::kDouble), target.to(torch::kDouble), mask,
                                       MaskedLossOptions(options).backend(Backend::kReference));
  const auto tol = loss_test::tight_tolerance(dtype);
  LOSS_CHECK_CLOSE(fused.loss, ref.loss, tol);
  LOSS_CHECK_CLOSE(fused.grad_pred, ref.grad_pred, tol);
  if (channels_last) CHECK(fused.grad_pred.is_contiguous(at::MemoryFormat::ChannelsLast));
}

TEST_CASE("gradcheck in double on CUDA: every kind, norm-pix, layout and reduction", "[cuda][gradcheck]") {
  SIMMIM_REQUIRE_GPU();
  const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  const auto reduction = GENERATE(LossReduction::kMean, LossReduction::kPerSample);
  loss_test::gradcheck_case(Backend::kFusedCUDA, kind, norm_pix, images, reduction, torch::kCUDA);
}

TEST_CASE("fused CUDA is deterministic: 100 runs, bitwise the same loss and gradient", "[cuda]") {
  SIMMIM_REQUIRE_GPU();
  const auto dtype = GENERATE(torch::kFloat, torch::kBFloat16);
  const bool norm_pix = GENERATE(false, true);
  const bool images = GENERATE(true, false);
  auto gen = simmim::make_generator(17);
  const std::vector<int64_t> shape = images ? std::vector<int64_t>{16, 3, 96, 96} : std::vector<int64_t>{16, 196, 768};
  const torch::Tensor pred = torch::randn(shape, gen).to(torch::kCUDA, dtype);
  const torch::Tensor target = torch::randn(shape, gen).to(torch::kCUDA, dtype);
  const torch::Tensor mask =
      (images ? torch::rand({16, 24, 24}, gen) < 0.6 : torch::rand({16, 196}, gen) < 0.75).to(torch::kCUDA);
  const auto options = images ? MaskedLossOptions::simmim(4).norm_pix(norm_pix) : MaskedLossOptions::mae(norm_pix);
  const auto first = loss_test::run_loss(pred, target, mask, options);
  for (int run = 1; run < 100; ++run) {
    const auto again = loss_test::run_loss(pred, target, mask, options);
    REQUIRE(torch::equal(again.loss, first.loss));
    REQUIRE(torch::equal(again.grad_pred, first.grad_pred));
  }
}

TEST_CASE("the fused CUDA loss never synchronizes with the host", "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const auto reduction = GENERATE(LossReduction::kMean, LossReduction::kPerSample);
  const torch::Tensor pred = torch::randn({4, 3, 32, 32}, torch::kCUDA).requires_grad_(true);
  const torch::Tensor target = torch::randn({4, 3, 32, 32}, torch::kCUDA);
  const torch::Tensor mask = torch::rand({4, 8, 8}, torch::kCUDA) < 0.6;
  const auto options = MaskedLossOptions::simmim(4).reduction(reduction).backend(Backend::kFusedCUDA);
  {
    NoSyncGuard no_sync;
    torch::Tensor loss = simmim::masked_reconstruction_loss(pred, target, mask, options);
    if (reduction == LossReduction::kPerSample) loss = loss.sum();
    loss.backward();
  }
  CHECK(torch::isfinite(pred.grad()).all().item<bool>());
}

TEST_CASE("a retained graph backs the fused CUDA loss twice with the same gradient", "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const torch::Tensor pred = torch::randn({2, 3, 8, 8}, torch::kCUDA).requires_grad_(true);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}, torch::kCUDA);
  const torch::Tensor mask = torch::rand({2, 4, 4}, torch::kCUDA) < 0.5;
  const auto loss = simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions::simmim(2));
  const auto once = torch::autograd::grad({loss * 3}, {pred}, {}, /*retain_graph=*/true)[0];
  const auto twice = torch::autograd::grad({loss * 3}, {pred}, {}, /*retain_graph=*/false)[0];
  CHECK(torch::equal(once, twice));
}

TEST_CASE("a SimMIM training step is capturable in a CUDA graph and replays like eager", "[cuda]") {
  SIMMIM_REQUIRE_GPU();
  torch::manual_seed(0);
  auto options = simmim::SimMIMOptions::mnist();
  simmim::SimMIM eager(options);
  simmim::SimMIM graphed(options);
  {
    torch::NoGradGuard no_grad;
    const auto src = eager->parameters();
    const auto dst = graphed->parameters();
    for (size_t k = 0; k < src.size(); ++k) dst[k].copy_(src[k]);
  }
  eager->to(torch::kCUDA);
  graphed->to(torch::kCUDA);
  auto gen = simmim::make_generator(3);
  const torch::Tensor images = torch::rand({8, 1, 28, 28}, gen).to(torch::kCUDA);
  const torch::Tensor mask = (torch::rand({8, 4, 4}, gen) < 0.6).to(torch::kCUDA);
  const double lr = 1e-2;
  auto step = [&](simmim::SimMIM& model, const torch::Tensor& x, const torch::Tensor& m) {
    for (auto& p : model->parameters()) {
      if (p.grad().defined()) p.mutable_grad().zero_();
    }
    const auto out = model->forward(x, m);
    out.loss.backward();
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.sub_(p.grad(), lr);
    return out.loss.detach();
  };

  // Static inputs for the graph; warm up on a side stream (allocations, lazy init), then capture.
  torch::Tensor static_images = images.clone(), static_mask = mask.clone();
  const auto side = at::cuda::getStreamFromPool();
  {
    at::cuda::CUDAEvent ready;
    ready.record(at::cuda::getCurrentCUDAStream());
    ready.block(side);
  }
  torch::Tensor static_loss;
  {
    const at::cuda::CUDAStreamGuard guard(side);
    // One eager step on both, so that .grad buffers exist before capture and the two models stay equal.
    step(eager, images, mask);
    step(graphed, static_images, static_mask);
    at::cuda::CUDAGraph graph;
    graph.capture_begin();
    static_loss = step(graphed, static_images, static_mask);
    graph.capture_end();
    at::cuda::getCurrentCUDAStream().synchronize();
    // Capture only records: replay runs the second step.
    graph.replay();
    const torch::Tensor eager_loss = step(eager, images, mask);
    at::cuda::getCurrentCUDAStream().synchronize();
    CHECK(torch::allclose(static_loss, eager_loss, 1e-5, 1e-6));
    const auto a = eager->parameters(), b = graphed->parameters();
    for (size_t k = 0; k < a.size(); ++k) CHECK(torch::allclose(a[k], b[k], 1e-5, 1e-6));
  }
}

TEST_CASE("a SimMIM and an MAE step under bf16 / fp16 autocast: a float loss through the fused CUDA pass",
          "[cuda][sanitize]") {
  SIMMIM_REQUIRE_GPU();
  const auto precision = GENERATE(simmim::Precision::kBFloat16, simmim::Precision::kFloat16);
  torch::manual_seed(0);
  simmim::SimMIM simmim_model(simmim::SimMIMOptions::mnist());
  simmim::MAE mae_model(simmim::MAEOptions::mnist());
  simmim_model->to(torch::kCUDA);
  mae_model->to(torch::kCUDA);
  auto gen = simmim::make_generator(4);
  const torch::Tensor images = torch::rand({8, 1, 28, 28}, gen).to(torch::kCUDA);
  const torch::Tensor mask = (torch::rand({8, 4, 4}, gen) < 0.6).to(torch::kCUDA);
  // MAE's mask is the patch grid [B, 4, 4] with the same count in every row: 12 of 16.
  const torch::Tensor patch_mask = (torch::rand({8, 16}, gen).argsort(int64_t{1}) < 12).view({8, 4, 4}).to(torch::kCUDA);
  for (int which = 0; which < 2; ++which) {
    INFO((which == 0 ? "SimMIM " : "MAE ") << simmim::precision_name(precision));
    torch::Tensor loss;
    {
      simmim::AutocastGuard autocast(torch::kCUDA, precision);
      loss = which == 0 ? simmim_model->forward(images, mask).loss : mae_model->forward(images, patch_mask).loss;
    }
    CHECK(loss.scalar_type() == torch::kFloat);
    CHECK(std::isfinite(loss.item<float>()));
    loss.backward();
    auto params = which == 0 ? simmim_model->parameters() : mae_model->parameters();
    for (const auto& p : params) {
      if (p.grad().defined()) CHECK(torch::isfinite(p.grad()).all().item<bool>());
    }
  }
}
