// The masked-loss API against the originals (literal transcriptions of SimMIM's and MAE's Python), the
// general formula, reductions, mask dtypes, edge cases, gradient policy, backend choice and bad input.
#include <torch/torch.h>

#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <limits>
#include <sstream>

#include "loss_test_util.hpp"
#include "simmim/simmim.hpp"

using Catch::Matchers::ContainsSubstring;
using loss_test::run_loss;
using simmim::Backend;
using simmim::LossKind;
using simmim::LossReduction;
using simmim::MaskedLossOptions;

namespace {

// SimMIM, models/simmim.py, SimMIM.forward, op for op (x_rec: the prediction; mask: int64 [B, h, w] as the
// data loader collates it):
//   mask = mask.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2).unsqueeze(1).contiguous()
//   loss_recon = F.l1_loss(x, x_rec, reduction='none')
//   loss = (loss_recon * mask).sum() / (mask.sum() + 1e-5) / self.in_chans
torch::Tensor simmim_original(const torch::Tensor& x, const torch::Tensor& x_rec, torch::Tensor mask,
                              int64_t patch_size, int64_t in_chans) {
  namespace F = torch::nn::functional;
  mask = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1).contiguous();
  const auto loss_recon = F::l1_loss(x, x_rec, F::L1LossFuncOptions().reduction(torch::kNone));
  return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / in_chans;
}

// MAE, models_mae.py, MaskedAutoencoderViT.patchify and forward_loss, op for op:
//   x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p)); x = torch.einsum('nchpwq->nhwpqc', x)
//   x = x.reshape(shape=(imgs.shape[0], h * w, p**2 * 3))
torch::Tensor mae_patchify(const torch::Tensor& imgs, int64_t p) {
  const int64_t h = imgs.size(2) / p, w = imgs.size(3) / p;
  auto x = imgs.reshape({imgs.size(0), 3, h, p, w, p});
  x = torch::einsum("nchpwq->nhwpqc", {x});
  return x.reshape({imgs.size(0), h * w, p * p * 3});
}
//   target = self.patchify(imgs)
//   if self.norm_pix_loss:
//       mean = target.mean(dim=-1, keepdim=True); var = target.var(dim=-1, keepdim=True)
//       target = (target - mean) / (var + 1.e-6)**.5
//   loss = (pred - target) ** 2
//   loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
//   loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
torch::Tensor mae_original(const torch::Tensor& imgs, const torch::Tensor& pred, const torch::Tensor& mask, int64_t p,
                           bool norm_pix_loss) {
  auto target = mae_patchify(imgs, p);
  if (norm_pix_loss) {
    const auto mean = target.mean(-1, /*keepdim=*/true);
    const auto var = target.var(-1, /*unbiased=*/true, /*keepdim=*/true);
    target = (target - mean) / (var + 1.e-6).pow(.5);
  }
  auto loss = (pred - target).pow(2);
  loss = loss.mean(-1);
  return (loss * mask).sum() / mask.sum();
}

const std::vector<Backend> kBackends = {Backend::kFusedCPU, Backend::kReference};

}  // namespace

TEST_CASE("simmim() equals SimMIM's loss, value and gradient", "[loss]") {
  const auto dtype = GENERATE(torch::kFloat, torch::kDouble);
  const int64_t p = GENERATE(4, 16);
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  auto gen = simmim::make_generator(11 + p);
  const auto opts = torch::TensorOptions().dtype(dtype);
  const torch::Tensor x = torch::randn({3, 3, 4 * p, 3 * p}, gen, opts);
  const torch::Tensor x_rec_values = torch::randn({3, 3, 4 * p, 3 * p}, gen, opts);
  const torch::Tensor mask = (torch::rand({3, 4, 3}, gen) < 0.6).to(torch::kLong);

  torch::Tensor x_rec = x_rec_values.clone().requires_grad_(true);
  const torch::Tensor expected = simmim_original(x, x_rec, mask, p, 3);
  expected.backward();
  const auto run = run_loss(x_rec_values, x, mask.to(torch::kBool), MaskedLossOptions::simmim(p).backend(backend));

  // The original's denominator is float32 whatever the input dtype (int64 mask.sum() + 1e-5 promotes to
  // the default dtype), so double inputs agree to float precision only.
  const loss_test::Tolerance tol = loss_test::same_dtype_tolerance(torch::kFloat);
  REQUIRE(run.loss.dim() == 0);
  REQUIRE(run.loss.scalar_type() == dtype);
  LOSS_CHECK_CLOSE(run.loss, expected.to(dtype), tol);
  LOSS_CHECK_CLOSE(run.grad_pred, x_rec.grad(), tol);
}

