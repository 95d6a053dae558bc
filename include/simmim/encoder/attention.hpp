#pragma once
// Multi-head self-attention of the ViT blocks (encoder and MAE decoder). The kernel is
// scaled_dot_product_attention where LibTorch has it (2.x: fused, memory-efficient) and an exact math
// path otherwise (1.13) or on request, so tests can hold the two against each other. Also BEiT's /
// the official SimMIM ViT's relative position bias (per block or one shared table) and its q/v-only bias.

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/core/linear.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/core/version.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class AttentionBackend {
  kAuto,  // scaled_dot_product_attention when this LibTorch has it, else math
  kMath,  // always softmax(q k^T / sqrt(d)) v in plain ATen ops
};

// Whether this LibTorch offers a public scaled_dot_product_attention (2.0 and later).
inline constexpr bool kHasScaledDotProductAttention = SIMMIM_TORCH_VERSION >= 200;

// softmax(q k^T * d^-1/2 + bias) v, timm's / BEiT's order of operations (q scaled first). q, k, v
// [B, H, N, d]; bias (optional) broadcasts to [B, H, N, N] (a relative position bias is [H, N, N]).
inline at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& bias = {}) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  at::Tensor logits = (q * scale).matmul(k.transpose(-2, -1));
  if (bias.defined()) logits = logits + bias;
  return at::matmul(logits.softmax(-1), v);
}

// Attention of q, k, v [B, H, N, d] -> [B, H, N, d] through the chosen backend, with an optional additive
// bias of the logits (see attention_math).
inline at::Tensor scaled_dot_product(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     AttentionBackend backend = AttentionBackend::kAuto, const at::Tensor& bias = {}) {
#if SIMMIM_TORCH_VERSION >= 200
  if (backend == AttentionBackend::kAuto) {
    // No bias: no mask at all (an undefined tensor is not "no mask" to the op). A float mask must have the
    // query's dtype (bf16 / fp16 under autocast).
    if (!bias.defined()) return at::scaled_dot_product_attention(q, k, v);
    return at::scaled_dot_product_attention(q, k, v, bias.to(q.scalar_type()));
  }
#endif
  return attention_math(q, k, v, bias);
}

// Relative position bias (BEiT, the official SimMIM ViT): a learned table of one row per relative offset
// between two patches of a grid (2h - 1)(2w - 1), plus 3 rows with a CLS token (CLS -> patch, patch -> CLS,
// CLS -> CLS), and a fixed index that picks, for every pair of tokens, their row. One column per head.
inline int64_t relative_position_table_rows(Size2d grid, bool cls_token) {
  return (2 * grid.h - 1) * (2 * grid.w - 1) + (cls_token ? 3 : 0);
}

// The index [N, N] (N = (1 +) h * w, the CLS token first) into the table rows: for patches i, j at (r, c),
// (r_i - r_j + h - 1) * (2w - 1) + (c_i - c_j + w - 1); with a CLS token, R = (2h - 1)(2w - 1) on its row,
// R + 1 on its column and R + 2 at [0, 0] (BEiT's layout, so tables are exchangeable).
inline at::Tensor relative_position_index(Size2d grid, bool cls_token) {
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const at::Tensor rows = at::arange(grid.h, i64).repeat_interleave(grid.w);  // r of each patch, row-major
  const at::Tensor cols = at::arange(grid.w, i64).repeat({grid.h});
  const at::Tensor dr = rows.unsqueeze(1) - rows.unsqueeze(0) + (grid.h - 1);
  const at::Tensor dc = cols.unsqueeze(1) - cols.unsqueeze(0) + (grid.w - 1);
  const at::Tensor patches = dr * (2 * grid.w - 1) + dc;
  if (!cls_token) return patches;
  const int64_t n = grid.area() + 1, r = (2 * grid.h - 1) * (2 * grid.w - 1);
  at::Tensor index = at::empty({n, n}, i64);
  index.narrow(0, 1, n - 1).narrow(1, 1, n - 1).copy_(patches);
  index.select(0, 0).fill_(r);
  index.select(1, 0).fill_(r + 1);
  index[0][0].fill_(r + 2);
  return index;
}

