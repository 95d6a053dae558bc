#pragma once
// The optimization recipes of the originals as values: AdamW's betas, eps and weight decay, gradient
// clipping, the linear learning-rate scaling rule and the schedule's shape. SimMIM: betas (0.9, 0.999),
// wd 0.05, clip 5, lr = base x batch / 512. MAE: betas (0.9, 0.95), wd 0.05, no clip, lr = base x batch /
// 256. A user's own recipe is the same struct with other values.

#include <torch/arg.h>
#include <torch/optim/adamw.h>

#include <cstdint>
#include <sstream>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/train/lr_schedule.hpp"

SIMMIM_NAMESPACE_BEGIN

struct PretrainRecipe {
  // A name for logs and checkpoints ("simmim", "mae", or yours).
  TORCH_ARG(std::string, name) = "simmim";
  TORCH_ARG(double, beta1) = 0.9;
  TORCH_ARG(double, beta2) = 0.999;
  TORCH_ARG(double, eps) = 1e-8;
  // Applied to every parameter but 1-D ones, biases, tokens and positions (make_param_groups).
  TORCH_ARG(double, weight_decay) = 0.05;
  // Gradient-norm clip; 0: none.
  TORCH_ARG(double, clip_grad) = 5.0;
  // lr = base_lr * total batch / lr_reference_batch.
  TORCH_ARG(int64_t, lr_reference_batch) = 512;
  // Linear warmup over this fraction of the steps (5%; the originals count warmup in epochs), then a half
  // cosine down to min_lr_ratio * lr.
  TORCH_ARG(double, warmup_fraction) = 0.05;
  TORCH_ARG(double, min_lr_ratio) = 0.01;

 public:  // TORCH_ARG leaves the access at private
  static PretrainRecipe simmim() { return PretrainRecipe(); }
  static PretrainRecipe mae() {
    return PretrainRecipe().name("mae").beta2(0.95).clip_grad(0.0).lr_reference_batch(256).min_lr_ratio(0.0);
  }

  // The peak learning rate for a total batch (all ranks together).
  double lr(double base_lr, int64_t total_batch) const {
    return linear_scaled_lr(base_lr, total_batch, lr_reference_batch());
  }
  int64_t warmup_steps(int64_t total_steps) const {
    return static_cast<int64_t>(warmup_fraction() * static_cast<double>(total_steps));
  }
  torch::optim::AdamWOptions adamw(double lr) const {
    return torch::optim::AdamWOptions(lr).betas({beta1(), beta2()}).eps(eps()).weight_decay(weight_decay());
  }

  // Every value, in one line: what a checkpoint stores and a resumed run compares.
  std::string describe() const {
    std::ostringstream os;
    os << name() << " (betas " << beta1() << ", " << beta2() << "; eps " << eps() << "; weight decay "
       << weight_decay() << "; clip " << clip_grad() << "; lr per " << lr_reference_batch() << " images; warmup "
       << warmup_fraction() << "; min lr ratio " << min_lr_ratio() << ")";
    return os.str();
  }

  // Errors (naming `api`) on values no recipe can have.
  void check(const char* api) const {
    SIMMIM_CHECK_VALUE(beta1() >= 0 && beta1() < 1, api, "recipe.beta1", "in [0, 1)", beta1());
    SIMMIM_CHECK_VALUE(beta2() >= 0 && beta2() < 1, api, "recipe.beta2", "in [0, 1)", beta2());
    SIMMIM_CHECK_VALUE(eps() > 0, api, "recipe.eps", "positive", eps());
    SIMMIM_CHECK_VALUE(weight_decay() >= 0, api, "recipe.weight_decay", "non-negative", weight_decay());
    SIMMIM_CHECK_VALUE(clip_grad() >= 0, api, "recipe.clip_grad", "non-negative (0: no clipping)", clip_grad());
    SIMMIM_CHECK_VALUE(lr_reference_batch() > 0, api, "recipe.lr_reference_batch", "positive", lr_reference_batch());
    SIMMIM_CHECK_VALUE(warmup_fraction() >= 0 && warmup_fraction() <= 1, api, "recipe.warmup_fraction", "in [0, 1]",
                       warmup_fraction());
    SIMMIM_CHECK_VALUE(min_lr_ratio() >= 0 && min_lr_ratio() <= 1, api, "recipe.min_lr_ratio", "in [0, 1]",
                       min_lr_ratio());
  }
};

SIMMIM_NAMESPACE_END