TEST_CASE("mae() equals MAE's forward_loss, value and gradient, with and without norm_pix", "[loss]") {
  const bool norm_pix = GENERATE(false, true);
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const int64_t p = 8;
  auto gen = simmim::make_generator(5);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const torch::Tensor imgs = torch::randn({2, 3, 5 * p, 7 * p}, gen, opts);
  const torch::Tensor pred_values = torch::randn({2, 35, p * p * 3}, gen, opts);
  const torch::Tensor mask = (torch::rand({2, 35}, gen, opts) < 0.75).to(torch::kDouble);

  torch::Tensor pred = pred_values.clone().requires_grad_(true);
  const torch::Tensor expected = mae_original(imgs, pred, mask, p, norm_pix);
  expected.backward();
  // MAE's patchify and simmim::patchify agree.
  REQUIRE(torch::equal(mae_patchify(imgs, p), simmim::patchify(imgs, p)));
  const auto run =
      run_loss(pred_values, simmim::patchify(imgs, p), mask, MaskedLossOptions::mae(norm_pix).backend(backend));

  const loss_test::Tolerance tol = loss_test::same_dtype_tolerance(torch::kDouble);
  LOSS_CHECK_CLOSE(run.loss, expected, tol);
  LOSS_CHECK_CLOSE(run.grad_pred, pred.grad(), tol);
}

TEST_CASE("the images and patchified layouts give the same L2 loss when eps = 0", "[loss]") {
  // The general formula sum(w l) / (K (sum w_unit + eps)) with eps = 0 is the same number whether a unit
  // is a pixel (K = C) or a token (K = p*p*C): the two originals are one formula.
  const bool norm_pix = GENERATE(false, true);
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const int64_t p = 4;
  auto gen = simmim::make_generator(8);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const torch::Tensor pred = torch::randn({2, 3, 6 * p, 5 * p}, gen, opts);
  const torch::Tensor target = torch::randn({2, 3, 6 * p, 5 * p}, gen, opts);
  const torch::Tensor weights = torch::rand({2, 6, 5}, gen, opts);
  const auto images = MaskedLossOptions().kind(LossKind::kL2).patch_size(p).eps(0).norm_pix(norm_pix).backend(backend);
  const auto run_images = run_loss(pred, target, weights, images);
  const auto run_tokens = run_loss(simmim::patchify(pred, p), simmim::patchify(target, p), weights.reshape({2, 30}),
                                   MaskedLossOptions::mae(norm_pix).backend(backend));
  const loss_test::Tolerance tol = loss_test::same_dtype_tolerance(torch::kDouble);
  LOSS_CHECK_CLOSE(run_images.loss, run_tokens.loss, tol);
  LOSS_CHECK_CLOSE(simmim::patchify(run_images.grad_pred, p), run_tokens.grad_pred, tol);
}

TEST_CASE("weights: float masks weigh, bool and integer masks count, by the formula", "[loss]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  auto gen = simmim::make_generator(3);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const int64_t p = 2, C = 3;
  const torch::Tensor pred = torch::randn({2, C, 6, 4}, gen, opts);
  const torch::Tensor target = torch::randn({2, C, 6, 4}, gen, opts);
  const torch::Tensor weights = torch::rand({2, 3, 2}, gen, opts) * (torch::rand({2, 3, 2}, gen, opts) < 0.7);
  const double eps = 0.25;
  const auto options = MaskedLossOptions().kind(LossKind::kSmoothL1).beta(0.7).patch_size(p).eps(eps).backend(backend);

  // By hand: sum over elements of w * smooth_l1(d) / (C * (sum over pixels of w + eps)).
  double num = 0, units = 0;
  const auto P = pred.accessor<double, 4>(), T = target.accessor<double, 4>();
  const auto Wt = weights.accessor<double, 3>();
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t y = 0; y < 6; ++y) {
      for (int64_t x = 0; x < 4; ++x) {
        const double w = Wt[b][y / p][x / p];
        units += w;
        for (int64_t c = 0; c < C; ++c) {
          const double d = std::abs(P[b][c][y][x] - T[b][c][y][x]);
          num += w * (d < 0.7 ? 0.5 * d * d / 0.7 : d - 0.35);
        }
      }
    }
  }
  const auto run = run_loss(pred, target, weights, options);
  CHECK(run.loss.item<double>() == Catch::Approx(num / (C * (units + eps))).epsilon(1e-12));

  const torch::Tensor bits = weights > 0;
  const auto as_bool = run_loss(pred, target, bits, options);
  const auto as_uint8 = run_loss(pred, target, bits.to(torch::kByte), options);
  const auto as_float = run_loss(pred, target, bits.to(torch::kFloat), options);
  CHECK(torch::equal(as_bool.loss, as_uint8.loss));
  CHECK(torch::equal(as_bool.grad_pred, as_uint8.grad_pred));
  // The official SimMIM data loader hands out int64 masks; int32 and int8 work the same.
  for (const auto dtype : {torch::kLong, torch::kInt, torch::kChar}) {
    const auto as_int = run_loss(pred, target, bits.to(dtype), options);
    CHECK(torch::equal(as_bool.loss, as_int.loss));
    CHECK(torch::equal(as_bool.grad_pred, as_int.grad_pred));
  }
  CHECK(torch::allclose(as_bool.loss, as_float.loss, 1e-14, 0));
}

