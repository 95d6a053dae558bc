// Targets (include/simmim/target/): each against an independent computation (brute-force windows, images
// whose gradients and histograms are known by hand, known bin edges), their losses against the pixel
// losses they must equal, and the SimMIM and MAE models with any target. Built into simmim_test_model.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <cmath>
#include <memory>

#include "../model/model_test_utils.hpp"
#include "simmim/simmim.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim::ColorBinsTarget;
using simmim::ColorBinsTargetOptions;
using simmim::HOGTarget;
using simmim::HOGTargetOptions;
using simmim::LossKind;
using simmim::MaskedLossOptions;
using simmim::PixelNorm;
using simmim::PixelTarget;
using simmim::PixelTargetOptions;

TEST_CASE("raw pixel target: SimMIM's L1 on tokens (eps 0 is the same number as on the image)", "[target]") {
  auto gen = simmim::make_generator(1);
  const int64_t p = 4;
  const torch::Tensor images = torch::randn({2, 3, 16, 12}, gen, torch::kDouble);
  const torch::Tensor x_rec = torch::randn({2, 3, 16, 12}, gen, torch::kDouble);
  const torch::Tensor mask = torch::rand({2, 4, 3}, gen) < 0.5;
  const PixelTarget target;
  const torch::Tensor t = target.compute(images, p);
  CHECK(torch::equal(t, simmim::patchify(images, p)));
  CHECK(target.prediction_dim(p, 3) == 48);
  const torch::Tensor by_target = target.loss(simmim::patchify(x_rec, p), t, mask);
  const torch::Tensor on_image =
      simmim::masked_reconstruction_loss(x_rec, images, mask, MaskedLossOptions::simmim(p).eps(0));
  CHECK(std::abs(by_target.item<double>() - on_image.item<double>()) < 1e-12);
  CHECK(torch::equal(target.to_image(simmim::patchify(x_rec, p), images, p), x_rec));
}

TEST_CASE("norm-pix target is MAE's norm_pix_loss, bit for bit", "[target]") {
  auto gen = simmim::make_generator(2);
  const torch::Tensor images = torch::randn({2, 3, 16, 16}, gen);
  const torch::Tensor pred = torch::randn({2, 16, 48}, gen);
  const torch::Tensor mask = torch::rand({2, 16}, gen) < 0.75;
  const PixelTarget target(PixelTargetOptions::norm_pix().eps(0));
  CHECK(torch::equal(target.loss(pred, target.compute(images, 4), mask),
                     simmim::masked_reconstruction_loss(pred, simmim::patchify(images, 4), mask,
                                                        MaskedLossOptions::mae(/*norm_pix=*/true))));
  // The same MAE, once with its own norm_pix_loss and once with the target: same init, same loss.
  const auto base = simmim::MAEOptions(simmim::MAEOptions::mae_encoder(simmim_test::tiny_vit({16, 16}, 4)))
                        .decoder_embed_dim(32)
                        .decoder_depth(1)
                        .decoder_num_heads(4);
  torch::manual_seed(5);
  simmim::MAE own(simmim::MAEOptions(base).norm_pix_loss(true));
  torch::manual_seed(5);
  simmim::MAE with_target(simmim::MAEOptions(base).target(std::make_shared<PixelTarget>(PixelTargetOptions::norm_pix())));
  const torch::Tensor m = simmim_test::random_mask(2, {4, 4}, 12);
  const auto a = own(images, m), b = with_target(images, m);
  CHECK(torch::equal(a.loss, b.loss));
  CHECK(torch::allclose(a.reconstruction, b.reconstruction, 1e-5, 1e-5));
}

