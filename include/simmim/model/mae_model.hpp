#pragma once
// The MAE pretraining model: the ViT encodes only the kept patches (ids_keep), the MAE decoder fills in
// mask tokens and predicts every patch's pixels, and the masked L2 loss of DESIGN.md (optionally on
// norm-pix targets) scores the masked patches. The encoder's cost falls with the mask ratio.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize.h>

#include <memory>
#include <ostream>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/patchify.hpp"
#include "simmim/core/value_checks.hpp"
#include "simmim/decoder/mae_decoder.hpp"
#include "simmim/embed/token_index.hpp"
#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/loss/masked_loss.hpp"
#include "simmim/masking/mask_batch.hpp"
#include "simmim/model/pretrain_output.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MAEOptions {
  /* implicit */ MAEOptions(VisionTransformerOptions encoder = mae_encoder(VisionTransformerOptions()))  // NOLINT
      : encoder_(std::move(encoder)) {}

  // MAE's encoder settings on top of a ViT preset: fixed sin-cos positions and MAE's init.
  static VisionTransformerOptions mae_encoder(VisionTransformerOptions vit) {
    return vit.pos_embed(PosEmbedKind::kSinCos).weight_init(WeightInit::kMAE);
  }
  // Presets. vit_base is MAE's ViT-B/16 with its 512-wide, 8-block decoder; the smaller ones scale the
  // decoder down with the encoder (MAE defines none for them).
  static MAEOptions vit_tiny(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return MAEOptions(mae_encoder(VisionTransformerOptions::tiny(img_size, patch_size)))
        .decoder_embed_dim(128)
        .decoder_depth(4)
        .decoder_num_heads(4);
  }
  static MAEOptions vit_small(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return MAEOptions(mae_encoder(VisionTransformerOptions::small(img_size, patch_size)))
        .decoder_embed_dim(256)
        .decoder_depth(4)
        .decoder_num_heads(8);
  }
  static MAEOptions vit_base(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return MAEOptions(mae_encoder(VisionTransformerOptions::base(img_size, patch_size)));
  }
  static MAEOptions mnist() {
    return MAEOptions(mae_encoder(VisionTransformerOptions::mnist()))
        .decoder_embed_dim(64)
        .decoder_depth(2)
        .decoder_num_heads(4);
  }

  // The encoder ViT (built without a mask token: MAE drops masked patches instead).
  TORCH_ARG(VisionTransformerOptions, encoder);
  // Decoder width, blocks and heads (MAE: 512, 8, 16).
  TORCH_ARG(int64_t, decoder_embed_dim) = 512;
  TORCH_ARG(int64_t, decoder_depth) = 8;
  TORCH_ARG(int64_t, decoder_num_heads) = 16;
  // Norm-pix targets: each patch standardized by its own mean and variance (MAE's better setting).
  TORCH_ARG(bool, norm_pix_loss) = false;
  // Loss backend (kAuto: fused where available).
  TORCH_ARG(Backend, loss_backend) = Backend::kAuto;
  // What to predict (target/): null, the default, is MAE's own pixels (norm_pix_loss applies). A Target
  // sizes the decoder's output (its prediction_dim()) and scores it with its own loss; norm_pix_loss must
  // then be false (PixelTargetOptions::norm_pix() is MAE's norm-pix as a target).
  TORCH_ARG(std::shared_ptr<const Target>, target) = nullptr;
};

