// The library's pretraining loop (simmim::pretrain) and its pieces: recipes, the optimizer step, one
// model entry for SimMIM and MAE, resume that continues bit for bit and refuses a different run, loader
// sharding, and data parallel over c10d's Gloo on loopback (ranks as threads of this process).
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <exception>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../support/scratch_dir.hpp"
#include "simmim/encoder/swin.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/model/distiller.hpp"
#include "simmim/train/model_spec.hpp"
#include "simmim/train/optimizer_step.hpp"
#include "simmim/train/pretrain.hpp"
#include "simmim/train/recipe.hpp"
#if SIMMIM_DEV_HAVE_GLOO
#include "simmim/distributed/gloo.hpp"
#endif

using Catch::Matchers::ContainsSubstring;
using simmim_test::scratch_dir;

namespace {

// 64 synthetic 1 x 28 x 28 images with some structure (a bright square), normalized.
simmim::DataSplit synthetic_split(int64_t n = 64) {
  auto gen = simmim::make_generator(123);
  at::Tensor images = torch::rand({n, 1, 28, 28}, gen) * 0.2;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = (i * 7) % 20, x = (i * 3) % 20;
    images[i].narrow(1, y, 8).narrow(2, x, 8).add_(0.8);
  }
  simmim::DataSplit s;
  s.size = n;
  s.channels = 1;
  s.image_size = simmim::Size2d(28);
  s.mean = {0.3};
  s.stddev = {0.3};
  s.num_classes = 1;
  const at::Tensor normalized = (images - 0.3) / 0.3;
  s.preview = normalized.slice(0, 0, 4);
  s.batches = [normalized](const std::vector<int64_t>& idx, uint64_t) {
    simmim::Batch b;
    b.images = normalized.index_select(0, torch::tensor(idx, torch::kLong));
    return b;
  };
  return s;
}

simmim::ModelSpec mnist_spec(const std::string& kind = "simmim") {
  simmim::ModelSpec spec;
  spec.kind = kind;
  return spec.resolve();
}

simmim::PretrainOptions quick_options(const std::filesystem::path& out, int64_t steps = 4, int64_t batch = 8) {
  return simmim::PretrainOptions()
      .steps(steps)
      .batch_size(batch)
      .base_lr(1e-2)
      .out(out.string())
      .log_every(1)
      .workers(0)
      .progress(false)
      .settings({{"model", mnist_spec().to_json()}});
}

std::unique_ptr<simmim::MaskGenerator> simmim_masks() {
  return simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=7", simmim::MaskGeometry(simmim::Size2d(28), 7));
}

simmim::SimMIM fresh_simmim(uint64_t seed = 0) {
  torch::manual_seed(seed);
  return simmim::SimMIM(mnist_spec().simmim_options());
}

std::vector<at::Tensor> params_of(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

bool all_equal(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i])) return false;
  }
  return true;
}

int count_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  int n = 0;
  std::string line;
  while (std::getline(in, line)) ++n;
  return n;
}

}  // namespace

TEST_CASE("recipes are the originals' values", "[train][pretrain]") {
  const auto s = simmim::PretrainRecipe::simmim();
  CHECK(s.beta1() == 0.9);
  CHECK(s.beta2() == 0.999);
  CHECK(s.weight_decay() == 0.05);
  CHECK(s.clip_grad() == 5.0);
  CHECK(s.lr(1e-3, 1024) == 2e-3);
  const auto m = simmim::PretrainRecipe::mae();
  CHECK(m.beta2() == 0.95);
  CHECK(m.clip_grad() == 0.0);
  CHECK(m.lr(1.5e-4, 4096) == 1.5e-4 * 16);
  REQUIRE_THROWS_WITH(simmim::PretrainRecipe().beta2(1.5).check("t"), ContainsSubstring("recipe.beta2 must be in [0, 1)"));
}

