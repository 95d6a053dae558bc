// Inpainting with a pretraining model (simmim::inpaint) and loading one from a checkpoint at any size
// (simmim::load_pretrain_model): visible pixels kept bit for bit, regions as boxes / pixel masks / patch
// masks, padding, MAE's norm-pix refused, clear errors; and on Fashion-MNIST a briefly trained model
// fills boxes closer to the truth than the mean of the visible pixels does.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <filesystem>
#include <string>

#include "../support/scratch_dir.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/model/inpaint.hpp"
#include "simmim/target/hog_target.hpp"
#include "simmim/train/data_split.hpp"
#include "simmim/train/model_spec.hpp"
#include "simmim/train/pretrain.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::scratch_dir;
namespace fs = std::filesystem;

namespace {

simmim::SimMIM small_simmim(int64_t size = 28) {
  torch::manual_seed(3);
  auto vit = simmim::VisionTransformerOptions(simmim::Size2d(size), 7, 32, 1, 2).in_chans(1);
  return simmim::SimMIM(simmim::SimMIMOptions(vit));
}

}  // namespace

TEST_CASE("inpaint keeps the visible pixels bit for bit and fills only the region", "[train][inpaint]") {
  auto model = small_simmim();
  const at::Tensor images = torch::rand({3, 1, 28, 28}, simmim::make_generator(1));
  const auto opts = simmim::InpaintOptions().mean({0.3}).stddev({0.35});
  const auto r = simmim::inpaint(model, images, simmim::InpaintRegion::boxes({{2, 3, 10, 5}, {20, 20, 8, 8}}), opts);
  REQUIRE(r.images.sizes() == images.sizes());
  REQUIRE(r.images.scalar_type() == at::kFloat);
  at::Tensor expected_fill = torch::zeros({3, 1, 28, 28}, torch::kBool);
  expected_fill.narrow(2, 3, 5).narrow(3, 2, 10).fill_(true);
  expected_fill.narrow(2, 20, 8).narrow(3, 20, 8).fill_(true);
  REQUIRE(torch::equal(r.filled, expected_fill));
  REQUIRE(torch::equal(r.images.masked_select(~r.filled), images.masked_select(~r.filled)));
  REQUIRE(torch::equal(r.images.masked_select(r.filled), r.prediction.masked_select(r.filled)));
  // The box (2, 3, 10, 5) touches patch rows 0-1, columns 0-1; (20, 20, 8, 8) rows and columns 2-3.
  at::Tensor cells = torch::zeros({3, 4, 4}, torch::kBool);
  cells.narrow(1, 0, 2).narrow(2, 0, 2).fill_(true);
  cells.narrow(1, 2, 2).narrow(2, 2, 2).fill_(true);
  REQUIRE(torch::equal(r.patch_mask, cells));
  // The prediction is the model's reconstruction of that mask, denormalized.
  model->eval();
  torch::NoGradGuard no_grad;
  const at::Tensor recon = model->forward((images - 0.3) / 0.35, simmim::MaskBatch(cells)).reconstruction * 0.35 + 0.3;
  REQUIRE(torch::allclose(r.prediction, recon, 1e-6, 1e-6));
  REQUIRE(model->is_training() == false);  // it was in eval mode before the call: restored as it was

  model->train();
  const at::Tensor bytes = (images * 255).round().to(torch::kByte);
  const auto rb = simmim::inpaint(model, bytes, simmim::InpaintRegion::pixels(expected_fill.squeeze(1)), opts);
  REQUIRE(model->is_training());
  REQUIRE(rb.images.scalar_type() == torch::kByte);
  REQUIRE(torch::equal(rb.images.masked_select(~rb.filled), bytes.masked_select(~rb.filled)));
  REQUIRE(torch::equal(rb.patch_mask, cells));

  // A mask generator's patch mask: whole patches filled.
  const auto gen = simmim::make_mask_generator("simmim:ratio=0.5,mask_patch=7", simmim::MaskGeometry(simmim::Size2d(28), 7));
  auto g = simmim::make_generator(5);
  const simmim::MaskBatch drawn = gen->generate(3, g);
  const auto rp = simmim::inpaint(model, images, simmim::InpaintRegion::patches(drawn.mask), opts);
  REQUIRE(torch::equal(rp.patch_mask, drawn.mask.to(torch::kBool)));
  REQUIRE(torch::equal(rp.filled.squeeze(1), drawn.mask.to(torch::kBool).repeat_interleave(7, 1).repeat_interleave(7, 2)));
  REQUIRE(torch::equal(rp.images.masked_select(~rp.filled), images.masked_select(~rp.filled)));

  // A model kept in bf16 gets its input in bf16; the result is in the images' dtype, visible bits kept.
  auto half_model = small_simmim();
  half_model->to(torch::kBFloat16);
  const auto rh = simmim::inpaint(half_model, images, simmim::InpaintRegion::patches(drawn.mask), opts);
  REQUIRE(rh.images.scalar_type() == at::kFloat);
  REQUIRE(torch::equal(rh.images.masked_select(~rh.filled), images.masked_select(~rh.filled)));
  REQUIRE(torch::allclose(rh.prediction, rp.prediction, 0.05, 0.05));
}

