#pragma once
// The command line of the pretraining examples 02 (SimMIM), 03 (MAE) and 07 (distillation): flags into simmim::ModelSpec and
// simmim::PretrainOptions, then one call to simmim::pretrain, single-process or one process per device
// under torchrun (WORLD_SIZE > 1: Gloo on CPU, NCCL on CUDA where this build has it).

#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include "example_common.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/train/model_spec.hpp"
#include "simmim/train/plots.hpp"
#include "simmim/train/pretrain.hpp"
#if SIMMIM_DEV_HAVE_GLOO
#include "simmim/distributed/gloo.hpp"
#endif
#if SIMMIM_DEV_HAVE_NCCL
#include "simmim/distributed/nccl.hpp"
#endif

namespace examples {

struct PretrainFlags {
  simmim::ModelSpec model;
  DataFlags data;
  std::string mask;  // "" = the kind's default for the preset
  int64_t steps = 1400;
  int64_t batch_size = 128;
  int64_t warmup = -1;  // -1: the recipe's 5% of steps
  double blr = 4e-3;    // lr = blr * total batch / 512 (both kinds: MAE's per-256 rule restated per 512)
  double weight_decay = 0.05;
  double clip = -1;  // -1: the kind's recipe (SimMIM 5, MAE none)
  uint64_t seed = 0;
  std::string out;
  int64_t log_every = 50, grid_every = 0, ckpt_every = 0, stop_after = 0;
  bool resume = false;
  std::string device = "auto", precision = "fp32";
  int threads = 0;
  // Set by a program, not a flag: more settings stored with the checkpoint (07: the teacher and target),
  // and a check of the loaded training data before the model is built.
  nlohmann::json extra_settings = nlohmann::json::object();
  std::function<void(const Split&)> check_data;

