// The token loss kinds (kCosine, kCrossEntropy) on the patchified layout: each against an independent
// oracle (a hand loop; torch's cross_entropy), the fused CPU pass against the reference on random cases
// over dtypes, shapes, groups, masks, reductions and memory layouts, thread-count independence, the
// backend rules and every bad input; and a gradcheck in double of both backends.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <vector>

#include "../support/gradcheck.hpp"
#include "loss_test_util.hpp"
#include "token_cases.hpp"
#include "simmim/simmim.hpp"

using Catch::Matchers::ContainsSubstring;
using loss_test::random_ids;
using loss_test::run_loss;
using loss_test::token_options;
using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;

namespace {

// The loss of a token kind by plain loops in double, from the formula of docs/losses.md alone.
double hand_loss(LossKind kind, const torch::Tensor& pred, const torch::Tensor& target, const torch::Tensor& mask,
                 double eps, double norm_eps) {
  const torch::Tensor p = pred.to(torch::kDouble).contiguous(), m = mask.to(torch::kDouble).contiguous();
  const int64_t B = p.size(0), L = p.size(1), D = p.size(2);
  const auto pa = p.accessor<double, 3>();
  const auto ma = m.accessor<double, 2>();
  double num = 0, den = 0;
  int64_t per_token = 1;
  if (kind == LossKind::kCosine) {
    const torch::Tensor t = target.to(torch::kDouble).contiguous();
    const auto ta = t.accessor<double, 3>();
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t l = 0; l < L; ++l) {
        double pp = 0, tt = 0, pt = 0;
        for (int64_t d = 0; d < D; ++d) {
          pp += pa[b][l][d] * pa[b][l][d];
          tt += ta[b][l][d] * ta[b][l][d];
          pt += pa[b][l][d] * ta[b][l][d];
        }
        num += ma[b][l] * (1 - pt / (std::max(std::sqrt(pp), norm_eps) * std::max(std::sqrt(tt), norm_eps)));
        den += ma[b][l];
      }
    }
  } else {
    const torch::Tensor y = target.to(torch::kLong).contiguous();
    const auto ya = y.accessor<int64_t, 3>();
    const int64_t G = y.size(2), K = D / G;
    per_token = G;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t l = 0; l < L; ++l) {
        for (int64_t g = 0; g < G; ++g) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += std::exp(pa[b][l][g * K + k]);
          num += ma[b][l] * (std::log(s) - pa[b][l][g * K + ya[b][l][g]]);
        }
        den += ma[b][l];
      }
    }
  }
  return num / (static_cast<double>(per_token) * (den + eps));
}

}  // namespace

TEST_CASE("token kinds equal a hand loop of their formula, on both backends", "[loss][token]") {
  const auto backend = GENERATE(Backend::kReference, Backend::kFusedCPU);
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  auto gen = simmim::make_generator(3);
  const int64_t B = 2, L = 19, G = kind == LossKind::kCrossEntropy ? 3 : 1, D = kind == LossKind::kCrossEntropy ? 15 : 24;
  const torch::Tensor pred = torch::randn({B, L, D}, gen, torch::kDouble);
  torch::Tensor target = kind == LossKind::kCosine ? torch::randn({B, L, D}, gen, torch::kDouble)
                                                   : random_ids({B, L, G}, D / G, gen);
  // One zero prediction: its norm sits on the floor (the cosine is 0, the loss 1).
  if (kind == LossKind::kCosine) pred[1][4].zero_();
  const torch::Tensor mask = torch::rand({B, L}, gen) < 0.5;
  const auto options = token_options(kind, backend).eps(1e-5);
  const double got = simmim::masked_reconstruction_loss(pred, target, mask, options).item<double>();
  CHECK(std::abs(got - hand_loss(kind, pred, target, mask, 1e-5, options.norm_eps())) < 1e-12);
}

TEST_CASE("kCrossEntropy is torch's cross_entropy, averaged over the ids of the masked tokens", "[loss][token]") {
  const auto backend = GENERATE(Backend::kReference, Backend::kFusedCPU);
  auto gen = simmim::make_generator(4);
  const int64_t B = 3, L = 7, G = 4, K = 6;
  const torch::Tensor logits = torch::randn({B, L, G * K}, gen) * 3;
  const torch::Tensor ids = random_ids({B, L, G}, K, gen);
  const torch::Tensor mask = torch::rand({B, L}, gen) < 0.6;
  const torch::Tensor per_id =
      torch::nn::functional::cross_entropy(logits.reshape({-1, K}), ids.reshape({-1}),
                                           torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone))
          .reshape({B, L, G});
  const torch::Tensor expected = (per_id.mean(-1) * mask).sum() / mask.sum();
  const torch::Tensor got =
      simmim::masked_reconstruction_loss(logits, ids, mask, token_options(LossKind::kCrossEntropy, backend));
  CHECK(torch::allclose(got, expected, 1e-6, 1e-6));
}

