#pragma once
// Position embeddings of a patch grid: learned, or MAE's fixed 2-D sin-cos table (non-square grids
// too), with an optional CLS token. Added to the patch tokens before any token is dropped (MAE) and
// after mask-token mixing (SimMIM), so both papers' orders hold.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/core/init.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class PosEmbedKind {
  kLearned,  // a parameter, trunc-normal std 0.02 (timm / SimMIM ViT)
  kSinCos,   // MAE's fixed 2-D sin-cos table, a buffer (saved, not trained)
  kNone,     // no position embedding (encoders that carry position otherwise)
};

inline const char* to_string(PosEmbedKind kind) {
  switch (kind) {
    case PosEmbedKind::kLearned:
      return "learned";
    case PosEmbedKind::kSinCos:
      return "sincos";
    case PosEmbedKind::kNone:
      return "none";
  }
  return "?";
}

// MAE's get_2d_sincos_pos_embed, generalised to grid (h, w): [h*w (+1), D] float. Row l = i*w + j holds
// [sin(j*omega), cos(j*omega), sin(i*omega), cos(i*omega)], omega_k = 10000^(-k / (D/4)), k < D/4: MAE's
// meshgrid(grid_w, grid_h) puts the column coordinate in the first half. With cls_token a zero row
// comes first. Computed in double like the numpy original, returned as float.
inline at::Tensor sincos_2d_pos_embed(int64_t embed_dim, Size2d grid, bool cls_token = false) {
  constexpr const char* api = "simmim::sincos_2d_pos_embed";
  SIMMIM_CHECK_VALUE(embed_dim > 0 && embed_dim % 4 == 0, api, "embed_dim",
                     "a positive multiple of 4 (sin and cos for each of the two axes)", embed_dim);
  SIMMIM_CHECK_VALUE(grid.h > 0 && grid.w > 0, api, "grid", "positive", grid);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t quarter = embed_dim / 4;
  const at::Tensor omega = at::pow(10000.0, -at::arange(quarter, f64) / static_cast<double>(quarter));
  const auto axis_embed = [&](const at::Tensor& pos) {  // pos [M] -> [M, D/2]
    const at::Tensor out = at::outer(pos, omega);
    return at::cat({out.sin(), out.cos()}, 1);
  };
  const at::Tensor rows = at::arange(grid.h, f64).repeat_interleave(grid.w);  // i of token l
  const at::Tensor cols = at::arange(grid.w, f64).repeat({grid.h});           // j of token l
  at::Tensor table = at::cat({axis_embed(cols), axis_embed(rows)}, 1);
  if (cls_token) table = at::cat({at::zeros({1, embed_dim}, f64), table}, 0);
  return table.to(at::kFloat);
}

struct PositionEmbeddingOptions {
  PositionEmbeddingOptions(int64_t embed_dim = 768, Size2d grid = Size2d(14)) : embed_dim_(embed_dim), grid_(grid) {}
  // Token width D.
  TORCH_ARG(int64_t, embed_dim);
  // Patch grid (h, w) the table covers; inputs must come on this grid.
  TORCH_ARG(Size2d, grid);
  // Learned (default), fixed sin-cos, or none.
  TORCH_ARG(PosEmbedKind, kind) = PosEmbedKind::kLearned;
  // A learnable CLS token prepended to the sequence (its position row is learned too, or zero for sin-cos).
  TORCH_ARG(bool, cls_token) = false;
  // Init std of learned tables and of the CLS token (trunc-normal).
  TORCH_ARG(double, init_std) = 0.02;
};

// Holds "pos_embed" [1, (1+)L, D] (a parameter when learned, a buffer when sin-cos) and "cls_token"
// [1, 1, D]: trainers exclude both from weight decay by these names.
class PositionEmbeddingImpl : public torch::nn::Cloneable<PositionEmbeddingImpl> {
 public:
  explicit PositionEmbeddingImpl(PositionEmbeddingOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::PositionEmbedding";
    SIMMIM_CHECK_ENUM(options.kind(), 3, "PosEmbedKind", api, "kind", "PosEmbedKind::kLearned, kSinCos or kNone");
    SIMMIM_CHECK_VALUE(options.embed_dim() > 0, api, "embed_dim", "positive", options.embed_dim());
    SIMMIM_CHECK_VALUE(options.grid().h > 0 && options.grid().w > 0, api, "grid", "positive", options.grid());
    const int64_t rows = options.grid().area() + (options.cls_token() ? 1 : 0);
    pos_embed = at::Tensor();
    switch (options.kind()) {
      case PosEmbedKind::kLearned:
        pos_embed = register_parameter("pos_embed", at::empty({1, rows, options.embed_dim()}));
        trunc_normal_(pos_embed, 0.0, options.init_std());
        break;
      case PosEmbedKind::kSinCos:
        pos_embed = register_buffer(
            "pos_embed", sincos_2d_pos_embed(options.embed_dim(), options.grid(), options.cls_token()).unsqueeze(0));
        break;
      case PosEmbedKind::kNone:
        break;
    }
    cls_token = at::Tensor();
    if (options.cls_token()) {
      cls_token = register_parameter("cls_token", at::empty({1, 1, options.embed_dim()}));
      trunc_normal_(cls_token, 0.0, options.init_std());
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::PositionEmbedding(embed_dim=" << options.embed_dim() << ", grid=" << options.grid()
       << ", kind=" << to_string(options.kind()) << ", cls_token=" << (options.cls_token() ? "true" : "false") << ")";
  }

  // x [B, L, D] patch tokens in grid order -> x + table (patch rows).
  at::Tensor add_to_patches(const at::Tensor& x) const {
    constexpr const char* api = "simmim::PositionEmbedding::add_to_patches";
    SIMMIM_CHECK(x.defined() && x.dim() == 3 && x.size(1) == options.grid().area() && x.size(2) == options.embed_dim(),
                 api, "x",
                 "[B, L, D] with L = " + std::to_string(options.grid().area()) + " (grid " + c10::str(options.grid()) +
                     "), D = " + std::to_string(options.embed_dim()),
                 describe(x));
    if (!pos_embed.defined()) return x;
    return x + pos_embed.narrow(1, options.cls_token() ? 1 : 0, options.grid().area());
  }

  // x [B, N, D] (any N: all patches, or MAE's kept ones) -> [B, 1 + N, D] with the CLS token (plus its
  // position row) in front; x unchanged without a CLS token.
  at::Tensor prepend_cls(const at::Tensor& x) const {
    if (!cls_token.defined()) return x;
    at::Tensor cls = pos_embed.defined() ? cls_token + pos_embed.narrow(1, 0, 1) : cls_token;
    return at::cat({cls.expand({x.size(0), 1, x.size(2)}), x}, 1);
  }

  // Both: the full sequence a ViT feeds its blocks.
  at::Tensor forward(const at::Tensor& x) { return prepend_cls(add_to_patches(x)); }

  PositionEmbeddingOptions options;
  at::Tensor pos_embed;
  at::Tensor cls_token;
};

TORCH_MODULE(PositionEmbedding);

SIMMIM_NAMESPACE_END