TEST_CASE("local-norm target: each pixel standardized over its clipped k x k window (brute force)", "[target]") {
  auto gen = simmim::make_generator(3);
  const int64_t k = GENERATE(3, 5);
  const torch::Tensor images = torch::randn({2, 2, 6, 8}, gen, torch::kDouble);
  const double eps = 1e-6;
  const torch::Tensor got = simmim::local_normalize(images, k, eps);
  torch::Tensor expected = torch::empty_like(images);
  const int64_t r = k / 2;
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t c = 0; c < 2; ++c) {
      for (int64_t y = 0; y < 6; ++y) {
        for (int64_t x = 0; x < 8; ++x) {
          const int64_t y0 = std::max<int64_t>(0, y - r), y1 = std::min<int64_t>(6, y + r + 1);
          const int64_t x0 = std::max<int64_t>(0, x - r), x1 = std::min<int64_t>(8, x + r + 1);
          const torch::Tensor window = images[b][c].slice(0, y0, y1).slice(1, x0, x1);
          const double mean = window.mean().item<double>(), var = window.var(/*unbiased=*/true).item<double>();
          expected[b][c][y][x] = (images[b][c][y][x].item<double>() - mean) / std::sqrt(var + eps);
        }
      }
    }
  }
  CHECK(torch::allclose(got, expected, 1e-9, 1e-9));
  // A flat image is 0 everywhere (variance 0), not NaN.
  CHECK(simmim::local_normalize(torch::full({1, 1, 5, 5}, 0.3), 3, eps).abs().max().item<double>() == 0.0);
  // The target patchifies the normalized image; to_image maps a perfect prediction back to the image.
  const PixelTarget target(PixelTargetOptions::local_norm(k));
  const torch::Tensor t = target.compute(images, 2);
  CHECK(torch::allclose(t, simmim::patchify(expected, 2), 1e-9, 1e-9));
  CHECK(torch::allclose(target.to_image(t, images, 2), images, 1e-6, 1e-6));
  REQUIRE_THROWS_WITH(PixelTarget(PixelTargetOptions::local_norm(4)),
                      ContainsSubstring("simmim::PixelTarget: options.window must be odd and >= 3 for "
                                        "PixelNorm::kLocal; got 4"));
}

TEST_CASE("HOG: known gradients land in known bins, one unit histogram per channel and cell", "[target]") {
  const int64_t S = 24;
  const torch::Tensor ys = torch::arange(S, torch::kDouble).view({S, 1}).expand({S, S});
  const torch::Tensor xs = torch::arange(S, torch::kDouble).view({1, S}).expand({S, S});
  // Channel 0: a ramp along x (angle 0 -> bin 0); 1: along y (pi/2 -> bin 4 of 9); 2: along x + y
  // (pi/4 -> bin 2); 3: along x - y (3 pi/4 -> bin 6).
  const torch::Tensor images = torch::stack({xs, ys, xs + ys, xs - ys}).unsqueeze(0) * 0.1;
  const torch::Tensor cells = simmim::hog_cells(images, 9, 8, 1e-6);
  REQUIRE(cells.sizes() == torch::IntArrayRef({1, 4, 9, 3, 3}));
  // The middle cell (rows and columns 8..15) sees no border: its histogram is one bin, normalized to 1.
  const int64_t expected_bin[4] = {0, 4, 2, 6};
  for (int64_t c = 0; c < 4; ++c) {
    INFO("channel " << c);
    torch::Tensor one_hot = torch::zeros({9}, torch::kDouble);
    one_hot[expected_bin[c]] = 1.0;
    CHECK(torch::allclose(cells[0][c].select(1, 1).select(1, 1), one_hot, 1e-12, 1e-12));
  }
  // Every histogram has norm 1, and a flat image gives zeros (not NaN).
  CHECK(torch::allclose(cells.norm(2, {2}), torch::ones({1, 4, 3, 3}, torch::kDouble), 1e-12, 1e-12));
  CHECK(simmim::hog_cells(torch::ones({1, 3, 16, 16}), 9, 8, 1e-6).abs().max().item<double>() == 0.0);
  // A vertical step edge: only the cells it crosses, and there only bin 0.
  torch::Tensor step = torch::zeros({1, 1, 16, 16});
  step.narrow(3, 12, 4).fill_(1.0);
  const torch::Tensor edge = simmim::hog_cells(step, 9, 8, 1e-6);
  CHECK(edge.select(4, 0).abs().max().item<double>() == 0.0);  // cells of columns 0..7
  CHECK(torch::allclose(edge.select(4, 1).select(2, 0), torch::ones({1, 1, 2}), 1e-6, 1e-6));
  CHECK(edge.select(4, 1).narrow(2, 1, 8).abs().max().item<double>() == 0.0);
}

