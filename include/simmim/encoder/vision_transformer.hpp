#pragma once
// Vision Transformer encoder (pre-norm blocks) with the two masking modes of MIM pretraining:
// SimMIM (masked patches become the mask token, every position enters the blocks) and MAE (only the
// kept tokens, chosen by ids_keep, enter). It is an EncoderAdapter, and features() serves downstream use.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/embed/mask_token.hpp"
#include "simmim/embed/patch_embed.hpp"
#include "simmim/embed/pos_embed.hpp"
#include "simmim/embed/token_index.hpp"
#include "simmim/encoder/encoder_adapter.hpp"
#include "simmim/encoder/transformer_block.hpp"

SIMMIM_NAMESPACE_BEGIN

// Relative position bias of the attention logits (BEiT, the official SimMIM ViT).
enum class RelPosBias {
  kNone,      // none (timm's ViT, MAE)
  kPerBlock,  // a table in every block: "blocks.<i>.attn.relative_position_bias_table"
  kShared,    // one table for all blocks: "rel_pos_bias.relative_position_bias_table" (SimMIM's ViT-B recipe)
};

inline const char* to_string(RelPosBias r) {
  switch (r) {
    case RelPosBias::kNone: return "none";
    case RelPosBias::kPerBlock: return "per_block";
    case RelPosBias::kShared: return "shared";
  }
  return "?";
}

// How features() pools the tokens into one embedding per image.
enum class FeaturePool {
  kMean,  // mean of the patch tokens (MAE's global pool for fine-tuning)
  kCls,   // the CLS token (needs cls_token)
};

struct VisionTransformerOptions {
  VisionTransformerOptions(Size2d img_size = Size2d(224), int64_t patch_size = 16, int64_t embed_dim = 768,
                           int64_t depth = 12, int64_t num_heads = 12)
      : img_size_(img_size), patch_size_(patch_size), embed_dim_(embed_dim), depth_(depth), num_heads_(num_heads) {}

  // Presets: ViT-Ti/S/B (DeiT's widths), and a small one for 28 x 28 single-channel images
  // (Fashion-MNIST): patch 7 (a 4 x 4 grid), width 128, depth 4, 4 heads; a CPU pretrains it (bench/README.md).
  static VisionTransformerOptions tiny(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return VisionTransformerOptions(img_size, patch_size, 192, 12, 3);
  }
  static VisionTransformerOptions small(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return VisionTransformerOptions(img_size, patch_size, 384, 12, 6);
  }
  static VisionTransformerOptions base(Size2d img_size = Size2d(224), int64_t patch_size = 16) {
    return VisionTransformerOptions(img_size, patch_size, 768, 12, 12);
  }
  static VisionTransformerOptions mnist() { return VisionTransformerOptions(Size2d(28), 7, 128, 4, 4).in_chans(1); }

  // Image size (H, W) the position table is built for; non-square is fine.
  TORCH_ARG(Size2d, img_size);
  // Patch side p; must divide H and W.
  TORCH_ARG(int64_t, patch_size);
  // Token width D.
  TORCH_ARG(int64_t, embed_dim);
  // Number of transformer blocks.
  TORCH_ARG(int64_t, depth);
  // Attention heads (D must be a multiple).
  TORCH_ARG(int64_t, num_heads);
  // Image channels.
  TORCH_ARG(int64_t, in_chans) = 3;
  // MLP hidden width = int(D * mlp_ratio).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  // Bias on the qkv projection.
  TORCH_ARG(bool, qkv_bias) = true;
  // With qkv_bias: a key bias too (timm, MAE). false: the official SimMIM ViT's / BEiT's "attn.q_bias" and
  // "attn.v_bias" parameters and a qkv Linear without bias.
  TORCH_ARG(bool, key_bias) = true;
  // Relative position bias of the attention (none, per block, shared); needs every position in the
  // blocks, so SimMIM mode only (forward_visible refuses it).
  TORCH_ARG(RelPosBias, rel_pos_bias) = RelPosBias::kNone;
  // Stochastic depth: block i drops its branches with probability drop_path_rate * i / (depth - 1).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  // LayerScale initial value (0.1 in SimMIM's ViT-B recipe); 0 disables LayerScale.
  TORCH_ARG(double, layer_scale_init) = 0.0;
  // Position embedding: learned (SimMIM / timm) or MAE's fixed sin-cos.
  TORCH_ARG(PosEmbedKind, pos_embed) = PosEmbedKind::kLearned;
  // A CLS token in front of the patch tokens (both references have one).
  TORCH_ARG(bool, cls_token) = true;
  // The learnable mask token of SimMIM mode ("mask_mixer.mask_token"); MAE mode does not need it.
  TORCH_ARG(bool, mask_token) = true;
  // LayerNorm after the patch projection (off in ViT).
  TORCH_ARG(bool, patch_norm) = false;
  // LayerNorm epsilon of the blocks and the final norm.
  TORCH_ARG(double, norm_eps) = 1e-6;
  // Pooling of features().
  TORCH_ARG(FeaturePool, pool) = FeaturePool::kMean;
  // Weight init of an original, by name (WeightInit): timm's (this default), MAE's (MAEOptions' presets) or
  // the official SimMIM ViT's (SimMIMOptions' presets).
  TORCH_ARG(WeightInit, weight_init) = WeightInit::kTimm;
  // Attention kernel (kMath forces the exact path).
  TORCH_ARG(AttentionBackend, attention) = AttentionBackend::kAuto;
  // Generator of the DropPath draws (global default when unset).
  TORCH_ARG(c10::optional<at::Generator>, generator) = c10::nullopt;
};

