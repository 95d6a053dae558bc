// 05_finetune: end-to-end fine-tuning of an encoder (pretrained, from a checkpoint, or from scratch) with
// a linear head on its pooled features, in the SimMIM / BEiT recipe: AdamW, layer-wise lr decay (block i
// learns at decay^(L - i) of the head's rate), warmup + cosine, label smoothing, gradient clipping;
// --augment and --drop-path for longer runs on larger images.
//
//   simmim_05_finetune --checkpoint out/pretrain_simmim/checkpoint.pt --epochs 3
//   simmim_05_finetune --random-init --preset mnist --epochs 3          # scratch, same budget
//
// Prints a per-class report of the test images at the end; with --out, metrics.jsonl and its loss curve
// loss.png (by gnuplot, where it is installed). The last line is JSON: {"finetune_acc": ..., "encoder": ...,
// "report": {...}}.

#include <cstdio>

#include "../common/encoder_source.hpp"
#include "simmim/train/autocast.hpp"
#include "simmim/train/classification_report.hpp"
#include "simmim/train/grad_clip.hpp"
#include "simmim/train/loss_scaler.hpp"
#include "simmim/train/lr_schedule.hpp"
#include "simmim/train/metrics_log.hpp"
#include "simmim/train/param_groups.hpp"
#include "simmim/train/plots.hpp"
#include "simmim/train/progress_bar.hpp"