TEST_CASE("inpaint pads to the patch and crops back; MAE with different counts per image", "[train][inpaint]") {
  auto model = small_simmim(35);  // 33 x 30 images pad to 35 x 35
  const at::Tensor images = torch::rand({2, 1, 33, 30}, simmim::make_generator(2));
  const auto r = simmim::inpaint(model, images, simmim::InpaintRegion::boxes({{25, 28, 5, 5}}));
  REQUIRE(r.images.sizes() == images.sizes());
  REQUIRE(r.patch_mask.sizes() == torch::IntArrayRef({2, 5, 5}));
  REQUIRE(r.patch_mask.sum().item<int64_t>() == 2 * 2);  // columns 25-29 -> cells 3, 4; rows 28-32 -> 4
  REQUIRE(torch::equal(r.images.masked_select(~r.filled), images.masked_select(~r.filled)));

  torch::manual_seed(4);
  simmim::MAEOptions mo = simmim::MAEOptions::mnist();
  simmim::MAE mae(mo);
  at::Tensor pixels = torch::zeros({2, 28, 28}, torch::kBool);
  pixels[0].narrow(0, 0, 7).fill_(true);  // 4 patches in image 0
  pixels[1].narrow(0, 0, 3).narrow(1, 0, 3).fill_(true);  // 1 patch in image 1
  const at::Tensor im = torch::rand({2, 1, 28, 28}, simmim::make_generator(6));
  const auto rm = simmim::inpaint(mae, im, simmim::InpaintRegion::pixels(pixels));
  REQUIRE(rm.patch_mask.view({2, -1}).sum(1).equal(torch::tensor({4, 1}, torch::kLong)));
  REQUIRE(torch::equal(rm.images.masked_select(~rm.filled), im.masked_select(~rm.filled)));
  // Each image alone gives the same prediction (the batch was split by mask count).
  const auto one = simmim::inpaint(mae, im.narrow(0, 1, 1), simmim::InpaintRegion::pixels(pixels.narrow(0, 1, 1)));
  REQUIRE(torch::allclose(one.prediction, rm.prediction.narrow(0, 1, 1), 1e-5, 1e-6));
}