TEST_CASE("OptimizerStep steps, clips and reports; skips on inf under loss scaling", "[train][pretrain]") {
  torch::manual_seed(0);
  torch::nn::Linear lin(4, 3);
  torch::optim::SGD sgd(lin->parameters(), torch::optim::SGDOptions(0.1));
  simmim::LossScaler off(simmim::LossScalerOptions().enabled(false));
  simmim::OptimizerStep step(sgd, off, /*clip_grad=*/0.5);
  const auto before = params_of(*lin);
  const auto stats = step((lin(torch::randn({5, 4})) * 100).pow(2).mean());
  CHECK(std::isfinite(stats.grad_norm));
  CHECK(stats.grad_norm > 0.5);  // it was clipped from there
  CHECK_FALSE(stats.skipped);
  CHECK_FALSE(all_equal(before, params_of(*lin)));

  simmim::LossScaler on(simmim::LossScalerOptions().enabled(true));
  simmim::OptimizerStep scaled(sgd, on);
  const auto kept = params_of(*lin);
  const auto bad = scaled(lin(torch::full({1, 4}, std::numeric_limits<float>::infinity())).sum());
  CHECK(bad.skipped);
  CHECK(all_equal(kept, params_of(*lin)));
  CHECK(on.get_scale() < bad.loss_scale);  // backed off
  REQUIRE_THROWS_WITH(step(torch::ones({2})), ContainsSubstring("loss must be a scalar that requires grad"));
}

TEST_CASE("SimMIM and MAE share one entry: forward(images, MaskBatch), a mask tensor converts", "[train][pretrain]") {
  auto masks = simmim_masks();
  const auto mb = masks->generate(2, simmim::make_generator(1));
  const at::Tensor x = torch::randn({2, 1, 28, 28});
  auto simmim_model = fresh_simmim();
  const auto a = simmim_model->forward(x, mb);
  const auto b = simmim_model(x, mb.mask);
  CHECK(torch::equal(a.loss, b.loss));
  torch::manual_seed(0);
  simmim::MAE mae(mnist_spec("mae").mae_options());
  auto mae_masks = simmim::make_mask_generator("mae:ratio=0.75", simmim::MaskGeometry(simmim::Size2d(28), 7));
  const auto mmb = mae_masks->generate(2, simmim::make_generator(1));
  // The plain mask rebuilds the ids in another token order: attention sums in another order, same loss.
  CHECK(torch::allclose(mae->forward(x, mmb).loss, mae(x, mmb.mask).loss, 1e-5, 1e-6));
  // What pretrain() asks the generator for: SimMIM reads the mask alone; MAE, and any model that does not
  // declare kMaskOutputs, the ids too.
  STATIC_REQUIRE(simmim::mask_outputs_read_by<simmim::SimMIM>() == simmim::MaskOutputs::kMaskOnly);
  STATIC_REQUIRE(simmim::mask_outputs_read_by<simmim::SimMIMImpl>() == simmim::MaskOutputs::kMaskOnly);
  STATIC_REQUIRE(simmim::mask_outputs_read_by<simmim::MAE>() == simmim::MaskOutputs::kMaskAndIds);
  STATIC_REQUIRE(simmim::mask_outputs_read_by<torch::nn::Linear>() == simmim::MaskOutputs::kMaskAndIds);
  const auto only = masks->generate(2, simmim::make_generator(1), torch::kCPU, simmim::MaskOutputs::kMaskOnly);
  CHECK(torch::equal(simmim_model->forward(x, only).loss, a.loss));
}

