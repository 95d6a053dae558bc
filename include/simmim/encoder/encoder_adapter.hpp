#pragma once
// The encoder interface the SimMIM model needs, so that any user torch::nn::Module can be pretrained:
// derive from both torch::nn::Module (usually through Cloneable) and EncoderAdapter, and answer four
// questions about the feature map. The ViT here implements it too; docs/encoders.md has a CNN example.

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>
#include <type_traits>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

class EncoderAdapter {
 public:
  virtual ~EncoderAdapter() = default;

  // images [B, in_channels(), H, W]; mask [B, H / patch_size(), W / patch_size()] (bool or integer, nonzero =
  // masked; or floating weights in [0, 1]), or an undefined tensor for no masking. The encoder hides the
  // masked patches from itself (SimMIM: mask-token mixing right after its patch embedding) and returns
  // the feature map [B, out_channels(), H / stride(), W / stride()].
  virtual at::Tensor forward_features(const at::Tensor& images, const at::Tensor& mask) = 0;

  // Image channels the encoder reads (and the SimMIM head reconstructs).
  virtual int64_t in_channels() const = 0;
  // Pixels per mask cell: the resolution of the patch embedding, the one the mask comes at.
  virtual int64_t patch_size() const = 0;
  // Pixels per feature-map cell (16 for ViT-B/16, 32 for Swin).
  virtual int64_t stride() const = 0;
  // Channels C of the feature map.
  virtual int64_t out_channels() const = 0;

  // The feature maps of the encoder's layers for unmasked images, first to last, each [B, out_channels(),
  // H / stride(), W / stride()]: what a teacher target averages (data2vec's top-k blocks). The default is
  // the one map forward_features() gives; VisionTransformer returns every block's output.
  virtual std::vector<at::Tensor> layer_features(const at::Tensor& images) {
    return {forward_features(images, at::Tensor())};
  }
};

// True for the types the SimMIM model accepts as an encoder: a torch::nn::Module that is an EncoderAdapter.
template <typename T>
inline constexpr bool is_encoder_module_v =
    std::is_base_of_v<torch::nn::Module, T>&& std::is_base_of_v<EncoderAdapter, T>;

// The input check of the stride-32 encoders that take any size (ResNet, ConvNeXt): a non-empty batch
// [B, in_chans, H, W] with H and W positive multiples of 32.
inline void check_stride32_images(const at::Tensor& images, int64_t in_chans, const char* api) {
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(1) == in_chans && images.size(0) > 0 &&
                   images.size(2) > 0 && images.size(3) > 0 && images.size(2) % 32 == 0 && images.size(3) % 32 == 0,
               api, "images",
               "a non-empty batch [B, " + std::to_string(in_chans) +
                   ", H, W] with H and W positive multiples of 32 (the stride)",
               describe(images));
  SIMMIM_CHECK_HAS_DATA(images, api, "images");
}

// Checks what an adapter returned: a feature map [B, out_channels(), H / stride(), W / stride()].
inline void check_feature_map(const EncoderAdapter& encoder, const at::Tensor& images, const at::Tensor& features,
                              const char* api) {
  const int64_t s = encoder.stride();
  const std::vector<int64_t> expected{images.size(0), encoder.out_channels(), images.size(2) / s, images.size(3) / s};
  SIMMIM_CHECK(
      features.defined() && features.sizes() == at::IntArrayRef(expected), api,
      "the encoder's forward_features() result",
      "[B, out_channels, H / stride, W / stride] = " + shape_str(expected) + " for images " + shape_str(images),
      describe(features));
}

SIMMIM_NAMESPACE_END
