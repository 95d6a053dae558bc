#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <cmath>

#include "simmim/train/autocast.hpp"
#include "simmim/train/grad_clip.hpp"
#include "simmim/train/loss_scaler.hpp"
#include "simmim/train/lr_schedule.hpp"
#include "simmim/train/param_groups.hpp"

using Catch::Approx;
using Catch::Matchers::ContainsSubstring;

namespace {

// The parameter layout of a ViT as timm / the SimMIM code name it, with the encoder nested one level
// (as inside a pretraining or classification model).
struct TinyVitImpl : torch::nn::Module {
  TinyVitImpl() {
    auto enc = std::make_shared<torch::nn::Module>();
    enc->register_parameter("cls_token", torch::zeros({1, 1, 8}));
    enc->register_parameter("pos_embed", torch::zeros({1, 5, 8}));
    enc->register_parameter("mask_token", torch::zeros({1, 1, 8}));
    enc->register_module("patch_embed", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 2).stride(2)));
    torch::nn::ModuleList blocks;
    for (int i = 0; i < 3; ++i) blocks->push_back(torch::nn::Linear(8, 8));
    enc->register_module("blocks", blocks);
    enc->register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({8})));
    register_module("encoder", enc);
    register_module("head", torch::nn::Linear(8, 4));
  }
};
TORCH_MODULE(TinyVit);

// name -> (group label, weight decay, lr scale)
struct Where {
  std::string label;
  double wd;
  double scale;
};
std::map<std::string, Where> placement(const simmim::ParamGroups& g) {
  std::map<std::string, Where> out;
  for (size_t i = 0; i < g.size(); ++i) {
    const auto& o = static_cast<const torch::optim::AdamWOptions&>(g.groups[i].options());
    for (const auto& n : g.names[i]) out[n] = {g.labels[i], o.weight_decay(), g.lr_scales[i]};
  }
  return out;
}

}  // namespace

TEST_CASE("param groups: no decay for 1-D params, biases and tokens", "[train][param_groups]") {
  TinyVit model;
  auto g = simmim::make_param_groups(*model);
  REQUIRE(g.size() == 2);
  auto p = placement(g);
  REQUIRE(p.size() == model->parameters().size());
  for (const char* n : {"encoder.cls_token", "encoder.pos_embed", "encoder.mask_token", "encoder.patch_embed.bias",
                        "encoder.blocks.0.bias", "encoder.norm.weight", "encoder.norm.bias", "head.bias"}) {
    INFO(n);
    REQUIRE(p.at(n).wd == 0.0);
  }
  for (const char* n : {"encoder.patch_embed.weight", "encoder.blocks.2.weight", "head.weight"}) {
    INFO(n);
    REQUIRE(p.at(n).wd == 0.05);
    REQUIRE(p.at(n).scale == 1.0);
  }
  // The skip list is an option: with it empty the 3-D tokens are decayed.
  auto g2 = simmim::make_param_groups(*model, simmim::ParamGroupOptions().no_decay_names({}));
  REQUIRE(placement(g2).at("encoder.pos_embed").wd == 0.05);
  REQUIRE(placement(g2).at("encoder.blocks.0.bias").wd == 0.0);
  // AdamW accepts the groups and keeps their options.
  torch::optim::AdamW opt(g.groups);
  REQUIRE(opt.param_groups().size() == 2);
}

TEST_CASE("param groups: layer-wise lr decay scales", "[train][param_groups]") {
  TinyVit model;
  const double d = 0.75;
  auto g = simmim::make_param_groups(*model, simmim::ParamGroupOptions().layer_decay(d));
  REQUIRE(g.num_layers == 3);  // inferred from blocks.0..2
  auto p = placement(g);
  const int L = 3;
  // scale = d^(L + 1 - layer): stem layer 0, blocks.i layer i + 1, the rest L + 1.
  REQUIRE(p.at("encoder.patch_embed.weight").scale == Approx(std::pow(d, L + 1)));
  REQUIRE(p.at("encoder.pos_embed").scale == Approx(std::pow(d, L + 1)));
  REQUIRE(p.at("encoder.cls_token").scale == Approx(std::pow(d, L + 1)));
  REQUIRE(p.at("encoder.blocks.0.weight").scale == Approx(std::pow(d, L)));
  REQUIRE(p.at("encoder.blocks.2.weight").scale == Approx(d));
  REQUIRE(p.at("head.weight").scale == 1.0);
  REQUIRE(p.at("encoder.norm.weight").scale == 1.0);
  REQUIRE(p.at("encoder.blocks.1.bias").wd == 0.0);
  REQUIRE(p.at("encoder.blocks.1.weight").wd == 0.05);
  // Groups: (layer, decay) pairs present, ordered by layer.
  REQUIRE(g.labels.front().rfind("layer0/", 0) == 0);
  REQUIRE(g.labels.back().rfind("layer4/", 0) == 0);
  // Initial lr of each group is base * scale.
  for (size_t i = 0; i < g.size(); ++i) REQUIRE(g.groups[i].options().get_lr() == Approx(1e-3 * g.lr_scales[i]));
  // An explicit L smaller than the blocks present is an error, not a scale > 1.
  REQUIRE_THROWS_WITH(simmim::make_param_groups(*model, simmim::ParamGroupOptions().layer_decay(d).num_layers(1)),
                      ContainsSubstring("num_layers must be at least the number of blocks"));
  // One block short is caught too (block 2 would share the head's layer 3 = L + 1).
  REQUIRE_THROWS_WITH(simmim::make_param_groups(*model, simmim::ParamGroupOptions().layer_decay(d).num_layers(2)),
                      ContainsSubstring("is in block 2"));
  REQUIRE(simmim::make_param_groups(*model, simmim::ParamGroupOptions().layer_decay(d).num_layers(5)).num_layers == 5);
}

