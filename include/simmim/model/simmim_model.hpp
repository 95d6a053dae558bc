#pragma once
// The SimMIM pretraining model: an encoder (our ViT, or any module implementing EncoderAdapter) sees the
// image with masked patches replaced by the mask token, a light head predicts the pixels, and the
// masked L1 loss of DESIGN.md scores only the masked patches.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize.h>

#include <memory>
#include <ostream>
#include <string>
#include <type_traits>

#include "simmim/core/check.hpp"
#include "simmim/decoder/conv_head.hpp"
#include "simmim/decoder/simmim_head.hpp"
#include "simmim/encoder/encoder_adapter.hpp"
#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/loss/masked_loss.hpp"
#include "simmim/masking/mask_batch.hpp"
#include "simmim/model/pretrain_output.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class HeadKind {
  kLinear,  // SimMIMHead: 1x1 conv + PixelShuffle (the paper's choice)
  kConv,    // ConvHead: 3x3 conv layers first
};

struct SimMIMOptions {
  // An encoder passed in is used as it is; the default and the presets are simmim_encoder's.
  /* implicit */ SimMIMOptions(VisionTransformerOptions encoder = simmim_encoder(VisionTransformerOptions()))  // NOLINT
      : encoder_(std::move(encoder)) {}

  // The official SimMIM ViT's settings on top of a ViT preset: its weight init (WeightInit::kSimMIM).
  static VisionTransformerOptions simmim_encoder(VisionTransformerOptions vit) {
    return vit.weight_init(WeightInit::kSimMIM);
  }
  // ViT presets (see VisionTransformerOptions) with SimMIM's init. vit_base is the official SimMIM ViT-B
  // recipe (simmim_pretrain__vit_base__img224): one relative position bias shared by the blocks and no
  // absolute positions, q/v-only attention biases, LayerScale 0.1, drop path 0.1.
  static SimMIMOptions vit_tiny(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return SimMIMOptions(simmim_encoder(VisionTransformerOptions::tiny(img_size, patch_size)));
  }
  static SimMIMOptions vit_small(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return SimMIMOptions(simmim_encoder(VisionTransformerOptions::small(img_size, patch_size)));
  }
  static SimMIMOptions vit_base(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return SimMIMOptions(
        simmim_encoder(VisionTransformerOptions::base(img_size, patch_size)
                           .pos_embed(PosEmbedKind::kNone)
                           .rel_pos_bias(RelPosBias::kShared)
                           .key_bias(false)
                           .layer_scale_init(0.1)
                           .drop_path_rate(0.1)));
  }
  static SimMIMOptions mnist() { return SimMIMOptions(simmim_encoder(VisionTransformerOptions::mnist())); }

  // The ViT the model builds when no encoder is passed in (ignored when one is).
  TORCH_ARG(VisionTransformerOptions, encoder);
  // Prediction head.
  TORCH_ARG(HeadKind, head) = HeadKind::kLinear;
  // ConvHead's hidden width and number of 3x3 layers (kConv only).
  TORCH_ARG(int64_t, head_hidden_channels) = 256;
  TORCH_ARG(int64_t, head_num_layers) = 1;
  // Per-pixel loss: L1 is SimMIM's; L2 / smooth-L1 for ablations. The rest is MaskedLossOptions::simmim.
  TORCH_ARG(LossKind, loss) = LossKind::kL1;
  // Loss backend (kAuto: fused where available).
  TORCH_ARG(Backend, loss_backend) = Backend::kAuto;
  // What to predict (target/): null, the default, is SimMIM's own raw pixels and masked L1 on the image
  // (the head pixel-shuffles to [B, C, H, W]; `loss` applies). A Target (PixelTarget, HOGTarget,
  // ColorBinsTarget, ...) makes the head predict its prediction_dim() values per patch of the mask's
  // resolution (1x1 conv + PixelShuffle(stride / patch_size)), scored by the target's own loss.
  TORCH_ARG(std::shared_ptr<const Target>, target) = nullptr;
};

