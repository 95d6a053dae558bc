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

namespace {

// Images whose interior gradients are (n + 1/4, m + 1/8) for integers n, m in [-9, 9]: never on a bin
// boundary (no gx == +-gy, no gx == 0 but at the reflected border columns, where both paths agree), and
// never within float rounding of one, so the CPU pass and the tensor path bin every pixel alike. Values
// are multiples of 1/16 below 11: exact in every floating dtype, bf16 included.
torch::Tensor tie_free_images(const std::vector<int64_t>& shape, at::Generator& gen) {
  const int64_t H = shape[2], W = shape[3];
  const torch::Tensor q = torch::randint(0, 8, shape, gen, torch::kDouble);
  const torch::Tensor xs = (torch::arange(W, torch::kDouble).remainder(16) / 8).view({1, 1, 1, W});
  const torch::Tensor ys = (torch::arange(H, torch::kDouble).remainder(16) / 16).view({1, 1, H, 1});
  return q + xs + ys;
}

// floor(angle * bins / pi) of the exact angle of an integer gradient, angle = atan2(gy, gx) mod pi, clamped
// to the last bin (angle pi), with `tie` set where the gradient lies exactly on a boundary j pi / bins,
// 0 < j < bins.
int64_t exact_bin(double gx, double gy, int64_t bins, bool& tie) {
  const double kPi = 3.14159265358979323846;
  double angle = std::atan2(gy, gx);
  if (angle < 0) angle += kPi;
  const double t = angle * static_cast<double>(bins) / kPi;
  const double r = std::round(t);
  tie = std::abs(t - r) < 1e-9 && r > 0 && r < static_cast<double>(bins);  // 0 and pi are no boundary
  const int64_t bin = tie ? static_cast<int64_t>(r) : static_cast<int64_t>(std::floor(t));
  return std::min<int64_t>(bin, bins - 1);
}

}  // namespace

TEST_CASE("HOG: the CPU pass equals the tensor path on random shapes, layouts and dtypes", "[target]") {
  auto gen = simmim::make_generator(13);
  const int64_t bins_choices[] = {1, 4, 9, 2, 5, 8};
  for (int64_t trial = 0; trial < 36; ++trial) {
    const int64_t cell = trial % 3 == 0 ? 4 : (trial % 3 == 1 ? 8 : 2);
    const int64_t bins = bins_choices[trial % 6];
    const int64_t B = 1 + trial % 3, C = 1 + (trial / 3) % 3;
    const int64_t H = cell * (1 + (trial * 7) % 4), W = cell * (1 + (trial * 5) % 5);
    const int64_t layout = trial % 4;  // contiguous, channels-last, transposed, every other column
    const auto dtype = std::vector<torch::ScalarType>{torch::kFloat, torch::kDouble, torch::kBFloat16,
                                                      torch::kHalf}[(trial / 4) % 4];
    torch::Tensor images;
    if (layout == 2) {
      images = tie_free_images({B, C, W, H}, gen).to(dtype).transpose(2, 3);
    } else if (layout == 3) {
      images = tie_free_images({B, C, H, 2 * W}, gen).to(dtype).slice(3, 0, 2 * W, 2);
    } else {
      images = tie_free_images({B, C, H, W}, gen).to(dtype);
      if (layout == 1) images = images.contiguous(at::MemoryFormat::ChannelsLast);
    }
    REQUIRE(images.sizes() == torch::IntArrayRef({B, C, H, W}));
    INFO("trial " << trial << ": " << simmim::describe(images) << " strides " << images.strides() << ", cell "
                  << cell << ", bins " << bins);
    const torch::Tensor fused = simmim::hog_cells(images, bins, cell, 1e-6);
    const torch::Tensor reference = simmim::hog_cells_reference(images, bins, cell, 1e-6);
    REQUIRE(fused.sizes() == torch::IntArrayRef({B, C, bins, H / cell, W / cell}));
    REQUIRE(fused.scalar_type() == (dtype == torch::kDouble ? torch::kDouble : torch::kFloat));
    REQUIRE(fused.is_contiguous());
    const double tol = dtype == torch::kDouble ? 1e-12 : 1e-6;
    CHECK(torch::allclose(fused, reference, tol, tol));
  }
  // Continuous random values, as the benchmark's: with this seed no pixel lies within float rounding of a
  // boundary (at 32x3x224x224, 3 cells of 75,264 differ, bench/README.md).
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    const torch::Tensor images = torch::rand({2, 3, 40, 24}, gen, dtype);
    for (const int64_t bins : {1, 4, 9}) {
      const double tol = dtype == torch::kDouble ? 1e-12 : 1e-6;
      CHECK(torch::allclose(simmim::hog_cells(images, bins, 8, 1e-6), simmim::hog_cells_reference(images, bins, 8, 1e-6),
                            tol, tol));
    }
  }
}