TEST_CASE("kPerSample is the kMean formula within each sample", "[loss]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const auto preset = GENERATE(0, 1);
  auto gen = simmim::make_generator(21);
  const auto opts = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor pred, target, mask;
  MaskedLossOptions options;
  if (preset == 0) {
    pred = torch::randn({4, 3, 16, 24}, gen, opts);
    target = torch::randn({4, 3, 16, 24}, gen, opts);
    mask = torch::rand({4, 4, 6}, gen) < 0.5;
    options = MaskedLossOptions::simmim(4);
  } else {
    pred = torch::randn({4, 19, 12}, gen, opts);
    target = torch::randn({4, 19, 12}, gen, opts);
    mask = torch::rand({4, 19}, gen) < 0.5;
    options = MaskedLossOptions::mae(true);
  }
  options.backend(backend);
  const torch::Tensor grad_out = torch::randn({4}, gen, opts);
  const auto per_sample =
      run_loss(pred, target, mask, MaskedLossOptions(options).reduction(LossReduction::kPerSample), false, grad_out);
  REQUIRE(per_sample.loss.sizes() == torch::IntArrayRef({4}));
  for (int64_t b = 0; b < 4; ++b) {
    const auto alone =
        run_loss(pred.narrow(0, b, 1), target.narrow(0, b, 1), mask.narrow(0, b, 1), options, false, grad_out[b]);
    CHECK(per_sample.loss[b].item<double>() == Catch::Approx(alone.loss.item<double>()).epsilon(1e-12));
    CHECK(torch::allclose(per_sample.grad_pred.narrow(0, b, 1), alone.grad_pred, 1e-12, 1e-15));
  }
}

TEST_CASE("empty and full masks", "[loss]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  auto gen = simmim::make_generator(4);
  const torch::Tensor pred = torch::randn({2, 3, 8, 8}, gen);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}, gen);
  const torch::Tensor none = torch::zeros({2, 4, 4}, torch::kBool);

  SECTION("an empty mask gives 0 and zero gradients, with SimMIM's eps and with MAE's eps = 0") {
    for (const auto& options :
         {MaskedLossOptions::simmim(2), MaskedLossOptions::simmim(2).kind(LossKind::kL2).eps(0)}) {
      for (const auto reduction : {LossReduction::kMean, LossReduction::kPerSample}) {
        const auto run = run_loss(pred, target, none, MaskedLossOptions(options).reduction(reduction).backend(backend));
        CHECK(torch::all(run.loss == 0).item<bool>());
        CHECK(torch::all(run.grad_pred == 0).item<bool>());
      }
    }
    const auto tokens = run_loss(simmim::patchify(pred, 2), simmim::patchify(target, 2), none.reshape({2, 16}),
                                 MaskedLossOptions::mae(true).backend(backend));
    CHECK(tokens.loss.item<float>() == 0);
  }
  SECTION("a full mask gives the plain mean (eps 0)") {
    const auto run = run_loss(pred, target, torch::ones({2, 4, 4}, torch::kBool),
                              MaskedLossOptions::simmim(2).eps(0).backend(backend));
    CHECK(run.loss.item<float>() == Catch::Approx((pred - target).abs().mean().item<float>()).epsilon(1e-5));
  }
}