// What downstream heads read: patch tokens [B, L, D] after the final norm, one pooled embedding [B, D].
struct EncoderFeatures {
  at::Tensor patch_tokens;
  at::Tensor pooled;
  Size2d grid;
};

// Submodules: "patch_embed", "mask_mixer" (if mask_token), "pos" (parameters "pos.pos_embed",
// "pos.cls_token"), "blocks" (0..depth-1), "rel_pos_bias" (kShared), "norm". Names inside blocks follow
// timm, and BEiT's for q_bias / v_bias and the relative position tables.
class VisionTransformerImpl : public torch::nn::Cloneable<VisionTransformerImpl>, public EncoderAdapter {
 public:
  explicit VisionTransformerImpl(VisionTransformerOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::VisionTransformer";
    const auto& o = options;
    SIMMIM_CHECK_VALUE(o.depth() >= 0, api, "depth", ">= 0", o.depth());
    SIMMIM_CHECK_ENUM(o.pool(), 2, "FeaturePool", api, "pool", "FeaturePool::kMean or kCls");
    SIMMIM_CHECK_ENUM(o.pos_embed(), 3, "PosEmbedKind", api, "pos_embed", "PosEmbedKind::kLearned, kSinCos or kNone");
    SIMMIM_CHECK_ENUM(o.weight_init(), 3, "WeightInit", api, "weight_init", "WeightInit::kTimm, kMAE or kSimMIM");
    SIMMIM_CHECK_ENUM(o.attention(), 2, "AttentionBackend", api, "attention", "AttentionBackend::kAuto or kMath");
    SIMMIM_CHECK_ENUM(o.rel_pos_bias(), 3, "RelPosBias", api, "rel_pos_bias",
                      "RelPosBias::kNone, kPerBlock or kShared");
    SIMMIM_CHECK_VALUE(o.drop_path_rate() >= 0.0 && o.drop_path_rate() < 1.0, api, "drop_path_rate", "in [0, 1)",
                       o.drop_path_rate());
    SIMMIM_CHECK_VALUE(o.pool() != FeaturePool::kCls || o.cls_token(), api, "pool",
                       "kMean when there is no CLS token (cls_token(false))", "kCls");
    grid_ = patch_grid(o.img_size(), o.patch_size(), api, "img_size");
    patch_embed = register_module(
        "patch_embed", PatchEmbed(PatchEmbedOptions(o.in_chans(), o.embed_dim(), o.patch_size()).norm(o.patch_norm())));
    if (o.mask_token()) {
      mask_mixer = register_module("mask_mixer", MaskTokenMixer(MaskTokenMixerOptions(o.embed_dim())));
    } else {
      mask_mixer = nullptr;
    }
    pos = register_module(
        "pos",
        PositionEmbedding(PositionEmbeddingOptions(o.embed_dim(), grid_).kind(o.pos_embed()).cls_token(o.cls_token())));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.depth(); ++i) {
      const double dpr =
          o.depth() > 1 ? o.drop_path_rate() * static_cast<double>(i) / static_cast<double>(o.depth() - 1) : 0.0;
      TransformerBlock block(TransformerBlockOptions(o.embed_dim(), o.num_heads())
                                 .mlp_ratio(o.mlp_ratio())
                                 .qkv_bias(o.qkv_bias())
                                 .key_bias(o.key_bias())
                                 .rel_pos_grid(o.rel_pos_bias() == RelPosBias::kPerBlock
                                                   ? c10::optional<Size2d>(grid_)
                                                   : c10::nullopt)
                                 .rel_pos_cls_token(o.cls_token())
                                 .drop_path(dpr)
                                 .layer_scale_init(o.layer_scale_init())
                                 .norm_eps(o.norm_eps())
                                 .attention(o.attention())
                                 .generator(o.generator()));
      blocks->push_back(block);
    }
    if (o.rel_pos_bias() == RelPosBias::kShared) {
      rel_pos_bias = register_module(
          "rel_pos_bias",
          RelativePositionBias(RelativePositionBiasOptions(grid_, o.num_heads()).cls_token(o.cls_token())));
    } else {
      rel_pos_bias = nullptr;
    }
    norm =
        register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.embed_dim()}).eps(o.norm_eps())));
    init_transformer_weights(*this, o.weight_init());
    init_tokens_and_rescale(o.weight_init());
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::VisionTransformer(img_size=" << options.img_size() << ", patch_size=" << options.patch_size()
       << ", embed_dim=" << options.embed_dim() << ", depth=" << options.depth()
       << ", num_heads=" << options.num_heads() << ", pos_embed=" << to_string(options.pos_embed())
       << ", cls_token=" << (options.cls_token() ? "true" : "false") << ")";
  }

  // The patch grid (h, w) of img_size; L = grid().area().
  Size2d grid() const { return grid_; }
  int64_t num_patches() const { return grid_.area(); }
  // Leading non-patch tokens in forward()'s output (1 with a CLS token).
  int64_t num_prefix_tokens() const { return options.cls_token() ? 1 : 0; }

  // Plain or SimMIM mode. images [B, C, H, W] at img_size; mask (optional) [B, h, w] or [B, L], bool /
  // uint8 (true = masked) or floating weights. Returns every token after the final norm: [B, (1+)L, D].
  at::Tensor forward(const at::Tensor& images, const at::Tensor& mask = {}) {
    constexpr const char* api = "simmim::VisionTransformer::forward";
    at::Tensor x = embed(images, api);
    if (mask.defined()) {
      SIMMIM_CHECK(!mask_mixer.is_empty(), api, "options.mask_token", "true to take a mask (SimMIM mode)",
                   "false (this encoder was built without a mask token; use forward_visible for MAE mode)");
      x = mask_mixer(x, mask, grid_);
    }
    return run_blocks(pos(x));
  }

  // MAE mode: only the patches ids_keep [B, len_keep] (int64, in [0, L)) enter the blocks, after their
  // position embedding. Returns [B, (1+)len_keep, D].
  at::Tensor forward_visible(const at::Tensor& images, const at::Tensor& ids_keep) {
    constexpr const char* api = "simmim::VisionTransformer::forward_visible";
    at::Tensor x = embed(images, api);
    SIMMIM_CHECK_HAS_DATA(ids_keep, api, "ids_keep");
    SIMMIM_CHECK(ids_keep.defined() && ids_keep.dim() == 2 && ids_keep.size(0) == x.size(0) && ids_keep.size(1) >= 1 &&
                     ids_keep.size(1) <= grid_.area() && ids_keep.scalar_type() == at::kLong,
                 api, "ids_keep",
                 "an int64 tensor [B, len_keep] with B = " + std::to_string(x.size(0)) +
                     ", 1 <= len_keep <= L = " + std::to_string(grid_.area()),
                 describe(ids_keep));
    if (check_values_of(ids_keep)) {  // reading min/max back syncs a GPU: there only under value_checks()
      const int64_t lo = ids_keep.min().item<int64_t>(), hi = ids_keep.max().item<int64_t>();
      SIMMIM_CHECK(lo >= 0 && hi < grid_.area(), api, "ids_keep",
                   "token indices in [0, " + std::to_string(grid_.area()) + ")", "min ", lo, ", max ", hi);
    }
    SIMMIM_CHECK(options.rel_pos_bias() == RelPosBias::kNone, api, "options.rel_pos_bias",
                 "RelPosBias::kNone in MAE mode (the bias is defined over every position of the grid)",
                 to_string(options.rel_pos_bias()));
    x = gather_tokens(pos->add_to_patches(x), ids_keep.to(x.device()));
    return run_blocks(pos->prepend_cls(x));
  }

  // EncoderAdapter: the patch tokens as a feature map [B, D, h, w] (stride = patch size).
  at::Tensor forward_features(const at::Tensor& images, const at::Tensor& mask) override {
    return tokens_to_map(forward(images, mask).narrow(1, num_prefix_tokens(), grid_.area()));
  }
  int64_t in_channels() const override { return options.in_chans(); }
  int64_t patch_size() const override { return options.patch_size(); }
  int64_t stride() const override { return options.patch_size(); }
  int64_t out_channels() const override { return options.embed_dim(); }
  // Every block's output (the patch tokens before the final norm), as feature maps [B, D, h, w].
  std::vector<at::Tensor> layer_features(const at::Tensor& images) override {
    at::Tensor x = pos(embed(images, "simmim::VisionTransformer::layer_features"));
    const at::Tensor shared_bias = rel_pos_bias.is_empty() ? at::Tensor() : rel_pos_bias->forward();
    std::vector<at::Tensor> out;
    for (const auto& block : *blocks) {
      x = block->as<TransformerBlockImpl>()->forward(x, shared_bias);
      out.push_back(tokens_to_map(x.narrow(1, num_prefix_tokens(), grid_.area())));
    }
    return out;
  }

  // Downstream use (linear probe, fine-tuning): patch tokens and the pooled embedding of options.pool.
  // A mask (optional) applies SimMIM mode, e.g. to probe what the encoder makes of hidden patches.
  EncoderFeatures features(const at::Tensor& images, const at::Tensor& mask = {}) {
    const at::Tensor tokens = forward(images, mask);
    at::Tensor patches = tokens.narrow(1, num_prefix_tokens(), grid_.area());
    at::Tensor pooled = options.pool() == FeaturePool::kCls ? tokens.select(1, 0) : patches.mean(1);
    return {patches, pooled, grid_};
  }

  // [B, L, D] -> [B, D, h, w].
  at::Tensor tokens_to_map(const at::Tensor& patches) const {
    return patches.transpose(1, 2).reshape({patches.size(0), patches.size(2), grid_.h, grid_.w});
  }

  VisionTransformerOptions options;
  PatchEmbed patch_embed{nullptr};
  MaskTokenMixer mask_mixer{nullptr};
  PositionEmbedding pos{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  RelativePositionBias rel_pos_bias{nullptr};  // RelPosBias::kShared only
  torch::nn::LayerNorm norm{nullptr};

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})

 private:
  at::Tensor embed(const at::Tensor& images, const char* api) {
    const Size2d img = options.img_size();
    SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(1) == options.in_chans() &&
                     images.size(2) == img.h && images.size(3) == img.w,
                 api, "images",
                 "[B, " + std::to_string(options.in_chans()) + ", " + std::to_string(img.h) + ", " +
                     std::to_string(img.w) + "] (in_chans, img_size)",
                 describe(images));
    SIMMIM_CHECK_HAS_DATA(images, api, "images");
    SIMMIM_CHECK(images.size(0) > 0, api, "images", "a non-empty batch", describe(images));
    return patch_embed(images).tokens;
  }

  // The token part of each original's init (init_transformer_weights did the layers), and SimMIM's
  // per-block rescaling of the residual branches' output weights.
  void init_tokens_and_rescale(WeightInit scheme) {
    torch::NoGradGuard no_grad;
    const bool learned_pos = pos->pos_embed.defined() && options.pos_embed() == PosEmbedKind::kLearned;
    const at::Tensor mask_tok = mask_mixer.is_empty() ? at::Tensor() : mask_mixer->mask_token;
    switch (scheme) {
      case WeightInit::kTimm:  // positions and mask token: their modules' trunc-normal 0.02
        if (pos->cls_token.defined()) pos->cls_token.normal_(0.0, 1e-6);
        break;
      case WeightInit::kMAE:  // sin-cos positions are fixed; a learned table keeps trunc-normal 0.02
        if (pos->cls_token.defined()) pos->cls_token.normal_(0.0, 0.02);
        if (mask_tok.defined()) mask_tok.normal_(0.0, 0.02);
        break;
      case WeightInit::kSimMIM:
        for (const at::Tensor& t : {pos->cls_token, learned_pos ? pos->pos_embed : at::Tensor(), mask_tok}) {
          if (t.defined()) trunc_normal_(t, 0.0, 0.02, -0.02, 0.02);
        }
        for (size_t i = 0; i < blocks->size(); ++i) {
          auto* block = (*blocks)[i]->as<TransformerBlockImpl>();
          const double scale = std::sqrt(2.0 * static_cast<double>(i + 1));
          block->attn->proj->weight.div_(scale);
          block->mlp->fc2->weight.div_(scale);
        }
        break;
    }
  }

  at::Tensor run_blocks(at::Tensor x) {
    // Through the list on every call: clone() refills a ModuleList with new block objects, so cached
    // pointers would go stale.
    const at::Tensor shared_bias = rel_pos_bias.is_empty() ? at::Tensor() : rel_pos_bias->forward();
    for (const auto& block : *blocks) x = block->as<TransformerBlockImpl>()->forward(x, shared_bias);
    return norm(x);
  }

  Size2d grid_;
};

TORCH_MODULE(VisionTransformer);

SIMMIM_NAMESPACE_END