TEST_CASE("HOG target: tokens of (cell row, cell column, channel, bin) per patch, L2 loss", "[target]") {
  auto gen = simmim::make_generator(4);
  const torch::Tensor images = torch::rand({2, 3, 32, 48}, gen);
  const HOGTarget target;
  CHECK(target.prediction_dim(16, 3) == 4 * 3 * 9);
  const torch::Tensor t = target.compute(images, 16);
  REQUIRE(t.sizes() == torch::IntArrayRef({2, 6, 108}));
  const torch::Tensor cells = simmim::hog_cells(images, 9, 8, 1e-6);  // [2, 3, 9, 4, 6]
  // Patch (1, 2) is token 1 * 3 + 2 = 5; its cell (row 1, column 0) is cell (3, 4) of the image.
  const torch::Tensor token = t[1][5].view({2, 2, 3, 9});
  CHECK(torch::equal(token[1][0], cells[1].select(2, 3).select(2, 4)));
  CHECK(target.loss_options().kind() == LossKind::kL2);
  CHECK_FALSE(target.to_image(t, images, 16).defined());
  REQUIRE_THROWS_WITH(target.compute(images, 4),
                      ContainsSubstring("simmim::HOGTarget::compute: patch must be a multiple of the HOG cell 8; got 4"));
}

TEST_CASE("color bins: K equal bins of the raw range, cross-entropy, and back to bin centers", "[target]") {
  const ColorBinsTarget target(ColorBinsTargetOptions().bins(8));
  const torch::Tensor raw = torch::tensor({0.0, 0.124, 0.125, 0.5, 0.99, 1.0, -0.5, 2.0}).view({1, 1, 2, 4});
  const torch::Tensor ids = target.compute(raw, 2);
  REQUIRE(ids.scalar_type() == torch::kLong);
  CHECK(torch::equal(simmim::unpatchify(ids, 2, {1, 2}), torch::tensor({0, 0, 1, 4, 7, 7, 0, 7}).view({1, 1, 2, 4})));
  // Normalized images map back to the raw range first.
  const ColorBinsTarget normalized(ColorBinsTargetOptions().bins(8).mean({0.5}).stddev({0.25}));
  CHECK(torch::equal(normalized.compute((raw - 0.5) / 0.25, 2), ids));
  // Logits that pick each id: the loss is (near) 0 and to_image gives the bin centers, normalized.
  CHECK(normalized.prediction_dim(2, 1) == 32);
  const torch::Tensor logits = torch::one_hot(ids, 8).to(torch::kFloat).reshape({1, 2, 32}) * 50;
  const torch::Tensor mask = torch::ones({1, 2}, torch::kBool);
  CHECK(normalized.loss(logits, ids, mask).item<double>() < 1e-12);
  const torch::Tensor centers = (simmim::unpatchify(ids, 2, {1, 2}).to(torch::kFloat) + 0.5) / 8;
  CHECK(torch::allclose(normalized.to_image(logits, raw, 2), (centers - 0.5) / 0.25));
  REQUIRE_THROWS_WITH(ColorBinsTarget(ColorBinsTargetOptions().bins(1)),
                      ContainsSubstring("simmim::ColorBinsTarget: options.bins must be at least 2; got 1"));
  REQUIRE_THROWS_WITH(normalized.compute(torch::rand({1, 3, 4, 4}), 2),
                      ContainsSubstring("images must be as many channels as options.mean has values (1)"));
}