// Submodules "encoder" and "head". With our ViT, parameter names are "encoder.patch_embed.proj.weight",
// "encoder.mask_mixer.mask_token", "encoder.pos.pos_embed", "encoder.blocks.<i>....", "head.conv.weight".
class SimMIMImpl : public torch::nn::Cloneable<SimMIMImpl> {
 public:
  // forward() reads only the mask of a MaskBatch (mask_outputs_read_by): a loop need not build MAE's ids.
  static constexpr MaskOutputs kMaskOutputs = MaskOutputs::kMaskOnly;

  // Builds its own VisionTransformer from options.encoder().
  explicit SimMIMImpl(SimMIMOptions options_ = {}) : options(std::move(options_)) { reset(); }

  // Pretrains a given encoder: a module deriving from torch::nn::Module (Cloneable, for clone()) and
  // EncoderAdapter. The model shares the module with the caller (training it trains theirs).
  template <typename Encoder>
  explicit SimMIMImpl(std::shared_ptr<Encoder> encoder, SimMIMOptions options_ = {}) : options(std::move(options_)) {
    static_assert(is_encoder_module_v<Encoder>,
                  "simmim::SimMIM: the encoder must derive from both torch::nn::Module and simmim::EncoderAdapter");
    SIMMIM_CHECK(encoder != nullptr, "simmim::SimMIM", "encoder", "a module", "a null pointer");
    encoder_ = encoder;
    adapter_ = encoder;
    custom_encoder_ = true;
    reset();
  }
  template <typename Impl>
  explicit SimMIMImpl(const torch::nn::ModuleHolder<Impl>& encoder, SimMIMOptions options_ = {})
      : SimMIMImpl(encoder.ptr(), std::move(options_)) {}

