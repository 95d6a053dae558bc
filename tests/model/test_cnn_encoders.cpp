// ResNet and ConvNeXt as SimMIM encoders: timm's architecture (parameter names and counts), stage shapes on
// non-square images and any channel count, masking at the stem, determinism, errors, and SimMIM training
// with each (the loss falls).
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <string>
#include <vector>

#include "model_test_utils.hpp"
#include "simmim/encoder/convnext.hpp"
#include "simmim/encoder/resnet.hpp"
#include "simmim/model/simmim_model.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::close;

namespace {

int64_t count_params(torch::nn::Module& m, const std::string& skip) {
  int64_t n = 0;
  for (const auto& p : m.named_parameters()) {
    if (p.key().find(skip) == std::string::npos) n += p.value().numel();
  }
  return n;
}

// Small enough to train in a test.
simmim::ResNetOptions small_resnet(bool bottleneck) {
  return simmim::ResNetOptions({1, 1, 1, 1}, bottleneck).base_width(8);
}
simmim::ConvNeXtOptions small_convnext() { return simmim::ConvNeXtOptions({1, 1, 1, 1}, {16, 24, 32, 40}); }

// SimMIM's loss written out (DESIGN.md): the mask upsampled by p, L1 per pixel, mean over masked pixels and
// channels.
at::Tensor simmim_loss(const at::Tensor& x, const at::Tensor& x_rec, const at::Tensor& mask, int64_t p) {
  auto m = mask.to(torch::kFloat).repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1);
  return ((x - x_rec).abs() * m).sum() / (m.sum() + 1e-5) / x.size(1);
}

}  // namespace

TEST_CASE("CNN encoders are timm's architectures: parameter names and counts", "[encoder][cnn]") {
  // timm's resnet18 / resnet50 / convnext_tiny without their classifier heads (fc: 513,000 / 2,049,000;
  // head.norm + head.fc: 770,536); the mask token is simmim's addition.
  simmim::ResNet r18(simmim::ResNetOptions::resnet18());
  CHECK(count_params(*r18, "mask_token") == 11176512);
  simmim::ResNet r50(simmim::ResNetOptions::resnet50());
  CHECK(count_params(*r50, "mask_token") == 23508032);
  simmim::ConvNeXt cnt(simmim::ConvNeXtOptions::tiny());
  CHECK(count_params(*cnt, "mask_token") == 27818592);

  const auto has = [](torch::nn::Module& m, const std::string& name) {
    return m.named_parameters().contains(name) || m.named_buffers().contains(name);
  };
  for (const std::string name : {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.weight",
                                 "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
                                 "layer4.1.conv2.weight", "mask_mixer.mask_token"}) {
    CHECK(has(*r18, name));
  }
  CHECK_FALSE(has(*r18, "layer1.0.downsample.0.weight"));  // same width, stride 1: no projection
  CHECK(has(*r50, "layer1.0.downsample.0.weight"));        // 64 -> 256
  CHECK(has(*r50, "layer3.5.conv3.weight"));
  for (const std::string name : {"stem.0.weight", "stem.1.bias", "stages.0.blocks.0.conv_dw.weight",
                                 "stages.0.blocks.0.norm.weight", "stages.0.blocks.0.mlp.fc1.weight",
                                 "stages.0.blocks.0.mlp.fc2.bias", "stages.0.blocks.0.gamma",
                                 "stages.1.downsample.0.weight", "stages.1.downsample.1.weight",
                                 "stages.2.blocks.8.gamma", "mask_mixer.mask_token"}) {
    CHECK(has(*cnt, name));
  }
  CHECK_FALSE(has(*cnt, "stages.0.downsample.0.weight"));
  // Each ResNet block starts as the identity on its residual path (timm's zero_init_last).
  CHECK(r50->named_parameters()["layer1.0.bn3.weight"].abs().sum().item<double>() == 0);
  CHECK(cnt->named_parameters()["stages.0.blocks.0.gamma"].max().item<float>() == 1e-6f);
}

TEST_CASE("CNN encoders: four stages at strides 4-32 on non-square images of 1, 3, 4 and 13 channels",
          "[encoder][cnn]") {
  torch::NoGradGuard no_grad;
  for (int64_t chans : {1, 3, 4, 13}) {
    INFO(chans << " channels");
    const auto images = torch::randn({2, chans, 64, 96});
    simmim::ResNet resnet(small_resnet(true).in_chans(chans));
    simmim::ConvNeXt convnext(small_convnext().in_chans(chans));
    const std::vector<std::pair<std::vector<at::Tensor>, std::vector<int64_t>>> runs = {
        {resnet->forward_stages(images), resnet->stage_channels()},
        {convnext->forward_stages(images), convnext->stage_channels()}};
    for (const auto& [stages, channels] : runs) {
      REQUIRE(stages.size() == 4);
      for (size_t s = 0; s < 4; ++s) {
        const int64_t stride = int64_t{4} << s;
        CHECK(stages[s].sizes() == torch::IntArrayRef({2, channels[s], 64 / stride, 96 / stride}));
      }
    }
    CHECK(resnet->out_channels() == 8 * 8 * 4);  // base 8, stage 4 at 8x, bottleneck expansion 4
    CHECK(resnet->forward_features(images, {}).sizes() == torch::IntArrayRef({2, 256, 2, 3}));
    CHECK(convnext->forward_features(images, {}).sizes() == torch::IntArrayRef({2, 40, 2, 3}));
  }
}

