#pragma once
// ResNet (18 / 34 / 50 style, v1.5: the stride in the 3x3 conv) as a masked-image-modeling encoder. SimMIM's
// mask token is mixed in at the stem's output (stride 4, after the max-pool), so the masks of the ViT recipes
// (cells of 32 px = 8 x 8 stem positions) and the SimMIM head at stride 32 work unchanged. Parameter names
// are timm's ResNet's (conv1, bn1, layer1.0.conv1, ..., layerN.0.downsample.{0,1}); no classifier.

#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/embed/mask_token.hpp"
#include "simmim/encoder/encoder_adapter.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ResNetOptions {
  ResNetOptions(std::vector<int64_t> layers = {2, 2, 2, 2}, bool bottleneck = false)
      : layers_(std::move(layers)), bottleneck_(bottleneck) {}

  static ResNetOptions resnet18() { return ResNetOptions({2, 2, 2, 2}, false); }
  static ResNetOptions resnet34() { return ResNetOptions({3, 4, 6, 3}, false); }
  static ResNetOptions resnet50() { return ResNetOptions({3, 4, 6, 3}, true); }

  // Blocks per stage (4 stages: strides 4, 8, 16, 32).
  TORCH_ARG(std::vector<int64_t>, layers);
  // Bottleneck blocks (1x1, 3x3, 1x1; expansion 4; ResNet-50 and up) instead of basic ones (two 3x3).
  TORCH_ARG(bool, bottleneck);
  // Image channels.
  TORCH_ARG(int64_t, in_chans) = 3;
  // Width of the stem and of stage 1 (64 in the paper); stage i doubles it i times.
  TORCH_ARG(int64_t, base_width) = 64;
  // The learnable mask token of SimMIM mode ("mask_mixer.mask_token", [1, 1, base_width]).
  TORCH_ARG(bool, mask_token) = true;
  // timm's zero_init_last: each block's last BatchNorm starts at weight 0, so each block starts as identity.
  TORCH_ARG(bool, zero_init_last) = true;
};

// One residual block. Basic: "conv1", "bn1", "conv2", "bn2"; bottleneck adds "conv3", "bn3"; a strided or
// widening block has "downsample" (1x1 conv "downsample.0", BatchNorm "downsample.1").
class ResNetBlockImpl : public torch::nn::Cloneable<ResNetBlockImpl> {
 public:
  ResNetBlockImpl(int64_t in_channels, int64_t width, int64_t stride, bool bottleneck)
      : in_channels_(in_channels), width_(width), stride_(stride), bottleneck_(bottleneck) {
    reset();
  }

  void reset() override {
    using torch::nn::BatchNorm2d;
    using torch::nn::Conv2d;
    using torch::nn::Conv2dOptions;
    const int64_t out = out_channels();
    if (bottleneck_) {
      conv1 = register_module("conv1", Conv2d(Conv2dOptions(in_channels_, width_, 1).bias(false)));
      bn1 = register_module("bn1", BatchNorm2d(width_));
      conv2 = register_module(
          "conv2", Conv2d(Conv2dOptions(width_, width_, 3).stride(stride_).padding(1).bias(false)));
      bn2 = register_module("bn2", BatchNorm2d(width_));
      conv3 = register_module("conv3", Conv2d(Conv2dOptions(width_, out, 1).bias(false)));
      bn3 = register_module("bn3", BatchNorm2d(out));
    } else {
      conv1 = register_module(
          "conv1", Conv2d(Conv2dOptions(in_channels_, width_, 3).stride(stride_).padding(1).bias(false)));
      bn1 = register_module("bn1", BatchNorm2d(width_));
      conv2 = register_module("conv2", Conv2d(Conv2dOptions(width_, width_, 3).padding(1).bias(false)));
      bn2 = register_module("bn2", BatchNorm2d(width_));
    }
    if (stride_ != 1 || in_channels_ != out) {
      downsample = register_module(
          "downsample", torch::nn::Sequential(Conv2d(Conv2dOptions(in_channels_, out, 1).stride(stride_).bias(false)),
                                              BatchNorm2d(out)));
    }
  }

  int64_t out_channels() const { return bottleneck_ ? 4 * width_ : width_; }
  // The BatchNorm whose weight zero_init_last zeroes.
  torch::nn::BatchNorm2d last_norm() const { return bottleneck_ ? bn3 : bn2; }

  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = at::relu(bn1(conv1(x)));
    if (bottleneck_) {
      y = at::relu(bn2(conv2(y)));
      y = bn3(conv3(y));
    } else {
      y = bn2(conv2(y));
    }
    const at::Tensor shortcut = downsample.is_empty() ? x : downsample->forward(x);
    return at::relu(y + shortcut);
  }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};

 private:
  int64_t in_channels_, width_, stride_;
  bool bottleneck_;
};
TORCH_MODULE(ResNetBlock);