TEST_CASE("param groups: frozen parameters are left out; bad options explain", "[train][param_groups]") {
  TinyVit model;
  for (auto& p : model->named_parameters())
    if (p.key().rfind("encoder.", 0) == 0) p.value().set_requires_grad(false);
  auto g = simmim::make_param_groups(*model);
  auto p = placement(g);
  REQUIRE(p.size() == 2);  // head.weight, head.bias
  REQUIRE_THROWS_AS(simmim::make_param_groups(*model, simmim::ParamGroupOptions().layer_decay(1.5)), c10::ValueError);
  for (auto& q : model->parameters()) q.set_requires_grad(false);
  REQUIRE_THROWS_WITH(simmim::make_param_groups(*model), ContainsSubstring("at least one trainable parameter"));
}

TEST_CASE("block index parsing needs a whole component", "[train][param_groups]") {
  REQUIRE(simmim::param_layer_id("blocks.11.attn.qkv.weight", 12) == 12);
  REQUIRE(simmim::param_layer_id("encoder.blocks.0.mlp.fc1.weight", 12) == 1);
  REQUIRE(simmim::param_layer_id("decoder_blocks.3.weight", 12) == 13);  // not "blocks."
  REQUIRE(simmim::param_layer_id("encoder.patch_embed.proj.weight", 12) == 0);
  REQUIRE(simmim::param_layer_id("fc_norm.weight", 12) == 13);
}

TEST_CASE("cosine schedule with warmup", "[train][schedule]") {
  auto o = simmim::CosineScheduleOptions().base_lr(1.0).min_lr(0.1).warmup_init_lr(0.0).warmup_steps(10).total_steps(
      110);
  REQUIRE(simmim::cosine_lr(o, 0) == 0.0);
  REQUIRE(simmim::cosine_lr(o, 5) == Approx(0.5));
  REQUIRE(simmim::cosine_lr(o, 10) == Approx(1.0));
  REQUIRE(simmim::cosine_lr(o, 60) == Approx(0.55));  // half way down the cosine
  REQUIRE(simmim::cosine_lr(o, 110) == Approx(0.1));
  REQUIRE(simmim::cosine_lr(o, 500) == Approx(0.1));
  for (int s = 11; s < 110; ++s) REQUIRE(simmim::cosine_lr(o, s) < simmim::cosine_lr(o, s - 1));
  REQUIRE(simmim::linear_scaled_lr(1.25e-3, 128) == Approx(3.125e-4));
  REQUIRE(simmim::linear_scaled_lr(1e-3, 2048) == Approx(4e-3));
  REQUIRE_THROWS_AS(simmim::linear_scaled_lr(1e-3, 0), c10::ValueError);
}

TEST_CASE("schedule sets every group's lr to base * scale", "[train][schedule]") {
  TinyVit model;
  auto g = simmim::make_param_groups(*model, simmim::ParamGroupOptions().layer_decay(0.5));
  torch::optim::AdamW opt(g.groups);
  auto o = simmim::CosineScheduleOptions().base_lr(2.0).warmup_steps(4).total_steps(20);
  simmim::WarmupCosineSchedule sched(opt, o, g.lr_scales);
  for (int s = 0; s < 25; ++s) {
    const double lr = sched.step();
    REQUIRE(lr == Approx(simmim::cosine_lr(o, s)));
    for (size_t i = 0; i < g.size(); ++i)
      REQUIRE(opt.param_groups()[i].options().get_lr() == Approx(lr * g.lr_scales[i]));
  }
  REQUIRE(sched.step_count() == 25);
  REQUIRE_THROWS_WITH(simmim::WarmupCosineSchedule(opt, o, {1.0}), ContainsSubstring("one scale per optimizer group"));
  REQUIRE_THROWS_AS(simmim::WarmupCosineSchedule(opt, simmim::CosineScheduleOptions().warmup_steps(5).total_steps(4)),
                    c10::ValueError);
}