TEST_CASE("NaN in an input propagates to the loss, even under a zero weight", "[loss]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
  const auto dtype = GENERATE(torch::kFloat, torch::kHalf, torch::kBFloat16);
  torch::Tensor pred = torch::randn({2, 3, 8, 8}).to(dtype);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}).to(dtype);
  torch::Tensor mask = torch::ones({2, 4, 4}, torch::kBool);
  mask.index_put_({1, 3, 3}, false);
  pred.index_put_({1, 2, 7, 7}, std::numeric_limits<float>::quiet_NaN());  // in the unmasked cell
  const auto options = MaskedLossOptions::simmim(2).kind(kind).backend(backend);
  const auto run = run_loss(pred, target, mask, options);
  CHECK(std::isnan(run.loss.item<float>()));
  const auto per_sample = run_loss(pred, target, mask, MaskedLossOptions(options).reduction(LossReduction::kPerSample));
  CHECK(std::isfinite(per_sample.loss[0].item<float>()));
  CHECK(std::isnan(per_sample.loss[1].item<float>()));
  // Gradients stay finite away from the NaN pixel.
  CHECK(torch::isfinite(run.grad_pred.narrow(0, 0, 1)).all().item<bool>());
}

TEST_CASE("fp16 inputs near 65504 accumulate wide: the sum overflows half, the loss does not", "[loss]") {
  const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
  const auto kind = GENERATE(LossKind::kL1, LossKind::kSmoothL1);
  auto gen = simmim::make_generator(9);
  const torch::Tensor pred = (65504 - 2000 * torch::rand({4, 3, 32, 32}, gen)).to(torch::kHalf);
  // |pred - target| stays below 65504, so that even the reference's half difference is finite.
  const torch::Tensor target = (1000 * torch::rand({4, 3, 32, 32}, gen)).to(torch::kHalf);
  const torch::Tensor mask = torch::rand({4, 8, 8}, gen) < 0.6;
  const auto options = MaskedLossOptions::simmim(4).kind(kind).backend(backend);
  const auto run = run_loss(pred, target, mask, options);
  const auto exact = run_loss(pred.to(torch::kDouble), target.to(torch::kDouble), mask, options);
  REQUIRE(exact.loss.item<double>() > 20000);  // far above half's range once summed over 4*3*32*32*0.6 pixels
  CHECK(std::isfinite(run.loss.item<float>()));
  CHECK(run.loss.item<double>() == Catch::Approx(exact.loss.item<double>()).epsilon(2e-3));
  CHECK(torch::isfinite(run.grad_pred).all().item<bool>());
}

TEST_CASE("mixed dtypes promote: a bf16 or fp16 prediction against float images is a float loss", "[loss]") {
  // What a training step under autocast hands the loss: the decoder's output in the autocast dtype, the
  // images in float. The originals compute that loss in float; so does simmim, on every backend.
  const auto backend = GENERATE(Backend::kAuto, Backend::kFusedCPU, Backend::kReference);
  const auto low = GENERATE(torch::kBFloat16, torch::kHalf);
  auto gen = simmim::make_generator(12);
  const torch::Tensor pred_values = torch::randn({2, 3, 16, 16}, gen).to(low);
  const torch::Tensor target = torch::randn({2, 3, 16, 16}, gen);
  const torch::Tensor mask = torch::rand({2, 4, 4}, gen) < 0.6;
  const auto options = MaskedLossOptions::simmim(4).backend(backend);
  const auto mixed = run_loss(pred_values, target, mask, options);
  const auto wide = run_loss(pred_values.to(torch::kFloat), target, mask, options);
  CHECK(mixed.loss.scalar_type() == torch::kFloat);
  CHECK(mixed.grad_pred.scalar_type() == low);
  CHECK(torch::equal(mixed.loss, wide.loss));
  CHECK(torch::equal(mixed.grad_pred, wide.grad_pred.to(low)));
  // Either way round.
  const auto swapped = run_loss(pred_values.to(torch::kFloat), target.to(low), mask, options);
  CHECK(swapped.loss.scalar_type() == torch::kFloat);
  CHECK(swapped.grad_pred.scalar_type() == torch::kFloat);
}

