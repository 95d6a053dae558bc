#pragma once
// The pre-norm transformer block shared by the ViT encoder and the MAE decoder:
// x + DropPath(LayerScale(Attn(LN(x)))), then x + DropPath(LayerScale(MLP(LN(x)))). Its parts (Mlp,
// LayerScale) and the two weight-init schemes of the references live here too.

#include <torch/nn/cloneable.h>
#include <torch/nn/init.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <ostream>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/init.hpp"
#include "simmim/core/linear.hpp"
#include "simmim/encoder/attention.hpp"
#include "simmim/encoder/drop_path.hpp"

SIMMIM_NAMESPACE_BEGIN

// Two-layer MLP with GELU (exact erf form, as timm). Parameters "fc1", "fc2".
struct MlpOptions {
  MlpOptions(int64_t dim = 768, int64_t hidden_dim = 3072) : dim_(dim), hidden_dim_(hidden_dim) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(int64_t, hidden_dim);
};

class MlpImpl : public torch::nn::Cloneable<MlpImpl> {
 public:
  explicit MlpImpl(MlpOptions options_ = {}) : options(std::move(options_)) { reset(); }
  void reset() override {
    SIMMIM_CHECK_VALUE(options.dim() > 0, "simmim::Mlp", "dim", "positive", options.dim());
    SIMMIM_CHECK_VALUE(options.hidden_dim() > 0, "simmim::Mlp", "hidden_dim", "positive", options.hidden_dim());
    fc1 = register_module("fc1", torch::nn::Linear(options.dim(), options.hidden_dim()));
    fc2 = register_module("fc2", torch::nn::Linear(options.hidden_dim(), options.dim()));
  }
  void pretty_print(std::ostream& os) const override {
    os << "simmim::Mlp(dim=" << options.dim() << ", hidden_dim=" << options.hidden_dim() << ")";
  }
  at::Tensor forward(const at::Tensor& x) { return linear_forward(fc2, at::gelu(linear_forward(fc1, x))); }

  MlpOptions options;
  torch::nn::Linear fc1{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Mlp);

// Per-channel residual scaling (CaiT / BEiT): x * gamma, gamma [D] initialised to init_value.
struct LayerScaleOptions {
  LayerScaleOptions(int64_t dim = 768, double init_value = 1e-5) : dim_(dim), init_value_(init_value) {}
  TORCH_ARG(int64_t, dim);
  TORCH_ARG(double, init_value);
};

class LayerScaleImpl : public torch::nn::Cloneable<LayerScaleImpl> {
 public:
  explicit LayerScaleImpl(LayerScaleOptions options_ = {}) : options(std::move(options_)) { reset(); }
  void reset() override {
    SIMMIM_CHECK_VALUE(options.dim() > 0, "simmim::LayerScale", "dim", "positive", options.dim());
    gamma = register_parameter("gamma", at::full({options.dim()}, options.init_value()));
  }
  void pretty_print(std::ostream& os) const override {
    os << "simmim::LayerScale(dim=" << options.dim() << ", init_value=" << options.init_value() << ")";
  }
  at::Tensor forward(const at::Tensor& x) { return x * gamma; }