TEST_CASE("grad clipping returns the norm before clipping", "[train][clip]") {
  auto a = torch::zeros({3}, torch::requires_grad());
  auto b = torch::zeros({4}, torch::requires_grad());
  a.mutable_grad() = torch::full({3}, 3.0);
  b.mutable_grad() = torch::full({4}, 4.0);  // total norm sqrt(27 + 64) = sqrt(91)
  const double n = simmim::clip_grad_norm({a, b}, 1.0);
  REQUIRE(n == Approx(std::sqrt(91.0)));
  const double after = std::sqrt(a.grad().pow(2).sum().item<double>() + b.grad().pow(2).sum().item<double>());
  REQUIRE(after == Approx(1.0).epsilon(1e-4));
  // Under the threshold nothing changes.
  const auto before = a.grad().clone();
  REQUIRE(simmim::clip_grad_norm({a, b}, 10.0) == Approx(after));
  REQUIRE(torch::equal(a.grad(), before));
  REQUIRE_THROWS_AS(simmim::clip_grad_norm({a}, 0.0), c10::ValueError);
}

TEST_CASE("loss scaler: scale, unscale, skip on inf, grow and back off", "[train][amp]") {
  auto w = torch::ones({4}, torch::requires_grad());
  torch::optim::SGD opt({w}, torch::optim::SGDOptions(0.1));
  simmim::LossScaler scaler(simmim::LossScalerOptions().init_scale(1024.0).growth_interval(2));

  // A clean step: gradients arrive scaled, are unscaled exactly, and the optimizer steps.
  opt.zero_grad();
  auto loss = (w * 2.0).sum();
  auto scaled = scaler.scale(loss);
  REQUIRE(scaled.item<double>() == 1024.0 * 8.0);
  scaled.backward();
  REQUIRE(w.grad()[0].item<double>() == 2048.0);
  REQUIRE_FALSE(scaler.unscale_(opt));
  REQUIRE(w.grad()[0].item<double>() == 2.0);
  REQUIRE_FALSE(scaler.unscale_(opt));  // once per step
  REQUIRE(w.grad()[0].item<double>() == 2.0);
  REQUIRE(scaler.step(opt));
  REQUIRE(w[0].item<double>() == Approx(0.8));
  scaler.update();
  REQUIRE(scaler.get_scale() == 1024.0);
  REQUIRE(scaler.growth_tracker() == 1);

  // A fake overflow: the step is skipped, the weights untouched, the scale halves.
  opt.zero_grad();
  scaler.scale((w * 2.0).sum()).backward();
  w.mutable_grad()[1] = std::numeric_limits<float>::infinity();
  const auto before = w.detach().clone();
  REQUIRE_FALSE(scaler.step(opt));
  REQUIRE(scaler.found_inf());
  REQUIRE(torch::equal(w.detach(), before));
  scaler.update();
  REQUIRE(scaler.get_scale() == 512.0);
  REQUIRE(scaler.growth_tracker() == 0);

  // NaN counts too.
  opt.zero_grad();
  scaler.scale((w * 2.0).sum()).backward();
  w.mutable_grad()[0] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_FALSE(scaler.step(opt));
  scaler.update();
  REQUIRE(scaler.get_scale() == 256.0);

  // growth_interval clean steps double the scale.
  for (int i = 0; i < 2; ++i) {
    opt.zero_grad();
    scaler.scale((w * 2.0).sum()).backward();
    REQUIRE(scaler.step(opt));
    scaler.update();
  }
  REQUIRE(scaler.get_scale() == 512.0);
  REQUIRE_THROWS_WITH(scaler.update(), ContainsSubstring("call step() (or unscale_()) first"));

  // Disabled: identity scale, plain steps.
  simmim::LossScaler off(simmim::LossScalerOptions().enabled(false));
  REQUIRE(off.get_scale() == 1.0);
  REQUIRE(torch::equal(off.scale(loss), loss));
  REQUIRE_THROWS_AS(simmim::LossScaler(simmim::LossScalerOptions().backoff_factor(1.0)), c10::ValueError);
}

TEST_CASE("autocast guard: bf16 on the CPU, restores state, refuses fp16 on the CPU", "[train][amp]") {
  REQUIRE(simmim::parse_precision("bf16") == simmim::Precision::kBFloat16);
  REQUIRE(simmim::parse_precision("float16") == simmim::Precision::kFloat16);
  REQUIRE_THROWS_WITH(simmim::parse_precision("fp8"), ContainsSubstring("one of fp32, bf16, fp16"));
  auto a = torch::randn({4, 8});
  auto b = torch::randn({8, 3});
  REQUIRE(torch::mm(a, b).scalar_type() == torch::kFloat);
  {
    simmim::AutocastGuard guard(torch::kCPU, simmim::Precision::kBFloat16);
    REQUIRE(guard.active());
    REQUIRE(torch::mm(a, b).scalar_type() == torch::kBFloat16);
    {
      simmim::AutocastGuard inner(torch::kCPU, simmim::Precision::kFloat32);  // a no-op inside
      REQUIRE_FALSE(inner.active());
      REQUIRE(torch::mm(a, b).scalar_type() == torch::kBFloat16);
    }
    REQUIRE(torch::mm(a, b).scalar_type() == torch::kBFloat16);
  }
  REQUIRE(torch::mm(a, b).scalar_type() == torch::kFloat);
  REQUIRE_THROWS_WITH(simmim::AutocastGuard(torch::kCPU, simmim::Precision::kFloat16),
                      ContainsSubstring("fp16 autocast needs CUDA"));
}