  void reset() override {
    constexpr const char* api = "simmim::SimMIM";
    SIMMIM_CHECK_ENUM(options.head(), 2, "HeadKind", api, "head", "HeadKind::kLinear or kConv");
    if (!custom_encoder_) {
      VisionTransformer vit(options.encoder());
      encoder_ = vit.ptr();
      adapter_ = vit.ptr();
    } else if (encoder_registered_) {
      // A second reset() comes from clone() (or the user): the copy must not share the encoder.
      encoder_ = encoder_->clone();
      adapter_ = std::dynamic_pointer_cast<EncoderAdapter>(encoder_);
      TORCH_INTERNAL_ASSERT(adapter_ != nullptr, "a cloned encoder lost its EncoderAdapter base");
    }
    register_module("encoder", encoder_);
    encoder_registered_ = true;
    const int64_t C = adapter_->in_channels(), s = adapter_->stride(), D = adapter_->out_channels();
    SIMMIM_CHECK_VALUE(C > 0 && s > 0 && D > 0 && adapter_->patch_size() > 0, api, "encoder",
                       "positive in_channels, patch_size, stride and out_channels", "in_channels ", C, ", patch_size ",
                       adapter_->patch_size(), ", stride ", s, ", out_channels ", D);
    // With a target the head stops at the mask's resolution (patch p) with the target's width per patch.
    int64_t head_stride = s, head_out = C;
    if (options.target() != nullptr) {
      const int64_t p = adapter_->patch_size();
      SIMMIM_CHECK_VALUE(s % p == 0, api, "encoder",
                         "a stride that is a multiple of its patch size (a target is predicted per patch)",
                         "stride ", s, ", patch_size ", p);
      head_stride = s / p;
      head_out = options.target()->prediction_dim(p, C);
    }
    if (options.head() == HeadKind::kLinear) {
      linear_head = register_module("head", SimMIMHead(SimMIMHeadOptions(D, head_stride, head_out)));
      conv_head = nullptr;
    } else {
      conv_head = register_module("head", ConvHead(ConvHeadOptions(D, head_stride, head_out)
                                                       .hidden_channels(options.head_hidden_channels())
                                                       .num_layers(options.head_num_layers())));
      linear_head = nullptr;
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::SimMIM(patch_size=" << adapter_->patch_size() << ", stride=" << adapter_->stride()
       << ", head=" << (options.head() == HeadKind::kLinear ? "linear" : "conv");
    if (options.target() != nullptr) os << ", target=" << options.target()->name();
    os << ")";
  }

  // images [B, C, H, W] (stride | H, W); masks.mask [B, H/p, W/p], p = the encoder's patch_size(): bool,
  // integer (true / nonzero = masked) or floating weights; a plain mask tensor converts to a MaskBatch. The
  // one entry point of every pretraining model: forward(images, MaskBatch). Returns {loss, reconstruction
  // [B, C, H, W], mask}; with a target, reconstruction is its to_image() (undefined where the target has
  // no pixel space, e.g. HOG).
  PretrainOutput forward(const at::Tensor& images, const MaskBatch& masks) {
    constexpr const char* api = "simmim::SimMIM::forward";
    const at::Tensor& mask = masks.mask;
    const int64_t C = adapter_->in_channels(), p = adapter_->patch_size(), s = adapter_->stride();
    SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(1) == C && images.size(2) % s == 0 &&
                     images.size(3) % s == 0 && images.size(2) % p == 0 && images.size(3) % p == 0,
                 api, "images",
                 "[B, " + std::to_string(C) + ", H, W] with H, W divisible by the encoder's stride " +
                     std::to_string(s) + " and patch size " + std::to_string(p),
                 describe(images));
    SIMMIM_CHECK_HAS_DATA(images, api, "images");
    SIMMIM_CHECK_HAS_DATA(mask, api, "mask");
    SIMMIM_CHECK(images.size(0) > 0, api, "images", "a non-empty batch [B, C, H, W] with B >= 1", describe(images));
    const int64_t B = images.size(0), h = images.size(2) / p, w = images.size(3) / p;
    SIMMIM_CHECK(mask.defined() && mask.dim() == 3 && mask.size(0) == B && mask.size(1) == h && mask.size(2) == w, api,
                 "mask",
                 "[B, H/p, W/p] = [" + std::to_string(B) + ", " + std::to_string(h) + ", " + std::to_string(w) +
                     "] (p = " + std::to_string(p) + ")",
                 describe(mask));
    const at::Tensor features = adapter_->forward_features(images, mask);
    check_feature_map(*adapter_, images, features, api);
    at::Tensor reconstruction = linear_head.is_empty() ? conv_head(features) : linear_head(features);
    if (options.target() != nullptr) {
      // [B, Dt, H/p, W/p] -> tokens [B, L, Dt] in row-major patch order, the targets' layout.
      const Target& target = *options.target();
      const at::Tensor pred = reconstruction.flatten(2).transpose(1, 2);
      at::Tensor loss = target.loss(pred, target.compute(images, p), mask, options.loss_backend());
      return {loss, target.to_image(pred, images, p), mask};
    }
    at::Tensor loss =
        masked_reconstruction_loss(reconstruction, images, mask,
                                   MaskedLossOptions::simmim(p).kind(options.loss()).backend(options.loss_backend()));
    return {loss, reconstruction, mask};
  }

  // The encoder alone: to freeze, export, fine-tune. encoder_as<VisionTransformerImpl>() for our ViT.
  std::shared_ptr<torch::nn::Module> encoder() const { return encoder_; }
  template <typename T>
  std::shared_ptr<T> encoder_as() const {
    return std::dynamic_pointer_cast<T>(encoder_);
  }
  EncoderAdapter& adapter() const { return *adapter_; }
  std::shared_ptr<torch::nn::Module> head() const {
    if (linear_head.is_empty()) return conv_head.ptr();
    return linear_head.ptr();
  }

  // Stops (or restarts) gradients to the encoder's parameters, e.g. to train only the head.
  void freeze_encoder(bool frozen = true) {
    for (auto& p : encoder_->parameters()) p.requires_grad_(!frozen);
  }

  // Writes the encoder's parameters and buffers alone (torch::save); load them into a module built with
  // the same options (torch::load(vit, path)) to fine-tune or probe it.
  void save_encoder(const std::string& path) const { torch::save(encoder_, path); }

  SimMIMOptions options;
  SimMIMHead linear_head{nullptr};
  ConvHead conv_head{nullptr};

 private:
  std::shared_ptr<torch::nn::Module> encoder_;
  std::shared_ptr<EncoderAdapter> adapter_;
  bool custom_encoder_ = false;
  bool encoder_registered_ = false;
};

TORCH_MODULE(SimMIM);

SIMMIM_NAMESPACE_END
