#pragma once
// Gradient-norm clipping for a module or an optimizer (SimMIM clips at 5.0). A thin, checked wrapper over
// torch::nn::utils::clip_grad_norm_ that returns the total norm before clipping, for logging.

#include <torch/nn/module.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>

#include <vector>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

// Scales the gradients of `params` in place so their total `norm_type` norm is at most max_norm.
// Returns the norm before clipping (inf / nan when a gradient is not finite; nothing is then rescaled
// sensibly, so callers with a loss scaler unscale and skip first).
inline double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm, double norm_type = 2.0) {
  constexpr const char* api = "simmim::clip_grad_norm";
  SIMMIM_CHECK_VALUE(max_norm > 0.0, api, "max_norm", "positive", max_norm);
  SIMMIM_CHECK_VALUE(norm_type > 0.0, api, "norm_type", "positive (or inf)", norm_type);
  return torch::nn::utils::clip_grad_norm_(params, max_norm, norm_type);
}

inline double clip_grad_norm(const torch::nn::Module& module, double max_norm, double norm_type = 2.0) {
  return clip_grad_norm(module.parameters(), max_norm, norm_type);
}

// Every parameter of every group: what an optimizer steps on.
inline std::vector<at::Tensor> optimizer_params(const torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (const auto& g : optimizer.param_groups()) out.insert(out.end(), g.params().begin(), g.params().end());
  return out;
}

inline double clip_grad_norm(const torch::optim::Optimizer& optimizer, double max_norm, double norm_type = 2.0) {
  return clip_grad_norm(optimizer_params(optimizer), max_norm, norm_type);
}

SIMMIM_NAMESPACE_END