TEST_CASE("inpaint refuses bad regions and models that cannot inpaint", "[train][inpaint]") {
  auto model = small_simmim();
  const at::Tensor images = torch::rand({2, 1, 28, 28});
  REQUIRE_THROWS_WITH(simmim::inpaint(model, images, simmim::InpaintRegion::boxes({{20, 0, 10, 4}})),
                      ContainsSubstring("simmim::inpaint: region box must be a non-empty box inside the 28x28") &&
                          ContainsSubstring("x=20, y=0, w=10, h=4"));
  REQUIRE_THROWS_WITH(simmim::inpaint(model, images, simmim::InpaintRegion::boxes({{0, 0, 0, 4}})),
                      ContainsSubstring("non-empty box"));
  REQUIRE_THROWS_WITH(simmim::inpaint(model, images, simmim::InpaintRegion::boxes({})),
                      ContainsSubstring("at least one box"));
  REQUIRE_THROWS_WITH(simmim::inpaint(model, images, simmim::InpaintRegion::pixels(torch::ones({2, 32, 32}))),
                      ContainsSubstring("region pixel mask must be the images' batch and size [2, 1, 28, 28]") &&
                          ContainsSubstring("[2, 32, 32]"));
  REQUIRE_THROWS_WITH(simmim::inpaint(model, images, simmim::InpaintRegion::patches(torch::ones({2, 7, 7}, torch::kBool))),
                      ContainsSubstring("[B, h, w] = [2, 4, 4]"));
  REQUIRE_THROWS_WITH(simmim::inpaint(model, images.to(torch::kInt), simmim::InpaintRegion::boxes({{0, 0, 4, 4}})),
                      ContainsSubstring("uint8 or floating"));
  REQUIRE_THROWS_WITH(
      simmim::inpaint(model, images, simmim::InpaintRegion::boxes({{0, 0, 4, 4}}), simmim::InpaintOptions().mean({0.1, 0.2}).stddev({1, 1})),
      ContainsSubstring("options.mean must be one value per channel (1)"));
  REQUIRE_THROWS_WITH(simmim::inpaint(model, torch::rand({2, 1, 30, 30}), simmim::InpaintRegion::boxes({{0, 0, 4, 4}})),
                      ContainsSubstring("simmim::"));  // 30 pads to 35: not this ViT's 28 (its own message)
  auto hog = simmim::SimMIM(simmim::SimMIMOptions(simmim::VisionTransformerOptions(simmim::Size2d(32), 8, 32, 1, 2).in_chans(1))
                                .target(std::make_shared<simmim::HOGTarget>()));
  REQUIRE_THROWS_WITH(simmim::inpaint(hog, torch::rand({1, 1, 32, 32}), simmim::InpaintRegion::boxes({{0, 0, 4, 4}})),
                      ContainsSubstring("a model that predicts the pixels themselves") && ContainsSubstring("target hog"));
  simmim::MAE norm_pix(simmim::MAEOptions::mnist().norm_pix_loss(true));
  REQUIRE_THROWS_WITH(simmim::inpaint(norm_pix, images, simmim::InpaintRegion::boxes({{0, 0, 4, 4}})),
                      ContainsSubstring("an MAE trained with norm_pix_loss"));
}

TEST_CASE("load_pretrain_model rebuilds a checkpoint's model at its size or another one", "[train][inpaint]") {
  const auto dir = scratch_dir("inpaint_load");
  simmim::ModelSpec spec;
  spec.resolve();
  auto model = simmim::SimMIM(spec.simmim_options());
  simmim::CheckpointParts parts;
  parts.model = model.ptr().get();
  parts.metadata = nlohmann::json{{"model", spec.to_json()}, {"normalization", {{"mean", {0.25}}, {"std", {0.5}}}}}.dump();
  const std::string path = (dir / "ckpt.pt").string();
  simmim::save_checkpoint(path, parts, 1);

  auto same = simmim::load_pretrain_model(path);
  REQUIRE(same.image_size == simmim::Size2d(28));
  REQUIRE_FALSE(same.simmim.is_empty());
  REQUIRE(torch::equal(same.simmim->encoder_as<simmim::VisionTransformerImpl>()->pos->pos_embed,
                       model->encoder_as<simmim::VisionTransformerImpl>()->pos->pos_embed));
  const auto norm = simmim::checkpoint_normalization(path);
  REQUIRE(norm.first == std::vector<double>{0.25});
  REQUIRE(norm.second == std::vector<double>{0.5});

  auto wide = simmim::load_pretrain_model(path, simmim::Size2d(35, 42));
  REQUIRE(wide.image_size == simmim::Size2d(35, 42));
  const at::Tensor expected = simmim::resample_pos_embed(model->encoder_as<simmim::VisionTransformerImpl>()->pos->pos_embed,
                                                         simmim::Size2d(4), simmim::Size2d(5, 6), 1);
  REQUIRE(torch::equal(wide.simmim->encoder_as<simmim::VisionTransformerImpl>()->pos->pos_embed, expected));
  REQUIRE(torch::equal(wide.simmim->head()->parameters()[0], model->head()->parameters()[0]));
  const auto r = simmim::inpaint(wide.inpaint_model(), torch::rand({1, 1, 33, 40}), simmim::InpaintRegion::boxes({{3, 3, 9, 9}}));
  REQUIRE(r.images.sizes() == torch::IntArrayRef({1, 1, 33, 40}));
  REQUIRE_THROWS_WITH(simmim::load_pretrain_model(path, simmim::Size2d(30)),
                      ContainsSubstring("image_size must be a size whose sides the model's patch 7 divides"));

  // A checkpoint without a pretraining model's description (a fine-tuning run's, say) is refused by path.
  simmim::CheckpointParts bare;
  bare.model = model.ptr().get();
  bare.metadata = "{}";
  const std::string bare_path = (dir / "bare.pt").string();
  simmim::save_checkpoint(bare_path, bare, 1);
  REQUIRE_THROWS_WITH(simmim::load_pretrain_model(bare_path),
                      ContainsSubstring("a \"model\" description") && ContainsSubstring(bare_path));
  REQUIRE_THROWS_WITH(simmim::checkpoint_normalization(bare_path), ContainsSubstring("\"normalization\""));
}

