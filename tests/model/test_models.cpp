// The assembled SimMIM / MAE models: shapes, the losses against DESIGN.md's formulas computed by hand, a
// user-written encoder, save / load, freezing and export of the encoder.
#include <torch/torch.h>
#include <unistd.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <filesystem>
#include <string>

#include "model_test_utils.hpp"
#include "simmim/core/patchify.hpp"
#include "simmim/embed/mask_token.hpp"
#include "simmim/masking/mask_batch.hpp"
#include "simmim/model/mae_model.hpp"
#include "simmim/model/simmim_model.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::close;
using simmim_test::random_mask;
using simmim_test::tiny_vit;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("simmim_test_model_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

// A user-written CNN encoder: a stride-4 patch stem, SimMIM's mask-token mixing, then a stride-2 conv.
// Nothing here is a ViT; implementing EncoderAdapter is all SimMIM asks.
struct TinyCnnImpl : torch::nn::Cloneable<TinyCnnImpl>, simmim::EncoderAdapter {
  explicit TinyCnnImpl(int64_t in_chans = 3) : in_chans_(in_chans) { reset(); }
  void reset() override {
    stem = register_module("stem", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_chans_, 16, 4).stride(4)));
    mixer = register_module("mixer", simmim::MaskTokenMixer(simmim::MaskTokenMixerOptions(16)));
    down = register_module("down", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 24, 2).stride(2)));
  }
  at::Tensor forward_features(const at::Tensor& images, const at::Tensor& mask) override {
    auto x = stem(images);  // [B, 16, H/4, W/4]
    const simmim::Size2d grid{x.size(2), x.size(3)};
    if (mask.defined()) {
      auto tokens = mixer(x.flatten(2).transpose(1, 2), mask, grid);
      x = tokens.transpose(1, 2).reshape(x.sizes());
    }
    return down(torch::gelu(x));
  }
  int64_t in_channels() const override { return in_chans_; }
  int64_t patch_size() const override { return 4; }
  int64_t stride() const override { return 8; }
  int64_t out_channels() const override { return 24; }

  int64_t in_chans_;
  torch::nn::Conv2d stem{nullptr};
  simmim::MaskTokenMixer mixer{nullptr};
  torch::nn::Conv2d down{nullptr};
};
TORCH_MODULE(TinyCnn);

// An adapter that lies about its stride: the model must say so, not crash in the head or the loss.
struct LyingCnnImpl : TinyCnnImpl {
  int64_t stride() const override { return 4; }
};

at::Tensor simmim_loss_by_hand(const at::Tensor& x, const at::Tensor& x_rec, const at::Tensor& mask, int64_t p) {
  // DESIGN.md: upsample the patch mask by p (repeat_interleave on both axes), l = |x - x_rec| per pixel,
  // loss = sum(l * m) / (sum(m) + 1e-5) / in_chans.
  auto m = mask.to(torch::kFloat).repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1);
  auto l = (x - x_rec).abs();
  return (l * m).sum() / (m.sum() + 1e-5) / x.size(1);
}

}  // namespace

TEST_CASE("SimMIM model: shapes, and the loss is DESIGN.md's formula", "[model]") {
  for (auto [img, p] : {std::pair<simmim::Size2d, int64_t>{{28, 28}, 7}, {{32, 48}, 4}, {{28, 28}, 4}, {{7, 7}, 7}}) {
    torch::manual_seed(22);
    simmim::SimMIM model(simmim::SimMIMOptions(tiny_vit(img, p)));
    const simmim::Size2d grid{img.h / p, img.w / p};
    auto images = torch::randn({3, 3, img.h, img.w});
    auto mask = torch::rand({3, grid.h, grid.w}) < 0.6;
    auto out = model(images, mask);
    REQUIRE(out.reconstruction.sizes() == images.sizes());
    REQUIRE(out.loss.dim() == 0);
    REQUIRE(torch::equal(out.mask, mask));
    REQUIRE(close(out.loss, simmim_loss_by_hand(images, out.reconstruction, mask, p), 1e-5, 1e-6));
    // The official SimMIM loader's int64 masks (and int32) give the same loss and reconstruction.
    for (const auto dtype : {torch::kLong, torch::kInt}) {
      torch::NoGradGuard no_grad;
      const auto as_int = model(images, mask.to(dtype));
      REQUIRE(torch::equal(as_int.loss, out.loss));
      REQUIRE(torch::equal(as_int.reconstruction, out.reconstruction));
    }
    // The gradient reaches the mask token through the encoder.
    out.loss.backward();
    auto vit = model->encoder_as<simmim::VisionTransformerImpl>();
    REQUIRE(vit != nullptr);
    REQUIRE(vit->mask_mixer->mask_token.grad().abs().sum().item<double>() > 0);
  }
  // The conv head and other per-pixel losses plug in the same way.
  torch::manual_seed(23);
  simmim::SimMIM conv(simmim::SimMIMOptions(tiny_vit(16, 4))
                          .head(simmim::HeadKind::kConv)
                          .head_hidden_channels(8)
                          .loss(simmim::LossKind::kL2));
  auto images = torch::randn({2, 3, 16, 16});
  auto mask = torch::rand({2, 4, 4}) < 0.5;
  auto out = conv(images, mask);
  auto m = mask.to(torch::kFloat).repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1);
  REQUIRE(close(out.loss, ((images - out.reconstruction).pow(2) * m).sum() / (m.sum() + 1e-5) / 3, 1e-5, 1e-6));
  REQUIRE(conv->named_parameters().contains("head.body.0.weight"));
}

