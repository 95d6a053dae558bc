#pragma once
// The pretraining loop that 02_pretrain_simmim and 03_pretrain_mae share: masks from a factory spec, AdamW
// groups without decay on norms / biases / tokens, warmup + cosine per step, gradient clipping, optional
// bf16 / fp16 autocast on CUDA, a progress line, JSON-lines metrics, reconstruction grids and resumable
// checkpoints. Only the model differs between the two programs.

#include <cmath>
#include <filesystem>
#include <string>

#include "example_common.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/train/autocast.hpp"
#include "simmim/train/checkpoint.hpp"
#include "simmim/train/grad_clip.hpp"
#include "simmim/train/image_grid.hpp"
#include "simmim/train/loss_scaler.hpp"
#include "simmim/train/lr_schedule.hpp"
#include "simmim/train/metrics_log.hpp"
#include "simmim/train/param_groups.hpp"
#include "simmim/train/progress_bar.hpp"

namespace examples {

struct PretrainFlags {
  ModelSpec model;
  DataFlags data;
  std::string mask;  // "" = the kind's default for the preset
  int64_t steps = 1400;
  int64_t batch_size = 128;
  int64_t warmup = -1;    // -1: 5% of steps
  double blr = 4e-3;      // lr = blr * batch / 512 (SimMIM's rule)
  double weight_decay = 0.05;
  double clip = -1;       // -1: the kind's default (SimMIM 5, MAE none)
  uint64_t seed = 0;
  std::string out;
  int64_t log_every = 50;
  int64_t grid_every = 0;  // 0: only at the end
  int64_t ckpt_every = 0;  // 0: only at the end
  bool resume = false;
  int64_t stop_after = 0;  // 0: run to --steps
  std::string device = "auto";
  std::string precision = "fp32";
  int threads = 0;

