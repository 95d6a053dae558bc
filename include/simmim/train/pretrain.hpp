#pragma once
// The pretraining loop as a library piece: any pretraining model (forward(images, MaskBatch): SimMIM, MAE,
// yours), any mask strategy, any data split; AdamW groups and the warmup-cosine schedule of a recipe,
// autocast and loss scaling, a progress line, JSON-lines metrics, reconstruction grids, checkpoints that
// resume bit for bit (and refuse a run they cannot honour), stop-after; data parallel over a Collective
// (one process per device, distributed/). The examples 02 and 03 are flags plus one call to this.

#include <nlohmann/json.hpp>
#include <torch/optim/adamw.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"
#include "simmim/distributed/collective.hpp"
#include "simmim/masking/mask_generator.hpp"
#include "simmim/model/pretrain_output.hpp"
#include "simmim/train/autocast.hpp"
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/checkpoint.hpp"
#include "simmim/train/data_split.hpp"
#include "simmim/train/image_grid.hpp"
#include "simmim/train/loss_scaler.hpp"
#include "simmim/train/lr_schedule.hpp"
#include "simmim/train/metrics_log.hpp"
#include "simmim/train/optimizer_step.hpp"
#include "simmim/train/param_groups.hpp"
#include "simmim/train/progress_bar.hpp"
#include "simmim/train/recipe.hpp"

SIMMIM_NAMESPACE_BEGIN

struct PretrainOptions {
  TORCH_ARG(int64_t, steps) = 1000;
  // Images per step on each rank (the total batch is batch_size x world size).
  TORCH_ARG(int64_t, batch_size) = 128;
  // lr = recipe.lr(base_lr, total batch): per 512 images for SimMIM, per 256 for MAE.
  TORCH_ARG(double, base_lr) = 4e-3;
  TORCH_ARG(PretrainRecipe, recipe) = PretrainRecipe::simmim();
  // -1: recipe.warmup_fraction of the steps.
  TORCH_ARG(int64_t, warmup_steps) = -1;
  // Data order, masks, preview masks. (Initialization is the caller's: seed the model before building it.)
  TORCH_ARG(uint64_t, seed) = 0;
  // checkpoint.pt, metrics.jsonl, reconstruction*.png (rank 0 writes; every rank reads on resume).
  TORCH_ARG(std::string, out) = "out/pretrain";
  TORCH_ARG(int64_t, log_every) = 50;
  TORCH_ARG(int64_t, grid_every) = 0;  // 0: a grid at the end only
  TORCH_ARG(int64_t, ckpt_every) = 0;  // 0: a checkpoint at the end only
  // Continue from out/checkpoint.pt when it exists; every setting of the run must be the saved one's.
  TORCH_ARG(bool, resume) = false;
  // Save and stop after this many steps, as if killed there (0: run to `steps`).
  TORCH_ARG(int64_t, stop_after) = 0;
  TORCH_ARG(c10::Device, device) = c10::Device(c10::kCPU);
  TORCH_ARG(Precision, precision) = Precision::kFloat32;
  // Background batch-building threads (0: on the training thread).
  TORCH_ARG(int64_t, workers) = 1;
  // Names the run in the progress line and messages ("simmim", "mae").
  TORCH_ARG(std::string, label) = "pretrain";
  // What else shaped the run, stored with the checkpoint and compared on resume; "model" (a ModelSpec's
  // JSON) also lets load_pretrained_encoder rebuild the encoder from the file.
  TORCH_ARG(nlohmann::json, settings) = nlohmann::json::object();
  // The progress line (rank 0 only).
  TORCH_ARG(bool, progress) = true;
};

struct PretrainResult {
  int64_t start_step = 0;  // > 0 when resumed
  int64_t last_step = 0;   // the step the run ended after (== steps unless stopped)
  bool stopped = false;    // stop_after ended it
  double loss_ema = NAN;   // the smoothed loss, continued across resumes
  double seconds = 0;
  double images_per_s = 0;  // all ranks together
  std::string checkpoint;

  nlohmann::json to_json() const {
    return {{"final_loss_ema", loss_ema}, {"steps", last_step},          {"seconds", seconds},
            {"images_per_s", images_per_s}, {"checkpoint", checkpoint}, {"stopped", stopped}};
  }
};