TEST_CASE("SimMIM and MAE take any target: the head's width follows it, the loss is the target's", "[target][model]") {
  const int kind = GENERATE(0, 1, 2, 3);
  std::shared_ptr<const simmim::Target> target;
  switch (kind) {
    case 0:
      target = std::make_shared<PixelTarget>();
      break;
    case 1:
      target = std::make_shared<PixelTarget>(PixelTargetOptions::local_norm(5));
      break;
    case 2:
      target = std::make_shared<HOGTarget>();
      break;
    default:
      target = std::make_shared<ColorBinsTarget>(ColorBinsTargetOptions().bins(4));
      break;
  }
  INFO(target->name());
  torch::manual_seed(7);
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  const int64_t D = target->prediction_dim(16, 3);
  SECTION("SimMIM") {
    simmim::SimMIM model(simmim::SimMIMOptions(simmim_test::tiny_vit({32, 48}, 16)).target(target));
    const torch::Tensor mask = torch::rand({2, 2, 3}) < 0.5;
    const auto out = model(images, mask);
    CHECK(model->linear_head->conv->weight.size(0) == D);
    const torch::Tensor pred = model->linear_head(model->adapter().forward_features(images, mask)).flatten(2).transpose(1, 2);
    CHECK(torch::allclose(out.loss, target->loss(pred, target->compute(images, 16), mask)));
    out.loss.backward();
    CHECK(model->encoder_as<simmim::VisionTransformerImpl>()->patch_embed->proj->weight.grad().abs().sum().item<double>() > 0);
    CHECK(out.reconstruction.defined() == (kind != 2));
    if (out.reconstruction.defined()) CHECK(out.reconstruction.sizes() == images.sizes());
  }
  SECTION("MAE") {
    const auto options = simmim::MAEOptions(simmim::MAEOptions::mae_encoder(simmim_test::tiny_vit({32, 48}, 16)))
                             .decoder_embed_dim(32)
                             .decoder_depth(1)
                             .decoder_num_heads(4)
                             .target(target);
    simmim::MAE model(options);
    CHECK(model->decoder->pred->weight.size(0) == D);
    const auto out = model(images, simmim_test::random_mask(2, {2, 3}, 4));
    CHECK(std::isfinite(out.loss.item<double>()));
    out.loss.backward();
    CHECK(model->decoder->pred->weight.grad().abs().sum().item<double>() > 0);
    CHECK(out.reconstruction.defined() == (kind != 2));
    REQUIRE_THROWS_WITH(simmim::MAE(simmim::MAEOptions(options).norm_pix_loss(true)),
                        ContainsSubstring("simmim::MAE: norm_pix_loss must be false when a target is set"));
  }
}

namespace {

// The smallest EncoderAdapter: a strided convolution (one "layer": the default layer_features()).
class PatchConvImpl : public torch::nn::Cloneable<PatchConvImpl>, public simmim::EncoderAdapter {
 public:
  PatchConvImpl() { reset(); }
  void reset() override { conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 6, 8).stride(8))); }
  at::Tensor forward_features(const at::Tensor& images, const at::Tensor&) override { return conv(images); }
  int64_t in_channels() const override { return 3; }
  int64_t patch_size() const override { return 8; }
  int64_t stride() const override { return 8; }
  int64_t out_channels() const override { return 6; }
  torch::nn::Conv2d conv{nullptr};
};
TORCH_MODULE(PatchConv);

}  // namespace

TEST_CASE("ViT layer_features: every block's patch tokens; the last, normed, is forward()'s", "[target][teacher]") {
  torch::manual_seed(11);
  simmim::VisionTransformer vit(simmim_test::tiny_vit({32, 48}, 16));
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  const auto layers = vit->layer_features(images);
  REQUIRE(layers.size() == 2);  // tiny_vit's depth
  for (const auto& map : layers) CHECK(map.sizes() == torch::IntArrayRef({2, 32, 2, 3}));
  const torch::Tensor last_tokens = layers.back().flatten(2).transpose(1, 2);
  const torch::Tensor expected = vit->forward(images).narrow(1, vit->num_prefix_tokens(), 6);
  CHECK(torch::allclose(vit->norm(last_tokens), expected, 1e-5, 1e-6));
  CHECK_FALSE(torch::allclose(layers[0], layers[1]));
}

