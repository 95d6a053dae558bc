#pragma once
// y = x W^T + b for a torch::nn::Linear, through at::linear (what Python's nn.Linear runs). LibTorch
// 1.13's C++ Linear::forward computes x.matmul(W.t()) and then adds the bias in a second op for inputs of
// more than two dimensions; at::linear folds [..., in] to two dimensions and runs one addmm, and its
// backward is addmm's. Our blocks call this instead of the module's forward (torch 2.x's C++ Linear
// already calls at::linear, so there it changes nothing).

#include <ATen/ATen.h>
#include <torch/nn/modules/linear.h>

#include "simmim/core/abi.hpp"

SIMMIM_NAMESPACE_BEGIN

inline at::Tensor linear_forward(const torch::nn::Linear& layer, const at::Tensor& x) {
  return at::linear(x, layer->weight, layer->bias);
}

SIMMIM_NAMESPACE_END
