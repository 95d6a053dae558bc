#pragma once
// ConvNeXt (v1) as a masked-image-modeling encoder. SimMIM's mask token is mixed in at the stem's output
// (the 4x4 stride-4 patchify conv + LayerNorm), so the ViT recipes' masks and the SimMIM head at stride 32
// work unchanged. Parameter names are timm's ConvNeXt's (stem.0 / stem.1, stages.<i>.downsample.{0,1},
// stages.<i>.blocks.<j>.{conv_dw, norm, mlp.fc1, mlp.fc2, gamma}); no head.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/init.hpp"
#include "simmim/embed/mask_token.hpp"
#include "simmim/encoder/drop_path.hpp"
#include "simmim/encoder/encoder_adapter.hpp"
#include "simmim/encoder/transformer_block.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ConvNeXtOptions {
  ConvNeXtOptions(std::vector<int64_t> depths = {3, 3, 9, 3}, std::vector<int64_t> dims = {96, 192, 384, 768})
      : depths_(std::move(depths)), dims_(std::move(dims)) {}

  // ConvNeXt-T, and timm's smallest variant (atto) for small images and CPUs.
  static ConvNeXtOptions tiny() { return ConvNeXtOptions({3, 3, 9, 3}, {96, 192, 384, 768}); }
  static ConvNeXtOptions atto() { return ConvNeXtOptions({2, 2, 6, 2}, {40, 80, 160, 320}); }

  // Blocks per stage and channels per stage (4 stages: strides 4, 8, 16, 32).
  TORCH_ARG(std::vector<int64_t>, depths);
  TORCH_ARG(std::vector<int64_t>, dims);
  // Image channels.
  TORCH_ARG(int64_t, in_chans) = 3;
  // Stochastic depth, rising linearly over all blocks from 0 to this.
  TORCH_ARG(double, drop_path_rate) = 0.0;
  // Initial value of each block's per-channel scale "gamma" (1e-6 in ConvNeXt).
  TORCH_ARG(double, layer_scale_init) = 1e-6;
  // The learnable mask token of SimMIM mode ("mask_mixer.mask_token", [1, 1, dims[0]]).
  TORCH_ARG(bool, mask_token) = true;
};

// LayerNorm over the channels of a [B, C, H, W] map (ConvNeXt's LayerNorm2d): parameters "weight", "bias".
class LayerNorm2dImpl : public torch::nn::Cloneable<LayerNorm2dImpl> {
 public:
  explicit LayerNorm2dImpl(int64_t channels = 1, double eps = 1e-6) : channels_(channels), eps_(eps) { reset(); }
  void reset() override {
    weight = register_parameter("weight", at::ones({channels_}));
    bias = register_parameter("bias", at::zeros({channels_}));
  }
  at::Tensor forward(const at::Tensor& x) {
    return at::layer_norm(x.permute({0, 2, 3, 1}), {channels_}, weight, bias, eps_).permute({0, 3, 1, 2});
  }
  at::Tensor weight, bias;

 private:
  int64_t channels_;
  double eps_;
};
TORCH_MODULE(LayerNorm2d);

// One ConvNeXt block: 7x7 depthwise conv, LayerNorm (channels last), Linear 4C, GELU, Linear C, gamma,
// DropPath, residual. Parameters "conv_dw", "norm", "mlp.fc1", "mlp.fc2", "gamma".
class ConvNeXtBlockImpl : public torch::nn::Cloneable<ConvNeXtBlockImpl> {
 public:
  ConvNeXtBlockImpl(int64_t dim, double drop_path, double layer_scale_init)
      : dim_(dim), drop_path_(drop_path), layer_scale_init_(layer_scale_init) {
    reset();
  }
  void reset() override {
    conv_dw = register_module(
        "conv_dw", torch::nn::Conv2d(torch::nn::Conv2dOptions(dim_, dim_, 7).padding(3).groups(dim_)));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim_}).eps(1e-6)));
    mlp = register_module("mlp", Mlp(MlpOptions(dim_, 4 * dim_)));  // "mlp.fc1", "mlp.fc2", exact GELU as timm
    gamma = layer_scale_init_ > 0 ? register_parameter("gamma", at::full({dim_}, layer_scale_init_)) : at::Tensor();
    drop_path = register_module("drop_path", DropPath(DropPathOptions(drop_path_)));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor y = norm(conv_dw(x).permute({0, 2, 3, 1}));
    y = mlp(y);
    if (gamma.defined()) y = y * gamma;
    return x + drop_path(y.permute({0, 3, 1, 2}));
  }
  torch::nn::Conv2d conv_dw{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  Mlp mlp{nullptr};
  at::Tensor gamma;
  DropPath drop_path{nullptr};

 private:
  int64_t dim_;
  double drop_path_, layer_scale_init_;
};
TORCH_MODULE(ConvNeXtBlock);

// One stage: "downsample" (LayerNorm2d "downsample.0" + 2x2 stride-2 conv "downsample.1"; stages 1-3) and
// "blocks".
class ConvNeXtStageImpl : public torch::nn::Cloneable<ConvNeXtStageImpl> {
 public:
  ConvNeXtStageImpl(int64_t in_dim, int64_t dim, int64_t depth, bool downsample_first, std::vector<double> drop_paths,
                    double layer_scale_init)
      : in_dim_(in_dim), dim_(dim), depth_(depth), down_(downsample_first), dpr_(std::move(drop_paths)),
        ls_(layer_scale_init) {
    reset();
  }
  void reset() override {
    if (down_) {
      downsample = register_module(
          "downsample", torch::nn::Sequential(LayerNorm2d(in_dim_),
                                              torch::nn::Conv2d(torch::nn::Conv2dOptions(in_dim_, dim_, 2).stride(2))));
    }
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t j = 0; j < depth_; ++j) blocks->push_back(ConvNeXtBlock(dim_, dpr_[static_cast<size_t>(j)], ls_));
  }
  at::Tensor forward(at::Tensor x) {
    if (!downsample.is_empty()) x = downsample->forward(x);
    for (const auto& block : *blocks) x = block->as<ConvNeXtBlockImpl>()->forward(x);
    return x;
  }
  torch::nn::Sequential downsample{nullptr};
  torch::nn::ModuleList blocks{nullptr};

 private:
  int64_t in_dim_, dim_, depth_;
  bool down_;
  std::vector<double> dpr_;
  double ls_;
};
TORCH_MODULE(ConvNeXtStage);