TEST_CASE("CNN encoders: the mask token replaces the stem's output where the mask says", "[encoder][cnn]") {
  torch::manual_seed(3);
  simmim::ResNet resnet(small_resnet(false));
  simmim::ConvNeXt convnext(small_convnext());
  resnet->eval();  // BatchNorm on running statistics: a sample's output depends on that sample only
  torch::NoGradGuard no_grad;
  const auto a = torch::randn({2, 3, 64, 64}), b = torch::randn({2, 3, 64, 64});
  const auto all = torch::ones({2, 16, 16}, torch::kBool);
  const auto none = torch::zeros({2, 16, 16}, torch::kLong);  // integer masks work too
  // Everything masked: nothing of the image reaches the features.
  CHECK(torch::equal(resnet->forward(a, all), resnet->forward(b, all)));
  CHECK(torch::equal(convnext->forward(a, all), convnext->forward(b, all)));
  // Nothing masked: the same as no mask.
  CHECK(torch::equal(resnet->forward(a, none), resnet->forward(a)));
  CHECK(torch::equal(convnext->forward(a, none), convnext->forward(a)));
  // Same seed, same encoder.
  torch::manual_seed(3);
  simmim::ResNet again(small_resnet(false));
  again->eval();
  CHECK(torch::equal(again->forward(a, all), resnet->forward(a, all)));
}

TEST_CASE("CNN encoders: clear errors", "[encoder][cnn]") {
  simmim::ResNet resnet(small_resnet(false));
  simmim::ConvNeXt convnext(small_convnext());
  REQUIRE_THROWS_WITH(resnet->forward(torch::randn({1, 3, 48, 64})),
                      ContainsSubstring("simmim::ResNet::forward_stages: images must be a non-empty batch [B, 3, H, "
                                        "W] with H and W positive multiples of 32 (the stride); got Float tensor "
                                        "[1, 3, 48, 64]"));
  REQUIRE_THROWS_WITH(convnext->forward(torch::randn({1, 1, 64, 64})),
                      ContainsSubstring("simmim::ConvNeXt::forward_stages: images must be a non-empty batch [B, 3"));
  REQUIRE_THROWS_WITH(resnet->forward(torch::randn({1, 3, 64, 64}), torch::ones({1, 8, 8}, torch::kBool)),
                      ContainsSubstring("mask must be [B, h, w] = [1, 16, 16]"));
  REQUIRE_THROWS_WITH(simmim::ResNet(simmim::ResNetOptions({2, 2, 2})), ContainsSubstring("layers must be 4 stages"));
  REQUIRE_THROWS_WITH(simmim::ConvNeXt(simmim::ConvNeXtOptions({1, 1, 0, 1})),
                      ContainsSubstring("depths must be at least 1 block per stage; got 0"));
}

TEST_CASE("SimMIM pretrains a ResNet and a ConvNeXt: the loss falls", "[model][cnn]") {
  for (int which = 0; which < 3; ++which) {
    torch::manual_seed(11);
    INFO((which == 2 ? "ConvNeXt" : which == 1 ? "ResNet, bottleneck" : "ResNet, basic"));
    simmim::SimMIM model = which == 2 ? simmim::SimMIM(simmim::ConvNeXt(small_convnext()))
                                      : simmim::SimMIM(simmim::ResNet(small_resnet(which == 1)));
    // A fixed batch of smooth images (low-frequency, so the masked parts are predictable from the rest).
    const auto images = torch::nn::functional::interpolate(
        torch::rand({4, 3, 4, 4}),
        torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{64, 64}).mode(torch::kBilinear).align_corners(false));
    // SimMIM's masks: 32-px cells (8 x 8 stem positions), 60% of them, drawn once.
    auto cells = torch::rand({4, 2, 2}) < 0.6;
    cells.index_put_({torch::indexing::Slice(), 0, 0}, true);  // at least one masked cell per sample
    const auto mask = cells.repeat_interleave(8, 1).repeat_interleave(8, 2);
    auto out = model(images, mask);
    REQUIRE(out.reconstruction.sizes() == images.sizes());
    REQUIRE(close(out.loss, simmim_loss(images, out.reconstruction, mask, 4), 1e-5, 1e-6));
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3).weight_decay(0.0));
    const double first = out.loss.item<double>();
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
}