// Submodules "encoder" (VisionTransformer) and "decoder" (MAEDecoder).
class MAEImpl : public torch::nn::Cloneable<MAEImpl> {
 public:
  explicit MAEImpl(MAEOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    SIMMIM_CHECK_VALUE(options.target() == nullptr || !options.norm_pix_loss(), "simmim::MAE", "norm_pix_loss",
                       "false when a target is set (the target normalizes: PixelTargetOptions::norm_pix())",
                       "true with target ", options.target()->name());
    const auto enc = VisionTransformerOptions(options.encoder()).mask_token(false);
    const int64_t pred_dim =
        options.target() != nullptr ? options.target()->prediction_dim(enc.patch_size(), enc.in_chans()) : 0;
    encoder = register_module("encoder", VisionTransformer(enc));
    decoder =
        register_module("decoder", MAEDecoder(MAEDecoderOptions(enc.embed_dim(), encoder->grid(), enc.patch_size())
                                                  .in_chans(enc.in_chans())
                                                  .embed_dim(options.decoder_embed_dim())
                                                  .depth(options.decoder_depth())
                                                  .num_heads(options.decoder_num_heads())
                                                  .mlp_ratio(enc.mlp_ratio())
                                                  .cls_token(enc.cls_token())
                                                  .norm_eps(enc.norm_eps())
                                                  .weight_init(enc.weight_init())
                                                  .attention(enc.attention())
                                                  .pred_dim(pred_dim)));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::MAE(img_size=" << options.encoder().img_size() << ", patch_size=" << options.encoder().patch_size()
       << ", norm_pix_loss=" << (options.norm_pix_loss() ? "true" : "false");
    if (options.target() != nullptr) os << ", target=" << options.target()->name();
    os << ")";
  }

  // images [B, C, H, W] at the encoder's img_size; masks: a mask generator's MaskBatch (its ids_keep /
  // ids_restore are used when present), or a plain mask [B, h, w] bool or integer (nonzero = masked) with the
  // same number of masked patches in every sample (a tensor converts to a MaskBatch). The one entry point
  // of every pretraining model: forward(images, MaskBatch). Returns {loss, reconstruction [B, C, H, W], mask}.
  PretrainOutput forward(const at::Tensor& images, const MaskBatch& masks) {
    constexpr const char* api = "simmim::MAE::forward";
    SIMMIM_CHECK(masks.mask.defined() || masks.has_ids(), api, "masks", "a MaskBatch with a mask or ids",
                 "an empty MaskBatch");
    if (!masks.has_ids()) {
      const at::Tensor& mask = masks.mask;
      const Size2d grid = encoder->grid();
      SIMMIM_CHECK(images.defined() && images.dim() == 4, api, "images", "[B, C, H, W]", describe(images));
      SIMMIM_CHECK_HAS_DATA(images, api, "images");
      SIMMIM_CHECK_HAS_DATA(mask, api, "mask");
      SIMMIM_CHECK(images.size(0) > 0, api, "images", "a non-empty batch [B, C, H, W] with B >= 1", describe(images));
      SIMMIM_CHECK(mask.dim() == 3 && mask.size(1) == grid.h && mask.size(2) == grid.w &&
                       (mask.scalar_type() == at::kBool || at::isIntegralType(mask.scalar_type(), false)),
                   api, "mask",
                   "a bool or integer tensor [B, " + std::to_string(grid.h) + ", " + std::to_string(grid.w) + "]",
                   describe(mask));
      return forward(images, mask_batch_from_mask(mask.to(at::kBool)));
    }
    SIMMIM_CHECK(images.defined() && images.dim() == 4, api, "images", "[B, C, H, W]", describe(images));
    SIMMIM_CHECK_HAS_DATA(images, api, "images");
    SIMMIM_CHECK(images.size(0) > 0, api, "images", "a non-empty batch [B, C, H, W] with B >= 1", describe(images));
    const Size2d grid = encoder->grid();
    const int64_t B = images.size(0), L = grid.area(), p = options.encoder().patch_size();
    check_token_ids(masks.ids_keep, masks.ids_restore, B, L, api);
    const int64_t len_keep = masks.ids_keep.size(1);
    const at::Tensor ids_restore = masks.ids_restore.to(images.device());
    // The mask the encoder actually saw: slot ids_restore[l] >= len_keep held a mask token.
    const at::Tensor flat_mask = ids_restore.ge(len_keep);
    if (masks.mask.defined()) {
      SIMMIM_CHECK(masks.mask.numel() == B * L, api, "masks.mask", "[B, h, w] = " + shape_str({B, grid.h, grid.w}),
                   describe(masks.mask));
      // Comparing the values reads them back: on a GPU only under value_checks() (a sync per step).
      if (check_values_of(masks.mask) && check_values_of(ids_restore)) {
        SIMMIM_CHECK(masks.mask.reshape({B, L}).to(flat_mask.device()).ne(0).equal(flat_mask), api, "masks.mask",
                     "the mask its ids_restore implies (ids_restore >= len_keep)", describe(masks.mask));
      }
    }
    const at::Tensor latent = encoder->forward_visible(images, masks.ids_keep);
    const at::Tensor pred = decoder(latent, ids_restore);  // [B, L, p*p*C], or the target's width
    if (options.target() != nullptr) {
      const Target& t = *options.target();
      at::Tensor loss = t.loss(pred, t.compute(images, p), flat_mask, options.loss_backend());
      return {loss, t.to_image(pred, images, p), flat_mask.view({B, grid.h, grid.w})};
    }
    const at::Tensor target = patchify(images, p);
    at::Tensor loss = masked_reconstruction_loss(
        pred, target, flat_mask, MaskedLossOptions::mae(options.norm_pix_loss()).backend(options.loss_backend()));
    return {loss, unpatchify(to_pixels(pred, target), p, grid), flat_mask.view({B, grid.h, grid.w})};
  }

  // The predicted patches [B, L, p*p*C] in pixel space: with norm-pix the prediction is in per-patch
  // standardized units, so it is mapped back with the target patch's own mean and std (for viewing only;
  // the loss never sees this).
  at::Tensor to_pixels(const at::Tensor& pred, const at::Tensor& target) const {
    if (!options.norm_pix_loss()) return pred;
    const int64_t last = -1;
    const at::Tensor mean = target.mean(at::IntArrayRef(last), /*keepdim=*/true);
    const at::Tensor var = target.var(at::IntArrayRef(last), /*unbiased=*/true, /*keepdim=*/true);
    return pred * (var + MaskedLossOptions().norm_eps()).sqrt() + mean;
  }

  // Stops (or restarts) gradients to the encoder's parameters.
  void freeze_encoder(bool frozen = true) {
    for (auto& param : encoder->parameters()) param.requires_grad_(!frozen);
  }

  // Writes the encoder alone (torch::save); torch::load it into VisionTransformer(options.encoder()
  // with mask_token(false)) to fine-tune or probe.
  void save_encoder(const std::string& path) const { torch::save(encoder, path); }

  MAEOptions options;
  VisionTransformer encoder{nullptr};
  MAEDecoder decoder{nullptr};
};

TORCH_MODULE(MAE);

SIMMIM_NAMESPACE_END