TEST_CASE("token kinds: fused CPU equals the reference on 150 random cases", "[loss][token][fused]") {
  std::mt19937 rng(20261126);
  for (int i = 0; i < 150; ++i) {
    const loss_test::TokenCase c = loss_test::draw_token_case(rng);
    INFO("case " << i << ": " << c.str());
    loss_test::check_token_case(c, 500 + i, Backend::kFusedCPU, torch::kCPU);
  }
}

TEST_CASE("token kinds: fused CPU results do not depend on the thread count", "[loss][token][fused]") {
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  auto gen = simmim::make_generator(8);
  const int64_t B = 3, L = 197, D = kind == LossKind::kCosine ? 768 : 48 * 8;
  const torch::Tensor pred = torch::randn({B, L, D}, gen);
  const torch::Tensor target = kind == LossKind::kCosine ? torch::randn({B, L, D}, gen) : random_ids({B, L, 48}, 8, gen);
  const torch::Tensor mask = torch::rand({B, L}, gen) < 0.6;
  const int threads = at::get_num_threads();
  std::vector<loss_test::LossRun> runs;
  for (int n : {1, 2, 3, 4}) {
    at::set_num_threads(n);
    runs.push_back(run_loss(pred, target, mask, token_options(kind, Backend::kFusedCPU)));
  }
  at::set_num_threads(threads);
  for (size_t k = 1; k < runs.size(); ++k) {
    CHECK(torch::equal(runs[k].loss, runs[0].loss));
    CHECK(torch::equal(runs[k].grad_pred, runs[0].grad_pred));
  }
}

TEST_CASE("token kinds: the baseline and AVX2 builds of the CPU pass give bitwise the same results",
          "[loss][token][fused]") {
  using simmim::kernels::cpu::CpuIsa;
  if (!simmim::kernels::cpu::cpu_avx2_available()) SKIP("this build or CPU has no AVX2 path");
  const auto dtype = GENERATE(torch::kFloat, torch::kDouble, torch::kHalf, torch::kBFloat16);
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  auto gen = simmim::make_generator(6);
  // Odd widths, so that the loops end in partial vectors: 35 and 69 values (cosine), 5 ids of K = 3 or 37.
  for (const int64_t K : {int64_t{3}, int64_t{37}}) {
    const int64_t width = kind == LossKind::kCosine ? 32 + K : 5 * K;
    const torch::Tensor pred = (torch::randn({3, 19, width}, gen) * 3).to(dtype);
    const torch::Tensor target = kind == LossKind::kCosine ? torch::randn({3, 19, width}, gen).to(dtype)
                                                           : random_ids({3, 19, 5}, K, gen);
    const torch::Tensor mask = torch::rand({3, 19}, gen);
    struct Restore {
      ~Restore() { simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kAuto; }
    } restore;
    simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kBaseline;
    const auto baseline = run_loss(pred, target, mask, token_options(kind, Backend::kFusedCPU));
    CHECK_THAT(std::string(simmim::kernels::cpu::last_cpu_pass_build().load()), ContainsSubstring("/baseline"));
    simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kAVX2;
    const auto avx2 = run_loss(pred, target, mask, token_options(kind, Backend::kFusedCPU));
    CHECK_THAT(std::string(simmim::kernels::cpu::last_cpu_pass_build().load()), ContainsSubstring("/avx2"));
    CHECK(torch::equal(baseline.loss, avx2.loss));
    CHECK(torch::equal(baseline.grad_pred, avx2.grad_pred));
  }
}