TEST_CASE("gradients: pred always, the target when it requires grad, never the mask", "[loss]") {
  auto gen = simmim::make_generator(6);
  const torch::Tensor pred = torch::randn({2, 3, 8, 8}, gen, torch::kDouble);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}, gen, torch::kDouble);
  const torch::Tensor weights = torch::rand({2, 4, 4}, gen, torch::kDouble);

  SECTION("the fused target gradient equals the reference's (and is minus pred's)") {
    const auto kind = GENERATE(LossKind::kL1, LossKind::kL2, LossKind::kSmoothL1);
    const auto options = MaskedLossOptions::simmim(2).kind(kind);
    const auto fused = run_loss(pred, target, weights, MaskedLossOptions(options).backend(Backend::kFusedCPU), true);
    const auto ref = run_loss(pred, target, weights, MaskedLossOptions(options).backend(Backend::kReference), true);
    CHECK(torch::allclose(fused.grad_target, ref.grad_target, 1e-12, 1e-15));
    CHECK(torch::equal(fused.grad_target, -fused.grad_pred));
  }
  SECTION("norm_pix with a target that requires grad: kAuto differentiates through the normalization") {
    const auto options = MaskedLossOptions::simmim(2).kind(LossKind::kL2).norm_pix(true);
    const auto autorun = run_loss(pred, target, weights, options, true);
    const auto ref = run_loss(pred, target, weights, MaskedLossOptions(options).backend(Backend::kReference), true);
    CHECK(torch::allclose(autorun.grad_target, ref.grad_target, 1e-12, 1e-15));
    // The normalization makes it something else than minus pred's gradient.
    CHECK_FALSE(torch::allclose(autorun.grad_target, -autorun.grad_pred, 1e-6, 1e-9));
    REQUIRE_THROWS_WITH(run_loss(pred, target, weights, MaskedLossOptions(options).backend(Backend::kFusedCPU), true),
                        ContainsSubstring("target must be free of grad with norm_pix on Backend::kFusedCPU"));
  }
  SECTION("a float mask that requires grad gets none") {
    const auto backend = GENERATE(Backend::kFusedCPU, Backend::kReference);
    torch::Tensor w = weights.clone().requires_grad_(true);
    torch::Tensor p = pred.clone().requires_grad_(true);
    simmim::masked_reconstruction_loss(p, target, w, MaskedLossOptions::simmim(2).backend(backend)).backward();
    CHECK(p.grad().defined());
    CHECK_FALSE(w.grad().defined());
  }
}

TEST_CASE("fused backward: retain_graph keeps the saved gradient intact; a second backward without it explains",
          "[loss]") {
  auto gen = simmim::make_generator(12);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}, gen);
  const torch::Tensor mask = torch::rand({2, 4, 4}, gen) < 0.5;
  torch::Tensor pred = torch::randn({2, 3, 8, 8}, gen).requires_grad_(true);
  const auto options = MaskedLossOptions::simmim(2).kind(LossKind::kL2).backend(Backend::kFusedCPU);
  const torch::Tensor expected =
      run_loss(pred, target, mask, MaskedLossOptions(options).backend(Backend::kReference)).grad_pred;

  SECTION("retain_graph: the caller may mutate the first gradient; the next backward is still right") {
    const auto loss = simmim::masked_reconstruction_loss(pred, target, mask, options);
    loss.backward({}, /*retain_graph=*/true);
    CHECK(torch::allclose(pred.grad(), expected, 1e-5, 1e-7));
    pred.grad().zero_();
    (3 * loss).backward({}, /*retain_graph=*/true);
    CHECK(torch::allclose(pred.grad(), 3 * expected, 1e-5, 1e-7));
    loss.backward();
    CHECK(torch::allclose(pred.grad(), 4 * expected, 1e-5, 1e-7));
  }
  SECTION("a scaled loss scales the handed-out gradient") {
    (0.25 * simmim::masked_reconstruction_loss(pred, target, mask, options)).backward();
    CHECK(torch::allclose(pred.grad(), 0.25 * expected, 1e-5, 1e-7));
  }
  SECTION("without retain_graph the saved gradient is gone after the first backward") {
    const auto loss = simmim::masked_reconstruction_loss(pred, target, mask, options);
    loss.backward();
    REQUIRE_THROWS_WITH(loss.backward(), ContainsSubstring("backward through the fused masked loss a second time"));
  }
}

TEST_CASE("reuse_grad_memory: a call writes the last gradient's memory once nothing holds it, never before",
          "[loss]") {
  auto gen = simmim::make_generator(21);
  const torch::Tensor target = torch::randn({2, 3, 8, 8}, gen), target2 = torch::randn({2, 3, 8, 8}, gen);
  const torch::Tensor mask = torch::rand({2, 4, 4}, gen) < 0.5;
  const auto fresh = MaskedLossOptions::simmim(2).backend(Backend::kFusedCPU);
  const auto reuse = MaskedLossOptions(fresh).reuse_grad_memory(true);
  const bool channels_last = GENERATE(false, true);
  torch::Tensor pred = torch::randn({2, 3, 8, 8}, gen);
  if (channels_last) pred = pred.contiguous(torch::MemoryFormat::ChannelsLast);
  pred.requires_grad_(true);
  const torch::Tensor expected = run_loss(pred, target, mask, fresh).grad_pred;
  const torch::Tensor expected2 = run_loss(pred, target2, mask, fresh).grad_pred;
  auto step = [&](const torch::Tensor& t) { simmim::masked_reconstruction_loss(pred, t, mask, reuse).backward(); };

  step(target);
  CHECK(torch::equal(pred.grad(), expected));
  CHECK(pred.grad().is_contiguous(pred.suggest_memory_format()));
  // Still held as pred.grad: the next call takes other memory, and the gradients accumulate.
  step(target);
  CHECK(torch::equal(pred.grad(), 2 * expected));
  // Dropped: the next calls write one and the same memory.
  pred.mutable_grad().reset();
  step(target2);
  CHECK(torch::equal(pred.grad(), expected2));
  const void* memory = pred.grad().data_ptr();
  pred.mutable_grad().reset();
  step(target);
  CHECK(pred.grad().data_ptr() == memory);
  CHECK(torch::equal(pred.grad(), expected));
  // A gradient saved for a retained graph is in use too: a call in between leaves it intact.
  pred.mutable_grad().reset();
  const auto kept = simmim::masked_reconstruction_loss(pred, target, mask, reuse);
  kept.backward({}, /*retain_graph=*/true);
  pred.mutable_grad().reset();
  step(target2);
  CHECK(torch::equal(pred.grad(), expected2));
  pred.mutable_grad().reset();
  kept.backward();
  CHECK(torch::equal(pred.grad(), expected));
}

