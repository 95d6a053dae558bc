// Swin Transformer as SimMIM's encoder: timm's architecture (names and parameter count), windows and the
// shifted-window mask, padding of grids that are not whole windows, stage shapes on non-square images,
// masking at the patch embedding, and a SimMIM training whose loss falls.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <string>
#include <vector>

#include "model_test_utils.hpp"
#include "simmim/encoder/swin.hpp"
#include "simmim/model/simmim_model.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::close;

namespace {

simmim::SwinOptions little(simmim::Size2d img, int64_t window) {
  return simmim::SwinOptions(img, window, 16, {1, 2, 1, 1}, {1, 2, 2, 4});
}

}  // namespace

TEST_CASE("Swin is timm's SwinTransformer: parameter names and count", "[encoder][swin]") {
  simmim::SwinTransformer swin(simmim::SwinOptions::tiny());
  // timm's swin_tiny_patch4_window7_224 with num_classes=0 has 27,519,354 parameters; the mask token is ours.
  int64_t n = 0;
  for (const auto& p : swin->named_parameters()) {
    if (p.key() != "mask_mixer.mask_token") n += p.value().numel();
  }
  CHECK(n == 27519354);
  const auto params = swin->named_parameters();
  for (const std::string name :
       {"patch_embed.proj.weight", "patch_embed.norm.weight", "layers.0.blocks.0.attn.relative_position_bias_table",
        "layers.0.blocks.1.attn.qkv.weight", "layers.0.blocks.1.mlp.fc2.bias", "layers.1.downsample.norm.weight",
        "layers.1.downsample.reduction.weight", "layers.2.blocks.5.norm2.weight", "norm.bias",
        "mask_mixer.mask_token"}) {
    CHECK(params.contains(name));
  }
  CHECK_FALSE(params.contains("layers.0.downsample.norm.weight"));
  CHECK_FALSE(params.contains("layers.1.downsample.reduction.bias"));
  const auto buffers = swin->named_buffers();
  CHECK(buffers.contains("layers.0.blocks.1.attn_mask"));          // shifted: 56 > 7
  CHECK_FALSE(buffers.contains("layers.0.blocks.0.attn_mask"));    // regular windows
  CHECK_FALSE(buffers.contains("layers.3.blocks.1.attn_mask"));    // 7 x 7 grid = one window: no shift
  CHECK(params["layers.0.blocks.0.attn.relative_position_bias_table"].sizes() == torch::IntArrayRef({169, 3}));
}

TEST_CASE("Swin windows: partition and reverse, the shifted-window mask", "[encoder][swin]") {
  const auto x = torch::randn({2, 8, 12, 3});
  const auto windows = simmim::window_partition(x, {4, 4});
  REQUIRE(windows.sizes() == torch::IntArrayRef({2 * 2 * 3, 4, 4, 3}));
  CHECK(torch::equal(windows[4], x[0].narrow(0, 4, 4).narrow(1, 4, 4)));  // window (row 1, col 1) of sample 0
  CHECK(torch::equal(simmim::window_reverse(windows, {4, 4}, 8, 12), x));
  // 8 x 8 grid, window 4, shift 2: after the roll the last row and column of windows mix regions.
  const auto mask = simmim::shifted_window_mask({8, 8}, {4, 4}, {2, 2});
  REQUIRE(mask.sizes() == torch::IntArrayRef({4, 16, 16}));
  CHECK(torch::equal(mask[0], torch::zeros({16, 16})));  // the top-left window holds one region
  CHECK(torch::equal(mask, mask.transpose(1, 2)));
  CHECK(((mask == 0) | (mask == -100)).all().item<bool>());
  // Bottom-right window: four regions of 2 x 2 tokens; token (0, 0) of the window sees only its own region.
  const auto row = mask[3][0].view({4, 4});
  CHECK(torch::equal(row.narrow(0, 0, 2).narrow(1, 0, 2), torch::zeros({2, 2})));
  CHECK((row.narrow(1, 2, 2) == -100).all().item<bool>());
  CHECK((row.narrow(0, 2, 2) == -100).all().item<bool>());
}