TEST_CASE("token kinds: reuse_grad_memory writes the dropped gradient's memory, and changes no value",
          "[loss][token][fused]") {
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  auto gen = simmim::make_generator(9);
  const torch::Tensor target = kind == LossKind::kCosine ? torch::randn({2, 7, 24}, gen) : random_ids({2, 7, 3}, 8, gen);
  const torch::Tensor mask = torch::rand({2, 7}, gen) < 0.6;
  const torch::Tensor pred = torch::randn({2, 7, 24}, gen).requires_grad_(true);
  const auto fresh = token_options(kind, Backend::kFusedCPU);
  const torch::Tensor expected = run_loss(pred, target, mask, fresh).grad_pred;
  const auto reuse = token_options(kind, Backend::kFusedCPU).reuse_grad_memory(true);
  auto step = [&] { simmim::masked_reconstruction_loss(pred, target, mask, reuse).backward(); };
  step();
  CHECK(torch::equal(pred.grad(), expected));
  step();  // still held as pred.grad: other memory, accumulated
  CHECK(torch::equal(pred.grad(), 2 * expected));
  pred.mutable_grad().reset();
  step();
  const void* memory = pred.grad().data_ptr();
  pred.mutable_grad().reset();
  step();
  CHECK(pred.grad().data_ptr() == memory);
  CHECK(torch::equal(pred.grad(), expected));
}

TEST_CASE("token kinds: the cross-entropy's groups far below the token's max, or holding NaN / inf, are exact",
          "[loss][token][fused]") {
  // The fused pass shifts every group by the token's max and redoes, with its own max, a group whose sum
  // fell too low (logits 100 below the token's max) or is not finite (NaN, +inf): each group's loss
  // and gradient as log_softmax gives them.
  auto gen = simmim::make_generator(10);
  torch::Tensor logits = torch::randn({1, 2, 4 * 5}, gen, torch::kDouble).to(torch::kFloat);
  logits.index_put_({0, 0, torch::indexing::Slice(5, 10)}, logits.index({0, 0, torch::indexing::Slice(5, 10)}) - 100);
  logits.index_put_({0, 1, 3}, std::numeric_limits<float>::quiet_NaN());
  logits.index_put_({0, 1, 12}, std::numeric_limits<float>::infinity());
  const torch::Tensor ids = random_ids({1, 2, 4}, 5, gen);
  const torch::Tensor mask = torch::ones({1, 2});
  const auto opts = token_options(LossKind::kCrossEntropy, Backend::kFusedCPU).reduction(LossReduction::kPerSample);
  const auto fused = run_loss(logits, ids, mask, opts);
  const auto ref = run_loss(logits, ids, mask, token_options(LossKind::kCrossEntropy, Backend::kReference)
                                                   .reduction(LossReduction::kPerSample));
  CHECK(std::isnan(fused.loss.item<double>()));  // token 1 holds a NaN group
  // Token 0 alone: its far group is exact.
  const torch::Tensor t0 = logits.narrow(1, 0, 1), ids0 = ids.narrow(1, 0, 1), m0 = torch::ones({1, 1});
  const auto fused0 = run_loss(t0, ids0, m0, opts);
  const auto ref0 = run_loss(t0.to(torch::kDouble), ids0, m0,
                             token_options(LossKind::kCrossEntropy, Backend::kReference).reduction(LossReduction::kPerSample));
  CHECK(std::isfinite(fused0.loss.item<double>()));
  LOSS_CHECK_CLOSE(fused0.loss, ref0.loss, loss_test::tight_tolerance(torch::kFloat));
  LOSS_CHECK_CLOSE(fused0.grad_pred, ref0.grad_pred, loss_test::tight_tolerance(torch::kFloat));
  // Token 1's gradient: NaN exactly where log_softmax's is (its NaN and inf groups), finite elsewhere.
  CHECK(torch::equal(torch::isnan(fused.grad_pred), torch::isnan(ref.grad_pred)));
  const torch::Tensor finite = torch::isfinite(ref.grad_pred);
  CHECK(torch::allclose(fused.grad_pred.masked_select(finite), ref.grad_pred.masked_select(finite), 1e-5, 1e-6));
}

TEST_CASE("token kinds: gradcheck in double on both backends", "[loss][token][gradcheck]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  const auto reduction = GENERATE(LossReduction::kMean, LossReduction::kPerSample);
  INFO(backend << " " << kind << " " << reduction);
  auto gen = simmim::make_generator(12);
  const int64_t B = 2, L = 3, G = 2, D = kind == LossKind::kCosine ? 5 : 2 * 3;
  const torch::Tensor pred = torch::randn({B, L, D}, gen, torch::kDouble).requires_grad_(true);
  // The cosine's target gets its gradient on the reference (kAuto routes a target that requires grad there).
  const torch::Tensor target =
      kind == LossKind::kCosine
          ? torch::randn({B, L, D}, gen, torch::kDouble).requires_grad_(backend == Backend::kReference)
          : random_ids({B, L, G}, D / G, gen);
  const torch::Tensor weights = torch::rand({B, L}, gen, torch::kDouble);
  const torch::Tensor grad_weights = torch::rand({B}, gen, torch::kDouble) + 0.5;
  const auto options = token_options(kind, backend).reduction(reduction).eps(1e-5);
  const auto f = [&](const std::vector<torch::Tensor>& in) {
    const torch::Tensor loss = simmim::masked_reconstruction_loss(in[0], in.size() > 1 ? in[1] : target, weights, options);
    return reduction == LossReduction::kPerSample ? loss * grad_weights : loss;
  };
  const std::vector<torch::Tensor> inputs =
      target.requires_grad() ? std::vector<torch::Tensor>{pred, target} : std::vector<torch::Tensor>{pred};
  const auto result = simmim_test::gradcheck(f, inputs, 1e-6, 1e-7, 1e-4);
  INFO(result.report);
  CHECK(result.ok);
}