TEST_CASE("teacher target: the chosen layers, normalized, averaged; the teacher frozen", "[target][teacher]") {
  torch::manual_seed(12);
  simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  std::vector<torch::Tensor> tokens;
  {
    torch::NoGradGuard no_grad;
    for (const auto& map : teacher->layer_features(images)) tokens.push_back(map.flatten(2).transpose(1, 2));
  }
  SECTION("the last layer, layer-normalized per token (MaskDistill)") {
    const simmim::TeacherTarget target(teacher, simmim::TeacherTargetOptions::mask_distill());
    for (const auto& p : teacher->parameters()) CHECK_FALSE(p.requires_grad());
    CHECK_FALSE(teacher->is_training());
    const torch::Tensor t = target.compute(images, 16);
    CHECK_FALSE(t.requires_grad());
    const torch::Tensor mean = tokens[1].mean(-1, true), var = tokens[1].var(-1, false, true);
    CHECK(torch::allclose(t, (tokens[1] - mean) / (var + 1e-6).sqrt(), 1e-4, 1e-5));
    CHECK(target.prediction_dim(16, 3) == 32);
    CHECK(target.loss_options().kind() == LossKind::kSmoothL1);
  }
  SECTION("the top 2 layers, each standardized per feature over the tokens (data2vec)") {
    const simmim::TeacherTarget target(teacher, simmim::TeacherTargetOptions::data2vec(2));
    const auto standardize = [](const torch::Tensor& x) {
      return (x - x.mean(1, true)) / (x.var(1, false, true) + 1e-6).sqrt();
    };
    CHECK(torch::allclose(target.compute(images, 16), (standardize(tokens[0]) + standardize(tokens[1])) / 2, 1e-4,
                          1e-5));
    CHECK(target.loss_options().kind() == LossKind::kSmoothL1);
  }
  SECTION("one chosen layer, no normalization; errors") {
    const simmim::TeacherTarget first(teacher, simmim::TeacherTargetOptions().layer(0).norm(simmim::TeacherNorm::kNone));
    CHECK(torch::allclose(first.compute(images, 16), tokens[0]));
    REQUIRE_THROWS_WITH(simmim::TeacherTarget(teacher, simmim::TeacherTargetOptions().top_k(3)).compute(images, 16),
                        ContainsSubstring("simmim::TeacherTarget::compute: options.top_k must be at most the "
                                          "teacher's 2 layers; got 3"));
    REQUIRE_THROWS_WITH(first.compute(torch::rand({2, 3, 32, 48}), 8),
                        ContainsSubstring("patch must be the teacher's stride 16 (one teacher feature per student "
                                          "patch); got 8"));
    REQUIRE_THROWS_WITH(simmim::TeacherTarget(teacher, simmim::TeacherTargetOptions().loss(LossKind::kCrossEntropy)),
                        ContainsSubstring("options.loss must be LossKind::kSmoothL1, kL2, kL1 or kCosine"));
  }
  SECTION("any EncoderAdapter: its forward_features() is the one layer") {
    PatchConv conv;
    const simmim::TeacherTarget target(conv, simmim::TeacherTargetOptions().norm(simmim::TeacherNorm::kNone));
    torch::NoGradGuard no_grad;
    CHECK(torch::allclose(target.compute(images, 8), conv->conv(images).flatten(2).transpose(1, 2)));
  }
}

TEST_CASE("a SimMIM student distils a frozen teacher: only the student learns", "[target][teacher][model]") {
  torch::manual_seed(13);
  simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
  const auto kind = GENERATE(LossKind::kCosine, LossKind::kSmoothL1, LossKind::kL2);
  auto target = std::make_shared<simmim::TeacherTarget>(teacher, simmim::TeacherTargetOptions().loss(kind));
  simmim::SimMIM student(simmim::SimMIMOptions(simmim_test::tiny_vit({32, 48}, 16)).target(target));
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  const torch::Tensor mask = torch::rand({2, 2, 3}) < 0.5;
  const auto out = student(images, mask);
  CHECK(student->linear_head->conv->weight.size(0) == 32);
  const torch::Tensor pred = student->linear_head(student->adapter().forward_features(images, mask)).flatten(2).transpose(1, 2);
  CHECK(torch::allclose(out.loss, target->loss(pred, target->compute(images, 16), mask)));
  out.loss.backward();
  CHECK(student->linear_head->conv->weight.grad().abs().sum().item<double>() > 0);
  for (const auto& p : teacher->parameters()) CHECK_FALSE(p.grad().defined());
  CHECK_FALSE(out.reconstruction.defined());
}