TEST_CASE("pretrain: files are written, the encoder comes back from the checkpoint, stop + resume equals the uninterrupted run", "[train][pretrain]") {
  const auto data = synthetic_split();
  auto masks = simmim_masks();
  const auto dir_a = scratch_dir("pretrain_a"), dir_b = scratch_dir("pretrain_b");

  auto full = fresh_simmim();
  const auto ra = simmim::pretrain(full, *masks, data, quick_options(dir_a, 6), nullptr);
  CHECK(ra.last_step == 6);
  CHECK_FALSE(ra.stopped);
  CHECK(std::isfinite(ra.loss_ema));
  CHECK(std::filesystem::exists(dir_a / "checkpoint.pt"));
  CHECK(std::filesystem::exists(dir_a / "reconstruction.png"));
  CHECK(count_lines(dir_a / "metrics.jsonl") == 6);
  // The model spec travels with the checkpoint: the encoder comes back from the file alone.
  auto encoder = simmim::load_pretrained_encoder((dir_a / "checkpoint.pt").string());
  CHECK(torch::equal(encoder->named_parameters()["patch_embed.proj.weight"],
                     full->named_parameters()["encoder.patch_embed.proj.weight"]));

  auto part = fresh_simmim();
  const auto rb1 = simmim::pretrain(part, *masks, data, quick_options(dir_b, 6).stop_after(3), nullptr);
  CHECK(rb1.stopped);
  CHECK(rb1.last_step == 3);
  auto resumed = fresh_simmim(99);  // other init: everything must come from the checkpoint
  const auto rb2 = simmim::pretrain(resumed, *masks, data, quick_options(dir_b, 6).resume(true), nullptr);
  CHECK(rb2.start_step == 3);
  CHECK(rb2.last_step == 6);
  CHECK(all_equal(params_of(*full), params_of(*resumed)));
  // The smoothed loss continues across the resume instead of restarting.
  CHECK(rb2.loss_ema == ra.loss_ema);
  CHECK(count_lines(dir_b / "metrics.jsonl") == 6);
}

TEST_CASE("pretrain: resume refuses a run whose settings differ, naming the setting and both values", "[train][pretrain]") {
  const auto data = synthetic_split();
  auto masks = simmim_masks();
  const auto dir = scratch_dir("pretrain_refuse");
  auto model = fresh_simmim();
  simmim::pretrain(model, *masks, data, quick_options(dir, 4).stop_after(2), nullptr);
  auto again = fresh_simmim();
  auto other_masks =
      simmim::make_mask_generator("simmim:ratio=0.4,mask_patch=7", simmim::MaskGeometry(simmim::Size2d(28), 7));
  REQUIRE_THROWS_WITH(simmim::pretrain(again, *other_masks, data, quick_options(dir, 4).resume(true), nullptr),
                      ContainsSubstring("setting 'mask' differs: the checkpoint's run has \"simmim:ratio=0.6") &&
                          ContainsSubstring("this run has \"simmim:ratio=0.4"));
  REQUIRE_THROWS_WITH(simmim::pretrain(again, *masks, data, quick_options(dir, 4).resume(true).seed(5), nullptr),
                      ContainsSubstring("setting 'seed' differs: the checkpoint's run has 0, this run has 5"));
  REQUIRE_THROWS_WITH(simmim::pretrain(again, *masks, data, quick_options(dir, 8).resume(true), nullptr),
                      ContainsSubstring("setting 'steps' differs"));
  REQUIRE_THROWS_WITH(
      simmim::pretrain(again, *masks, data, quick_options(dir, 4).resume(true).recipe(simmim::PretrainRecipe::mae()),
                       nullptr),
      ContainsSubstring("setting 'recipe' differs"));
  REQUIRE_THROWS_WITH(simmim::pretrain(again, *masks, data, quick_options(dir, 4).stop_after(9), nullptr),
                      ContainsSubstring("options.stop_after must be in [0, steps = 4]"));
  REQUIRE_THROWS_WITH(simmim::pretrain(again, *masks, data, quick_options(dir, 4).warmup_steps(-3), nullptr),
                      ContainsSubstring("options.warmup_steps must be in [0, steps = 4], or -1"));
  // An output folder under a file cannot be created: the option and the path, not a bare filesystem error.
  { std::ofstream(dir / "a_file") << "x"; }
  REQUIRE_THROWS_WITH(simmim::pretrain(again, *masks, data, quick_options(dir / "a_file" / "run", 4), nullptr),
                      ContainsSubstring("simmim::pretrain: options.out must be a folder that can be created and "
                                        "written; got '") &&
                          ContainsSubstring("a_file/run"));
}