// Submodules "stem" (4x4 stride-4 conv "stem.0" + LayerNorm2d "stem.1"), "mask_mixer", "stages".
class ConvNeXtImpl : public torch::nn::Cloneable<ConvNeXtImpl>, public EncoderAdapter {
 public:
  explicit ConvNeXtImpl(ConvNeXtOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::ConvNeXt";
    const auto& o = options;
    SIMMIM_CHECK_VALUE(o.depths().size() == 4 && o.dims().size() == 4, api, "depths / dims", "4 stages each",
                       o.depths().size(), " / ", o.dims().size());
    for (size_t s = 0; s < 4; ++s) {
      SIMMIM_CHECK_VALUE(o.depths()[s] >= 1, api, "depths", "at least 1 block per stage", o.depths()[s]);
      SIMMIM_CHECK_VALUE(o.dims()[s] > 0, api, "dims", "positive", o.dims()[s]);
    }
    SIMMIM_CHECK_VALUE(o.in_chans() > 0, api, "in_chans", "positive", o.in_chans());
    SIMMIM_CHECK_VALUE(o.drop_path_rate() >= 0.0 && o.drop_path_rate() < 1.0, api, "drop_path_rate", "in [0, 1)",
                       o.drop_path_rate());
    stem = register_module(
        "stem", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans(), o.dims()[0], 4).stride(4)),
                                      LayerNorm2d(o.dims()[0])));
    mask_mixer =
        o.mask_token() ? register_module("mask_mixer", MaskTokenMixer(MaskTokenMixerOptions(o.dims()[0]))) : nullptr;
    int64_t total = 0;
    for (int64_t d : o.depths()) total += d;
    stages = register_module("stages", torch::nn::ModuleList());
    int64_t seen = 0;
    for (size_t s = 0; s < 4; ++s) {
      std::vector<double> dpr;
      for (int64_t j = 0; j < o.depths()[s]; ++j, ++seen) {
        dpr.push_back(total > 1 ? o.drop_path_rate() * static_cast<double>(seen) / static_cast<double>(total - 1) : 0.0);
      }
      stages->push_back(ConvNeXtStage(s == 0 ? o.dims()[0] : o.dims()[s - 1], o.dims()[s], o.depths()[s], s > 0, dpr,
                                      o.layer_scale_init()));
    }
    // timm's ConvNeXt init: conv and Linear weights trunc-normal std 0.02, biases 0 (norms (1, 0)).
    torch::NoGradGuard no_grad;
    for (auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<torch::nn::Conv2d>()) {
        trunc_normal_(conv->weight, 0.0, 0.02);
        conv->bias.zero_();
      } else if (auto* linear = m->as<torch::nn::Linear>()) {
        trunc_normal_(linear->weight, 0.0, 0.02);
        linear->bias.zero_();
      }
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::ConvNeXt(depths=[" << options.depths()[0] << ", " << options.depths()[1] << ", "
       << options.depths()[2] << ", " << options.depths()[3] << "], dims=[" << options.dims()[0] << ", "
       << options.dims()[1] << ", " << options.dims()[2] << ", " << options.dims()[3]
       << "], in_chans=" << options.in_chans() << ")";
  }

  // The four stage outputs (strides 4, 8, 16, 32) for dense tasks and fusion; mask as forward_features.
  std::vector<at::Tensor> forward_stages(const at::Tensor& images, const at::Tensor& mask = {}) {
    constexpr const char* api = "simmim::ConvNeXt::forward_stages";
    check_stride32_images(images, options.in_chans(), api);
    at::Tensor x = mix_stem_mask(mask_mixer, stem->forward(images), mask, api);
    std::vector<at::Tensor> out;
    for (const auto& stage : *stages) {
      x = stage->as<ConvNeXtStageImpl>()->forward(x);
      out.push_back(x);
    }
    return out;
  }

  // EncoderAdapter: the stride-32 map [B, dims[3], H / 32, W / 32]; mask [B, H / 4, W / 4].
  at::Tensor forward_features(const at::Tensor& images, const at::Tensor& mask) override {
    return forward_stages(images, mask).back();
  }
  at::Tensor forward(const at::Tensor& images, const at::Tensor& mask = {}) { return forward_features(images, mask); }
  int64_t in_channels() const override { return options.in_chans(); }
  int64_t patch_size() const override { return 4; }
  int64_t stride() const override { return 32; }
  int64_t out_channels() const override { return options.dims()[3]; }
  // Channels of the four stage outputs.
  std::vector<int64_t> stage_channels() const { return options.dims(); }

  ConvNeXtOptions options;
  torch::nn::Sequential stem{nullptr};
  MaskTokenMixer mask_mixer{nullptr};
  torch::nn::ModuleList stages{nullptr};

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})
};
TORCH_MODULE(ConvNeXt);

SIMMIM_NAMESPACE_END
