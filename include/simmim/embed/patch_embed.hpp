#pragma once
// Patch embedding: a Conv2d with kernel = stride = patch turns images [B, C, H, W] into tokens [B, L, D]
// (row-major patch order, the order of patchify() and of every mask), optionally LayerNorm-ed.
// Any image size the patch divides works, non-square included; the grid comes back with the tokens.

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

struct PatchEmbedOptions {
  PatchEmbedOptions(int64_t in_chans = 3, int64_t embed_dim = 768, int64_t patch_size = 16)
      : in_chans_(in_chans), embed_dim_(embed_dim), patch_size_(patch_size) {}
  // Image channels C.
  TORCH_ARG(int64_t, in_chans);
  // Token width D.
  TORCH_ARG(int64_t, embed_dim);
  // Patch side p in pixels (kernel and stride of the projection).
  TORCH_ARG(int64_t, patch_size);
  // LayerNorm over D after the projection (Swin's patch_norm); off for ViT.
  TORCH_ARG(bool, norm) = false;
  // Epsilon of that LayerNorm.
  TORCH_ARG(double, norm_eps) = 1e-5;
};

// Tokens and the patch grid they came from (L = grid.h * grid.w).
struct PatchTokens {
  at::Tensor tokens;
  Size2d grid;
};

class PatchEmbedImpl : public torch::nn::Cloneable<PatchEmbedImpl> {
 public:
  explicit PatchEmbedImpl(PatchEmbedOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::PatchEmbed";
    SIMMIM_CHECK_VALUE(options.in_chans() > 0, api, "in_chans", "positive", options.in_chans());
    SIMMIM_CHECK_VALUE(options.embed_dim() > 0, api, "embed_dim", "positive", options.embed_dim());
    SIMMIM_CHECK_VALUE(options.patch_size() > 0, api, "patch_size", "positive", options.patch_size());
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_chans(), options.embed_dim(),
                                                                              options.patch_size())
                                                         .stride(options.patch_size())));
    if (options.norm()) {
      norm = register_module(
          "norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.embed_dim()}).eps(options.norm_eps())));
    } else {
      norm = nullptr;
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::PatchEmbed(in_chans=" << options.in_chans() << ", embed_dim=" << options.embed_dim()
       << ", patch_size=" << options.patch_size() << ", norm=" << (options.norm() ? "true" : "false") << ")";
  }

  // images [B, C, H, W] with p | H and p | W -> {tokens [B, (H/p)*(W/p), D], grid (H/p, W/p)}.
  PatchTokens forward(const at::Tensor& images) {
    constexpr const char* api = "simmim::PatchEmbed::forward";
    SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(1) == options.in_chans(), api, "images",
                 "[B, C, H, W] with C = " + std::to_string(options.in_chans()), describe(images));
    const Size2d grid = patch_grid({images.size(2), images.size(3)}, options.patch_size(), api);
    at::Tensor tokens = proj(images).flatten(2).transpose(1, 2);
    if (!norm.is_empty()) tokens = norm(tokens);
    return {tokens, grid};
  }

  PatchEmbedOptions options;
  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};

TORCH_MODULE(PatchEmbed);

SIMMIM_NAMESPACE_END