TEST_CASE("token kinds: backend rules and gradients", "[loss][token]") {
  auto gen = simmim::make_generator(13);
  const torch::Tensor pred = torch::randn({2, 5, 8}, gen).requires_grad_(true);
  const torch::Tensor target = torch::randn({2, 5, 8}, gen).requires_grad_(true);
  const torch::Tensor mask = torch::rand({2, 5}, gen) < 0.6;
  SECTION("a cosine target that requires grad goes to the reference under kAuto, and gets its gradient") {
    const auto ref = run_loss(pred, target, mask, token_options(LossKind::kCosine, Backend::kReference), true);
    const auto aut = run_loss(pred, target, mask, token_options(LossKind::kCosine, Backend::kAuto), true);
    CHECK(torch::allclose(aut.grad_target, ref.grad_target));
    CHECK(torch::allclose(aut.grad_pred, ref.grad_pred));
    REQUIRE_THROWS_WITH(
        simmim::masked_reconstruction_loss(pred, target, mask, token_options(LossKind::kCosine, Backend::kFusedCPU)),
        ContainsSubstring("target must be free of grad with LossKind::kCosine on Backend::kFusedCPU"));
  }
  SECTION("the fused pass is first-order only, the reference any order") {
    const torch::Tensor loss = simmim::masked_reconstruction_loss(
        pred, target.detach(), mask, token_options(LossKind::kCosine, Backend::kReference));
    const torch::Tensor g = torch::autograd::grad({loss}, {pred}, {}, true, true)[0];
    CHECK(g.requires_grad());
  }
  SECTION("kAuto runs every token kind on CPU tensors on the fused pass, at any K and dtype") {
    using simmim::dispatch::make_masked_loss_problem;
    using simmim::dispatch::resolve_masked_loss_backend;
    const auto opts = token_options(LossKind::kCrossEntropy, Backend::kAuto);
    const auto pick = [&](int64_t D, int64_t G, at::ScalarType dtype) {
      const torch::Tensor p = torch::randn({2, 5, D}, gen).to(dtype);
      const torch::Tensor ids = random_ids({2, 5, G}, D / G, gen);
      return resolve_masked_loss_backend(make_masked_loss_problem(p, ids, mask, opts, "test"), Backend::kAuto, "test");
    };
    CHECK(pick(2 * 3, 3, at::kFloat) == Backend::kFusedCPU);     // K = 2
    CHECK(pick(8 * 3, 3, at::kFloat) == Backend::kFusedCPU);     // K = 8, SimMIM's color bins
    CHECK(pick(16, 1, at::kDouble) == Backend::kFusedCPU);
    CHECK(pick(8 * 3, 3, at::kBFloat16) == Backend::kFusedCPU);
    CHECK(resolve_masked_loss_backend(
              make_masked_loss_problem(pred.detach(), target.detach(), mask, token_options(LossKind::kCosine, Backend::kAuto), "test"),
              Backend::kAuto, "test") == Backend::kFusedCPU);
  }
  SECTION("a forced kFusedCUDA on CPU tensors is an error") {
    CHECK_THROWS(simmim::masked_reconstruction_loss(pred, target.detach(), mask,
                                                    token_options(LossKind::kCosine, Backend::kFusedCUDA)));
  }
}

TEST_CASE("token kinds: empty masks give 0, NaN propagates", "[loss][token]") {
  const auto backend = GENERATE(Backend::kReference, Backend::kFusedCPU);
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kCrossEntropy);
  auto gen = simmim::make_generator(14);
  torch::Tensor pred = torch::randn({2, 4, 6}, gen);
  const torch::Tensor target = kind == LossKind::kCosine ? torch::randn({2, 4, 6}, gen) : random_ids({2, 4, 2}, 3, gen);
  const auto options = token_options(kind, backend);
  const auto empty = run_loss(pred, target, torch::zeros({2, 4}, torch::kBool), options);
  CHECK(empty.loss.item<double>() == 0.0);
  CHECK(empty.grad_pred.abs().max().item<double>() == 0.0);
  pred[0][1][2] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(simmim::masked_reconstruction_loss(pred, target, torch::ones({2, 4}, torch::kBool), options)
                       .item<double>()));
}