TEST_CASE("the fused path is first-order only; the reference differentiates twice", "[loss]") {
  auto gen = simmim::make_generator(7);
  const torch::Tensor target = torch::randn({2, 8, 12}, gen, torch::kDouble);
  const torch::Tensor mask = torch::rand({2, 8}, gen) < 0.5;
  torch::Tensor pred = torch::randn({2, 8, 12}, gen, torch::kDouble).requires_grad_(true);
  torch::Tensor grad_out = torch::ones({}, torch::kDouble).requires_grad_(true);

  const auto ref =
      simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions::mae().backend(Backend::kReference));
  const auto g_ref = torch::autograd::grad({ref}, {pred}, {grad_out}, true, true)[0];
  const auto gg = torch::autograd::grad({g_ref.sum()}, {grad_out})[0];
  CHECK(gg.item<double>() == Catch::Approx(g_ref.sum().item<double>()));

  const auto fused =
      simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions::mae().backend(Backend::kFusedCPU));
  const auto g_fused = torch::autograd::grad({fused}, {pred}, {grad_out}, true, true)[0];
  CHECK(torch::allclose(g_fused, g_ref, 1e-12, 1e-15));
  REQUIRE_THROWS_WITH(g_fused.sum().backward(), ContainsSubstring("first-order only"));
}

TEST_CASE("backend choice: kAuto runs fused on CPU, forced backends run or explain", "[loss]") {
  const torch::Tensor pred = torch::randn({2, 3, 8, 8}).requires_grad_(true);
  const torch::Tensor target = torch::randn({2, 3, 8, 8});
  const torch::Tensor mask = torch::rand({2, 4, 4}) < 0.5;
  const auto options = MaskedLossOptions::simmim(2);
  const auto fn_name = [&](Backend b) {
    return simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions(options).backend(b))
        .grad_fn()
        ->name();
  };
  CHECK_THAT(fn_name(Backend::kAuto), ContainsSubstring("FusedMaskedLoss"));
  CHECK_THAT(fn_name(Backend::kFusedCPU), ContainsSubstring("FusedMaskedLoss"));
  CHECK_THAT(fn_name(Backend::kReference), !ContainsSubstring("FusedMaskedLoss"));
  // This test program does not link simmim::cuda: the CUDA backend is not registered, and asking for it says so.
  REQUIRE_FALSE(simmim::fused_cuda_available());
  REQUIRE_THROWS_WITH(fn_name(Backend::kFusedCUDA),
                      ContainsSubstring("Backend::kFusedCUDA is not available: this program does not link simmim's "
                                        "CUDA library"));
  // Without autograd the fused pass writes no gradient and still gives the same loss.
  torch::NoGradGuard no_grad;
  const auto a = simmim::masked_reconstruction_loss(pred, target, mask, options);
  const auto b =
      simmim::masked_reconstruction_loss(pred, target, mask, MaskedLossOptions(options).backend(Backend::kReference));
  CHECK(a.item<float>() == Catch::Approx(b.item<float>()).epsilon(1e-6));
}

