#pragma once
// AdamW parameter groups for masked-image-modeling recipes: no weight decay for 1-D parameters, biases
// and tokens (SimMIM / MAE / BEiT), and layer-wise learning-rate decay for fine-tuning. Each group keeps
// an lr scale so a schedule can set lr = base_lr * scale on every step (see lr_schedule.hpp).

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/optim/adamw.h>
#include <torch/ordered_dict.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ParamGroupOptions {
  // The AdamW settings every group starts from; weight_decay is what decayed groups get. SimMIM's recipe:
  // betas (0.9, 0.999), eps 1e-8, weight decay 0.05.
  TORCH_ARG(torch::optim::AdamWOptions, adamw) =
      torch::optim::AdamWOptions(1e-3).betas({0.9, 0.999}).eps(1e-8).weight_decay(0.05);
  // A parameter whose name contains one of these gets no weight decay (besides every 1-D parameter and
  // every "*.bias"). Tokens and position embeddings (absolute and relative) are learned offsets: decaying
  // them toward 0 only hurts (SimMIM's and BEiT's skip lists name the same).
  TORCH_ARG(std::vector<std::string>, no_decay_names) =
      std::vector<std::string>{"mask_token", "pos_embed", "cls_token", "relative_position_bias_table"};
  // Layer-wise lr decay (BEiT / SimMIM fine-tuning): scale = layer_decay^(L + 1 - layer_id). 1 = off.
  TORCH_ARG(double, layer_decay) = 1.0;
  // L, the number of transformer blocks; -1 infers it as 1 + the largest "blocks.<i>." index.
  TORCH_ARG(int64_t, num_layers) = -1;
  // Names containing one of these are layer 0 (the stem): patch embedding, position embedding, CLS.
  TORCH_ARG(std::vector<std::string>, layer0_names) =
      std::vector<std::string>{"patch_embed", "pos_embed", "cls_token", "mask_token"};
  // Block parameters are found by this component: "<prefix>.<i>." anywhere in the name -> layer i + 1.
  TORCH_ARG(std::string, blocks_name) = "blocks";
};

// Groups ready for torch::optim::AdamW, plus what the schedule and logs need about each.
struct ParamGroups {
  std::vector<torch::optim::OptimizerParamGroup> groups;  // options: AdamWOptions
  std::vector<double> lr_scales;                          // one per group
  std::vector<std::string> labels;                        // "layer3/decay", "layer0/no_decay", ...
  std::vector<std::vector<std::string>> names;            // parameter names per group
  int64_t num_layers = 0;                                 // L used for the layer ids

  size_t size() const { return groups.size(); }
};

namespace detail {

inline bool name_has_any(const std::string& name, const std::vector<std::string>& parts) {
  return std::any_of(parts.begin(), parts.end(),
                     [&](const std::string& p) { return !p.empty() && name.find(p) != std::string::npos; });
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The block index i of "...<blocks>.<i>...." (the component must start the name or follow a '.'), or -1.
inline int64_t block_index(const std::string& name, const std::string& blocks) {
  const std::string key = blocks + ".";
  for (size_t pos = name.find(key); pos != std::string::npos; pos = name.find(key, pos + 1)) {
    if (pos != 0 && name[pos - 1] != '.') continue;
    size_t i = pos + key.size(), j = i;
    while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
    if (j > i && j < name.size() && name[j] == '.') return std::stoll(name.substr(i, j - i));
  }
  return -1;
}

}  // namespace detail

// Whether a parameter should be excluded from weight decay.
inline bool is_no_decay_param(const std::string& name, const at::Tensor& param,
                              const ParamGroupOptions& options = {}) {
  return param.dim() <= 1 || detail::ends_with(name, ".bias") || name == "bias" ||
         detail::name_has_any(name, options.no_decay_names());
}

// The layer id for layer-wise lr decay: 0 for the stem, i + 1 for blocks.<i>, num_layers + 1 otherwise
// (final norm, heads).
inline int64_t param_layer_id(const std::string& name, int64_t num_layers, const ParamGroupOptions& options = {}) {
  if (detail::name_has_any(name, options.layer0_names())) return 0;
  const int64_t b = detail::block_index(name, options.blocks_name());
  if (b >= 0) return b + 1;
  return num_layers + 1;
}

// Splits the trainable parameters (requires_grad) of `named` into groups. Groups come in a fixed order
// (layer id, then decay before no-decay) so an optimizer built twice from the same model matches a
// checkpoint's state.
inline ParamGroups make_param_groups(const torch::OrderedDict<std::string, at::Tensor>& named,
                                     const ParamGroupOptions& options = {}) {
  constexpr const char* api = "simmim::make_param_groups";
  SIMMIM_CHECK_VALUE(options.layer_decay() > 0.0 && options.layer_decay() <= 1.0, api, "options.layer_decay",
                     "in (0, 1]", options.layer_decay());
  SIMMIM_CHECK_VALUE(options.adamw().weight_decay() >= 0.0, api, "options.adamw.weight_decay", "non-negative",
                     options.adamw().weight_decay());
  SIMMIM_CHECK_VALUE(options.num_layers() >= -1, api, "options.num_layers", "-1 (infer) or >= 0",
                     options.num_layers());
  const bool layerwise = options.layer_decay() != 1.0;
  int64_t L = options.num_layers();
  if (L < 0) {
    L = 0;
    for (const auto& item : named) L = std::max(L, detail::block_index(item.key(), options.blocks_name()) + 1);
  }

  struct Pending {
    std::vector<at::Tensor> params;
    std::vector<std::string> names;
  };
  std::map<std::pair<int64_t, int>, Pending> pending;  // (layer, no_decay) -> members, ordered
  for (const auto& item : named) {
    const at::Tensor& p = item.value();
    if (!p.defined() || !p.requires_grad()) continue;
    const int64_t layer = layerwise ? param_layer_id(item.key(), L, options) : 0;
    if (layerwise && layer != 0) {
      const int64_t block = detail::block_index(item.key(), options.blocks_name());
      SIMMIM_CHECK_VALUE(block < L, api, "options.num_layers",
                         "at least the number of blocks (parameter " + item.key() + " is in block " +
                             std::to_string(block) + ")",
                         L);
    }
    const int no_decay = is_no_decay_param(item.key(), p, options) ? 1 : 0;
    auto& g = pending[{layer, no_decay}];
    g.params.push_back(p);
    g.names.push_back(item.key());
  }

  ParamGroups out;
  out.num_layers = L;
  for (auto& kv : pending) {
    const int64_t layer = kv.first.first;
    const bool no_decay = kv.first.second == 1;
    auto opts = std::make_unique<torch::optim::AdamWOptions>(options.adamw());
    if (no_decay) opts->weight_decay(0.0);
    const double scale = layerwise ? std::pow(options.layer_decay(), static_cast<double>(L + 1 - layer)) : 1.0;
    opts->lr(options.adamw().lr() * scale);
    out.groups.emplace_back(std::move(kv.second.params), std::move(opts));
    out.lr_scales.push_back(scale);
    out.labels.push_back((layerwise ? "layer" + std::to_string(layer) + "/" : std::string()) +
                         (no_decay ? "no_decay" : "decay"));
    out.names.push_back(std::move(kv.second.names));
  }
  SIMMIM_CHECK(!out.groups.empty(), api, "the module", "at least one trainable parameter", "none");
  return out;
}

inline ParamGroups make_param_groups(const torch::nn::Module& module, const ParamGroupOptions& options = {}) {
  return make_param_groups(module.named_parameters(/*recurse=*/true), options);
}

SIMMIM_NAMESPACE_END