TEST_CASE("HOG: the CPU pass bins the exact angle; the tensor path differs only at ties", "[target]") {
  const double kPi = 3.14159265358979323846;
  const int64_t R = 12;
  std::vector<float> gxs, gys;
  for (int64_t gy = -R; gy <= R; ++gy) {
    for (int64_t gx = -R; gx <= R; ++gx) {
      gxs.push_back(static_cast<float>(gx));
      gys.push_back(static_cast<float>(gy));
    }
  }
  const auto n = static_cast<int64_t>(gxs.size());
  const torch::Tensor gx = torch::from_blob(gxs.data(), {n}, torch::kFloat).clone();
  const torch::Tensor gy = torch::from_blob(gys.data(), {n}, torch::kFloat).clone();
  for (int64_t bins = 1; bins <= 12; ++bins) {
    // The tensor path's binning (hog_cells_reference), on all the gradients at once.
    torch::Tensor angle = at::atan2(gy, gx);
    angle = at::where(angle < 0, angle + kPi, angle);
    const torch::Tensor tensor_bins =
        (angle * (static_cast<double>(bins) / kPi)).floor().clamp(0, bins - 1).to(torch::kLong).contiguous();
    const int64_t* tensor_bin = tensor_bins.data_ptr<int64_t>();
    int64_t ties = 0, tensor_differs = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (gxs[i] == 0 && gys[i] == 0) continue;  // no angle (and no magnitude to vote)
      bool tie = false;
      const int64_t expected = exact_bin(gxs[i], gys[i], bins, tie);
      INFO("bins " << bins << ", gradient (" << gxs[i] << ", " << gys[i] << ")");
      CHECK(simmim::kernels::cpu::hog_orientation_bin<float>(gxs[i], gys[i], bins) == expected);
      CHECK(simmim::kernels::cpu::hog_orientation_bin<double>(gxs[i], gys[i], bins) == expected);
      const int64_t by_tensor = tensor_bin[i];
      ties += tie ? 1 : 0;
      if (by_tensor != expected) {
        ++tensor_differs;
        CHECK(tie);  // the tensor path's atan2 rounds; only a gradient exactly on a boundary may move
      }
    }
    // Exact ties exist only at 45, 90 and 135 degrees (rational slopes).
    if (bins % 2 != 0) CHECK(ties == 0);
    if (bins % 4 != 0) CHECK(tensor_differs == 0);
  }
  // -0 folds as atan2's: atan2(-0, -1) = -pi -> 0 (bin 0), atan2(+0, -1) = pi (the last bin). NaN: bin 0.
  CHECK(simmim::kernels::cpu::hog_orientation_bin<float>(-1.0f, -0.0f, 9) == 0);
  CHECK(simmim::kernels::cpu::hog_orientation_bin<float>(-1.0f, 0.0f, 9) == 8);
  CHECK(simmim::kernels::cpu::hog_orientation_bin<float>(std::nanf(""), 1.0f, 9) == 0);
  CHECK(simmim::kernels::cpu::hog_orientation_bin<double>(1.0, std::nan(""), 9) == 0);
  // A ramp along x + y, 4 bins: every interior gradient is exactly at 45 degrees, the boundary of bins 0
  // and 1; the CPU pass puts it in bin 1, as floor() of the exact angle.
  const int64_t S = 16;
  const torch::Tensor ramp = (torch::arange(S).view({S, 1}) + torch::arange(S).view({1, S})).to(torch::kFloat);
  const torch::Tensor cells = simmim::hog_cells(ramp.view({1, 1, S, S}), 4, 8, 1e-6);
  CHECK(cells[0][0][1].min().item<double>() > 0.9);
}