namespace {

// Encoder + linear head on the pooled features. Parameter names keep "encoder.blocks.<i>." so the
// layer-wise decay finds the blocks.
struct ClassifierImpl : torch::nn::Module {
  ClassifierImpl(simmim::VisionTransformer enc, int64_t classes)
      : encoder(register_module("encoder", enc)),
        head(register_module("head", torch::nn::Linear(enc->options.embed_dim(), classes))) {
    torch::NoGradGuard no_grad;
    head->weight.normal_(0.0, 2e-5);  // MAE / BEiT: a near-zero head does not disturb the features at first
    head->bias.zero_();
  }
  at::Tensor forward(const at::Tensor& x) { return head(encoder->features(x).pooled); }
  simmim::VisionTransformer encoder;
  torch::nn::Linear head;
};
TORCH_MODULE(Classifier);

// The model's predictions for every test image, with the labels: the report's accuracy is the test accuracy.
simmim::ClassificationReport evaluate(Classifier& model, const examples::Split& test, c10::Device device,
                                      int64_t workers) {
  torch::NoGradGuard no_grad;
  model->eval();
  simmim::BatchLoader loader(
      test.size, test.batches,
      simmim::BatchLoaderOptions().batch_size(512).shuffle(false).drop_last(false).workers(workers));
  std::vector<at::Tensor> predictions, labels;
  for (int64_t i = 0; i < loader.batches_per_epoch(); ++i) {
    simmim::Batch b = loader.next();
    predictions.push_back(model(b.images.to(device)).argmax(1).cpu());
    labels.push_back(b.labels.cpu());
  }
  model->train();
  const bool named = static_cast<int64_t>(test.class_names.size()) == test.num_classes;
  return simmim::classification_report(at::cat(labels), at::cat(predictions), test.num_classes,
                                       named ? test.class_names : std::vector<std::string>{});
}

}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main("simmim_05_finetune", [&] {
    CLI::App app{"Fine-tuning: encoder + linear head trained end to end; prints the test accuracy."};
    examples::EncoderFlags enc_flags;
    examples::DataFlags data;
    int64_t epochs = 3, batch = 128, warmup = -1;
    // Augmentation and drop path are off by default: on Fashion-MNIST at a few epochs they cost 7 points
    // (docs/results.md); turn them on (--augment, --drop-path 0.1) for longer runs on larger images.
    double blr = 4e-3, layer_decay = 0.75, weight_decay = 0.05, smoothing = 0.1, clip = 5.0, drop_path = 0.0;
    uint64_t seed = 0;
    std::string device_name = "auto", precision_name = "fp32", out;
    int threads = 0;
    enc_flags.add_to(app);
    data.add_to(app, /*needs_test=*/true);
    app.add_option("--epochs", epochs, "passes over the training set")->capture_default_str()->check(
        CLI::Range(1, 1 << 20));
    app.add_option("--batch-size", batch, "images per step")->capture_default_str()->check(CLI::Range(1, 1 << 24));
    app.add_option("--blr", blr, "base learning rate per 512 images: lr = blr * batch / 512")
        ->capture_default_str()
        ->check(CLI::Range(1e-12, 10.0));
    app.add_option("--layer-decay", layer_decay, "layer-wise lr decay (1: off)")->capture_default_str()->check(
        CLI::Range(0.01, 1.0));
    app.add_option("--weight-decay", weight_decay, "AdamW weight decay")->capture_default_str();
    app.add_option("--warmup", warmup, "warmup steps (-1: 5% of all steps)")
        ->capture_default_str();
    app.add_option("--label-smoothing", smoothing, "label smoothing of the cross entropy")->capture_default_str()->check(
        CLI::Range(0.0, 0.5));
    app.add_option("--clip", clip, "gradient-norm clip (0: off)")->capture_default_str();
    app.add_option("--drop-path", drop_path, "stochastic depth rate of the encoder")->capture_default_str()->check(
        CLI::Range(0.0, 0.9));
    app.add_option("--seed", seed, "seed of the head, random init, data order")->capture_default_str();
    app.add_option("--device", device_name, "auto, cpu, cuda, cuda:N")->capture_default_str();
    app.add_option("--precision", precision_name, "fp32, bf16 or fp16 (CUDA; fp16 with loss scaling)")
        ->capture_default_str()
        ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
    app.add_option("--out", out, "folder for metrics.jsonl (optional)");
    examples::add_threads_flag(app, threads);
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    examples::apply_threads_flag(threads);
    const c10::Device device = simmim::resolve_device(device_name);
    const simmim::Precision precision = simmim::parse_precision(precision_name);
    const examples::Split train = data.load(true, 224);
    const examples::Split test = data.load(false, 224);
    simmim::VisionTransformer enc = examples::load_encoder(enc_flags, train, seed, drop_path);
    torch::manual_seed(seed + 1);
    Classifier model(enc, train.num_classes);
    model->to(device);

    const double lr = simmim::linear_scaled_lr(blr, batch);
    auto adamw = torch::optim::AdamWOptions(lr).betas({0.9, 0.999}).eps(1e-8).weight_decay(weight_decay);
    auto groups =
        simmim::make_param_groups(*model, simmim::ParamGroupOptions().adamw(adamw).layer_decay(layer_decay));
    torch::optim::AdamW opt(groups.groups, adamw);
    simmim::BatchLoader loader(train.size, train.batches,
                               simmim::BatchLoaderOptions().batch_size(batch).seed(seed).workers(data.workers).pin_memory(
                                   device.is_cuda()));
    const int64_t steps = epochs * loader.batches_per_epoch();
    simmim::WarmupCosineSchedule sched(opt,
                                       simmim::CosineScheduleOptions()
                                           .base_lr(lr)
                                           .min_lr(lr * 0.01)
                                           .warmup_steps(warmup >= 0 ? std::min(warmup, steps) : steps / 20)
                                           .total_steps(steps),
                                       groups.lr_scales);
    simmim::LossScaler scaler(simmim::LossScalerOptions().enabled(precision == simmim::Precision::kFloat16));
    std::unique_ptr<simmim::MetricsLog> metrics;
    if (!out.empty()) metrics = std::make_unique<simmim::MetricsLog>(out + "/metrics.jsonl");
    simmim::ProgressBar bar(steps, std::cout, simmim::ProgressBarOptions().label("finetune"));
    std::cout << "finetune: " << enc_flags.describe() << ", " << train.size << " images, " << epochs << " epochs ("
              << steps << " steps), lr " << lr << ", layer decay " << layer_decay << " over " << groups.num_layers
              << " blocks, on " << device
              << (device.is_cpu() ? " (" + std::to_string(at::get_num_threads()) + " threads)" : std::string()) << "\n";
    const auto t0 = std::chrono::steady_clock::now();
    double ema = NAN;
    for (int64_t step = 0; step < steps; ++step) {
      simmim::Batch b = loader.next();
      const at::Tensor x = b.images.to(device, true), y = b.labels.to(device, true);
      const double step_lr = sched.step();
      at::Tensor loss;
      {
        simmim::AutocastGuard autocast(device.type(), precision);
        loss = torch::nn::functional::cross_entropy(
            model(x), y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(smoothing));
      }
      opt.zero_grad();
      scaler.scale(loss).backward();
      scaler.unscale_(opt);
      if (clip > 0) simmim::clip_grad_norm(opt, clip);
      scaler.step(opt);
      scaler.update();
      const double l = loss.item<double>();
      if (!std::isfinite(l)) {
        std::cerr << "finetune: the loss became " << l << " at step " << step + 1 << "; try a lower --blr\n";
        return 1;
      }
      ema = std::isnan(ema) ? l : 0.98 * ema + 0.02 * l;
      bar.update(step + 1, ema, step_lr, x.size(0));
      const bool epoch_end = (step + 1) % loader.batches_per_epoch() == 0;
      if (metrics && (epoch_end || (step + 1) % 50 == 0)) {
        nlohmann::json row{{"step", step + 1}, {"loss", l}, {"lr", step_lr}};
        if (epoch_end) row["test_acc"] = evaluate(model, test, device, data.workers).accuracy;
        metrics->write(row);
      }
    }
    const simmim::ClassificationReport report = evaluate(model, test, device, data.workers);
    const double acc = report.accuracy;
    std::printf("fine-tuned %s encoder: test accuracy %.4f after %lld steps (%.1f s)\n", enc_flags.describe().c_str(),
                acc, static_cast<long long>(steps), examples::seconds_since(t0));
    std::cout << "per-class report on the test images:\n" << report.to_string();
    if (metrics) {
      const simmim::PlotResult plot = simmim::plot_loss_curve(
          metrics->path(), out + "/loss.png",
          simmim::LossCurveOptions().title("fine-tuning the " + enc_flags.describe() + " encoder"));
      std::cout << "finetune: " << plot.message << "\n";
    }
    std::cout << nlohmann::json{{"finetune_acc", acc},
                                {"encoder", enc_flags.describe()},
                                {"steps", steps},
                                {"report", report.to_json()}}
                     .dump()
              << "\n";
    return 0;
  });
}