TEST_CASE("SimMIM model with a user-written CNN encoder", "[model]") {
  torch::manual_seed(24);
  TinyCnn cnn(3);
  simmim::SimMIM model(cnn);
  REQUIRE(model->encoder().get() == cnn.ptr().get());  // shared: training the model trains the user's CNN
  auto images = torch::randn({2, 3, 32, 24});
  auto mask = torch::rand({2, 8, 6}) < 0.5;
  auto out = model(images, mask);
  REQUIRE(out.reconstruction.sizes() == images.sizes());
  REQUIRE(close(out.loss, simmim_loss_by_hand(images, out.reconstruction, mask, 4), 1e-5, 1e-6));
  out.loss.backward();
  REQUIRE(cnn->mixer->mask_token.grad().abs().sum().item<double>() > 0);
  REQUIRE(cnn->stem->weight.grad().abs().sum().item<double>() > 0);
  REQUIRE(model->named_parameters().contains("encoder.mixer.mask_token"));
  // clone() copies the user's encoder too.
  auto copy = std::dynamic_pointer_cast<simmim::SimMIMImpl>(model->clone());
  REQUIRE(copy->encoder().get() != cnn.ptr().get());
  REQUIRE(torch::equal(copy->forward(images, mask).reconstruction, model(images, mask).reconstruction));
  {
    torch::NoGradGuard no_grad;
    copy->encoder_as<TinyCnnImpl>()->stem->bias.add_(1.0);
  }
  REQUIRE(!torch::allclose(copy->forward(images, mask).reconstruction, model(images, mask).reconstruction));

  simmim::SimMIM lying(std::make_shared<LyingCnnImpl>());
  REQUIRE_THROWS_WITH(lying(images, mask),
                      ContainsSubstring("simmim::SimMIM::forward: the encoder's forward_features() result must be "
                                        "[B, out_channels, H / stride, W / stride] = [2, 24, 8, 6]"));
}

TEST_CASE("SimMIM model: clear errors for bad shapes", "[model]") {
  torch::manual_seed(25);
  simmim::SimMIM model(simmim::SimMIMOptions(tiny_vit({28, 28}, 7)));
  auto images = torch::randn({2, 3, 28, 28});
  REQUIRE_THROWS_WITH(model(images, torch::zeros({2, 7, 7}, torch::kBool)),
                      ContainsSubstring("simmim::SimMIM::forward: mask must be [B, H/p, W/p] = [2, 4, 4] (p = 7)"));
  REQUIRE_THROWS_WITH(model(torch::randn({2, 1, 28, 28}), torch::zeros({2, 4, 4}, torch::kBool)),
                      ContainsSubstring("images must be [B, 3, H, W] with H, W divisible by the encoder's stride 7"));
  REQUIRE_THROWS_WITH(model(torch::randn({2, 3, 21, 28}), torch::zeros({2, 3, 4}, torch::kBool)),
                      ContainsSubstring("simmim::VisionTransformer::forward: images must be [B, 3, 28, 28]"));
}