TEST_CASE("HOG: the CPU pass gives bitwise the same cells for any thread count and in both builds", "[target]") {
  using simmim::kernels::cpu::CpuIsa;
  auto gen = simmim::make_generator(14);
  const auto dtype = GENERATE(torch::kFloat, torch::kDouble, torch::kBFloat16);
  // 72 tasks (planes x cell rows) of 8 x 100 pixels: both threads get some. W = 100 ends rows in partial
  // vectors.
  const torch::Tensor images = torch::rand({3, 3, 64, 100}, gen).to(dtype);
  const int threads = at::get_num_threads();
  struct Restore {
    int threads;
    ~Restore() {
      at::set_num_threads(threads);
      simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kAuto;
    }
  } restore{threads};
  at::set_num_threads(1);
  const torch::Tensor one = simmim::hog_cells(images, 9, 4, 1e-6);
  at::set_num_threads(2);
  const torch::Tensor two = simmim::hog_cells(images, 9, 4, 1e-6);
  CHECK(torch::equal(one, two));
  if (simmim::kernels::cpu::cpu_avx2_available()) {
    simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kBaseline;
    const torch::Tensor baseline = simmim::hog_cells(images, 9, 4, 1e-6);
    CHECK(std::string(simmim::kernels::cpu::last_cpu_pass_build().load()).find("/baseline") != std::string::npos);
    simmim::kernels::cpu::cpu_isa_override() = CpuIsa::kAVX2;
    const torch::Tensor avx2 = simmim::hog_cells(images, 9, 4, 1e-6);
    CHECK(std::string(simmim::kernels::cpu::last_cpu_pass_build().load()).find("/avx2") != std::string::npos);
    CHECK(torch::equal(baseline, one));
    CHECK(torch::equal(avx2, one));
  }
}

