#pragma once
// A light convolutional head for SimMIM-style pretraining: num_layers 3x3 conv + GELU layers give each
// output cell a view of its neighbours, then SimMIM's 1x1 + PixelShuffle step maps to pixels. Any
// stride works (7 for 28 x 28 images with patch 7), which progressive 2x upsampling would not allow.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/pixelshuffle.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/decoder/simmim_head.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ConvHeadOptions {
  ConvHeadOptions(int64_t in_channels = 768, int64_t stride = 16, int64_t out_chans = 3)
      : in_channels_(in_channels), stride_(stride), out_chans_(out_chans) {}
  // Channels C of the encoder's feature map.
  TORCH_ARG(int64_t, in_channels);
  // Pixels per feature-map cell.
  TORCH_ARG(int64_t, stride);
  // Image channels to reconstruct.
  TORCH_ARG(int64_t, out_chans);
  // Width of the 3x3 layers.
  TORCH_ARG(int64_t, hidden_channels) = 256;
  // Number of 3x3 conv + GELU layers (>= 1; zero would be SimMIMHead).
  TORCH_ARG(int64_t, num_layers) = 1;
};

// Submodules "body" (Sequential of conv3x3, GELU pairs), "proj" (1x1), "shuffle".
class ConvHeadImpl : public torch::nn::Cloneable<ConvHeadImpl> {
 public:
  explicit ConvHeadImpl(ConvHeadOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::ConvHead";
    SIMMIM_CHECK_VALUE(options.in_channels() > 0, api, "in_channels", "positive", options.in_channels());
    SIMMIM_CHECK_VALUE(options.stride() > 0, api, "stride", "positive", options.stride());
    SIMMIM_CHECK_VALUE(options.out_chans() > 0, api, "out_chans", "positive", options.out_chans());
    SIMMIM_CHECK_VALUE(options.hidden_channels() > 0, api, "hidden_channels", "positive", options.hidden_channels());
    SIMMIM_CHECK_VALUE(options.num_layers() >= 1, api, "num_layers", ">= 1 (use SimMIMHead for a purely linear head)",
                       options.num_layers());
    body = register_module("body", torch::nn::Sequential());
    int64_t channels = options.in_channels();
    for (int64_t i = 0; i < options.num_layers(); ++i) {
      body->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, options.hidden_channels(), 3).padding(1)));
      body->push_back(torch::nn::GELU());
      channels = options.hidden_channels();
    }
    const int64_t s = options.stride();
    proj =
        register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, s * s * options.out_chans(), 1)));
    shuffle = register_module("shuffle", torch::nn::PixelShuffle(torch::nn::PixelShuffleOptions(s)));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::ConvHead(in_channels=" << options.in_channels() << ", stride=" << options.stride()
       << ", out_chans=" << options.out_chans() << ", hidden_channels=" << options.hidden_channels()
       << ", num_layers=" << options.num_layers() << ")";
  }

  // features [B, C, h, w] -> images [B, out_chans, h * stride, w * stride].
  at::Tensor forward(const at::Tensor& features) {
    check_feature_input(features, options.in_channels(), "simmim::ConvHead::forward");
    return shuffle(proj(body->forward(features)));
  }

  ConvHeadOptions options;
  torch::nn::Sequential body{nullptr};
  torch::nn::Conv2d proj{nullptr};
  torch::nn::PixelShuffle shuffle{nullptr};
};

TORCH_MODULE(ConvHead);

SIMMIM_NAMESPACE_END
