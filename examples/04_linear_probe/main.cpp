// 04_linear_probe: how linearly separable are an encoder's features? Freezes the encoder (pretrained, from
// a checkpoint, or randomly initialized), extracts one pooled feature vector per image, standardizes the
// features (MAE's BatchNorm without affine) and trains a linear classifier on them; reports test accuracy.
//
//   simmim_04_linear_probe --checkpoint out/pretrain_simmim/checkpoint.pt
//   simmim_04_linear_probe --random-init --preset mnist
//
// The last line is JSON: {"probe_acc": ..., "encoder": ...}.

#include <cstdio>

#include "../common/encoder_source.hpp"
#include "simmim/train/lr_schedule.hpp"
#include "simmim/train/progress_bar.hpp"

namespace {

// Pooled features of every image of `split`, in dataset order, computed without gradients.
std::pair<at::Tensor, at::Tensor> extract(simmim::VisionTransformer& encoder, const examples::Split& split,
                                          c10::Device device, int64_t batch, int64_t workers,
                                          const std::string& which) {
  torch::NoGradGuard no_grad;
  encoder->eval();
  simmim::BatchLoader loader(split.size, split.batches,
                             simmim::BatchLoaderOptions().batch_size(batch).shuffle(false).drop_last(false).workers(
                                 workers));
  std::vector<at::Tensor> feats, labels;
  for (int64_t i = 0; i < loader.batches_per_epoch(); ++i) {
    simmim::Batch b = loader.next();
    const auto f = encoder->features(b.images.to(device));
    at::Tensor v = which == "pooled"   ? f.pooled
                   : which == "tokens" ? f.patch_tokens.flatten(1)
                                       : at::cat({f.pooled, f.patch_tokens.flatten(1)}, 1);
    feats.push_back(v.to(at::kCPU, at::kFloat));
    labels.push_back(b.labels);
  }
  return {at::cat(feats), at::cat(labels)};
}

}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main("simmim_04_linear_probe", [&] {
    CLI::App app{"Linear probe: a linear classifier on frozen encoder features; prints the test accuracy."};
    examples::EncoderFlags enc_flags;
    examples::DataFlags data;
    int64_t epochs = 10, batch = 256;
    double lr = 1e-3, weight_decay = 1e-4;
    uint64_t seed = 0;
    std::string device_name = "auto", features = "pooled";
    int threads = 0;
    enc_flags.add_to(app);
    data.add_to(app, /*needs_test=*/true);
    app.add_option("--features", features, "what the classifier sees: pooled (one D-vector per image), tokens "
                                           "(all patch tokens), both")
        ->capture_default_str()
        ->check(CLI::IsMember({"pooled", "tokens", "both"}));
    app.add_option("--epochs", epochs, "passes of the classifier over the training features")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--batch-size", batch, "classifier batch size")->capture_default_str()->check(CLI::PositiveNumber);
    app.add_option("--lr", lr, "classifier AdamW learning rate (cosine to 0)")->capture_default_str();
    app.add_option("--weight-decay", weight_decay, "classifier weight decay")->capture_default_str();
    app.add_option("--seed", seed, "seed of the random init and the classifier")->capture_default_str();
    app.add_option("--device", device_name, "auto, cpu, cuda, cuda:N")->capture_default_str();
    app.add_option("--threads", threads, "CPU threads for torch (0: torch's default)")->capture_default_str();
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (threads > 0) torch::set_num_threads(threads);
    const c10::Device device = simmim::resolve_device(device_name);
    const auto t0 = std::chrono::steady_clock::now();
    data.augment = false;  // features of the images themselves
    const examples::Split train = examples::load_split(data, true, 224);
    const examples::Split test = examples::load_split(data, false, 224);
    simmim::VisionTransformer encoder = examples::load_encoder(enc_flags, train, seed);
    encoder->to(device);

    auto [xtr, ytr] = extract(encoder, train, device, 512, data.workers, features);
    auto [xte, yte] = extract(encoder, test, device, 512, data.workers, features);
    const at::Tensor mean = xtr.mean(0), stdv = xtr.std(0) + 1e-6;
    xtr = ((xtr - mean) / stdv).to(device);
    xte = ((xte - mean) / stdv).to(device);
    ytr = ytr.to(device);
    yte = yte.to(device);
    const double extract_s = examples::seconds_since(t0);

    torch::manual_seed(seed);
    const int64_t classes = std::max(train.num_classes, ytr.max().item<int64_t>() + 1);
    torch::nn::Linear head(xtr.size(1), classes);
    head->to(device);
    torch::optim::AdamW opt(head->parameters(), torch::optim::AdamWOptions(lr).weight_decay(weight_decay));
    const int64_t n = xtr.size(0), per_epoch = std::max<int64_t>(1, n / batch);
    simmim::WarmupCosineSchedule sched(
        opt, simmim::CosineScheduleOptions().base_lr(lr).warmup_steps(0).total_steps(epochs * per_epoch));
    auto gen = simmim::make_generator(seed + 3);
    for (int64_t e = 0; e < epochs; ++e) {
      const at::Tensor perm = at::randperm(n, gen, at::TensorOptions().dtype(at::kLong)).to(device);
      for (int64_t i = 0; i < per_epoch; ++i) {
        const at::Tensor idx = perm.slice(0, i * batch, std::min(n, (i + 1) * batch));
        sched.step();
        const at::Tensor loss = torch::cross_entropy_loss(head(xtr.index_select(0, idx)), ytr.index_select(0, idx));
        opt.zero_grad();
        loss.backward();
        opt.step();
      }
    }
    torch::NoGradGuard no_grad;
    const double train_acc = head(xtr).argmax(1).eq(ytr).to(at::kDouble).mean().item<double>();
    const double acc = head(xte).argmax(1).eq(yte).to(at::kDouble).mean().item<double>();
    std::printf("linear probe of the %s encoder (%s features, %lld-d): train accuracy %.4f, test accuracy %.4f "
                "(%lld test images; %.1f s, %.1f s extracting)\n",
                enc_flags.describe().c_str(), features.c_str(), static_cast<long long>(xtr.size(1)), train_acc, acc,
                static_cast<long long>(xte.size(0)), examples::seconds_since(t0), extract_s);
    std::cout << nlohmann::json{{"probe_acc", acc},
                                {"train_acc", train_acc},
                                {"encoder", enc_flags.describe()},
                                {"features", features},
                                {"test_images", xte.size(0)}}
                     .dump()
              << "\n";
    return 0;
  });
}