  void add_to(CLI::App& app) {
    app.add_option("--preset", model.preset, "encoder preset: mnist (28x28, patch 7), tiny, small, base")
        ->capture_default_str()
        ->check(CLI::IsMember({"mnist", "tiny", "small", "base"}));
    app.add_option("--patch-size", model.patch_size, "encoder patch size (0: the preset's: 7 for mnist, 16 otherwise)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    data.add_to(app, /*needs_test=*/false);
    app.add_option("--mask", mask,
                   "mask strategy spec for simmim::make_mask_generator, e.g. 'simmim:ratio=0.6,mask_patch=14', "
                   "'mae:ratio=0.75', 'block:ratio=0.4' (default: SimMIM 60% of cells twice the patch, 7 px for "
                   "the mnist preset; MAE 75%)");
    app.add_option("--steps", steps, "optimizer steps")->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--batch-size", batch_size, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--warmup", warmup, "linear warmup steps (-1: 5% of --steps)")->capture_default_str();
    app.add_option("--blr", blr, "base learning rate per 512 images: lr = blr * batch / 512")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--weight-decay", weight_decay, "AdamW weight decay (not on norms, biases, tokens, positions)")
        ->capture_default_str();
    app.add_option("--clip", clip, "gradient-norm clip (0: off; -1: SimMIM 5.0, MAE off)")->capture_default_str();
    app.add_option("--seed", seed, "seed of initialization, data order, masks")->capture_default_str();
    app.add_option("--out", out, "output folder: checkpoint.pt, metrics.jsonl, reconstruction PNGs")
        ->capture_default_str();
    app.add_option("--log-every", log_every, "metrics line every N steps")->capture_default_str()->check(
        CLI::PositiveNumber);
    app.add_option("--grid-every", grid_every, "reconstruction PNG every N steps (0: only at the end)")
        ->capture_default_str();
    app.add_option("--ckpt-every", ckpt_every, "checkpoint every N steps (0: only at the end)")->capture_default_str();
    app.add_flag("--resume", resume, "continue from <out>/checkpoint.pt when it exists (same flags as the first run)");
    app.add_option("--stop-after", stop_after, "save and stop after this many steps, as if the run was killed there "
                                               "(0: run to --steps); continue with --resume")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_option("--device", device, "auto, cpu, cuda, cuda:N")->capture_default_str();
    app.add_option("--precision", precision, "fp32, bf16 (CUDA or CPU autocast) or fp16 (CUDA, with loss scaling)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
    app.add_option("--threads", threads, "CPU threads for torch (0: torch's default)")->capture_default_str();
  }
};

inline simmim::PretrainOutput run_model(simmim::SimMIM& m, const at::Tensor& x, const simmim::MaskBatch& mb) {
  return m->forward(x, mb.mask);
}
inline simmim::PretrainOutput run_model(simmim::MAE& m, const at::Tensor& x, const simmim::MaskBatch& mb) {
  return m->forward_batch(x, mb);
}

// Trains `model` (SimMIM or MAE holder, built for `f.model`) on `train`. Prints a JSON summary line last.
template <typename Model>
int pretrain(Model& model, const PretrainFlags& f, const Split& train, const std::string& kind) {
  namespace fs = std::filesystem;
  if (f.threads > 0) torch::set_num_threads(f.threads);
  const c10::Device device = simmim::resolve_device(f.device);
  const simmim::Precision precision = simmim::parse_precision(f.precision);
  model->to(device);
  model->train();

  // Defaults: MAE's 75%; SimMIM's 60% of cells twice the patch (32 px for patch 16). On 28 x 28 images a
  // 14 px cell is a quarter of the image; 7 px cells measured better there (docs/results.md).
  const int64_t cell = f.model.preset == "mnist" ? f.model.patch_size : 2 * f.model.patch_size;
  const std::string spec = !f.mask.empty() ? f.mask
                           : kind == "mae" ? std::string("mae:ratio=0.75")
                                           : "simmim:ratio=0.6,mask_patch=" + std::to_string(cell);
  const auto masks = simmim::make_mask_generator(spec, simmim::MaskGeometry(train.image_size, f.model.patch_size));

  const double lr = simmim::linear_scaled_lr(f.blr, f.batch_size);
  const double clip = f.clip >= 0 ? f.clip : (kind == "mae" ? 0.0 : 5.0);
  auto adamw = torch::optim::AdamWOptions(lr).betas({0.9, kind == "mae" ? 0.95 : 0.999}).eps(1e-8).weight_decay(
      f.weight_decay);
  auto groups = simmim::make_param_groups(*model, simmim::ParamGroupOptions().adamw(adamw));
  torch::optim::AdamW opt(groups.groups, adamw);
  const int64_t warmup = f.warmup >= 0 ? std::min(f.warmup, f.steps) : f.steps / 20;
  simmim::WarmupCosineSchedule sched(
      opt, simmim::CosineScheduleOptions().base_lr(lr).min_lr(lr * 0.01).warmup_steps(warmup).total_steps(f.steps),
      groups.lr_scales);
  simmim::LossScaler scaler(simmim::LossScalerOptions().enabled(precision == simmim::Precision::kFloat16));
  at::Generator mask_gen = simmim::make_generator(f.seed + 1);

  const std::string out = f.out.empty() ? "out/pretrain_" + kind : f.out;
  fs::create_directories(out);
  const std::string ckpt = out + "/checkpoint.pt";
  simmim::CheckpointParts parts;
  parts.model = model.ptr().get();
  parts.optimizer = &opt;
  parts.schedule = &sched;
  parts.scaler = &scaler;
  parts.generators = {{"mask", mask_gen}};
  parts.metadata = nlohmann::json{{"model", f.model.to_json()},
                                  {"mask", spec},
                                  {"data", f.data.data},
                                  {"mean", train.mean},
                                  {"std", train.stddev},
                                  {"steps", f.steps},
                                  {"batch_size", f.batch_size}}
                       .dump();
  int64_t start = 0;
  if (f.resume && fs::exists(ckpt)) {
    // The cosine schedule is fixed by its total: a run continues only with the total it started with.
    const auto saved = nlohmann::json::parse(simmim::read_checkpoint_info(ckpt).second);
    if (saved.value("steps", int64_t{-1}) != f.steps || saved.value("batch_size", int64_t{-1}) != f.batch_size)
      throw CLI::ValidationError("--resume", "the --steps and --batch-size of the checkpoint's run (" +
                                                 saved.value("steps", nlohmann::json()).dump() + ", " +
                                                 saved.value("batch_size", nlohmann::json()).dump() + ")");
    start = simmim::load_checkpoint(ckpt, parts, device);
    std::cout << "resumed from " << ckpt << " at step " << start << "\n";
  }

  simmim::BatchLoader loader(
      train.size, train.batches,
      simmim::BatchLoaderOptions().batch_size(f.batch_size).seed(f.seed).workers(f.data.workers).pin_memory(
          device.is_cuda()),
      start);
  simmim::MetricsLog metrics(out + "/metrics.jsonl", /*append=*/start > 0);
  simmim::ProgressBar bar(f.steps, std::cout, simmim::ProgressBarOptions().label(kind).log_every(f.log_every));

  // The same images under the same masks at every grid, so the pictures show learning, not luck.
  const at::Tensor preview = train.preview.to(device);
  auto preview_gen = simmim::make_generator(f.seed + 7);
  const simmim::MaskBatch preview_masks = masks->generate(preview.size(0), preview_gen, device);
  auto write_grid = [&](const std::string& path) {
    torch::NoGradGuard no_grad;
    model->eval();
    const auto o = run_model(model, preview, preview_masks);
    model->train();
    simmim::write_reconstruction_grid(
        path, preview, o.mask, o.reconstruction.to(at::kFloat),
        simmim::ReconstructionGridOptions().mean(train.mean).stddev(train.stddev).scale(
            std::max<int64_t>(1, 96 / train.image_size.h)));
  };

  std::cout << kind << ": " << f.model.preset << " encoder, " << f.model.image_size << "px, patch "
            << f.model.patch_size << ", mask '" << spec << "', " << train.size << " images, batch " << f.batch_size
            << ", lr " << lr << ", " << f.steps << " steps on " << device << " (" << simmim::precision_name(precision)
            << ", " << torch::get_num_threads() << " threads)\n";
  const auto t0 = std::chrono::steady_clock::now();
  double ema = NAN;
  for (int64_t step = start; step < f.steps; ++step) {
    simmim::Batch batch = loader.next();
    const at::Tensor x = batch.images.to(device, /*non_blocking=*/true);
    const simmim::MaskBatch mb = masks->generate(x.size(0), mask_gen, device);
    const double step_lr = sched.step();
    simmim::PretrainOutput o;
    {
      simmim::AutocastGuard autocast(device.type(), precision);
      o = run_model(model, x, mb);
    }
    opt.zero_grad();
    scaler.scale(o.loss).backward();
    scaler.unscale_(opt);
    const double grad_norm = clip > 0 ? simmim::clip_grad_norm(opt, clip) : NAN;
    scaler.step(opt);
    scaler.update();
    const double loss = o.loss.template item<double>();
    if (!std::isfinite(loss)) {
      std::cerr << kind << ": the loss became " << loss << " at step " << step + 1
                << "; try a lower --blr or --precision bf16\n";
      return 1;
    }
    ema = std::isnan(ema) ? loss : 0.98 * ema + 0.02 * loss;
    bar.update(step + 1, ema, step_lr, x.size(0));
    const bool last = step + 1 == f.steps;
    if ((step + 1) % f.log_every == 0 || last) {
      nlohmann::json row{{"step", step + 1},         {"loss", loss},        {"loss_ema", ema},
                         {"lr", step_lr},            {"epoch", batch.epoch}, {"seconds", seconds_since(t0)},
                         {"images_per_s", (step + 1 - start) * f.batch_size / std::max(1e-9, seconds_since(t0))}};
      if (clip > 0) row["grad_norm"] = grad_norm;
      if (scaler.enabled()) row["loss_scale"] = scaler.get_scale();
      metrics.write(row);
    }
    if (f.grid_every > 0 && (step + 1) % f.grid_every == 0 && !last)
      write_grid(out + "/reconstruction_step" + std::to_string(step + 1) + ".png");
    if (f.ckpt_every > 0 && (step + 1) % f.ckpt_every == 0 && !last) simmim::save_checkpoint(ckpt, parts, step + 1);
    if (f.stop_after > 0 && step + 1 == f.stop_after && !last) {
      simmim::save_checkpoint(ckpt, parts, step + 1);
      std::cout << kind << ": stopped after step " << step + 1 << "; continue with --resume\n";
      return 0;
    }
  }
  const double seconds = seconds_since(t0);
  simmim::save_checkpoint(ckpt, parts, f.steps);
  write_grid(out + "/reconstruction.png");
  std::cout << kind << ": wrote " << ckpt << ", " << out << "/reconstruction.png (rows: original | masked | "
            << "reconstruction), " << out << "/metrics.jsonl\n";
  std::cout << nlohmann::json{{"final_loss_ema", ema},
                              {"steps", f.steps},
                              {"seconds", seconds},
                              {"images_per_s", (f.steps - start) * f.batch_size / std::max(1e-9, seconds)},
                              {"checkpoint", ckpt}}
                   .dump()
            << "\n";
  return 0;
}

}  // namespace examples
