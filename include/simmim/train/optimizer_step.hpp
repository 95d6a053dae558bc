#pragma once
// One optimizer step of a masked-image-modeling trainer, the part every trainer repeats: zero the
// gradients, back-propagate the (scaled) loss, average gradients across ranks when data-parallel, unscale,
// clip, step (skipped on inf / nan gradients under fp16 loss scaling), update the scale. Returns what a
// log wants to know. The forward pass (under an AutocastGuard) stays the caller's.

#include <torch/optim/optimizer.h>

#include <cmath>
#include <functional>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/train/grad_clip.hpp"
#include "simmim/train/loss_scaler.hpp"

SIMMIM_NAMESPACE_BEGIN

struct StepStats {
  double grad_norm = NAN;   // before clipping; NaN when not clipping
  double loss_scale = 1.0;  // the loss scale this step used (1 without scaling)
  bool skipped = false;     // the optimizer did not step (inf / nan gradients under loss scaling)
};

class OptimizerStep {
 public:
  // Called between backward and unscaling with every parameter the optimizer steps: a data-parallel
  // trainer averages the gradients there (distributed/gradient_averager.hpp).
  using GradientHook = std::function<void(const std::vector<at::Tensor>& params)>;

  // Borrowed: the optimizer and the scaler must outlive the step. clip_grad 0: no clipping.
  OptimizerStep(torch::optim::Optimizer& optimizer, LossScaler& scaler, double clip_grad = 0.0,
                GradientHook after_backward = {})
      : optimizer_(optimizer), scaler_(scaler), clip_grad_(clip_grad), after_backward_(std::move(after_backward)) {
    SIMMIM_CHECK_VALUE(clip_grad >= 0, "simmim::OptimizerStep", "clip_grad", "non-negative (0: no clipping)",
                       clip_grad);
  }

  StepStats operator()(const at::Tensor& loss) {
    SIMMIM_CHECK(loss.defined() && loss.numel() == 1 && loss.requires_grad(), "simmim::OptimizerStep", "loss",
                 "a scalar that requires grad", describe(loss));
    StepStats stats;
    stats.loss_scale = scaler_.get_scale();
    optimizer_.zero_grad();
    scaler_.scale(loss).backward();
    if (after_backward_) after_backward_(optimizer_params(optimizer_));
    scaler_.unscale_(optimizer_);
    if (clip_grad_ > 0) stats.grad_norm = clip_grad_norm(optimizer_, clip_grad_);
    stats.skipped = !scaler_.step(optimizer_);
    scaler_.update();
    return stats;
  }

 private:
  torch::optim::Optimizer& optimizer_;
  LossScaler& scaler_;
  double clip_grad_;
  GradientHook after_backward_;
};

SIMMIM_NAMESPACE_END