TEST_CASE("a briefly trained SimMIM fills Fashion-MNIST boxes better than the visible mean", "[train][inpaint]") {
  simmim::FashionMnistOptions fm;
  if (!fs::exists(fs::path(fm.source_dir()) / "t10k-images-idx3-ubyte.gz")) SKIP("dataset-fashion-mnist is not installed");
  const auto dir = scratch_dir("inpaint_fmnist");
  const simmim::DataSplit train = simmim::fashion_mnist_split(true, simmim::SplitOptions().limit(8192));
  simmim::ModelSpec spec;
  spec.resolve();
  torch::manual_seed(0);
  auto model = simmim::SimMIM(spec.simmim_options());
  const auto masks = simmim::make_mask_generator(spec.default_mask_spec(), simmim::MaskGeometry(simmim::Size2d(28), 7));
  const int64_t steps = 30;
  simmim::pretrain(model, *masks, train,
                   simmim::PretrainOptions()
                       .steps(steps)
                       .batch_size(64)
                       .base_lr(8e-3)
                       .recipe(simmim::PretrainRecipe::simmim().lr_reference_batch(512))
                       .out((dir / "run").string())
                       .log_every(steps)
                       .grid_every(0)
                       .workers(0)
                       .progress(false)
                       .settings({{"model", spec.to_json()}}));
  const std::string ckpt = (dir / "run" / "checkpoint.pt").string();
  auto loaded = simmim::load_pretrain_model(ckpt);
  const auto norm = simmim::checkpoint_normalization(ckpt);
  REQUIRE(norm.first == std::vector<double>{simmim::kFashionMnistMean});

  const at::Tensor test = simmim::load_fashion_mnist(false, fm).images.narrow(0, 0, 256);  // [0, 1]
  const simmim::PixelBox box{8, 8, 12, 12};
  const auto r = simmim::inpaint(loaded.inpaint_model(), test, simmim::InpaintRegion::boxes({box}),
                                 simmim::InpaintOptions().mean(norm.first).stddev(norm.second).clamp_min(0).clamp_max(1));
  const at::Tensor inside = r.filled.expand_as(test);
  const at::Tensor truth = test.masked_select(inside).view({256, -1});
  const at::Tensor ours = r.images.masked_select(inside).view({256, -1});
  // The baseline: every filled pixel gets the mean of its image's visible pixels.
  const at::Tensor visible_mean = (test * (~inside)).sum({1, 2, 3}) / (~inside).sum({1, 2, 3});
  const double mse_model = (ours - truth).pow(2).mean().item<double>();
  const double mse_mean = (visible_mean.unsqueeze(1) - truth).pow(2).mean().item<double>();
  INFO("MSE in the box: model " << mse_model << ", visible mean " << mse_mean);
  // Measured on the 2-core development VM (seed 0): model 0.094 vs visible mean 0.171 after 30 steps (0.082 after
  // 60): the test asks for less than 70% of the baseline's error.
  REQUIRE(mse_model < 0.7 * mse_mean);
}