// Submodules "conv1", "bn1" (stem: 7x7 stride 2 + 3x3 max-pool stride 2), "mask_mixer", "layer1".."layer4".
class ResNetImpl : public torch::nn::Cloneable<ResNetImpl>, public EncoderAdapter {
 public:
  explicit ResNetImpl(ResNetOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::ResNet";
    const auto& o = options;
    SIMMIM_CHECK_VALUE(o.layers().size() == 4, api, "layers", "4 stages", o.layers().size(), " stages");
    for (int64_t n : o.layers()) SIMMIM_CHECK_VALUE(n >= 1, api, "layers", "at least 1 block per stage", n);
    SIMMIM_CHECK_VALUE(o.in_chans() > 0, api, "in_chans", "positive", o.in_chans());
    SIMMIM_CHECK_VALUE(o.base_width() > 0, api, "base_width", "positive", o.base_width());
    const int64_t w0 = o.base_width();
    conv1 = register_module("conv1", torch::nn::Conv2d(
                                         torch::nn::Conv2dOptions(o.in_chans(), w0, 7).stride(2).padding(3).bias(false)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(w0));
    mask_mixer = o.mask_token() ? register_module("mask_mixer", MaskTokenMixer(MaskTokenMixerOptions(w0))) : nullptr;
    int64_t channels = w0;
    stages_.clear();
    for (int64_t s = 0; s < 4; ++s) {
      auto stage = register_module("layer" + std::to_string(s + 1), torch::nn::ModuleList());
      const int64_t width = w0 << s;
      for (int64_t b = 0; b < o.layers()[static_cast<size_t>(s)]; ++b) {
        ResNetBlock block(channels, width, b == 0 && s > 0 ? 2 : 1, o.bottleneck());
        channels = block->out_channels();
        stage->push_back(block);
      }
      stages_.push_back(stage);
    }
    out_channels_ = channels;
    // timm's ResNet init: convs kaiming-normal (fan_out, relu), BatchNorm (1, 0), the last norm of each
    // block 0 with zero_init_last.
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<torch::nn::Conv2d>()) {
        torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
        bn->weight.fill_(1.0);
        bn->bias.zero_();
      }
    }
    if (o.zero_init_last()) {
      for (auto& stage : stages_) {
        for (const auto& block : *stage) block->as<ResNetBlockImpl>()->last_norm()->weight.zero_();
      }
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::ResNet(layers=[" << options.layers()[0] << ", " << options.layers()[1] << ", "
       << options.layers()[2] << ", " << options.layers()[3] << "], bottleneck=" << (options.bottleneck() ? "true" : "false")
       << ", in_chans=" << options.in_chans() << ")";
  }

  // The four stage outputs (strides 4, 8, 16, 32) for dense tasks and fusion; mask as forward_features.
  std::vector<at::Tensor> forward_stages(const at::Tensor& images, const at::Tensor& mask = {}) {
    constexpr const char* api = "simmim::ResNet::forward_stages";
    check_stride32_images(images, options.in_chans(), api);
    at::Tensor x = at::max_pool2d(at::relu(bn1(conv1(images))), {3, 3}, {2, 2}, {1, 1});
    x = mix_stem_mask(mask_mixer, x, mask, api);
    std::vector<at::Tensor> out;
    for (auto& stage : stages_) {
      for (const auto& block : *stage) x = block->as<ResNetBlockImpl>()->forward(x);
      out.push_back(x);
    }
    return out;
  }

  // EncoderAdapter: the stride-32 map [B, out_channels(), H / 32, W / 32]; mask [B, H / 4, W / 4].
  at::Tensor forward_features(const at::Tensor& images, const at::Tensor& mask) override {
    return forward_stages(images, mask).back();
  }
  at::Tensor forward(const at::Tensor& images, const at::Tensor& mask = {}) { return forward_features(images, mask); }
  int64_t in_channels() const override { return options.in_chans(); }
  int64_t patch_size() const override { return 4; }
  int64_t stride() const override { return 32; }
  int64_t out_channels() const override { return out_channels_; }
  // Channels of the four stage outputs.
  std::vector<int64_t> stage_channels() const {
    const int64_t e = options.bottleneck() ? 4 : 1, w = options.base_width();
    return {w * e, 2 * w * e, 4 * w * e, 8 * w * e};
  }

  ResNetOptions options;
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  MaskTokenMixer mask_mixer{nullptr};

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  std::vector<torch::nn::ModuleList> stages_;
  int64_t out_channels_ = 0;
};
TORCH_MODULE(ResNet);

SIMMIM_NAMESPACE_END
