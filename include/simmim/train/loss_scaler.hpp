#pragma once
// Dynamic loss scaling for fp16 training (what torch.cuda.amp.GradScaler does): scale the loss so small
// gradients survive fp16, unscale before clipping, skip the optimizer step when a gradient overflowed,
// and grow / back off the scale. Plain tensor ops, so it runs (and is tested) on any device.

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <vector>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

struct LossScalerOptions {
  TORCH_ARG(double, init_scale) = 65536.0;  // 2^16, GradScaler's default
  TORCH_ARG(double, growth_factor) = 2.0;   // after growth_interval clean steps
  TORCH_ARG(double, backoff_factor) = 0.5;  // after a step with inf / nan gradients
  TORCH_ARG(int64_t, growth_interval) = 2000;
  TORCH_ARG(bool, enabled) = true;          // disabled: every method is the identity / a plain step
};

// Per step: scaler.scale(loss).backward(); scaler.unscale_(opt) (optional, before clipping);
// scaler.step(opt); scaler.update().
class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {}) : options_(options), scale_(options.init_scale()) {
    constexpr const char* api = "simmim::LossScaler";
    SIMMIM_CHECK_VALUE(options_.init_scale() > 0.0, api, "options.init_scale", "positive", options_.init_scale());
    SIMMIM_CHECK_VALUE(options_.growth_factor() > 1.0, api, "options.growth_factor", "> 1",
                       options_.growth_factor());
    SIMMIM_CHECK_VALUE(options_.backoff_factor() > 0.0 && options_.backoff_factor() < 1.0, api,
                       "options.backoff_factor", "in (0, 1)", options_.backoff_factor());
    SIMMIM_CHECK_VALUE(options_.growth_interval() > 0, api, "options.growth_interval", "positive",
                       options_.growth_interval());
  }

  bool enabled() const { return options_.enabled(); }
  double get_scale() const { return enabled() ? scale_ : 1.0; }
  int64_t growth_tracker() const { return growth_tracker_; }
  // Whether the last unscale_ found an inf / nan gradient.
  bool found_inf() const { return found_inf_; }

  at::Tensor scale(const at::Tensor& loss) const { return enabled() ? loss * scale_ : loss; }

  // Divides every gradient of `optimizer` by the scale, once per step, and records whether any is not
  // finite. Returns that flag. One device sync, at the end.
  bool unscale_(torch::optim::Optimizer& optimizer) {
    if (!enabled() || unscaled_) return found_inf_;
    const double inv = 1.0 / scale_;
    std::vector<at::Tensor> bad;
    for (auto& group : optimizer.param_groups()) {
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        at::Tensor g = p.mutable_grad();
        g.mul_(inv);
        bad.push_back(g.isfinite().logical_not().any());
      }
    }
    found_inf_ = !bad.empty() && at::stack(bad).any().item<bool>();
    unscaled_ = true;
    return found_inf_;
  }

  // Steps the optimizer unless a gradient is inf / nan. Returns whether it stepped.
  bool step(torch::optim::Optimizer& optimizer) {
    if (!enabled()) {
      optimizer.step();
      return true;
    }
    unscale_(optimizer);
    if (found_inf_) return false;
    optimizer.step();
    return true;
  }

  // Ends the step: backs the scale off after an overflow, grows it after growth_interval clean steps.
  void update() {
    if (!enabled()) return;
    TORCH_CHECK(unscaled_, "simmim::LossScaler::update: call step() (or unscale_()) first; got update() twice "
                           "or before any step");
    if (found_inf_) {
      scale_ *= options_.backoff_factor();
      growth_tracker_ = 0;
    } else if (++growth_tracker_ == options_.growth_interval()) {
      scale_ *= options_.growth_factor();
      growth_tracker_ = 0;
    }
    unscaled_ = false;
    found_inf_ = false;
  }

  void save(torch::serialize::OutputArchive& archive) const {
    archive.write("scale", c10::IValue(scale_));
    archive.write("growth_tracker", c10::IValue(growth_tracker_));
  }
  void load(torch::serialize::InputArchive& archive) {
    c10::IValue v;
    archive.read("scale", v);
    scale_ = v.toDouble();
    archive.read("growth_tracker", v);
    growth_tracker_ = v.toInt();
    unscaled_ = false;
    found_inf_ = false;
  }

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  bool unscaled_ = false;
  bool found_inf_ = false;
};

SIMMIM_NAMESPACE_END