TEST_CASE("Swin: four stages on non-square images, windows that do not fit, any channel count", "[encoder][swin]") {
  torch::NoGradGuard no_grad;
  for (int64_t chans : {1, 4}) {
    // 96 x 64: stage grids 24 x 16, 12 x 8, 6 x 4, 3 x 2; window 7 pads 24 x 16 to 28 x 21 and shrinks to the
    // grid where it is smaller.
    simmim::SwinTransformer swin(little({96, 64}, 7).in_chans(chans));
    const auto stages = swin->forward_stages(torch::randn({2, chans, 96, 64}));
    REQUIRE(stages.size() == 4);
    for (size_t s = 0; s < 4; ++s) {
      const int64_t stride = int64_t{4} << s;
      CHECK(stages[s].sizes() == torch::IntArrayRef({2, int64_t{16} << s, 96 / stride, 64 / stride}));
    }
    CHECK(torch::isfinite(stages[3]).all().item<bool>());
  }
  // The last stage's 3 x 2 grid is one window of 3 x 2, unshifted.
  simmim::SwinTransformer swin(little({96, 64}, 7));
  auto* stage = (*swin->layers)[3]->as<torch::nn::ModuleDictImpl>();
  auto* last = (*(*stage)["blocks"]->as<torch::nn::ModuleListImpl>())[0]->as<simmim::SwinBlockImpl>();
  CHECK(last->window == simmim::Size2d(3, 2));
  CHECK(last->shift == simmim::Size2d(0, 0));
}

TEST_CASE("Swin: the mask token replaces the patch embedding where masked; errors", "[encoder][swin]") {
  torch::manual_seed(6);
  simmim::SwinTransformer swin(little({64, 64}, 4));
  torch::NoGradGuard no_grad;
  const auto a = torch::randn({2, 3, 64, 64}), b = torch::randn({2, 3, 64, 64});
  const auto all = torch::ones({2, 16, 16}, torch::kBool);
  CHECK(torch::equal(swin->forward(a, all), swin->forward(b, all)));
  CHECK(torch::equal(swin->forward(a, torch::zeros({2, 16, 16}, torch::kInt)), swin->forward(a)));
  // Seeded: the same encoder again.
  torch::manual_seed(6);
  simmim::SwinTransformer again(little({64, 64}, 4));
  CHECK(torch::equal(again->forward(a, all), swin->forward(a, all)));
  REQUIRE_THROWS_WITH(swin->forward(torch::randn({1, 3, 64, 96})),
                      ContainsSubstring("simmim::SwinTransformer::forward_stages: images must be a non-empty batch [B, "
                                        "3, 64, 64] (in_chans, img_size); got Float tensor [1, 3, 64, 96]"));
  REQUIRE_THROWS_WITH(simmim::SwinTransformer(little({64, 48}, 4)),
                      ContainsSubstring("img_size must be positive multiples of 32"));
  REQUIRE_THROWS_WITH(simmim::SwinTransformer(simmim::SwinOptions({64, 64}, 4, 16, {1, 1, 1, 1}, {3, 2, 2, 4})),
                      ContainsSubstring("num_heads must be divisors of the stage widths"));
}

TEST_CASE("SimMIM pretrains a Swin: the loss falls", "[model][swin]") {
  torch::manual_seed(12);
  simmim::SimMIM model(simmim::SwinTransformer(little({64, 64}, 4)));
  const auto images = torch::nn::functional::interpolate(
      torch::rand({4, 3, 4, 4}), torch::nn::functional::InterpolateFuncOptions()
                                     .size(std::vector<int64_t>{64, 64})
                                     .mode(torch::kBilinear)
                                     .align_corners(false));
  auto cells = torch::rand({4, 2, 2}) < 0.6;
  cells.index_put_({torch::indexing::Slice(), 0, 0}, true);
  const auto mask = cells.repeat_interleave(8, 1).repeat_interleave(8, 2);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0.0));
  const double first = model(images, mask).loss.item<double>();
  double last = first;
  for (int step = 0; step < 40; ++step) {
    opt.zero_grad();
    auto o = model(images, mask);
    o.loss.backward();
    opt.step();
    last = o.loss.item<double>();
  }
  CHECK(last < 0.7 * first);
}
