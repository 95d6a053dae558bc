// 04_linear_probe: how linearly separable are an encoder's features? Freezes the encoder (pretrained, from
// a checkpoint, or randomly initialized), extracts one pooled feature vector per image, standardizes the
// features (MAE's BatchNorm without affine) and fits a multinomial logistic regression on them with
// full-batch L-BFGS, to convergence: two encoders are compared on their features, not on how far a
// stochastic optimizer got. --raw-pixels fits the same classifier, the same way, on the pixels themselves:
// the floor a useful encoder has to clear. Reports test accuracy and a per-class report.
//
//   simmim_04_linear_probe --checkpoint out/pretrain_simmim/checkpoint.pt
//   simmim_04_linear_probe --random-init --preset mnist
//   simmim_04_linear_probe --raw-pixels
//
// The last line is JSON: {"probe_acc": ..., "encoder": ..., "report": {...}}.

#include <algorithm>
#include <cstdio>
#include <tuple>

#include "../common/encoder_source.hpp"
#include "simmim/train/classification_report.hpp"

namespace {

// Features of `images` after each block in `layers` (1-based; depth = the encoder's output): the patch
// tokens layer-normalized without affine (the final norm's affine would be undone by the standardization
// anyway), mean-pooled ("pooled") or all kept ("tokens"), concatenated over the layers.
at::Tensor layer_features(simmim::VisionTransformer& encoder, const at::Tensor& images,
                          const std::vector<int64_t>& layers, const std::string& which) {
  at::Tensor x = encoder->pos(encoder->patch_embed(images).tokens);
  const int64_t prefix = encoder->num_prefix_tokens(), L = encoder->num_patches(), D = x.size(2);
  std::vector<at::Tensor> out;
  int64_t depth = 0;
  for (const auto& block : *encoder->blocks) {
    x = block->as<simmim::TransformerBlockImpl>()->forward(x);
    if (std::find(layers.begin(), layers.end(), ++depth) == layers.end()) continue;
    const at::Tensor t = torch::layer_norm(x.narrow(1, prefix, L), {D});
    out.push_back(which == "pooled" ? t.mean(1) : t.flatten(1));
  }
  return at::cat(out, 1);
}

// Features (`featurize` of each batch of images) of every image of `split`, in dataset order, computed
// without gradients.
template <typename Featurize>
std::pair<at::Tensor, at::Tensor> extract(const examples::Split& split, c10::Device device, int64_t workers,
                                          Featurize&& featurize) {
  torch::NoGradGuard no_grad;
  simmim::BatchLoader loader(
      split.size, split.batches,
      simmim::BatchLoaderOptions().batch_size(512).shuffle(false).drop_last(false).workers(workers));
  std::vector<at::Tensor> feats, labels;
  for (int64_t i = 0; i < loader.batches_per_epoch(); ++i) {
    simmim::Batch b = loader.next();
    feats.push_back(featurize(b.images.to(device)).to(at::kCPU, at::kFloat));
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
    int64_t max_iter = 500;
    double l2 = 1e-4;
    uint64_t seed = 0;
    std::string device_name = "auto", features = "pooled";
    std::vector<int64_t> layers;
    int threads = 0;
    bool raw_pixels = false;
    enc_flags.add_to(app);
    app.add_flag("--raw-pixels", raw_pixels,
                 "no encoder: the same classifier on the images' pixels (the baseline any encoder should beat)");
    data.add_to(app, /*needs_test=*/true);
    app.add_option("--features", features, "what the classifier sees of a layer: pooled (the mean patch token) or "
                                           "tokens (all patch tokens)")
        ->capture_default_str()
        ->check(CLI::IsMember({"pooled", "tokens"}));
    app.add_option("--layers", layers, "blocks whose output to probe, 1-based, concatenated (default: the last)");
    app.add_option("--max-iter", max_iter, "L-BFGS iterations at most (it stops earlier once converged)")
        ->capture_default_str()
        ->check(CLI::Range(1, 1 << 20));
    app.add_option("--l2", l2, "L2 penalty on the classifier weights (times the squared Frobenius norm)")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1e6));
    app.add_option("--seed", seed, "seed of the random init and the classifier")->capture_default_str();
    app.add_option("--device", device_name, "auto, cpu, cuda, cuda:N")->capture_default_str();
    examples::add_threads_flag(app, threads);
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (raw_pixels && (enc_flags.random_init || !enc_flags.checkpoint.empty() || !layers.empty() || features != "pooled"))
      throw CLI::ValidationError("--raw-pixels", "probes the pixels, without an encoder: give it without "
                                                 "--checkpoint, --random-init, --layers and --features");
    examples::apply_threads_flag(threads);
    const c10::Device device = simmim::resolve_device(device_name);
    const auto t0 = std::chrono::steady_clock::now();
    data.augment = false;  // features of the images themselves
    const examples::Split train = data.load(true, 224);
    const examples::Split test = data.load(false, 224);
    at::Tensor xtr, ytr, xte, yte;
    std::string source, layer_text;
    if (raw_pixels) {
      // The pixels as the data split gives them (normalized; the standardization below undoes that anyway).
      auto pixels = [](const at::Tensor& images) { return images.flatten(1); };
      std::tie(xtr, ytr) = extract(train, device, data.workers, pixels);
      std::tie(xte, yte) = extract(test, device, data.workers, pixels);
      source = "raw pixels";
      features = "pixels";
    } else {
      simmim::VisionTransformer encoder = examples::load_encoder(enc_flags, train, seed);
      encoder->to(device);
      encoder->eval();
      const int64_t depth = static_cast<int64_t>(encoder->blocks->size());
      if (layers.empty()) layers = {depth};
      for (int64_t l : layers)
        if (l < 1 || l > depth)
          throw CLI::ValidationError("--layers", "block numbers in [1, " + std::to_string(depth) + "]; got " +
                                                     std::to_string(l));
      for (int64_t l : layers) layer_text += (layer_text.empty() ? "" : ",") + std::to_string(l);
      auto featurize = [&](const at::Tensor& images) { return layer_features(encoder, images, layers, features); };
      std::tie(xtr, ytr) = extract(train, device, data.workers, featurize);
      std::tie(xte, yte) = extract(test, device, data.workers, featurize);
      source = "the " + enc_flags.describe() + " encoder (" + features + " features of block " + layer_text + ")";
    }
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
    torch::optim::LBFGS opt(head->parameters(), torch::optim::LBFGSOptions(1.0)
                                                    .max_iter(max_iter)
                                                    .history_size(20)
                                                    .tolerance_grad(1e-6)
                                                    .tolerance_change(1e-10)
                                                    .line_search_fn("strong_wolfe"));
    int64_t evals = 0;
    auto objective = [&] {
      ++evals;
      opt.zero_grad();
      at::Tensor loss = torch::cross_entropy_loss(head(xtr), ytr) + l2 * head->weight.pow(2).sum();
      loss.backward();
      return loss;
    };
    const double final_loss = opt.step(objective).item<double>();
    torch::NoGradGuard no_grad;
    const double train_acc = head(xtr).argmax(1).eq(ytr).to(at::kDouble).mean().item<double>();
    const at::Tensor predictions = head(xte).argmax(1);
    const double acc = predictions.eq(yte).to(at::kDouble).mean().item<double>();
    const bool named = static_cast<int64_t>(train.class_names.size()) == classes;
    const simmim::ClassificationReport report =
        simmim::classification_report(yte, predictions, classes, named ? train.class_names : std::vector<std::string>{});
    std::printf("linear probe of %s, %lld-d, %lld training images: train accuracy %.4f, test accuracy %.4f (%lld test "
                "images; loss %.4f after %lld evaluations; %.1f s, %.1f s extracting, %d threads)\n",
                source.c_str(), static_cast<long long>(xtr.size(1)), static_cast<long long>(xtr.size(0)), train_acc, acc,
                static_cast<long long>(xte.size(0)), final_loss, static_cast<long long>(evals),
                examples::seconds_since(t0), extract_s, at::get_num_threads());
    std::cout << "per-class report on the test images:\n" << report.to_string();
    std::cout << nlohmann::json{{"probe_acc", acc},
                                {"train_acc", train_acc},
                                {"encoder", raw_pixels ? std::string("raw pixels") : enc_flags.describe()},
                                {"features", features},
                                {"layers", layers},
                                {"test_images", xte.size(0)},
                                {"report", report.to_json()}}
                     .dump()
              << "\n";
    return 0;
  });
}