TEST_CASE("pretrain trains a Distiller: its checkpoint holds the student, which a sized ModelSpec rebuilds",
          "[train][pretrain][distill]") {
  const auto data = synthetic_split();
  auto masks = simmim_masks();
  const auto dir = scratch_dir("pretrain_distill");
  torch::manual_seed(0);
  simmim::VisionTransformer teacher(mnist_spec().encoder_options());
  std::vector<at::Tensor> teacher_before = params_of(*teacher);
  simmim::ModelSpec spec = mnist_spec("distill");
  spec.embed_dim = 32;
  spec.depth = 2;
  spec.num_heads = 2;
  CHECK(spec.to_json().at("embed_dim") == 32);
  CHECK_FALSE(mnist_spec().to_json().contains("embed_dim"));  // a preset's description is unchanged
  CHECK(simmim::ModelSpec::from_json(spec.to_json()).encoder_options().embed_dim() == 32);
  simmim::VisionTransformer student(spec.encoder_options());
  simmim::Distiller model(teacher, student);
  const auto r = simmim::pretrain(model, *masks, data, quick_options(dir, 4).settings({{"model", spec.to_json()}}), nullptr);
  CHECK(std::isfinite(r.loss_ema));
  CHECK_FALSE(std::filesystem::exists(dir / "reconstruction.png"));  // features: no picture
  CHECK(all_equal(params_of(*teacher), teacher_before));
  const std::string ckpt = (dir / "checkpoint.pt").string();
  auto encoder = simmim::load_pretrained_encoder(ckpt);
  CHECK(encoder->options.embed_dim() == 32);
  CHECK(encoder->blocks->size() == 2);
  CHECK(torch::equal(encoder->named_parameters()["patch_embed.proj.weight"],
                     student->named_parameters()["patch_embed.proj.weight"]));
  REQUIRE_THROWS_WITH(simmim::load_pretrain_model(ckpt),
                      ContainsSubstring("simmim::load_pretrain_model: path must be a SimMIM or MAE checkpoint"));
}

TEST_CASE("pretrain runs MAE through the same loop", "[train][pretrain]") {
  const auto data = synthetic_split();
  auto masks = simmim::make_mask_generator("mae:ratio=0.75", simmim::MaskGeometry(simmim::Size2d(28), 7));
  torch::manual_seed(0);
  simmim::MAE model(mnist_spec("mae").mae_options());
  const auto r = simmim::pretrain(model, *masks, data,
                                  quick_options(scratch_dir("pretrain_mae"), 3).recipe(simmim::PretrainRecipe::mae()),
                                  nullptr);
  CHECK(r.last_step == 3);
  CHECK(std::isfinite(r.loss_ema));
}

TEST_CASE("pretrain in bf16 on the CPU (autocast): SimMIM and MAE train, their losses are float", "[train][pretrain]") {
  // Under autocast the decoders answer in bf16 and the images stay float: the loss promotes, as the
  // originals' losses do (before, this stopped at the loss's dtype check; the GPU run found it).
  const auto data = synthetic_split();
  for (const std::string kind : {"simmim", "mae"}) {
    INFO(kind);
    auto masks = simmim::make_mask_generator(kind == "simmim" ? "simmim:ratio=0.6,mask_patch=7" : "mae:ratio=0.75",
                                             simmim::MaskGeometry(simmim::Size2d(28), 7));
    torch::manual_seed(0);
    auto options = quick_options(scratch_dir("pretrain_bf16_" + kind), 3).precision(simmim::Precision::kBFloat16);
    simmim::PretrainResult r;
    if (kind == "simmim") {
      simmim::SimMIM model(mnist_spec().simmim_options());
      r = simmim::pretrain(model, *masks, data, options, nullptr);
      simmim::AutocastGuard autocast(torch::kCPU, simmim::Precision::kBFloat16);
      const auto images = torch::rand({2, 1, 28, 28});
      CHECK(model->forward(images, masks->generate(2)).loss.scalar_type() == torch::kFloat);
    } else {
      simmim::MAE model(mnist_spec("mae").mae_options());
      r = simmim::pretrain(model, *masks, data, options.recipe(simmim::PretrainRecipe::mae()), nullptr);
    }
    CHECK(r.last_step == 3);
    CHECK(std::isfinite(r.loss_ema));
  }
}

