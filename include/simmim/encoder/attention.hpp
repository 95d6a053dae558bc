#pragma once
// Multi-head self-attention of the ViT blocks (encoder and MAE decoder). The kernel is
// scaled_dot_product_attention where LibTorch has it (2.x: fused, memory-efficient) and an exact math
// path otherwise (1.13) or on request, so tests can hold the two against each other.

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cmath>
#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/core/version.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class AttentionBackend {
  kAuto,  // scaled_dot_product_attention when this LibTorch has it, else math
  kMath,  // always softmax(q k^T / sqrt(d)) v in plain ATen ops
};

// Whether this LibTorch offers a public scaled_dot_product_attention (2.0 and later).
inline constexpr bool kHasScaledDotProductAttention = SIMMIM_TORCH_VERSION >= 200;

// softmax(q k^T * d^-1/2) v, timm's order of operations (q scaled first). q, k, v [B, H, N, d].
inline at::Tensor attention_math(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  return at::matmul((q * scale).matmul(k.transpose(-2, -1)).softmax(-1), v);
}

// Attention of q, k, v [B, H, N, d] -> [B, H, N, d] through the chosen backend.
inline at::Tensor scaled_dot_product(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                     AttentionBackend backend = AttentionBackend::kAuto) {
#if SIMMIM_TORCH_VERSION >= 200
  if (backend == AttentionBackend::kAuto) return at::scaled_dot_product_attention(q, k, v);
#endif
  return attention_math(q, k, v);
}

inline const char* to_string(AttentionBackend backend) { return backend == AttentionBackend::kAuto ? "auto" : "math"; }

struct AttentionOptions {
  AttentionOptions(int64_t dim = 768, int64_t num_heads = 12) : dim_(dim), num_heads_(num_heads) {}
  // Token width D (a multiple of num_heads).
  TORCH_ARG(int64_t, dim);
  // Heads H; each has D / H channels.
  TORCH_ARG(int64_t, num_heads);
  // Bias on the fused qkv projection (ViT and MAE use one).
  TORCH_ARG(bool, qkv_bias) = true;
  // Kernel choice; kMath forces the exact path.
  TORCH_ARG(AttentionBackend, backend) = AttentionBackend::kAuto;
};

// Parameters: "qkv" Linear(D, 3D) and "proj" Linear(D, D), timm's names.
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  explicit AttentionImpl(AttentionOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::Attention";
    SIMMIM_CHECK_VALUE(options.num_heads() > 0, api, "num_heads", "positive", options.num_heads());
    SIMMIM_CHECK_ENUM(options.backend(), 2, "AttentionBackend", api, "backend", "AttentionBackend::kAuto or kMath");
    SIMMIM_CHECK_VALUE(options.dim() > 0 && options.dim() % options.num_heads() == 0, api, "dim",
                       "a positive multiple of num_heads = " + std::to_string(options.num_heads()), options.dim());
    qkv = register_module(
        "qkv", torch::nn::Linear(torch::nn::LinearOptions(options.dim(), 3 * options.dim()).bias(options.qkv_bias())));
    proj = register_module("proj", torch::nn::Linear(options.dim(), options.dim()));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::Attention(dim=" << options.dim() << ", num_heads=" << options.num_heads()
       << ", backend=" << to_string(options.backend()) << ")";
  }

  // x [B, N, D] -> [B, N, D].
  at::Tensor forward(const at::Tensor& x) {
    const int64_t B = x.size(0), N = x.size(1), H = options.num_heads();
    const at::Tensor qkv_heads = qkv(x).reshape({B, N, 3, H, options.dim() / H}).permute({2, 0, 3, 1, 4});
    const at::Tensor out = scaled_dot_product(qkv_heads[0], qkv_heads[1], qkv_heads[2], options.backend());
    return proj(out.transpose(1, 2).reshape({B, N, options.dim()}));
  }

  AttentionOptions options;
  torch::nn::Linear qkv{nullptr};
  torch::nn::Linear proj{nullptr};
};

TORCH_MODULE(Attention);

SIMMIM_NAMESPACE_END
