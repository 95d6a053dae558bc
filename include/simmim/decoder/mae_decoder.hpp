#pragma once
// MAE's decoder: the encoder's kept tokens are projected to the decoder width, mask tokens fill the
// dropped slots, ids_restore un-shuffles them into patch order, fixed sin-cos positions are added, then
// transformer blocks (the encoder's block type), a LayerNorm and a Linear to p*p*C pixels per patch.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/init.hpp"
#include "simmim/core/linear.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/embed/pos_embed.hpp"
#include "simmim/embed/token_index.hpp"
#include "simmim/encoder/transformer_block.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MAEDecoderOptions {
  MAEDecoderOptions(int64_t encoder_dim = 768, Size2d grid = Size2d(14), int64_t patch_size = 16)
      : encoder_dim_(encoder_dim), grid_(grid), patch_size_(patch_size) {}
  // Width of the encoder tokens that come in.
  TORCH_ARG(int64_t, encoder_dim);
  // Patch grid (h, w) of the image; L = h * w.
  TORCH_ARG(Size2d, grid);
  // Patch side p: each output token holds p*p*in_chans pixels (patchify's order).
  TORCH_ARG(int64_t, patch_size);
  // Image channels C.
  TORCH_ARG(int64_t, in_chans) = 3;
  // Decoder width (MAE: 512).
  TORCH_ARG(int64_t, embed_dim) = 512;
  // Decoder blocks (MAE: 8).
  TORCH_ARG(int64_t, depth) = 8;
  // Decoder heads (MAE: 16).
  TORCH_ARG(int64_t, num_heads) = 16;
  // MLP hidden width = int(embed_dim * mlp_ratio).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  // Whether the incoming tokens start with the encoder's CLS token (it is carried through and dropped).
  TORCH_ARG(bool, cls_token) = true;
  // LayerNorm epsilon.
  TORCH_ARG(double, norm_eps) = 1e-6;
  // Weight init (MAE's: xavier).
  TORCH_ARG(WeightInit, weight_init) = WeightInit::kMAE;
  // Attention kernel.
  TORCH_ARG(AttentionBackend, attention) = AttentionBackend::kAuto;
  // Width of each output token: 0 (the default) for the patch's p*p*in_chans pixels, or a Target's
  // prediction_dim() (HOG histograms, color-bin logits, ...).
  TORCH_ARG(int64_t, pred_dim) = 0;
};

// Parameters "embed" (Linear encoder_dim -> embed_dim), "mask_token" [1, 1, embed_dim], "blocks",
// "norm", "pred" (Linear embed_dim -> p*p*C, or pred_dim); buffer "pos_embed" [1, (1+)L, embed_dim] (fixed sin-cos).
class MAEDecoderImpl : public torch::nn::Cloneable<MAEDecoderImpl> {
 public:
  explicit MAEDecoderImpl(MAEDecoderOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::MAEDecoder";
    const auto& o = options;
    SIMMIM_CHECK_VALUE(o.encoder_dim() > 0, api, "encoder_dim", "positive", o.encoder_dim());
    SIMMIM_CHECK_VALUE(o.grid().h > 0 && o.grid().w > 0, api, "grid", "positive", o.grid());
    SIMMIM_CHECK_VALUE(o.patch_size() > 0, api, "patch_size", "positive", o.patch_size());
    SIMMIM_CHECK_VALUE(o.in_chans() > 0, api, "in_chans", "positive", o.in_chans());
    SIMMIM_CHECK_VALUE(o.depth() >= 0, api, "depth", ">= 0", o.depth());
    embed = register_module("embed", torch::nn::Linear(o.encoder_dim(), o.embed_dim()));
    mask_token = register_parameter("mask_token", at::zeros({1, 1, o.embed_dim()}));
    pos_embed = register_buffer("pos_embed", sincos_2d_pos_embed(o.embed_dim(), o.grid(), o.cls_token()).unsqueeze(0));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.depth(); ++i) {
      blocks->push_back(TransformerBlock(TransformerBlockOptions(o.embed_dim(), o.num_heads())
                                             .mlp_ratio(o.mlp_ratio())
                                             .norm_eps(o.norm_eps())
                                             .attention(o.attention())));
    }
    norm =
        register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.embed_dim()}).eps(o.norm_eps())));
    SIMMIM_CHECK_VALUE(o.pred_dim() >= 0, api, "pred_dim", ">= 0 (0: p*p*in_chans)", o.pred_dim());
    const int64_t out = o.pred_dim() > 0 ? o.pred_dim() : o.patch_size() * o.patch_size() * o.in_chans();
    pred = register_module("pred", torch::nn::Linear(o.embed_dim(), out));
    init_transformer_weights(*this, o.weight_init());
    torch::NoGradGuard no_grad;
    if (o.weight_init() == WeightInit::kMAE) {
      mask_token.normal_(0.0, 0.02);  // MAE's torch.nn.init.normal_(std=.02)
    } else {
      trunc_normal_(mask_token, 0.0, 0.02);
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::MAEDecoder(encoder_dim=" << options.encoder_dim() << ", grid=" << options.grid()
       << ", patch_size=" << options.patch_size() << ", embed_dim=" << options.embed_dim()
       << ", depth=" << options.depth() << ", num_heads=" << options.num_heads() << ")";
  }

  // tokens [B, (1+)len_keep, encoder_dim] from VisionTransformer::forward_visible; ids_restore [B, L]
  // int64 (a permutation per row: argsort of the shuffle that picked ids_keep).
  // Returns the prediction [B, L, p*p*C] in patch order (patchify's layout).
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& ids_restore) {
    constexpr const char* api = "simmim::MAEDecoder::forward";
    const int64_t L = options.grid().area(), prefix = options.cls_token() ? 1 : 0;
    SIMMIM_CHECK(tokens.defined() && tokens.dim() == 3 && tokens.size(1) > prefix && tokens.size(1) - prefix <= L &&
                     tokens.size(2) == options.encoder_dim(),
                 api, "tokens",
                 "[B, " + std::string(prefix ? "1 + " : "") + "len_keep, " + std::to_string(options.encoder_dim()) +
                     "] with 1 <= len_keep <= L = " + std::to_string(L),
                 describe(tokens));
    const int64_t B = tokens.size(0);
    SIMMIM_CHECK(ids_restore.defined() && ids_restore.dim() == 2 && ids_restore.size(0) == B &&
                     ids_restore.size(1) == L && ids_restore.scalar_type() == at::kLong,
                 api, "ids_restore", "an int64 tensor [B, L] = [" + std::to_string(B) + ", " + std::to_string(L) + "]",
                 describe(ids_restore));
    at::Tensor x = linear_forward(embed, tokens);
    const int64_t len_keep = x.size(1) - prefix;
    at::Tensor patches = at::cat({x.narrow(1, prefix, len_keep), mask_token.expand({B, L - len_keep, x.size(2)})}, 1);
    patches = gather_tokens(patches, ids_restore.to(x.device()));
    x = prefix ? at::cat({x.narrow(1, 0, 1), patches}, 1) : patches;
    x = x + pos_embed;
    for (const auto& block : *blocks) x = block->as<TransformerBlockImpl>()->forward(x);
    return linear_forward(pred, norm(x)).narrow(1, prefix, L);
  }

  MAEDecoderOptions options;
  torch::nn::Linear embed{nullptr};
  at::Tensor mask_token;
  at::Tensor pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear pred{nullptr};
};

TORCH_MODULE(MAEDecoder);

SIMMIM_NAMESPACE_END
