#pragma once
// Where 04_linear_probe and 05_finetune get their encoder: a pretraining checkpoint (the library rebuilds
// it from the model spec in its metadata) or a random init of a preset, the baseline the pretrained
// encoder has to beat.

#include <string>

#include "example_common.hpp"
#include "simmim/train/model_spec.hpp"

namespace examples {

struct EncoderFlags {
  std::string checkpoint;
  bool random_init = false;
  simmim::ModelSpec model;  // for --random-init

  void add_to(CLI::App& app) {
    auto* c = app.add_option("--checkpoint", checkpoint,
                             "pretraining checkpoint (02_pretrain_simmim / 03_pretrain_mae) whose encoder to use");
    auto* r = app.add_flag("--random-init", random_init, "a randomly initialized encoder instead (the baseline)");
    c->excludes(r);
    app.add_option("--preset", model.preset, "with --random-init: encoder preset (mnist, tiny, small, base)")
        ->capture_default_str()
        ->check(CLI::IsMember({"mnist", "tiny", "small", "base"}));
    app.add_option("--kind", model.kind, "with --random-init: encoder flavour (simmim: learned positions; mae: sin-cos)")
        ->capture_default_str()
        ->check(CLI::IsMember({"simmim", "mae"}));
    app.add_option("--patch-size", model.patch_size, "with --random-init: patch size (0: the preset's)")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{0}, int64_t{4096}));
    add_size_flags(app, model, "with --random-init: ");
  }

  std::string describe() const {
    if (!random_init) return "pretrained " + checkpoint;
    std::string sized;
    if (model.embed_dim > 0) sized += " width " + std::to_string(model.embed_dim);
    if (model.depth > 0) sized += " depth " + std::to_string(model.depth);
    if (model.num_heads > 0) sized += " heads " + std::to_string(model.num_heads);
    return "random-init " + model.preset + sized;
  }
};

// The encoder, on the CPU (f.model then holds its spec). Checks that the data matches what the encoder was
// pretrained on (channels, image size). Stochastic depth has no weights, so fine-tuning can add it here.
inline simmim::VisionTransformer load_encoder(EncoderFlags& f, const Split& data, uint64_t seed,
                                              double drop_path = 0.0) {
  if (f.checkpoint.empty() && !f.random_init)
    throw CLI::ValidationError("--checkpoint", "give a checkpoint, or --random-init for the baseline");
  if (!f.random_init) {
    f.model = simmim::checkpoint_model_spec(f.checkpoint);
    if (f.model.in_chans != data.channels || f.model.image_size != data.image_size.h)
      throw CLI::ValidationError("--data", "images like the pretraining ones (" + std::to_string(f.model.in_chans) +
                                               " channels, " + std::to_string(f.model.image_size) + " px); got " +
                                               std::to_string(data.channels) + " channels, " +
                                               std::to_string(data.image_size.h) + " px");
    return simmim::load_pretrained_encoder(f.checkpoint, drop_path);
  }
  f.model.in_chans = data.channels;
  f.model.image_size = data.image_size.h;
  f.model.resolve();
  torch::manual_seed(seed);
  return simmim::VisionTransformer(f.model.encoder_options().drop_path_rate(drop_path));
}

}  // namespace examples