// The bias [H, N, N] a table [rows, H] gives through an index [N, N].
inline at::Tensor relative_position_bias(const at::Tensor& table, const at::Tensor& index) {
  const int64_t n = index.size(0);
  return table.index_select(0, index.reshape({-1})).view({n, n, table.size(1)}).permute({2, 0, 1}).contiguous();
}

struct RelativePositionBiasOptions {
  RelativePositionBiasOptions(Size2d grid = Size2d(14), int64_t num_heads = 12)
      : grid_(grid), num_heads_(num_heads) {}
  // The patch grid (h, w) of the tokens.
  TORCH_ARG(Size2d, grid);
  // One table column per head.
  TORCH_ARG(int64_t, num_heads);
  // A CLS token in front of the patch tokens.
  TORCH_ARG(bool, cls_token) = true;
};

// One table shared by every block (the official SimMIM ViT-B recipe's use_shared_rel_pos_bias): parameter
// "relative_position_bias_table" [rows, H] (zeros at first, as in BEiT) and buffer "relative_position_index".
class RelativePositionBiasImpl : public torch::nn::Cloneable<RelativePositionBiasImpl> {
 public:
  explicit RelativePositionBiasImpl(RelativePositionBiasOptions options_ = {}) : options(std::move(options_)) {
    reset();
  }