TEST_CASE("MaskedReconstructionLoss module forwards to the functional form", "[loss]") {
  simmim::MaskedReconstructionLoss module(MaskedLossOptions::mae(true).reduction(LossReduction::kPerSample));
  const torch::Tensor pred = torch::randn({3, 7, 12});
  const torch::Tensor target = torch::randn({3, 7, 12});
  const torch::Tensor mask = torch::rand({3, 7}) < 0.5;
  CHECK(torch::equal(module(pred, target, mask),
                     simmim::masked_reconstruction_loss(pred, target, mask, module->options)));
  std::ostringstream os;
  os << *module;
  CHECK_THAT(os.str(), ContainsSubstring("kind=LossKind::kL2"));
  CHECK_THAT(os.str(), ContainsSubstring("norm_pix=true"));
  CHECK_THAT(os.str(), ContainsSubstring("reduction=LossReduction::kPerSample"));
  const auto copy = std::dynamic_pointer_cast<simmim::MaskedReconstructionLossImpl>(module->clone());
  REQUIRE(copy);
  CHECK(copy->options.norm_pix());
  simmim::MaskedReconstructionLoss by_default;
  CHECK(by_default->options.kind() == LossKind::kL1);
  CHECK(by_default->options.eps() == 1e-5);
  CHECK(MaskedLossOptions::simmim(32).patch_size() == 32);
  CHECK(MaskedLossOptions::mae().eps() == 0);
  CHECK(MaskedLossOptions::mae().kind() == LossKind::kL2);
}

TEST_CASE("bad input: each a clear error", "[loss]") {
  const auto f = [](const torch::Tensor& pred, const torch::Tensor& target, const torch::Tensor& mask,
                    MaskedLossOptions options = MaskedLossOptions::simmim(4)) {
    return simmim::masked_reconstruction_loss(pred, target, mask, options);
  };
  const torch::Tensor x = torch::randn({2, 3, 16, 16});
  const torch::Tensor m = torch::ones({2, 4, 4}, torch::kBool);
  const std::string api = "simmim::masked_reconstruction_loss: ";

  REQUIRE_THROWS_WITH(f(torch::randn({3, 16, 16}).flatten(), x, m),
                      ContainsSubstring(api + "pred must be a 4-D tensor [B, C, H, W] (images) or a 3-D tensor [B, L, "
                                              "D] (patchified); got Float tensor [768]"));
  REQUIRE_THROWS_WITH(f(x.to(torch::kInt), x, m),
                      ContainsSubstring(api + "pred must be a float, double, half or bfloat16 tensor; got Int tensor"));
  REQUIRE_THROWS_WITH(
      f(x, x.narrow(3, 0, 12), m),
      ContainsSubstring(api +
                        "target must be a tensor of pred's shape [2, 3, 16, 16]; got Float tensor [2, 3, 16, 12]"));
  REQUIRE_THROWS_WITH(f(x, x.to(torch::kInt), m),
                      ContainsSubstring(api + "target must be a float, double, half or bfloat16 tensor (pred is "
                                              "Float); got Int tensor"));
  REQUIRE_THROWS_WITH(f(x, x, m.to(torch::kComplexFloat)),
                      ContainsSubstring(api +
                                        "mask must be a bool, integer (uint8, int32, int64, ...) or floating-point "
                                        "(weights) tensor; got ComplexFloat tensor"));
  REQUIRE_THROWS_WITH(f(x, x, torch::ones({2, 3, 4}, torch::kBool)),
                      ContainsSubstring(api + "mask must be [B, h, w] with h*p == H and w*p == W, i.e. [2, 4, 4] for "
                                              "pred [2, 3, 16, 16] with p = 4; got mask [2, 3, 4]"));
  REQUIRE_THROWS_WITH(f(x, x, torch::ones({2, 16}, torch::kBool)), ContainsSubstring(api + "mask must be [B, h, w]"));
  REQUIRE_THROWS_AS(f(x, x, m, MaskedLossOptions::simmim(5)), c10::ValueError);
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(5)),
                      ContainsSubstring(api + "pred's image size must be divisible by the patch size 5; got 16x16"));
  REQUIRE_THROWS_WITH(f(torch::randn({2, 5, 12}), torch::randn({2, 5, 12}), torch::ones({2, 6})),
                      ContainsSubstring(api + "mask must be [B, L] = [2, 5] for pred [2, 5, 12]; got mask [2, 6]"));
  REQUIRE_THROWS_WITH(f(x.narrow(0, 0, 0), x.narrow(0, 0, 0), m.narrow(0, 0, 0)),
                      ContainsSubstring(api + "pred must be non-empty"));
  REQUIRE_THROWS_AS(f(x, x, m, MaskedLossOptions::simmim(4).eps(-1)), c10::ValueError);
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(4).eps(-1)),
                      ContainsSubstring(api + "options.eps must be finite and >= 0; got -1"));
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(4).kind(LossKind::kSmoothL1).beta(-0.5)),
                      ContainsSubstring(api + "options.beta must be finite and >= 0"));
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(0)),
                      ContainsSubstring(api + "options.patch_size must be positive; got 0"));
  REQUIRE_THROWS_WITH(f(torch::randn({2, 1, 4, 4}), torch::randn({2, 1, 4, 4}), torch::ones({2, 4, 4}),
                        MaskedLossOptions().norm_pix(true)),
                      ContainsSubstring("must be at least 2 values (the variance is unbiased); got 1"));
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(4).kind(static_cast<LossKind>(7))),
                      ContainsSubstring("options.kind must be LossKind::kL1, kL2, kSmoothL1, kCosine or kCrossEntropy; got "
                                        "LossKind(7)"));
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(4).reduction(static_cast<LossReduction>(5))),
                      ContainsSubstring("options.reduction must be LossReduction::kMean or kPerSample; got "
                                        "LossReduction(5)"));
  REQUIRE_THROWS_WITH(
      f(x, x, m, MaskedLossOptions::simmim(4).kind(static_cast<LossKind>(7)).backend(Backend::kReference)),
      ContainsSubstring("options.kind must be"));
  // Devices: a meta tensor stands in for another device on this CPU-only machine.
  const torch::Tensor on_meta = torch::empty({2, 3, 16, 16}, torch::TensorOptions().device(torch::kMeta));
  REQUIRE_THROWS_WITH(
      f(x, on_meta, m),
      ContainsSubstring(api + "target must be on pred's device cpu; got Float tensor [2, 3, 16, 16] on meta"));
  REQUIRE_THROWS_WITH(f(x, x, m.to(torch::kMeta)), ContainsSubstring(api + "mask must be on pred's device cpu"));
  // Meta tensors have no data: a clear error whichever backend, not a raw LibTorch one from inside.
  for (const Backend b : {Backend::kAuto, Backend::kFusedCPU, Backend::kReference}) {
    REQUIRE_THROWS_WITH(f(on_meta, on_meta, m.to(torch::kMeta), MaskedLossOptions::simmim(4).backend(b)),
                        ContainsSubstring(api + "pred must be a tensor with data on the CPU or a GPU (a meta tensor "
                                                "has only a shape); got Float tensor [2, 3, 16, 16] on meta"));
  }
  REQUIRE_THROWS_AS(f(x, x, m, MaskedLossOptions::simmim(4).backend(static_cast<Backend>(9))), c10::ValueError);
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(4).backend(static_cast<Backend>(9))),
                      ContainsSubstring(api + "options.backend must be Backend::kAuto, kReference, kFusedCPU or "
                                              "kFusedCUDA; got Backend(9)"));
  REQUIRE_THROWS_WITH(f(x, x, m, MaskedLossOptions::simmim(4).backend(static_cast<Backend>(-1))),
                      ContainsSubstring("got Backend(-1)"));
}