TEST_CASE("HOG: argument messages, and what takes the tensor path", "[target]") {
  const torch::Tensor images = torch::rand({1, 2, 16, 16});
  REQUIRE_THROWS_WITH(simmim::hog_cells(images, 0, 8, 1e-6),
                      ContainsSubstring("simmim::hog_cells: bins must be positive; got 0"));
  REQUIRE_THROWS_WITH(simmim::hog_cells(images, 9, 8, 0.0),
                      ContainsSubstring("simmim::hog_cells: norm_eps must be finite and > 0; got 0"));
  REQUIRE_THROWS_WITH(simmim::hog_cells(images, 9, 5, 1e-6),
                      ContainsSubstring("simmim::hog_cells: images must be at least 2 x 2 pixels and a size divisible "
                                        "by the cell 5; got Float tensor [1, 2, 16, 16] on cpu"));
  REQUIRE_THROWS_WITH(simmim::hog_cells(torch::ones({1, 2, 16, 16}, torch::kLong), 9, 8, 1e-6),
                      ContainsSubstring("simmim::hog_cells: images must be a floating-point [B, C, H, W] tensor"));
  REQUIRE_THROWS_WITH(simmim::hog_cells_reference(images, 9, 0, 1e-6),
                      ContainsSubstring("simmim::hog_cells_reference: cell must be positive; got 0"));
  // No images, no cells (and nothing read).
  CHECK(simmim::hog_cells(torch::rand({0, 3, 16, 16}), 9, 8, 1e-6).sizes() == torch::IntArrayRef({0, 3, 9, 2, 2}));
  // Images that need a graph take the tensor path (the pass has no backward): the cells carry a gradient.
  const torch::Tensor x = torch::rand({1, 1, 16, 16}).requires_grad_();
  const torch::Tensor cells = simmim::hog_cells(x, 9, 8, 1e-6);
  CHECK(cells.requires_grad());
  CHECK(torch::allclose(cells.detach(), simmim::hog_cells(x.detach(), 9, 8, 1e-6), 1e-6, 1e-6));
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

// The Distiller (model/distiller.hpp): a tiny teacher (width 32, depth 2, patch 16 on 32 x 48) and a
// smaller student (width 16, depth 1).
namespace {

simmim::VisionTransformerOptions tiny_student(simmim::Size2d img, int64_t patch) {
  return simmim::VisionTransformerOptions(img, patch, 16, 1, 2).in_chans(3);
}

// MaskDistill's loss written out: smooth-L1 (beta 1) per element, mean over the features, weighted by the
// mask, divided by the masked count.
torch::Tensor smooth_l1_masked(const torch::Tensor& pred, const torch::Tensor& target, const torch::Tensor& mask) {
  const torch::Tensor d = (pred - target).abs();
  const torch::Tensor l = torch::where(d < 1.0, 0.5 * d * d, d - 0.5).mean(-1);
  const torch::Tensor m = mask.flatten(1).to(l.scalar_type());
  return (l * m).sum() / m.sum();
}

}  // namespace

TEST_CASE("Distiller: the loss is TeacherTarget on the full image + head + masked loss", "[distill]") {
  torch::manual_seed(21);
  simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
  simmim::VisionTransformer student(tiny_student({32, 48}, 16));
  const int64_t hidden = GENERATE(0, 8);
  simmim::Distiller model(teacher, student, simmim::DistillerOptions().head_hidden_dim(hidden));
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  const torch::Tensor mask = simmim_test::random_mask(2, {2, 3}, 4);
  const simmim::PretrainOutput out = model(images, mask);
  CHECK(out.loss.dim() == 0);
  CHECK_FALSE(out.reconstruction.defined());  // features have no pixel space
  CHECK(out.mask.equal(mask));

  // By hand: an independent TeacherTarget on the same teacher, the student's masked features, the head.
  const simmim::TeacherTarget reference(teacher, simmim::TeacherTargetOptions::mask_distill());
  const torch::Tensor targets = reference.compute(images, 16);
  REQUIRE(targets.sizes() == torch::IntArrayRef({2, 6, 32}));
  torch::Tensor h = student->forward_features(images, mask);  // [2, 16, 2, 3]
  if (hidden > 0) {
    auto conv = model->head[0]->as<torch::nn::Conv2dImpl>();
    REQUIRE(conv->weight.sizes() == torch::IntArrayRef({8, 16, 1, 1}));
    h = torch::gelu(conv->forward(h));
  }
  auto last = model->head[hidden > 0 ? 2 : 0]->as<simmim::SimMIMHeadImpl>();
  REQUIRE(last->conv->weight.sizes() == torch::IntArrayRef({32, hidden > 0 ? 8 : 16, 1, 1}));
  const torch::Tensor pred = last->forward(h).flatten(2).transpose(1, 2);  // [2, 6, 32]
  CHECK(torch::allclose(out.loss, smooth_l1_masked(pred, targets, mask), 1e-5, 1e-6));
  CHECK(torch::allclose(model->teacher_targets(images, {2, 3}), targets));

  // The teacher is neither a parameter nor a child: checkpoints and optimizers see the student and head.
  for (const auto& p : model->named_parameters())
    CHECK((p.key().rfind("encoder.", 0) == 0 || p.key().rfind("head.", 0) == 0));
  CHECK(model->named_parameters().size() == student->parameters().size() + (hidden > 0 ? 4 : 2));
}

TEST_CASE("Distiller: the teacher gets no gradient and stays unchanged; the student learns", "[distill]") {
  torch::manual_seed(22);
  simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
  simmim::VisionTransformer student(tiny_student({32, 48}, 16));
  std::vector<torch::Tensor> before;
  for (const auto& p : teacher->parameters()) before.push_back(p.detach().clone());
  const auto loss_kind = GENERATE(LossKind::kSmoothL1, LossKind::kCosine);
  simmim::Distiller model(teacher, student,
                          simmim::DistillerOptions().target(simmim::TeacherTargetOptions().loss(loss_kind)));
  model->train();
  CHECK_FALSE(teacher->is_training());  // train() of the model does not reach the teacher
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3));
  const torch::Tensor images = torch::rand({4, 3, 32, 48});
  const torch::Tensor mask = simmim_test::random_mask(4, {2, 3}, 4);
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    opt.zero_grad();
    const torch::Tensor loss = model(images, mask).loss;
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  CHECK(last < 0.5 * first);
  for (const auto& p : teacher->parameters()) {
    CHECK_FALSE(p.requires_grad());
    CHECK_FALSE(p.grad().defined());
  }
  size_t i = 0;
  for (const auto& p : teacher->parameters()) CHECK(p.equal(before[i++]));
  CHECK(student->patch_embed->proj->weight.grad().defined());
}