namespace detail {

// The settings of this run against the ones a checkpoint was saved with: any difference is an error
// naming the setting and both values.
inline void check_resume_settings(const nlohmann::json& saved, const nlohmann::json& now, const std::string& path) {
  constexpr const char* api = "simmim::pretrain";
  SIMMIM_CHECK(saved.is_object(), api, "the checkpoint to resume", "one written by simmim::pretrain (with its settings)",
               "'" + path + "' without them");
  for (const auto& item : now.items()) {
    TORCH_CHECK_VALUE(saved.contains(item.key()), api, ": cannot resume from '", path, "': it does not record setting '",
                      item.key(), "' (this run: ", item.value().dump(), ")");
    TORCH_CHECK_VALUE(saved.at(item.key()) == item.value(), api, ": cannot resume from '", path, "': setting '",
                      item.key(), "' differs: the checkpoint's run has ", saved.at(item.key()).dump(), ", this run has ",
                      item.value().dump());
  }
  for (const auto& item : saved.items()) {
    TORCH_CHECK_VALUE(now.contains(item.key()), api, ": cannot resume from '", path, "': its run has setting '",
                      item.key(), "' = ", item.value().dump(), ", which this run does not set");
  }
}

// Rows [begin, begin + n) of a MaskBatch.
inline MaskBatch slice_masks(const MaskBatch& m, int64_t begin, int64_t n) {
  MaskBatch out(m.mask.narrow(0, begin, n));
  if (m.has_ids()) {
    out.ids_keep = m.ids_keep.narrow(0, begin, n);
    out.ids_restore = m.ids_restore.narrow(0, begin, n);
  }
  return out;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace detail

// Pretrains `model` (a ModuleHolder whose forward(images, MaskBatch) returns a PretrainOutput) on `data`
// with masks from `masks`. With `dist` (one process per device), the ranks start from rank 0's weights,
// see disjoint shards of each global batch (N ranks with batch b see exactly the images one process with
// batch N x b sees), draw the masks that process would draw for their rows, and average gradients.
template <typename Model>
PretrainResult pretrain(Model& model, const MaskGenerator& masks, const DataSplit& data, const PretrainOptions& o,
                        std::shared_ptr<Collective> dist = nullptr, std::ostream& log = std::cout) {
  namespace fs = std::filesystem;
  constexpr const char* api = "simmim::pretrain";
  SIMMIM_CHECK_VALUE(o.steps() > 0, api, "options.steps", "positive", o.steps());
  SIMMIM_CHECK_VALUE(o.batch_size() > 0, api, "options.batch_size", "positive", o.batch_size());
  SIMMIM_CHECK_VALUE(std::isfinite(o.base_lr()) && o.base_lr() > 0, api, "options.base_lr", "positive and finite",
                     o.base_lr());
  SIMMIM_CHECK_VALUE(o.warmup_steps() >= -1 && o.warmup_steps() <= o.steps(), api, "options.warmup_steps",
                     "in [0, steps = " + std::to_string(o.steps()) + "], or -1 for the recipe's", o.warmup_steps());
  SIMMIM_CHECK_VALUE(o.log_every() > 0, api, "options.log_every", "positive", o.log_every());
  SIMMIM_CHECK_VALUE(o.grid_every() >= 0, api, "options.grid_every", "non-negative (0: at the end only)",
                     o.grid_every());
  SIMMIM_CHECK_VALUE(o.ckpt_every() >= 0, api, "options.ckpt_every", "non-negative (0: at the end only)",
                     o.ckpt_every());
  SIMMIM_CHECK_VALUE(o.stop_after() >= 0 && o.stop_after() <= o.steps(), api, "options.stop_after",
                     "in [0, steps = " + std::to_string(o.steps()) + "] (0: run to the end)", o.stop_after());
  SIMMIM_CHECK_VALUE(o.workers() >= 0, api, "options.workers", "non-negative", o.workers());
  SIMMIM_CHECK(o.settings().is_object(), api, "options.settings", "a JSON object", o.settings().dump());
  SIMMIM_CHECK(!o.out().empty(), api, "options.out", "an output folder", "''");
  SIMMIM_CHECK(data.size > 0 && static_cast<bool>(data.batches), api, "data", "a non-empty split with a batch function",
               std::to_string(data.size) + " items");
  o.recipe().check(api);

  const int64_t rank = dist ? dist->rank() : 0, world = dist ? dist->world_size() : 1;
  const bool main_rank = rank == 0;
  const int64_t B = o.batch_size(), total_batch = B * world;
  SIMMIM_CHECK_VALUE(total_batch <= data.size, api, "options.batch_size x world size",
                     "at most the " + std::to_string(data.size) + " images of the data", total_batch);
  const c10::Device device = o.device();
  model->to(device);
  model->train();
  if (dist) broadcast_module(*dist, *model);

  const PretrainRecipe& recipe = o.recipe();
  const double lr = recipe.lr(o.base_lr(), total_batch);
  const auto adamw = recipe.adamw(lr);
  auto groups = make_param_groups(*model, ParamGroupOptions().adamw(adamw));
  torch::optim::AdamW opt(groups.groups, adamw);
  const int64_t warmup = o.warmup_steps() >= 0 ? o.warmup_steps() : recipe.warmup_steps(o.steps());
  WarmupCosineSchedule sched(
      opt,
      CosineScheduleOptions().base_lr(lr).min_lr(lr * recipe.min_lr_ratio()).warmup_steps(warmup).total_steps(
          o.steps()),
      groups.lr_scales);
  LossScaler scaler(LossScalerOptions().enabled(o.precision() == Precision::kFloat16));
  at::Generator mask_gen = make_generator(o.seed() + 1);

  // Everything that shapes the run: stored with the checkpoint, compared on resume.
  nlohmann::json settings = o.settings();
  settings["mask"] = masks.spec();
  settings["seed"] = o.seed();
  settings["steps"] = o.steps();
  settings["batch_size"] = B;
  settings["world_size"] = world;
  settings["base_lr"] = o.base_lr();
  settings["warmup_steps"] = warmup;
  settings["recipe"] = recipe.describe();

  const std::string out = o.out();
  if (main_rank) {
    std::error_code ec;
    fs::create_directories(out, ec);
    SIMMIM_CHECK(!ec, api, "options.out", "a folder that can be created and written",
                 "'" + out + "' (" + ec.message() + ")");
  }
  const std::string ckpt = out + "/checkpoint.pt";
  CheckpointParts parts;
  parts.model = model.ptr().get();
  parts.optimizer = &opt;
  parts.schedule = &sched;
  parts.scaler = &scaler;
  parts.generators = {{"mask", mask_gen}};
  double ema = NAN;
  auto save = [&](int64_t step) {
    if (main_rank) {
      nlohmann::json meta{{"settings", settings}, {"loss_ema", std::isnan(ema) ? nlohmann::json() : nlohmann::json(ema)}};
      if (settings.contains("model")) meta["model"] = settings["model"];
      // What an inpainting needs to turn the model's output back into pixels (not a setting: resume ignores it).
      meta["normalization"] = {{"mean", data.mean}, {"std", data.stddev}};
      parts.metadata = meta.dump();
      save_checkpoint(ckpt, parts, step);
    }
    if (dist) dist->barrier();  // no rank reads a checkpoint rank 0 is still writing
  };

  int64_t start = 0;
  if (o.resume() && fs::exists(ckpt)) {
    const auto saved = nlohmann::json::parse(read_checkpoint_info(ckpt).second, nullptr, false);
    SIMMIM_CHECK(saved.is_object() && saved.contains("settings"), api, "the checkpoint to resume",
                 "one written by simmim::pretrain", "'" + ckpt + "'");
    detail::check_resume_settings(saved.at("settings"), settings, ckpt);
    start = load_checkpoint(ckpt, parts, device);
    if (saved.contains("loss_ema") && saved.at("loss_ema").is_number()) ema = saved.at("loss_ema").get<double>();
    if (main_rank) log << o.label() << ": resumed from " << ckpt << " at step " << start << "\n";
  }

  BatchLoader loader(data.size, data.batches,
                     BatchLoaderOptions()
                         .batch_size(B)
                         .seed(o.seed())
                         .workers(o.workers())
                         .pin_memory(device.is_cuda())
                         .num_shards(world)
                         .shard(rank),
                     start);
  std::optional<MetricsLog> metrics;
  std::optional<ProgressBar> bar;
  if (main_rank) {
    metrics.emplace(out + "/metrics.jsonl", /*append=*/start > 0);
    if (o.progress()) bar.emplace(o.steps(), log, ProgressBarOptions().label(o.label()).log_every(o.log_every()));
  }

  // Only what the model reads: SimMIM never looks at MAE's ids, which cost more than its masks (issue 15).
  constexpr MaskOutputs mask_outputs = mask_outputs_read_by<Model>();
  // The same images under the same masks at every grid, so the pictures show learning, not luck.
  const at::Tensor preview = data.preview.defined() ? data.preview.to(device) : at::Tensor();
  auto preview_gen = make_generator(o.seed() + 7);
  const MaskBatch preview_masks =
      preview.defined() ? masks.generate(preview.size(0), preview_gen, device, mask_outputs) : MaskBatch();
  auto write_grid = [&](const std::string& path) {
    if (!main_rank || !preview.defined()) return;
    torch::NoGradGuard no_grad;
    model->eval();
    const PretrainOutput p = model->forward(preview, preview_masks);
    model->train();
    // A model whose target has no pixel space (HOG, a teacher's features) has nothing to picture.
    if (!p.reconstruction.defined()) return;
    write_reconstruction_grid(path, preview, p.mask, p.reconstruction.to(at::kFloat),
                              ReconstructionGridOptions().mean(data.mean).stddev(data.stddev).scale(
                                  std::max<int64_t>(1, 96 / std::max<int64_t>(1, data.image_size.h))));
  };

  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& np : model->named_parameters()) named.emplace_back(np.key(), np.value());
  OptimizerStep step_fn(opt, scaler, recipe.clip_grad(),
                        dist ? OptimizerStep::GradientHook([&](const std::vector<at::Tensor>&) {
                          average_gradients(*dist, named);
                        })
                             : OptimizerStep::GradientHook());

  if (main_rank) {
    log << o.label() << ": " << data.size << " images, batch " << B << (world > 1 ? " per rank x " : "")
        << (world > 1 ? std::to_string(world) + " ranks (" + dist->backend() + ")" : std::string()) << ", mask '"
        << masks.spec() << "', lr " << lr << ", " << o.steps() << " steps on " << device << " ("
        << precision_name(o.precision()) << ", " << at::get_num_threads() << " threads)\n";
  }
  PretrainResult result;
  result.start_step = start;
  result.last_step = start;
  result.checkpoint = ckpt;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = start; step < o.steps(); ++step) {
    const Batch batch = loader.next();
    const at::Tensor x = batch.images.to(device, /*non_blocking=*/true);
    // The masks one process would draw for the whole global batch; this rank takes its rows.
    const MaskBatch all = masks.generate(x.size(0) * world, mask_gen, device, mask_outputs);
    const MaskBatch mb = world > 1 ? detail::slice_masks(all, rank * x.size(0), x.size(0)) : all;
    const double step_lr = sched.step();
    PretrainOutput p;
    {
      AutocastGuard autocast(device.type(), o.precision());
      p = model->forward(x, mb);
    }
    const StepStats stats = step_fn(p.loss);
    double loss = p.loss.template item<double>();
    if (dist) loss = all_reduce_mean(*dist, loss);
    TORCH_CHECK(std::isfinite(loss), api, ": the loss became ", loss, " at step ", step + 1,
                "; try a lower base_lr, or bf16 instead of fp16");
    ema = std::isnan(ema) ? loss : 0.98 * ema + 0.02 * loss;
    if (bar) bar->update(step + 1, ema, step_lr, x.size(0) * world);
    const bool last = step + 1 == o.steps();
    if (metrics && ((step + 1) % o.log_every() == 0 || last)) {
      const double secs = detail::seconds_since(t0);
      nlohmann::json row{{"step", step + 1},
                         {"loss", loss},
                         {"loss_ema", ema},
                         {"lr", step_lr},
                         {"epoch", batch.epoch},
                         {"seconds", secs},
                         {"images_per_s", static_cast<double>((step + 1 - start) * total_batch) / std::max(1e-9, secs)}};
      if (recipe.clip_grad() > 0) row["grad_norm"] = stats.grad_norm;
      if (scaler.enabled()) row["loss_scale"] = stats.loss_scale;
      if (stats.skipped) row["skipped"] = true;
      metrics->write(row);
    }
    if (o.grid_every() > 0 && (step + 1) % o.grid_every() == 0 && !last)
      write_grid(out + "/reconstruction_step" + std::to_string(step + 1) + ".png");
    if (o.ckpt_every() > 0 && (step + 1) % o.ckpt_every() == 0 && !last) save(step + 1);
    if (o.stop_after() > 0 && step + 1 == o.stop_after() && !last) {
      save(step + 1);
      if (main_rank) log << o.label() << ": stopped after step " << step + 1 << "; continue with resume\n";
      result.last_step = step + 1;
      result.stopped = true;
      break;
    }
    result.last_step = step + 1;
  }
  result.seconds = detail::seconds_since(t0);
  result.images_per_s =
      static_cast<double>((result.last_step - start) * total_batch) / std::max(1e-9, result.seconds);
  result.loss_ema = ema;
  if (!result.stopped) {
    save(o.steps());
    write_grid(out + "/reconstruction.png");
  }
  return result;
}

SIMMIM_NAMESPACE_END