TEST_CASE("negative or NaN mask weights are an error on every CPU backend, found without an extra pass",
          "[loss][values]") {
  const auto backend = GENERATE(Backend::kAuto, Backend::kFusedCPU, Backend::kReference);
  const auto images = GENERATE(true, false);
  const torch::Tensor x = images ? torch::randn({2, 3, 16, 16}) : torch::randn({2, 16, 12});
  const auto options = (images ? MaskedLossOptions::simmim(4) : MaskedLossOptions::mae()).backend(backend);
  torch::Tensor w = images ? torch::rand({2, 4, 4}) : torch::rand({2, 16});
  const torch::Tensor ok = simmim::masked_reconstruction_loss(x, torch::zeros_like(x), w, options);
  REQUIRE(ok.item<float>() >= 0);
  torch::Tensor negative = w.clone();
  negative.view(-1)[5] = -1.0f;  // once gave a negative loss
  REQUIRE_THROWS_WITH(simmim::masked_reconstruction_loss(x, torch::zeros_like(x), negative, options),
                      ContainsSubstring("simmim::masked_reconstruction_loss: mask must be non-negative weights (0 = "
                                        "visible); got 1 negative or NaN weight(s)"));
  torch::Tensor nan = w.clone();
  nan.view(-1)[3] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(simmim::masked_reconstruction_loss(x, torch::zeros_like(x), nan, options),
                      ContainsSubstring("mask must be non-negative weights"));
  // Integer masks too: -1 is not "masked".
  torch::Tensor ints = (w > 0.5).to(torch::kLong);
  ints.view(-1)[0] = -1;
  REQUIRE_THROWS_WITH(simmim::masked_reconstruction_loss(x, torch::zeros_like(x), ints, options),
                      ContainsSubstring("mask must be non-negative weights"));
}