  void reset() override {
    constexpr const char* api = "simmim::RelativePositionBias";
    SIMMIM_CHECK_VALUE(options.grid().h > 0 && options.grid().w > 0, api, "grid", "positive", options.grid());
    SIMMIM_CHECK_VALUE(options.num_heads() > 0, api, "num_heads", "positive", options.num_heads());
    relative_position_bias_table = register_parameter(
        "relative_position_bias_table",
        at::zeros({relative_position_table_rows(options.grid(), options.cls_token()), options.num_heads()}));
    relative_position_index =
        register_buffer("relative_position_index", ::simmim::relative_position_index(options.grid(), options.cls_token()));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::RelativePositionBias(grid=" << options.grid() << ", num_heads=" << options.num_heads()
       << ", cls_token=" << (options.cls_token() ? "true" : "false") << ")";
  }

  // The bias [H, N, N] of the attention logits.
  at::Tensor forward() { return relative_position_bias(relative_position_bias_table, relative_position_index); }

  RelativePositionBiasOptions options;
  at::Tensor relative_position_bias_table;
  at::Tensor relative_position_index;
};

TORCH_MODULE(RelativePositionBias);

inline const char* to_string(AttentionBackend backend) { return backend == AttentionBackend::kAuto ? "auto" : "math"; }

struct AttentionOptions {
  AttentionOptions(int64_t dim = 768, int64_t num_heads = 12) : dim_(dim), num_heads_(num_heads) {}
  // Token width D (a multiple of num_heads).
  TORCH_ARG(int64_t, dim);
  // Heads H; each has D / H channels.
  TORCH_ARG(int64_t, num_heads);
  // Bias on the fused qkv projection (ViT and MAE use one).
  TORCH_ARG(bool, qkv_bias) = true;
  // With qkv_bias: whether the key gets a bias too. false is BEiT's / the official SimMIM ViT's layout:
  // parameters "q_bias" and "v_bias" [D] (zeros at first) and a qkv Linear without bias. The key bias
  // cancels in the softmax, so this changes the parameters, not what the layer can compute.
  TORCH_ARG(bool, key_bias) = true;
  // A relative position bias of this block's own over tokens on this patch grid (BEiT's per-block table):
  // parameter "relative_position_bias_table", buffer "relative_position_index". Unset: none.
  TORCH_ARG(c10::optional<Size2d>, rel_pos_grid) = c10::nullopt;
  // With rel_pos_grid: the tokens start with a CLS token.
  TORCH_ARG(bool, rel_pos_cls_token) = true;
  // Kernel choice; kMath forces the exact path.
  TORCH_ARG(AttentionBackend, backend) = AttentionBackend::kAuto;
};

// Parameters: "qkv" Linear(D, 3D) and "proj" Linear(D, D), timm's names; "q_bias" / "v_bias" and
// "relative_position_bias_table" (+ buffer "relative_position_index") as in BEiT when asked for.
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(AttentionOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::Attention";
    SIMMIM_CHECK_VALUE(options.num_heads() > 0, api, "num_heads", "positive", options.num_heads());
    SIMMIM_CHECK_ENUM(options.backend(), 2, "AttentionBackend", api, "backend", "AttentionBackend::kAuto or kMath");
    SIMMIM_CHECK_VALUE(options.dim() > 0 && options.dim() % options.num_heads() == 0, api, "dim",
                       "a positive multiple of num_heads = " + std::to_string(options.num_heads()), options.dim());
    const bool split_bias = options.qkv_bias() && !options.key_bias();
    qkv = register_module(
        "qkv", torch::nn::Linear(torch::nn::LinearOptions(options.dim(), 3 * options.dim())
                                     .bias(options.qkv_bias() && !split_bias)));
    q_bias = split_bias ? register_parameter("q_bias", at::zeros({options.dim()})) : at::Tensor();
    v_bias = split_bias ? register_parameter("v_bias", at::zeros({options.dim()})) : at::Tensor();
    relative_position_bias_table = at::Tensor();
    relative_position_index = at::Tensor();
    if (options.rel_pos_grid().has_value()) {
      const Size2d grid = *options.rel_pos_grid();
      SIMMIM_CHECK_VALUE(grid.h > 0 && grid.w > 0, api, "rel_pos_grid", "positive", grid);
      relative_position_bias_table = register_parameter(
          "relative_position_bias_table",
          at::zeros({relative_position_table_rows(grid, options.rel_pos_cls_token()), options.num_heads()}));
      relative_position_index =
          register_buffer("relative_position_index", ::simmim::relative_position_index(grid, options.rel_pos_cls_token()));
    }
    proj = register_module("proj", torch::nn::Linear(options.dim(), options.dim()));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::Attention(dim=" << options.dim() << ", num_heads=" << options.num_heads()
       << ", backend=" << to_string(options.backend()) << ")";
  }

  // x [B, N, D] -> [B, N, D]. attn_bias (optional): an additive bias of the logits that broadcasts to
  // [B, H, N, N], e.g. a shared RelativePositionBias's [H, N, N]; this block's own table adds to it.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& attn_bias = {}) {
    constexpr const char* api = "simmim::Attention::forward";
    const int64_t B = x.size(0), N = x.size(1), H = options.num_heads();
    at::Tensor bias = attn_bias;
    if (relative_position_bias_table.defined()) {
      SIMMIM_CHECK(N == relative_position_index.size(0), api, "x",
                   "[B, N, D] with N = " + std::to_string(relative_position_index.size(0)) +
                       " tokens (the relative position bias's grid; MAE-style dropped tokens cannot use it)",
                   describe(x));
      const at::Tensor own = relative_position_bias(relative_position_bias_table, relative_position_index);
      bias = bias.defined() ? bias + own : own;
    }
    const at::Tensor y = q_bias.defined()
                             ? at::linear(x, qkv->weight, at::cat({q_bias, at::zeros_like(v_bias), v_bias}))
                             : linear_forward(qkv, x);
    const at::Tensor qkv_heads = y.reshape({B, N, 3, H, options.dim() / H}).permute({2, 0, 3, 1, 4});
    const at::Tensor out = scaled_dot_product(qkv_heads[0], qkv_heads[1], qkv_heads[2], options.backend(), bias);
    return linear_forward(proj, out.transpose(1, 2).reshape({B, N, options.dim()}));
  }

  AttentionOptions options;
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};
  at::Tensor q_bias, v_bias;
  at::Tensor relative_position_bias_table, relative_position_index;
};

TORCH_MODULE(Attention);

SIMMIM_NAMESPACE_END