TEST_CASE("Distiller: a student grid other than the teacher's is rejected, or resampled", "[distill]") {
  torch::manual_seed(23);
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  SECTION("student patch 8 (4 x 6 tokens) on a teacher of stride 16 (2 x 3)") {
    simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
    simmim::VisionTransformer student(tiny_student({32, 48}, 8));
    const torch::Tensor mask = simmim_test::random_mask(2, {4, 6}, 12);
    simmim::Distiller rejecting(teacher, student);
    REQUIRE_THROWS_WITH(rejecting(images, mask),
                        ContainsSubstring("simmim::Distiller::teacher_targets: the student's token grid (H / patch) "
                                          "must be the teacher's grid (H / stride) 2x3, or DistillerOptions::resample "
                                          "set to GridResample::kBilinear or kArea; got 4x6 (student patch 8, teacher "
                                          "stride 16, images [2, 3, 32, 48])"));
    simmim::Distiller bilinear(teacher, student, simmim::DistillerOptions().resample(simmim::GridResample::kBilinear));
    const simmim::TeacherTarget reference(teacher, simmim::TeacherTargetOptions::mask_distill());
    const torch::Tensor coarse = reference.compute(images, 16).transpose(1, 2).reshape({2, 32, 2, 3});
    const torch::Tensor expected =
        torch::upsample_bilinear2d(coarse, {4, 6}, /*align_corners=*/false).flatten(2).transpose(1, 2);
    const torch::Tensor t = bilinear->teacher_targets(images, {4, 6});
    CHECK(t.sizes() == torch::IntArrayRef({2, 24, 32}));
    CHECK(torch::allclose(t, expected, 1e-5, 1e-6));
    const auto out = bilinear(images, mask);
    CHECK(std::isfinite(out.loss.item<double>()));
    CHECK(bilinear->head[0]->as<simmim::SimMIMHeadImpl>()->conv->weight.size(0) == 32);
  }
  SECTION("student patch 16 (2 x 3) on a teacher of stride 8 (4 x 6): area is the mean of 2 x 2 cells") {
    simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 8));
    simmim::VisionTransformer student(tiny_student({32, 48}, 16));
    simmim::Distiller area(teacher, student, simmim::DistillerOptions().resample(simmim::GridResample::kArea));
    const simmim::TeacherTarget reference(teacher, simmim::TeacherTargetOptions::mask_distill());
    const torch::Tensor fine = reference.compute(images, 8).reshape({2, 2, 2, 3, 2, 32});  // rows (2, 2), cols (3, 2)
    const torch::Tensor expected = fine.mean({2, 4}).reshape({2, 6, 32});
    CHECK(torch::allclose(area->teacher_targets(images, {2, 3}), expected, 1e-5, 1e-6));
    CHECK(std::isfinite(area(images, simmim_test::random_mask(2, {2, 3}, 3)).loss.item<double>()));
  }
}

TEST_CASE("Distiller: bad input is refused with simmim's messages", "[distill]") {
  torch::manual_seed(24);
  simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
  simmim::VisionTransformer student(tiny_student({32, 48}, 16));
  simmim::Distiller model(teacher, student);
  const torch::Tensor mask = simmim_test::random_mask(2, {2, 3}, 3);
  REQUIRE_THROWS_WITH(model(torch::rand({2, 1, 32, 48}), mask),
                      ContainsSubstring("simmim::Distiller::forward: images must be a non-empty [B, 3, H, W] with H, W "
                                        "divisible by the student's stride 16 and patch size 16 and by the teacher's "
                                        "stride 16; got Float tensor [2, 1, 32, 48] on cpu"));
  REQUIRE_THROWS_WITH(model(torch::rand({2, 3, 32, 48}), mask.narrow(2, 0, 2)),
                      ContainsSubstring("simmim::Distiller::forward: mask must be [B, H/p, W/p] = [2, 2, 3] (p = the "
                                        "student's patch 16); got Bool tensor [2, 2, 2] on cpu"));
  REQUIRE_THROWS_WITH(model(torch::zeros({2, 3, 32, 48}, torch::kLong), mask),
                      ContainsSubstring("images must be a floating-point tensor"));
  REQUIRE_THROWS_WITH(simmim::Distiller(teacher, student, simmim::DistillerOptions().head_hidden_dim(-1)),
                      ContainsSubstring("simmim::Distiller: options.head_hidden_dim must be >= 0 (0: a linear head); "
                                        "got -1"));
  REQUIRE_THROWS_WITH(
      simmim::Distiller(teacher, student, simmim::DistillerOptions().resample(static_cast<simmim::GridResample>(7))),
      ContainsSubstring("options.resample must be GridResample::kReject, kBilinear or kArea; got GridResample(7)"));
  REQUIRE_THROWS_WITH(simmim::Distiller(teacher, teacher),
                      ContainsSubstring("simmim::Distiller: student must be a module other than the teacher"));
  REQUIRE_THROWS_WITH(simmim::Distiller(teacher, simmim::VisionTransformer(tiny_student({32, 48}, 16).in_chans(1))),
                      ContainsSubstring("simmim::Distiller: student must be the teacher's in_channels 3; got 1"));
  REQUIRE_THROWS_WITH(simmim::Distiller(teacher, student,
                                        simmim::DistillerOptions().target(
                                            simmim::TeacherTargetOptions().loss(LossKind::kCrossEntropy))),
                      ContainsSubstring("simmim::TeacherTarget: options.loss must be LossKind::kSmoothL1, kL2, kL1 or "
                                        "kCosine"));
  REQUIRE_THROWS_WITH(simmim::Distiller(teacher.ptr(), std::shared_ptr<simmim::VisionTransformerImpl>()),
                      ContainsSubstring("simmim::Distiller: student must be a module; got a null pointer"));
}

