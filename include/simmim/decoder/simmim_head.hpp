#pragma once
// SimMIM's prediction head: a 1x1 convolution from the encoder's feature map to stride^2 * out_chans
// channels, then PixelShuffle(stride) back to pixels. One linear map per feature-map cell is all
// SimMIM needs (the paper's finding: a heavier head does not help).

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/pixelshuffle.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

struct SimMIMHeadOptions {
  SimMIMHeadOptions(int64_t in_channels = 768, int64_t stride = 16, int64_t out_chans = 3)
      : in_channels_(in_channels), stride_(stride), out_chans_(out_chans) {}
  // Channels C of the encoder's feature map.
  TORCH_ARG(int64_t, in_channels);
  // Pixels per feature-map cell (16 for ViT/16, 32 for Swin).
  TORCH_ARG(int64_t, stride);
  // Image channels to reconstruct.
  TORCH_ARG(int64_t, out_chans);
};

// Checks a feature map [B, C, h, w] with C = channels (shared by the SimMIM-style heads).
inline void check_feature_input(const at::Tensor& features, int64_t channels, const char* api) {
  SIMMIM_CHECK(features.defined() && features.dim() == 4 && features.size(1) == channels, api, "features",
               "a feature map [B, C, h, w] with C = " + std::to_string(channels), describe(features));
}

// Parameters "conv.weight", "conv.bias".
class SimMIMHeadImpl : public torch::nn::Cloneable<SimMIMHeadImpl> {
 public:
  explicit SimMIMHeadImpl(SimMIMHeadOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::SimMIMHead";
    SIMMIM_CHECK_VALUE(options.in_channels() > 0, api, "in_channels", "positive", options.in_channels());
    SIMMIM_CHECK_VALUE(options.stride() > 0, api, "stride", "positive", options.stride());
    SIMMIM_CHECK_VALUE(options.out_chans() > 0, api, "out_chans", "positive", options.out_chans());
    const int64_t s = options.stride();
    conv = register_module(
        "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(), s * s * options.out_chans(), 1)));
    shuffle = register_module("shuffle", torch::nn::PixelShuffle(torch::nn::PixelShuffleOptions(s)));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::SimMIMHead(in_channels=" << options.in_channels() << ", stride=" << options.stride()
       << ", out_chans=" << options.out_chans() << ")";
  }

  // features [B, C, h, w] -> images [B, out_chans, h * stride, w * stride].
  at::Tensor forward(const at::Tensor& features) {
    check_feature_input(features, options.in_channels(), "simmim::SimMIMHead::forward");
    return shuffle(conv(features));
  }

  SimMIMHeadOptions options;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::PixelShuffle shuffle{nullptr};
};

TORCH_MODULE(SimMIMHead);

SIMMIM_NAMESPACE_END