TEST_CASE("pretrain end to end on 13-channel, non-square images: a ViT and a Swin", "[train][pretrain][channels]") {
  // Multispectral-like data: 13 smooth bands, 32 x 64, statistics from the data; the library loop writes
  // metrics, a checkpoint and a grid of every band as gray tiles.
  torch::manual_seed(5);
  namespace F = torch::nn::functional;
  const auto smooth = F::interpolate(torch::rand({24, 13, 4, 8}), F::InterpolateFuncOptions()
                                                                      .size(std::vector<int64_t>{32, 64})
                                                                      .mode(torch::kBilinear)
                                                                      .align_corners(false));
  const auto data = simmim::tensor_split({smooth, {}}, simmim::SplitOptions().image_size(simmim::Size2d(0)));
  REQUIRE(data.channels == 13);
  for (int which = 0; which < 2; ++which) {
    INFO((which == 0 ? "ViT" : "Swin"));
    const auto dir = scratch_dir(which == 0 ? "pretrain_13_vit" : "pretrain_13_swin");
    torch::manual_seed(0);
    const int64_t patch = which == 0 ? 8 : 4;
    auto masks = simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=16",
                                             simmim::MaskGeometry(simmim::Size2d(32, 64), patch));
    simmim::SimMIM model = which == 0 ? simmim::SimMIM(simmim::SimMIMOptions(
                                            simmim::VisionTransformerOptions({32, 64}, 8, 32, 2, 2).in_chans(13)))
                                      : simmim::SimMIM(simmim::SwinTransformer(
                                            simmim::SwinOptions({32, 64}, 4, 16, {1, 2, 1, 1}, {1, 2, 2, 4})
                                                .in_chans(13)));
    const auto r = simmim::pretrain(model, *masks, data,
                                    quick_options(dir, 3).settings({{"model", which == 0 ? "vit13" : "swin13"}}),
                                    nullptr);
    CHECK(r.last_step == 3);
    CHECK(std::isfinite(r.loss_ema));
    CHECK(std::filesystem::exists(dir / "reconstruction.png"));
    CHECK(std::filesystem::exists(dir / "checkpoint.pt"));
  }
}

TEST_CASE("BatchLoader shards: N shards of batch b are exactly one loader of batch N x b", "[train][pretrain]") {
  auto fn = [](const std::vector<int64_t>& idx, uint64_t) {
    simmim::Batch b;
    b.images = torch::tensor(idx, torch::kLong);
    return b;
  };
  simmim::BatchLoader one(50, fn, simmim::BatchLoaderOptions().batch_size(12).seed(4).workers(0));
  simmim::BatchLoader s0(50, fn, simmim::BatchLoaderOptions().batch_size(4).seed(4).workers(0).num_shards(3).shard(0));
  simmim::BatchLoader s1(50, fn, simmim::BatchLoaderOptions().batch_size(4).seed(4).workers(1).num_shards(3).shard(1));
  simmim::BatchLoader s2(50, fn, simmim::BatchLoaderOptions().batch_size(4).seed(4).workers(0).num_shards(3).shard(2));
  for (int step = 0; step < 9; ++step) {  // over two epochs of 4 global batches
    const at::Tensor together = torch::cat({s0.next().images, s1.next().images, s2.next().images});
    CHECK(torch::equal(together, one.next().images));
  }
  REQUIRE_THROWS_WITH(simmim::BatchLoader(50, fn, simmim::BatchLoaderOptions().num_shards(2).shard(2)),
                      ContainsSubstring("options.shard must be in [0, num_shards = 2)"));
}

