#pragma once
// Per-step cosine learning-rate schedule with linear warmup (SimMIM / MAE / timm's CosineLRScheduler with
// t_in_epochs=False), applied to every optimizer group as base_lr * group scale, and SimMIM's linear
// batch-size scaling rule lr = base * batch / 512.

#include <torch/arg.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

// SimMIM's rule: lr = base_lr * total_batch / reference (reference 512). Apply it to the peak, warmup and
// minimum lrs alike, as SimMIM's main does.
inline double linear_scaled_lr(double base_lr, int64_t total_batch, int64_t reference_batch = 512) {
  constexpr const char* api = "simmim::linear_scaled_lr";
  SIMMIM_CHECK_VALUE(total_batch > 0, api, "total_batch", "positive", total_batch);
  SIMMIM_CHECK_VALUE(reference_batch > 0, api, "reference_batch", "positive", reference_batch);
  return base_lr * static_cast<double>(total_batch) / static_cast<double>(reference_batch);
}

struct CosineScheduleOptions {
  TORCH_ARG(double, base_lr) = 1e-3;        // peak lr, reached at the end of warmup
  TORCH_ARG(double, min_lr) = 0.0;          // lr at total_steps and after
  TORCH_ARG(double, warmup_init_lr) = 0.0;  // lr at step 0 when warmup_steps > 0
  TORCH_ARG(int64_t, warmup_steps) = 0;
  TORCH_ARG(int64_t, total_steps) = 1;
};

// The lr for `step` (0-based): linear from warmup_init_lr to base_lr over warmup_steps, then a half cosine
// down to min_lr at total_steps; min_lr after.
inline double cosine_lr(const CosineScheduleOptions& o, int64_t step) {
  if (step < o.warmup_steps())
    return o.warmup_init_lr() +
           (o.base_lr() - o.warmup_init_lr()) * static_cast<double>(step) / static_cast<double>(o.warmup_steps());
  const int64_t span = o.total_steps() - o.warmup_steps();
  if (step >= o.total_steps() || span <= 0) return o.min_lr();
  const double t = static_cast<double>(step - o.warmup_steps()) / static_cast<double>(span);
  return o.min_lr() + 0.5 * (o.base_lr() - o.min_lr()) * (1.0 + std::cos(3.14159265358979323846 * t));
}

// Sets each group's lr to cosine_lr(step) * scale once per optimizer step. Holds the optimizer by
// reference (like torch::optim::LRScheduler): the optimizer must outlive the schedule.
class WarmupCosineSchedule {
 public:
  // `lr_scales`: one per optimizer group (ParamGroups::lr_scales); empty means 1 for every group.
  WarmupCosineSchedule(torch::optim::Optimizer& optimizer, CosineScheduleOptions options,
                       std::vector<double> lr_scales = {})
      : optimizer_(optimizer), options_(std::move(options)), scales_(std::move(lr_scales)) {
    constexpr const char* api = "simmim::WarmupCosineSchedule";
    SIMMIM_CHECK_VALUE(options_.total_steps() > 0, api, "options.total_steps", "positive",
                       options_.total_steps());
    SIMMIM_CHECK_VALUE(options_.warmup_steps() >= 0 && options_.warmup_steps() <= options_.total_steps(), api,
                       "options.warmup_steps", "in [0, total_steps = " + std::to_string(options_.total_steps()) + "]",
                       options_.warmup_steps());
    SIMMIM_CHECK_VALUE(options_.base_lr() >= 0.0 && options_.min_lr() >= 0.0 && options_.warmup_init_lr() >= 0.0,
                       api, "options", "non-negative lrs",
                       c10::str("base ", options_.base_lr(), ", min ", options_.min_lr(), ", warmup init ",
                                options_.warmup_init_lr()));
    if (scales_.empty()) scales_.assign(optimizer_.param_groups().size(), 1.0);
    SIMMIM_CHECK(scales_.size() == optimizer_.param_groups().size(), api, "lr_scales",
                 "one scale per optimizer group (" + std::to_string(optimizer_.param_groups().size()) + ")",
                 scales_.size());
    apply(0);
  }

  // Sets the lrs of the current step (call before optimizer.step()), then advances. Returns the base lr
  // used (before group scales).
  double step() {
    const double lr = apply(step_);
    ++step_;
    return lr;
  }

  // Sets the lrs of `step` without moving the counter; returns the base lr.
  double apply(int64_t step) {
    const double lr = cosine_lr(options_, step);
    auto& groups = optimizer_.param_groups();
    for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lr * scales_[i]);
    return lr;
  }

  double lr_at(int64_t step) const { return cosine_lr(options_, step); }
  int64_t step_count() const { return step_; }
  const CosineScheduleOptions& options() const { return options_; }
  const std::vector<double>& lr_scales() const { return scales_; }

  void save(torch::serialize::OutputArchive& archive) const {
    archive.write("step", c10::IValue(step_));
    archive.write("base_lr", c10::IValue(options_.base_lr()));
    archive.write("min_lr", c10::IValue(options_.min_lr()));
    archive.write("warmup_init_lr", c10::IValue(options_.warmup_init_lr()));
    archive.write("warmup_steps", c10::IValue(options_.warmup_steps()));
    archive.write("total_steps", c10::IValue(options_.total_steps()));
  }

  // Restores the counter and the options a run was started with (a resumed run keeps its schedule).
  void load(torch::serialize::InputArchive& archive) {
    c10::IValue v;
    archive.read("step", v);
    step_ = v.toInt();
    archive.read("base_lr", v);
    options_.base_lr(v.toDouble());
    archive.read("min_lr", v);
    options_.min_lr(v.toDouble());
    archive.read("warmup_init_lr", v);
    options_.warmup_init_lr(v.toDouble());
    archive.read("warmup_steps", v);
    options_.warmup_steps(v.toInt());
    archive.read("total_steps", v);
    options_.total_steps(v.toInt());
    apply(step_);
  }

 private:
  torch::optim::Optimizer& optimizer_;
  CosineScheduleOptions options_;
  std::vector<double> scales_;
  int64_t step_ = 0;
};

SIMMIM_NAMESPACE_END