TEST_CASE("Distiller: deterministic under a seed; clone() gets its own student", "[distill]") {
  const torch::Tensor images = torch::rand({3, 3, 32, 48}, simmim::make_generator(5));
  const torch::Tensor mask = torch::rand({3, 2, 3}, simmim::make_generator(6)) < 0.6;
  torch::manual_seed(25);
  simmim::VisionTransformer teacher(simmim_test::tiny_vit({32, 48}, 16));
  const auto run = [&] {
    torch::manual_seed(26);
    simmim::Distiller model(teacher, simmim::VisionTransformer(tiny_student({32, 48}, 16)),
                            simmim::DistillerOptions().head_hidden_dim(8));
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-3));
    std::vector<double> losses;
    for (int step = 0; step < 3; ++step) {
      opt.zero_grad();
      const torch::Tensor loss = model(images, mask).loss;
      loss.backward();
      opt.step();
      losses.push_back(loss.item<double>());
    }
    return std::make_pair(losses, model);
  };
  auto [losses_a, model_a] = run();
  auto [losses_b, model_b] = run();
  CHECK(losses_a == losses_b);
  const auto pa = model_a->named_parameters(), pb = model_b->named_parameters();
  for (const auto& p : pa) CHECK(p.value().equal(pb[p.key()]));

  const auto copy = std::dynamic_pointer_cast<simmim::DistillerImpl>(model_a->clone());
  REQUIRE(copy != nullptr);
  CHECK(copy->student() != model_a->student());
  CHECK(copy->teacher() == model_a->teacher());  // frozen, shared
  torch::NoGradGuard no_grad;
  CHECK(copy->forward(images, mask).loss.equal(model_a->forward(images, mask).loss));
}

TEST_CASE("Distiller: a bf16 teacher (floating tensors only; the index buffers stay int64)", "[distill]") {
  torch::manual_seed(27);
  simmim::VisionTransformer teacher(
      simmim_test::tiny_vit({32, 48}, 16).rel_pos_bias(simmim::RelPosBias::kShared).pos_embed(simmim::PosEmbedKind::kNone));
  simmim::VisionTransformer student(tiny_student({32, 48}, 16));
  const torch::Tensor images = torch::rand({2, 3, 32, 48});
  const torch::Tensor mask = simmim_test::random_mask(2, {2, 3}, 3);
  torch::Tensor float_targets;
  {
    simmim::Distiller fp32(teacher, student, simmim::DistillerOptions().teacher_precision(simmim::TeacherPrecision::kAuto));
    CHECK(fp32->teacher_dtype(torch::kCPU) == torch::kFloat);  // kAuto: float32 on the CPU
    CHECK(fp32->teacher_dtype(torch::Device(torch::kCUDA)) == torch::kBFloat16);
    float_targets = fp32->teacher_targets(images, {2, 3});
  }
  simmim::Distiller bf16(teacher, student, simmim::DistillerOptions().teacher_precision(simmim::TeacherPrecision::kBFloat16));
  bool has_index = false;
  for (const auto& b : teacher->named_buffers()) {
    if (b.key().find("relative_position_index") != std::string::npos) {
      has_index = true;
      CHECK(b.value().scalar_type() == torch::kLong);
    }
  }
  CHECK(has_index);
  for (const auto& p : teacher->parameters()) CHECK(p.scalar_type() == torch::kBFloat16);
  bf16->to(torch::kCPU);  // moving the model keeps the teacher's precision
  for (const auto& p : teacher->parameters()) CHECK(p.scalar_type() == torch::kBFloat16);
  const torch::Tensor t = bf16->teacher_targets(images, {2, 3});
  CHECK(t.scalar_type() == torch::kFloat);
  // Layer-normalized features: unit scale, so bf16's 8 bits of mantissa show as errors of a few hundredths.
  CHECK((t - float_targets).abs().max().item<double>() < 0.25);
  for (const auto& p : student->parameters()) CHECK(p.scalar_type() == torch::kFloat);
  const auto out = bf16(images, mask);
  CHECK(out.loss.scalar_type() == torch::kFloat);
  out.loss.backward();
  CHECK(student->patch_embed->proj->weight.grad().defined());
}
