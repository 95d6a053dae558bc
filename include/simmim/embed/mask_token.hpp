#pragma once
// SimMIM's mask-token mixing: right after patch embedding (before position embeddings and CLS), masked
// tokens are replaced by one learnable token: x * (1 - w) + token * w, w the per-token mask weight.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/core/init.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/core/value_checks.hpp"
#include "simmim/embed/token_index.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MaskTokenMixerOptions {
  /* implicit */ MaskTokenMixerOptions(int64_t embed_dim = 768) : embed_dim_(embed_dim) {}  // NOLINT
  // Token width D.
  TORCH_ARG(int64_t, embed_dim);
  // Init std of the token (trunc-normal, SimMIM's 0.02).
  TORCH_ARG(double, init_std) = 0.02;
};

// Holds the parameter "mask_token" [1, 1, D] (trainers exclude it from weight decay by that name).
class MaskTokenMixerImpl : public torch::nn::Cloneable<MaskTokenMixerImpl> {
 public:
  explicit MaskTokenMixerImpl(MaskTokenMixerOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::MaskTokenMixer";
    SIMMIM_CHECK_VALUE(options.embed_dim() > 0, api, "embed_dim", "positive", options.embed_dim());
    SIMMIM_CHECK_VALUE(options.init_std() > 0, api, "init_std", "positive", options.init_std());
    mask_token = register_parameter("mask_token", at::empty({1, 1, options.embed_dim()}));
    trunc_normal_(mask_token, 0.0, options.init_std());
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::MaskTokenMixer(embed_dim=" << options.embed_dim() << ")";
  }

  // tokens [B, L, D] with L = grid.area(); mask [B, h, w] or [B, L]: bool or any integer dtype (nonzero =
  // masked) or floating weights in [0, 1]. Unmasked tokens (w = 0) come out unchanged.
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& mask, Size2d grid) {
    constexpr const char* api = "simmim::MaskTokenMixer::forward";
    SIMMIM_CHECK(
        tokens.defined() && tokens.dim() == 3 && tokens.size(1) == grid.area() && tokens.size(2) == options.embed_dim(),
        api, "tokens",
        "[B, L, D] with L = " + std::to_string(grid.area()) + ", D = " + std::to_string(options.embed_dim()),
        describe(tokens));
    SIMMIM_CHECK_HAS_DATA(tokens, api, "tokens");
    at::Tensor m = flatten_token_mask(mask, tokens.size(0), grid, api);
    // Integer masks (uint8, or int64 as the official SimMIM loader collates them) are boolean: nonzero =
    // masked, never a weight of 255 or 2.
    if (!at::isFloatingType(m.scalar_type()) && m.scalar_type() != at::kBool) m = m.ne(0);
    if (at::isFloatingType(m.scalar_type()) && check_values_of(m)) {
      // A weight outside [0, 1] extrapolates past the token (x * (1 - w) + token * w) instead of mixing.
      const at::Tensor d = m.detach();
      const int64_t bad = d.ge(0).logical_and(d.le(1)).logical_not().sum().item<int64_t>();
      SIMMIM_CHECK(bad == 0, api, "mask", "weights in [0, 1] (or a bool mask)", bad,
                   " weight(s) outside [0, 1] or NaN in ", describe(mask));
    }
    const at::Tensor w = m.to(tokens.device(), tokens.scalar_type()).unsqueeze(-1);
    return tokens * (1 - w) + mask_token * w;
  }

  // The same on a feature map x [B, D, h, w] (a CNN stem's output), mask [B, h, w] or [B, h * w].
  at::Tensor forward_map(const at::Tensor& x, const at::Tensor& mask) {
    constexpr const char* api = "simmim::MaskTokenMixer::forward_map";
    SIMMIM_CHECK(x.defined() && x.dim() == 4 && x.size(1) == options.embed_dim(), api, "x",
                 "a feature map [B, D, h, w] with D = " + std::to_string(options.embed_dim()), describe(x));
    const Size2d grid{x.size(2), x.size(3)};
    return forward(x.flatten(2).transpose(1, 2), mask, grid).transpose(1, 2).reshape(x.sizes());
  }

  MaskTokenMixerOptions options;
  at::Tensor mask_token;
};

TORCH_MODULE(MaskTokenMixer);

// A hierarchical encoder's stem output x [B, D, h, w] with SimMIM's mask token where `mask` says (x itself
// without a mask); a mask given to an encoder built without a token is an error of `api`.
inline at::Tensor mix_stem_mask(MaskTokenMixer& mixer, const at::Tensor& x, const at::Tensor& mask, const char* api) {
  if (!mask.defined()) return x;
  SIMMIM_CHECK(!mixer.is_empty(), api, "options.mask_token", "true to take a mask", "false");
  return mixer->forward_map(x, mask);
}

SIMMIM_NAMESPACE_END