  void add_to(CLI::App& app) {
    constexpr int64_t kBig = int64_t{1} << 40;
    // A value option with its default shown and a checked range.
    auto opt = [&](const char* name, auto& value, const char* help, auto lo, auto hi) {
      app.add_option(name, value, help)->capture_default_str()->check(CLI::Range(lo, hi));
    };
    app.add_option("--preset", model.preset, "encoder preset: mnist (28x28, patch 7), tiny, small, base")
        ->capture_default_str()
        ->check(CLI::IsMember({"mnist", "tiny", "small", "base"}));
    opt("--patch-size", model.patch_size, "encoder patch size (0: the preset's: 7 for mnist, 16 otherwise)",
        int64_t{0}, int64_t{4096});
    add_size_flags(app, model);
    data.add_to(app, /*needs_test=*/false);
    app.add_option("--mask", mask,
                   "mask strategy spec for simmim::make_mask_generator, e.g. 'simmim:ratio=0.6,mask_patch=14', "
                   "'mae:ratio=0.75', 'block:ratio=0.4' (default: SimMIM 60% of cells twice the patch, 7 px for "
                   "the mnist preset; MAE 75%)");
    opt("--steps", steps, "optimizer steps", int64_t{1}, kBig);
    opt("--batch-size", batch_size, "images per step (per process under torchrun)", int64_t{1}, int64_t{1} << 24);
    opt("--warmup", warmup, "linear warmup steps (-1: 5% of --steps)", int64_t{-1}, kBig);
    opt("--blr", blr, "base learning rate per 512 images: lr = blr * total batch / 512", 1e-12, 10.0);
    opt("--weight-decay", weight_decay, "AdamW weight decay (not on norms, biases, tokens, positions)", 0.0, 10.0);
    opt("--clip", clip, "gradient-norm clip (0: off; -1: SimMIM 5.0, MAE off)", -1.0, 1e6);
    app.add_option("--seed", seed, "seed of initialization, data order, masks")->capture_default_str();
    app.add_option("--out", out, "output folder: checkpoint.pt, metrics.jsonl, reconstruction PNGs")
        ->capture_default_str();
    opt("--log-every", log_every, "metrics line every N steps", int64_t{1}, kBig);
    opt("--grid-every", grid_every, "reconstruction PNG every N steps (0: only at the end)", int64_t{0}, kBig);
    opt("--ckpt-every", ckpt_every, "checkpoint every N steps (0: only at the end)", int64_t{0}, kBig);
    app.add_flag("--resume", resume, "continue from <out>/checkpoint.pt when it exists (same settings as the first run)");
    opt("--stop-after", stop_after,
        "save and stop after this many steps, as if the run was killed there (0: run to --steps; at most --steps); "
        "continue with --resume",
        int64_t{0}, kBig);
    app.add_option("--device", device, "auto, cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)")->capture_default_str();
    app.add_option("--precision", precision, "fp32, bf16 (CUDA or CPU autocast) or fp16 (CUDA, with loss scaling)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
    add_threads_flag(app, threads);
  }
};

// Builds the model with `make_model(spec)`, pretrains it, prints a JSON summary line last (rank 0).
template <typename MakeModel>
int run_pretraining(PretrainFlags& f, const std::string& kind, MakeModel&& make_model) {
  apply_threads_flag(f.threads);
  if (f.stop_after > f.steps)
    throw CLI::ValidationError("--stop-after", "at most --steps (" + std::to_string(f.steps) + "); got " +
                                                   std::to_string(f.stop_after));
  const simmim::DistributedEnv env = simmim::distributed_env_from_environment();
  const c10::Device device = simmim::device_for_rank(env, simmim::resolve_device(f.device));
  std::shared_ptr<simmim::Collective> dist;
  if (env.distributed()) {
#if SIMMIM_DEV_HAVE_NCCL
    if (device.is_cuda()) dist = simmim::make_nccl_collective(env);
#endif
#if SIMMIM_DEV_HAVE_GLOO
    if (!device.is_cuda()) dist = simmim::make_gloo_collective(env);
#endif
    if (!dist)
      throw CLI::ValidationError("WORLD_SIZE", "1: this build has no c10d backend for " + device.str() +
                                                   " (Gloo needs Debian's LibTorch + libgloo-dev, NCCL a CUDA LibTorch)");
  }
  const Split train = f.data.load(/*train=*/true, /*default_size=*/224);
  if (f.check_data) f.check_data(train);
  f.model.kind = kind;
  f.model.in_chans = train.channels;
  f.model.image_size = train.image_size.h;
  f.model.resolve();
  const std::string spec = f.mask.empty() ? f.model.default_mask_spec() : f.mask;
  const auto masks = simmim::make_mask_generator(spec, simmim::MaskGeometry(train.image_size, f.model.patch_size));
  auto recipe = kind == "mae" ? simmim::PretrainRecipe::mae() : simmim::PretrainRecipe::simmim();
  recipe.weight_decay(f.weight_decay).lr_reference_batch(512);
  if (f.clip >= 0) recipe.clip_grad(f.clip);
  nlohmann::json settings{{"model", f.model.to_json()}, {"data", f.data.data}, {"limit", f.data.limit},
                          {"augment", f.data.augment}};
  settings.update(f.extra_settings);
  const auto options = simmim::PretrainOptions()
                           .steps(f.steps)
                           .batch_size(f.batch_size)
                           .base_lr(f.blr)
                           .recipe(recipe)
                           .warmup_steps(f.warmup)
                           .seed(f.seed)
                           .out(f.out.empty() ? "out/pretrain_" + kind : f.out)
                           .log_every(f.log_every)
                           .grid_every(f.grid_every)
                           .ckpt_every(f.ckpt_every)
                           .resume(f.resume)
                           .stop_after(f.stop_after)
                           .device(device)
                           .precision(simmim::parse_precision(f.precision))
                           .workers(f.data.workers)
                           .label(kind)
                           .settings(settings);
  torch::manual_seed(f.seed);
  auto model = make_model(f.model);
  const simmim::PretrainResult r = simmim::pretrain(model, *masks, train, options, dist);
  if (env.rank == 0) {
    // The loss curve beside metrics.jsonl (by gnuplot; where it is missing, one line says so).
    const simmim::PlotResult plot =
        simmim::plot_loss_curve(options.out() + "/metrics.jsonl", options.out() + "/loss.png",
                                simmim::LossCurveOptions().title(kind + " pretraining, " + f.model.preset + " preset"));
    std::cout << kind << ": " << plot.message << "\n";
  }
  if (env.rank == 0 && !r.stopped) {
    std::cout << kind << ": wrote " << r.checkpoint << ", ";
    // A distilled student predicts features: no pixels, no reconstruction picture.
    if (kind != "distill")
      std::cout << options.out() << "/reconstruction.png (rows: original | masked | reconstruction), ";
    std::cout << options.out() << "/metrics.jsonl\n";
    std::cout << r.to_json().dump() << "\n";
  }
  return 0;
}

}  // namespace examples