TEST_CASE("token kinds: every bad input is a clear error", "[loss][token][errors]") {
  const auto f = [](const torch::Tensor& p, const torch::Tensor& t, const torch::Tensor& m, const MaskedLossOptions& o) {
    return simmim::masked_reconstruction_loss(p, t, m, o);
  };
  const torch::Tensor tokens = torch::randn({2, 4, 6});
  const torch::Tensor mask = torch::ones({2, 4}, torch::kBool);
  const auto cosine = token_options(LossKind::kCosine, Backend::kAuto);
  const auto ce = token_options(LossKind::kCrossEntropy, Backend::kAuto);
  REQUIRE_THROWS_WITH(
      f(torch::randn({2, 3, 8, 8}), torch::randn({2, 3, 8, 8}), torch::ones({2, 2, 2}), MaskedLossOptions(cosine).patch_size(4)),
      ContainsSubstring("simmim::masked_reconstruction_loss: pred must be a 3-D tensor [B, L, D] (patchified) for "
                        "LossKind::kCosine, which scores whole tokens; got Float tensor [2, 3, 8, 8]"));
  REQUIRE_THROWS_WITH(f(tokens, tokens, mask, MaskedLossOptions(cosine).norm_pix(true)),
                      ContainsSubstring("options.norm_pix must be false for LossKind::kCosine"));
  REQUIRE_THROWS_WITH(f(tokens, torch::zeros({2, 4, 4}, torch::kLong), mask, ce),
                      ContainsSubstring("target must be integer class ids [B, L, G] = [2, 4, G] with G dividing "
                                        "pred's D = 6 (LossKind::kCrossEntropy: K = D / G logits per id); got Long "
                                        "tensor [2, 4, 4]"));
  REQUIRE_THROWS_WITH(f(tokens, torch::zeros({2, 4, 2}), mask, ce), ContainsSubstring("target must be integer class ids"));
  REQUIRE_THROWS_WITH(f(tokens, torch::zeros({2, 4}, torch::kLong), mask, ce),
                      ContainsSubstring("target must be integer class ids"));
  for (const Backend backend : {Backend::kReference, Backend::kFusedCPU}) {
    INFO(backend);
    torch::Tensor ids = torch::zeros({2, 4, 2}, torch::kLong);
    ids[1][3][1] = 3;  // K = 3
    REQUIRE_THROWS_WITH(f(tokens, ids, mask, MaskedLossOptions(ce).backend(backend)),
                        ContainsSubstring("target must be class ids in [0, K) with K = 3; got 1 id(s) outside it"));
    ids[1][3][1] = -1;
    REQUIRE_THROWS_WITH(f(tokens, ids, mask, MaskedLossOptions(ce).backend(backend)),
                        ContainsSubstring("target must be class ids in [0, K) with K = 3; got 1 id(s) outside it"));
  }
  REQUIRE_THROWS_WITH(f(tokens, tokens, mask, MaskedLossOptions().kind(static_cast<LossKind>(9))),
                      ContainsSubstring("options.kind must be LossKind::kL1, kL2, kSmoothL1, kCosine or "
                                        "kCrossEntropy; got LossKind(9)"));
}

TEST_CASE("the cross-entropy pass's exp is within 2 ulp of std::exp on [-87, 0], and keeps NaN", "[loss][token]") {
  using simmim::kernels::cpu::detail::exp_nonpositive;
  double worst = 0;
  for (int i = 0; i <= 200000; ++i) {
    const float x = -87.0f * static_cast<float>(i) / 200000.0f;
    const float e = static_cast<float>(std::exp(static_cast<double>(x)));
    const double ulp = static_cast<double>(std::nextafter(e, 1e30f) - e);
    worst = std::max(worst, std::abs(static_cast<double>(exp_nonpositive(x)) - std::exp(static_cast<double>(x))) / ulp);
  }
  INFO("worst error " << worst << " ulp");
  CHECK(worst <= 2.0);
  CHECK(exp_nonpositive(0.0f) == 1.0f);
  CHECK(std::isnan(exp_nonpositive(std::numeric_limits<float>::quiet_NaN())));
  CHECK(exp_nonpositive(-std::numeric_limits<float>::infinity()) < 1e-37f);
}