  LayerScaleOptions options;
  at::Tensor gamma;
};
TORCH_MODULE(LayerScale);

struct TransformerBlockOptions {
  TransformerBlockOptions(int64_t dim = 768, int64_t num_heads = 12) : dim_(dim), num_heads_(num_heads) {}
  // Token width D.
  TORCH_ARG(int64_t, dim);
  // Attention heads.
  TORCH_ARG(int64_t, num_heads);
  // MLP hidden width = int(dim * mlp_ratio).
  TORCH_ARG(double, mlp_ratio) = 4.0;
  // Bias on the qkv projection.
  TORCH_ARG(bool, qkv_bias) = true;
  // With qkv_bias: a key bias too (false: BEiT's "q_bias" / "v_bias"; AttentionOptions::key_bias).
  TORCH_ARG(bool, key_bias) = true;
  // This block's own relative position bias over this patch grid (AttentionOptions::rel_pos_grid).
  TORCH_ARG(c10::optional<Size2d>, rel_pos_grid) = c10::nullopt;
  // With rel_pos_grid: the tokens start with a CLS token.
  TORCH_ARG(bool, rel_pos_cls_token) = true;
  // Stochastic-depth probability of both residual branches.
  TORCH_ARG(double, drop_path) = 0.0;
  // LayerScale initial value; 0 disables LayerScale (no "ls1"/"ls2" submodules).
  TORCH_ARG(double, layer_scale_init) = 0.0;
  // LayerNorm epsilon (1e-6 in SimMIM and MAE).
  TORCH_ARG(double, norm_eps) = 1e-6;
  // Attention kernel.
  TORCH_ARG(AttentionBackend, attention) = AttentionBackend::kAuto;
  // Generator of the DropPath draws (global default when unset).
  TORCH_ARG(c10::optional<at::Generator>, generator) = c10::nullopt;
};

// Submodules "norm1", "attn", "ls1", "norm2", "mlp", "ls2" (timm's names); DropPath holds no parameters.
class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
 public:
  explicit TransformerBlockImpl(TransformerBlockOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::TransformerBlock";
    SIMMIM_CHECK_VALUE(options.mlp_ratio() > 0, api, "mlp_ratio", "positive", options.mlp_ratio());
    SIMMIM_CHECK_VALUE(options.layer_scale_init() >= 0, api, "layer_scale_init", ">= 0 (0 disables it)",
                       options.layer_scale_init());
    const auto ln = [&] {
      return torch::nn::LayerNorm(torch::nn::LayerNormOptions({options.dim()}).eps(options.norm_eps()));
    };
    norm1 = register_module("norm1", ln());
    attn = register_module("attn", Attention(AttentionOptions(options.dim(), options.num_heads())
                                                 .qkv_bias(options.qkv_bias())
                                                 .key_bias(options.key_bias())
                                                 .rel_pos_grid(options.rel_pos_grid())
                                                 .rel_pos_cls_token(options.rel_pos_cls_token())
                                                 .backend(options.attention())));
    norm2 = register_module("norm2", ln());
    const auto hidden =
        static_cast<int64_t>(static_cast<double>(options.dim()) * options.mlp_ratio());  // int() as timm
    mlp = register_module("mlp", Mlp(MlpOptions(options.dim(), hidden)));
    if (options.layer_scale_init() > 0) {
      ls1 = register_module("ls1", LayerScale(LayerScaleOptions(options.dim(), options.layer_scale_init())));
      ls2 = register_module("ls2", LayerScale(LayerScaleOptions(options.dim(), options.layer_scale_init())));
    } else {
      ls1 = nullptr;
      ls2 = nullptr;
    }
    drop_path =
        register_module("drop_path", DropPath(DropPathOptions(options.drop_path()).generator(options.generator())));
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::TransformerBlock(dim=" << options.dim() << ", num_heads=" << options.num_heads()
       << ", mlp_ratio=" << options.mlp_ratio() << ", drop_path=" << options.drop_path()
       << ", layer_scale_init=" << options.layer_scale_init() << ")";
  }

  // x [B, N, D] -> [B, N, D]; attn_bias: an additive attention-logit bias (a shared relative position
  // bias [H, N, N]; Attention::forward).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& attn_bias = {}) {
    at::Tensor a = attn->forward(norm1(x), attn_bias);
    if (!ls1.is_empty()) a = ls1(a);
    at::Tensor y = x + drop_path(a);
    at::Tensor m = mlp(norm2(y));
    if (!ls2.is_empty()) m = ls2(m);
    return y + drop_path(m);
  }