TEST_CASE("MAE model: the encoder sees only visible patches; loss is DESIGN.md's", "[model]") {
  torch::manual_seed(26);
  auto opts = simmim::MAEOptions(simmim::MAEOptions::mae_encoder(tiny_vit({28, 28}, 7, 1)))
                  .decoder_embed_dim(16)
                  .decoder_depth(1)
                  .decoder_num_heads(2);
  simmim::MAE model(opts);
  REQUIRE(!model->encoder->named_parameters().contains("mask_mixer.mask_token"));
  const simmim::Size2d grid{4, 4};
  auto images = torch::randn({3, 1, 28, 28});
  auto mask = random_mask(3, grid, 12);  // ratio 0.75
  auto out = model(images, mask);
  REQUIRE(out.reconstruction.sizes() == images.sizes());
  REQUIRE(torch::equal(out.mask, mask));
  // DESIGN.md: target patchified; loss = mean over the patch of (pred - t)^2, then sum(loss * m) / sum(m).
  auto pred = simmim::patchify(out.reconstruction, 7);
  auto target = simmim::patchify(images, 7);
  auto m = mask.reshape({3, 16}).to(torch::kFloat);
  auto per_patch = (pred - target).pow(2).mean(-1);
  REQUIRE(close(out.loss, (per_patch * m).sum() / m.sum(), 1e-5, 1e-6));
  // Nothing under a masked patch reaches encoder or decoder: scrambling those pixels changes no prediction.
  auto pixel_mask = mask.repeat_interleave(7, 1).repeat_interleave(7, 2).unsqueeze(1);
  auto scrambled = torch::where(pixel_mask, torch::randn_like(images), images);
  REQUIRE(torch::equal(model(scrambled, mask).reconstruction, out.reconstruction));
  // A mask generator's MaskBatch (ids in shuffle order) gives the same result up to summation order.
  auto shuffle = std::get<1>(torch::rand({3, 16}).sort(1));
  auto batch = simmim::mask_batch_from_shuffle(shuffle, 4, grid);
  auto via_ids = model->forward(images, batch);
  auto via_mask = model(images, batch.mask);
  REQUIRE(close(via_ids.reconstruction, via_mask.reconstruction, 1e-4, 1e-5));
  REQUIRE(close(via_ids.loss, via_mask.loss, 1e-5, 1e-6));
  // norm-pix: the loss uses standardized targets; the reconstruction comes back in pixel space.
  torch::manual_seed(27);
  simmim::MAE norm_pix(simmim::MAEOptions(opts).norm_pix_loss(true));
  auto np = norm_pix(images, mask);
  auto mean = target.mean(-1, true), var = target.var(-1, /*unbiased=*/true, /*keepdim=*/true);
  auto pred_n = (simmim::patchify(np.reconstruction, 7) - mean) / (var + 1e-6).sqrt();
  auto t_n = (target - mean) / (var + 1e-6).sqrt();
  REQUIRE(close(np.loss, ((pred_n - t_n).pow(2).mean(-1) * m).sum() / m.sum(), 1e-4, 1e-5));
}

TEST_CASE("MAE model: clear errors", "[model]") {
  torch::manual_seed(28);
  simmim::MAE model(
      simmim::MAEOptions(tiny_vit({28, 28}, 7, 1)).decoder_embed_dim(16).decoder_depth(1).decoder_num_heads(2));
  auto images = torch::randn({2, 1, 28, 28});
  auto uneven = random_mask(2, {4, 4}, 12);
  uneven[0][0][0] = !uneven[0][0][0].item<bool>();
  REQUIRE_THROWS_WITH(model(images, uneven), ContainsSubstring("the same number of masked patches in every sample"));
  REQUIRE_THROWS_WITH(model(images, torch::zeros({2, 4, 4})),
                      ContainsSubstring("simmim::MAE::forward: mask must be a bool or integer tensor [B, 4, 4]"));
  auto batch = simmim::mask_batch_from_shuffle(std::get<1>(torch::rand({2, 16}).sort(1)), 4, {4, 4});
  auto wrong = batch;
  wrong.mask = batch.mask.logical_not();
  REQUIRE_THROWS_WITH(model->forward(images, wrong),
                      ContainsSubstring("masks.mask must be the mask its ids_restore implies"));
  REQUIRE_THROWS_WITH(model->forward(torch::randn({3, 1, 28, 28}), batch),
                      ContainsSubstring("ids_keep must be an int64 tensor [B, len_keep] with B = 3"));
  // An empty batch and meta tensors: simmim errors, not raw LibTorch ones from inside the encoder.
  REQUIRE_THROWS_WITH(model(torch::randn({0, 1, 28, 28}), torch::zeros({0, 4, 4}, torch::kBool)),
                      ContainsSubstring("simmim::MAE::forward: images must be a non-empty batch [B, C, H, W] with B "
                                        ">= 1; got Float tensor [0, 1, 28, 28]"));
  auto empty = batch;
  empty.mask = batch.mask.narrow(0, 0, 0);
  empty.ids_keep = batch.ids_keep.narrow(0, 0, 0);
  empty.ids_restore = batch.ids_restore.narrow(0, 0, 0);
  REQUIRE_THROWS_WITH(model->forward(torch::randn({0, 1, 28, 28}), empty),
                      ContainsSubstring("images must be a non-empty batch"));
  const auto meta = torch::empty({2, 1, 28, 28}, torch::TensorOptions().device(torch::kMeta));
  REQUIRE_THROWS_WITH(model(meta, random_mask(2, {4, 4}, 12)),
                      ContainsSubstring("simmim::MAE::forward: images must be a tensor with data"));
  // ids_keep out of range: read back on the CPU (always) and caught before the gather.
  auto bad_ids = batch;
  bad_ids.ids_keep = batch.ids_keep.clone();
  bad_ids.ids_keep[0][0] = 99;
  REQUIRE_THROWS_WITH(model->forward(images, bad_ids), ContainsSubstring("simmim::MAE::forward: ids_keep"));
}