TEST_CASE("distributed env: torchrun's variables, checked", "[train][distributed]") {
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "2", 1);
  ::setenv("LOCAL_RANK", "0", 1);
  ::setenv("MASTER_ADDR", "10.0.0.1", 1);
  ::setenv("MASTER_PORT", "29555", 1);
  const auto env = simmim::distributed_env_from_environment();
  CHECK(env.world_size == 4);
  CHECK(env.rank == 2);
  CHECK(env.local_rank == 0);
  CHECK(env.master_addr == "10.0.0.1");
  CHECK(env.master_port == 29555);
  ::setenv("RANK", "4", 1);
  REQUIRE_THROWS_WITH(simmim::distributed_env_from_environment(), ContainsSubstring("rank must be in [0, world_size = 4)"));
  ::setenv("RANK", "x", 1);
  REQUIRE_THROWS_WITH(simmim::distributed_env_from_environment(), ContainsSubstring("$RANK must be an integer; got 'x'"));
  for (const char* v : {"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"}) ::unsetenv(v);
  CHECK(simmim::distributed_env_from_environment().world_size == 1);
}

#if SIMMIM_DEV_HAVE_GLOO
namespace {

// A port nobody listens on right now.
int64_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  const int64_t port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

simmim::DistributedEnv env_for(int64_t rank, int64_t world, int64_t port, int timeout_s = 20) {
  simmim::DistributedEnv env;
  env.rank = rank;
  env.world_size = world;
  env.local_rank = rank;
  env.master_port = port;
  env.timeout = std::chrono::seconds(timeout_s);
  return env;
}

// Runs body(rank) on `world` threads, each its own rank; rethrows the first error.
template <typename F>
void on_ranks(int64_t world, F&& body) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        body(r);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace

TEST_CASE("data parallel over Gloo: 2 ranks equal each other, and 1 rank with twice the batch", "[train][distributed]") {
  const auto data = synthetic_split();
  auto masks = simmim_masks();
  // One process, batch 16.
  auto single = fresh_simmim();
  simmim::pretrain(single, *masks, data, quick_options(scratch_dir("dp_single"), 4, 16), nullptr);
  const auto expected = params_of(*single);

  // Two ranks of batch 8; rank 1 starts from other weights (rank 0's are broadcast).
  const int64_t port = free_port();
  std::vector<simmim::SimMIM> models{fresh_simmim(0), fresh_simmim(1)};
  const auto dir = scratch_dir("dp_two");
  on_ranks(2, [&](int64_t r) {
    auto dist = simmim::make_gloo_collective(env_for(r, 2, port));
    simmim::pretrain(models[static_cast<size_t>(r)], *masks, data, quick_options(dir, 4, 8), dist);
  });
  const auto p0 = params_of(*models[0]), p1 = params_of(*models[1]);
  CHECK(all_equal(p0, p1));
  REQUIRE(p0.size() == expected.size());
  // Equal to 1 process up to the order of the sums: the difference of all parameters together, relative
  // to their norm. (Per element, or per tensor, AdamW turns rounding noise in gradients that are zero in
  // exact arithmetic, the key bias's, into steps of the lr's size: no bound there means anything.)
  double diff2 = 0, norm2 = 0;
  for (size_t i = 0; i < p0.size(); ++i) {
    diff2 += (p0[i] - expected[i]).pow(2).sum().item<double>();
    norm2 += expected[i].pow(2).sum().item<double>();
  }
  INFO("relative difference of the parameters, 2 ranks x 8 vs 1 x 16: " << std::sqrt(diff2 / norm2));
  CHECK(std::sqrt(diff2 / norm2) < 1e-6);

  // Stopped after 2 and resumed: the same as the uninterrupted 2-rank run.
  const int64_t port2 = free_port();
  const auto dir2 = scratch_dir("dp_resume");
  std::vector<simmim::SimMIM> first{fresh_simmim(0), fresh_simmim(1)};
  on_ranks(2, [&](int64_t r) {
    auto dist = simmim::make_gloo_collective(env_for(r, 2, port2));
    simmim::pretrain(first[static_cast<size_t>(r)], *masks, data, quick_options(dir2, 4, 8).stop_after(2), dist);
  });
  const int64_t port3 = free_port();
  std::vector<simmim::SimMIM> second{fresh_simmim(5), fresh_simmim(6)};
  on_ranks(2, [&](int64_t r) {
    auto dist = simmim::make_gloo_collective(env_for(r, 2, port3));
    simmim::pretrain(second[static_cast<size_t>(r)], *masks, data, quick_options(dir2, 4, 8).resume(true), dist);
  });
  CHECK(all_equal(params_of(*second[0]), p0));
  CHECK(all_equal(params_of(*second[1]), p0));

  // A different world size cannot resume this run.
  auto lone = fresh_simmim();
  REQUIRE_THROWS_WITH(simmim::pretrain(lone, *masks, data, quick_options(dir2, 4, 8).resume(true), nullptr),
                      ContainsSubstring("setting 'world_size' differs: the checkpoint's run has 2, this run has 1"));
}

TEST_CASE("data parallel over Gloo: a parameter without a gradient is an error naming it, not a hang",
          "[train][distributed]") {
  const int64_t port = free_port();
  std::vector<std::string> messages(2);
  const auto t0 = std::chrono::steady_clock::now();
  on_ranks(2, [&](int64_t r) {
    auto dist = simmim::make_gloo_collective(env_for(r, 2, port, /*timeout_s=*/5));
    torch::nn::Linear used(3, 2), unused(3, 2);
    used(torch::randn({4, 3})).sum().backward();
    std::vector<std::pair<std::string, at::Tensor>> named{{"used.weight", used->weight}};
    if (r == 1) named.emplace_back("head.unused.weight", unused->weight);
    try {
      simmim::average_gradients(*dist, named);
    } catch (const c10::Error& e) {
      messages[static_cast<size_t>(r)] = e.what_without_backtrace();
    }
  });
  CHECK_THAT(messages[1], ContainsSubstring("parameter 'head.unused.weight' must be a gradient after backward") &&
                              ContainsSubstring("none on rank 1"));
  // Rank 0 waited in the all-reduce for rank 1, which never came: it fails within the timeout, saying so.
  CHECK_THAT(messages[0], ContainsSubstring("all_reduce on rank 0 of 2 failed: another rank died, failed or stopped"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
}

TEST_CASE("data parallel over Gloo: a rank that dies makes the other fail fast with a clear message",
          "[train][distributed]") {
  const int64_t port = free_port();
  std::string message;
  const auto t0 = std::chrono::steady_clock::now();
  on_ranks(2, [&](int64_t r) {
    auto dist = simmim::make_gloo_collective(env_for(r, 2, port, /*timeout_s=*/10));
    std::vector<at::Tensor> t{torch::ones({4})};
    dist->all_reduce_sum(t);
    if (r == 1) return;  // rank 1 "dies": its process group goes away
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    try {
      for (int i = 0; i < 3; ++i) dist->all_reduce_sum(t);
    } catch (const c10::Error& e) {
      message = e.what_without_backtrace();
    }
  });
  CHECK_THAT(message, ContainsSubstring("all_reduce on rank 0 of 2 failed"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60));
}
#endif