  TransformerBlockOptions options;
  torch::nn::LayerNorm norm1{nullptr};
  Attention attn{nullptr};
  LayerScale ls1{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
  Mlp mlp{nullptr};
  LayerScale ls2{nullptr};
  DropPath drop_path{nullptr};
};
TORCH_MODULE(TransformerBlock);

// The weight initializations of the three originals, by name. What each does to the ViT's tokens (CLS,
// learned positions, mask token) is applied by VisionTransformer; init_transformer_weights below covers the
// Linear, LayerNorm and Conv2d modules.
enum class WeightInit {
  // timm's VisionTransformer: Linear weights trunc-normal std 0.02 with timm's absolute bounds +-2 (no cut
  // in practice), biases 0; learned positions trunc-normal 0.02; CLS token N(0, 1e-6); the patch conv keeps
  // LibTorch's default.
  kTimm,
  // MAE (models_mae.py): Linear weights and the patch conv (as a [D, C*p*p] matrix) xavier-uniform, biases
  // 0; CLS and mask tokens N(0, 0.02); fixed sin-cos positions (MAEOptions sets them).
  kMAE,
  // The official SimMIM ViT (models/vision_transformer.py with its trunc_normal_ override): every Linear and
  // Conv2d weight, the CLS token, learned positions and the mask token trunc-normal std 0.02 cut at +-0.02
  // (one standard deviation); biases 0; then block i's attn.proj and mlp.fc2 weights divided by sqrt(2 (i+1)).
  kSimMIM,
};

inline const char* to_string(WeightInit w) {
  switch (w) {
    case WeightInit::kTimm: return "timm";
    case WeightInit::kMAE: return "mae";
    case WeightInit::kSimMIM: return "simmim";
  }
  return "?";
}

// "timm", "mae" or "simmim".
inline WeightInit weight_init_from_name(const std::string& name) {
  for (WeightInit w : {WeightInit::kTimm, WeightInit::kMAE, WeightInit::kSimMIM}) {
    if (name == to_string(w)) return w;
  }
  SIMMIM_CHECK_VALUE(false, "simmim::weight_init_from_name", "name", "one of timm, mae, simmim", "'" + name + "'");
  return WeightInit::kTimm;  // unreachable
}

// Applies a scheme to every Linear, LayerNorm and Conv2d below `module` (not `module` itself): weights as the
// scheme says, biases 0, LayerNorm weight 1. Uses the global generator, like LibTorch's own module init
// (torch::manual_seed makes it reproducible). SimMIM's per-block rescaling is VisionTransformer's.
inline void init_transformer_weights(torch::nn::Module& module, WeightInit scheme) {
  SIMMIM_CHECK_ENUM(scheme, 3, "WeightInit", "simmim::init_transformer_weights", "scheme",
                    "WeightInit::kTimm, kMAE or kSimMIM");
  torch::NoGradGuard no_grad;
  for (auto& child : module.modules(/*include_self=*/false)) {  // self is not in a shared_ptr during reset()
    if (auto* linear = child->as<torch::nn::Linear>()) {
      switch (scheme) {
        case WeightInit::kTimm: trunc_normal_(linear->weight, 0.0, 0.02); break;
        case WeightInit::kMAE: torch::nn::init::xavier_uniform_(linear->weight); break;
        case WeightInit::kSimMIM: trunc_normal_(linear->weight, 0.0, 0.02, -0.02, 0.02); break;
      }
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* ln = child->as<torch::nn::LayerNorm>()) {
      if (ln->weight.defined()) ln->weight.fill_(1.0);
      if (ln->bias.defined()) ln->bias.zero_();
    } else if (auto* conv = child->as<torch::nn::Conv2d>()) {
      if (scheme == WeightInit::kMAE) {
        torch::nn::init::xavier_uniform_(conv->weight.view({conv->weight.size(0), -1}));
      } else if (scheme == WeightInit::kSimMIM) {
        trunc_normal_(conv->weight, 0.0, 0.02, -0.02, 0.02);
        if (conv->bias.defined()) conv->bias.zero_();
      }
    }
  }
}

SIMMIM_NAMESPACE_END