TEST_CASE("SimMIM model: empty batches, meta tensors and bad enum options are clear errors", "[model]") {
  torch::manual_seed(3);
  simmim::SimMIM model(simmim::SimMIMOptions(tiny_vit({28, 28}, 7, 1)));
  REQUIRE_THROWS_WITH(model(torch::randn({0, 1, 28, 28}), torch::zeros({0, 4, 4}, torch::kBool)),
                      ContainsSubstring("simmim::SimMIM::forward: images must be a non-empty batch"));
  const auto meta = torch::empty({2, 1, 28, 28}, torch::TensorOptions().device(torch::kMeta));
  REQUIRE_THROWS_WITH(model(meta, random_mask(2, {4, 4}, 12)),
                      ContainsSubstring("simmim::SimMIM::forward: images must be a tensor with data"));
  REQUIRE_THROWS_WITH(
      simmim::SimMIM(simmim::SimMIMOptions(tiny_vit({28, 28}, 7, 1)).head(static_cast<simmim::HeadKind>(2))),
      ContainsSubstring("simmim::SimMIM: head must be HeadKind::kLinear or kConv; got HeadKind(2)"));
  REQUIRE_THROWS_WITH(
      simmim::SimMIM(simmim::SimMIMOptions(tiny_vit({28, 28}, 7, 1)).loss_backend(static_cast<simmim::Backend>(8)))
          ->forward(torch::randn({2, 1, 28, 28}), random_mask(2, {4, 4}, 12)),
      ContainsSubstring("options.backend must be Backend::kAuto"));
}

TEST_CASE("save / load round trip; freezing and exporting the encoder", "[model]") {
  auto images = torch::randn({2, 3, 32, 48});
  auto mask = torch::rand({2, 8, 12}) < 0.5;
  torch::manual_seed(29);
  simmim::SimMIM a(simmim::SimMIMOptions(tiny_vit({32, 48}, 4)));
  const auto path = temp_path("simmim.pt");
  torch::save(a, path);
  torch::manual_seed(30);
  simmim::SimMIM b(simmim::SimMIMOptions(tiny_vit({32, 48}, 4)));
  REQUIRE(!torch::equal(a(images, mask).reconstruction, b(images, mask).reconstruction));
  torch::load(b, path);
  auto out_a = a(images, mask), out_b = b(images, mask);
  REQUIRE(torch::equal(out_a.reconstruction, out_b.reconstruction));
  REQUIRE(torch::equal(out_a.loss, out_b.loss));

  // The encoder alone: saved by the model, loaded into a standalone ViT.
  const auto enc_path = temp_path("encoder.pt");
  a->save_encoder(enc_path);
  simmim::VisionTransformer vit(tiny_vit({32, 48}, 4));
  torch::load(vit, enc_path);
  REQUIRE(torch::equal(vit->features(images).pooled,
                       a->encoder_as<simmim::VisionTransformerImpl>()->features(images).pooled));

  // Frozen encoder: only the head learns.
  a->freeze_encoder();
  a(images, mask).loss.backward();
  REQUIRE(!a->encoder_as<simmim::VisionTransformerImpl>()->norm->weight.grad().defined());
  REQUIRE(a->head()->named_parameters()["conv.weight"].grad().defined());
  a->freeze_encoder(false);
  REQUIRE(a->encoder_as<simmim::VisionTransformerImpl>()->norm->weight.requires_grad());

  // MAE: the sin-cos buffers travel too, and a reloaded model reproduces the loss.
  torch::manual_seed(31);
  auto mae_opts = simmim::MAEOptions(tiny_vit({32, 48}, 8)).decoder_embed_dim(16).decoder_depth(1).decoder_num_heads(2);
  simmim::MAE mae(mae_opts);
  const auto mae_path = temp_path("mae.pt");
  torch::save(mae, mae_path);
  torch::manual_seed(32);
  simmim::MAE mae2(mae_opts);
  torch::load(mae2, mae_path);
  auto mae_mask = random_mask(2, {4, 6}, 18);
  REQUIRE(torch::equal(mae(images, mae_mask).loss, mae2(images, mae_mask).loss));
  for (const auto& p : {path, enc_path, mae_path}) std::filesystem::remove(p);
}
