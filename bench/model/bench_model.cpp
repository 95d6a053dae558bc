// One pretraining step (forward + backward, no optimizer) of the assembled models on the CPU, in images
// per second:
//   simmim_step/vit_tiny/B4_224            SimMIM, ViT-Ti/16 (192 wide, 12 blocks), 224x224, mask ratio 0.6
//   mae_step/vit_tiny/B4_224/ratio:R       MAE, ViT-Ti/16 encoder + 128-wide 4-block decoder, R = 0.5 / 0.75 / 0.9:
//                                          the encoder sees (1 - R) of the tokens, so the step gets cheaper
//   simmim_step/mnist/B64_28, mae_step/mnist/B64_28/ratio:0.75   the 28x28 presets (patch 7, width 128, depth 4)
//   simmim_step/mnist_w64/B64_28           SimMIM, the mnist preset at width 64 (the distilled student's size)
//   distill_step/mnist_to_w64/B64_28/<fp32|bf16>   Distiller: the mnist preset as a frozen teacher (its forward
//                                          without grad, fp32 or bf16 weights) and the width-64 student
//   <resnet|convnext|swin>_step/<resnet18|resnet50|convnext_tiny|swin_tiny>/B4_224   SimMIM with a hierarchical
//                                          encoder (mask at the stride-4 stem, 32-px cells, the head at stride 32)
//   simmim_train_step/vit_tiny/B8_224, mae_train_step/vit_tiny/B8_224/ratio:0.75, simmim_train_step/mnist/B128_28
//                                          the whole training step (masks, forward, backward, clipping, AdamW)
//                                          against bench/python/step_original.py; counters: ms per phase
// Except in the *_train_step cases, masks come from the library's generators, drawn once outside the timed
// loop (their cost is in bench/masking). Items processed = images. Batch 4 at 224: Debian's LibTorch runs on the reference
// (netlib) BLAS, where one ViT-Ti step of 8 images already takes tens of seconds.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <chrono>

#include "simmim/encoder/convnext.hpp"
#include "simmim/encoder/resnet.hpp"
#include "simmim/encoder/swin.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/model/distiller.hpp"
#include "simmim/model/mae_model.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/train/grad_clip.hpp"
#include "simmim/train/param_groups.hpp"
#include "simmim/train/recipe.hpp"

namespace {

template <typename Model, typename Forward>
void run_steps(benchmark::State& state, Model& model, const at::Tensor& images, Forward forward) {
  for (auto _ : state) {
    model->zero_grad();
    auto out = forward();
    out.loss.backward();
    benchmark::DoNotOptimize(out.loss.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * images.size(0));
}

void simmim_step(benchmark::State& state, simmim::SimMIMOptions options, int64_t batch) {
  torch::manual_seed(0);
  simmim::SimMIM model(options);
  const auto& enc = options.encoder();
  const auto images = torch::randn({batch, enc.in_chans(), enc.img_size().h, enc.img_size().w});
  // SimMIM's 32-pixel mask cells where they fit, else one cell per patch (28x28 with patch 7).
  const int64_t cell = enc.img_size().h % 32 == 0 && enc.img_size().w % 32 == 0 ? 32 : enc.patch_size();
  const auto masks = simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=" + std::to_string(cell),
                                                 simmim::MaskGeometry(enc.img_size(), enc.patch_size()))
                         ->generate(batch, simmim::make_generator(1));
  run_steps(state, model, images, [&] { return model(images, masks.mask); });
}

void mae_step(benchmark::State& state, simmim::MAEOptions options, int64_t batch, double ratio) {
  torch::manual_seed(0);
  simmim::MAE model(options);
  const auto& enc = options.encoder();
  const auto images = torch::randn({batch, enc.in_chans(), enc.img_size().h, enc.img_size().w});
  const auto masks = simmim::make_mask_generator("mae:ratio=" + std::to_string(ratio),
                                                 simmim::MaskGeometry(enc.img_size(), enc.patch_size()))
                         ->generate(batch, simmim::make_generator(1));
  run_steps(state, model, images, [&] { return model->forward(images, masks); });
}

void distill_step(benchmark::State& state, int64_t batch, simmim::TeacherPrecision precision) {
  torch::manual_seed(0);
  const auto teacher_options = simmim::SimMIMOptions::mnist().encoder();
  simmim::VisionTransformer teacher(teacher_options);
  simmim::VisionTransformer student(simmim::VisionTransformerOptions(teacher_options).embed_dim(64));
  simmim::Distiller model(teacher, student, simmim::DistillerOptions().teacher_precision(precision));
  const auto images = torch::randn({batch, 1, 28, 28});
  const auto masks = simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=7", simmim::MaskGeometry(28, 7))
                         ->generate(batch, simmim::make_generator(1));
  run_steps(state, model, images, [&] { return model(images, masks); });
}

template <typename Encoder>
void cnn_step(benchmark::State& state, Encoder encoder, int64_t batch) {
  simmim::SimMIM model(encoder);
  const simmim::Size2d img(224);
  const auto images = torch::randn({batch, 3, img.h, img.w});
  const auto masks = simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=32", simmim::MaskGeometry(img, 4))
                         ->generate(batch, simmim::make_generator(1));
  run_steps(state, model, images, [&] { return model(images, masks.mask); });
}
void resnet_step(benchmark::State& state, simmim::ResNetOptions options, int64_t batch) {
  torch::manual_seed(0);
  cnn_step(state, simmim::ResNet(options), batch);
}
void convnext_step(benchmark::State& state, simmim::ConvNeXtOptions options, int64_t batch) {
  torch::manual_seed(0);
  cnn_step(state, simmim::ConvNeXt(options), batch);
}
void swin_step(benchmark::State& state, simmim::SwinOptions options, int64_t batch) {
  torch::manual_seed(0);
  cnn_step(state, simmim::SwinTransformer(options), batch);
}


// The whole training step as simmim::pretrain runs it in fp32, against bench/python/step_original.py (the
// originals' step re-typed): the batch's masks (what the model reads of them), forward, backward, the
// recipe's gradient clipping, AdamW over its parameter groups. Counters: milliseconds per phase.
template <typename Model>
void train_steps(benchmark::State& state, Model& model, const simmim::PretrainRecipe& recipe,
                 const simmim::MaskGenerator& masks, const at::Tensor& images) {
  using clock = std::chrono::steady_clock;
  const auto ms = [](clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  const auto adamw = recipe.adamw(1.5e-4);
  auto groups = simmim::make_param_groups(*model, simmim::ParamGroupOptions().adamw(adamw));
  torch::optim::AdamW opt(groups.groups, adamw);
  at::Generator gen = simmim::make_generator(1);
  constexpr simmim::MaskOutputs outputs = simmim::mask_outputs_read_by<Model>();
  double t_mask = 0, t_forward = 0, t_backward = 0, t_optim = 0;
  for (auto _ : state) {
    const auto t0 = clock::now();
    const simmim::MaskBatch mb = masks.generate(images.size(0), gen, at::kCPU, outputs);
    const auto t1 = clock::now();
    const simmim::PretrainOutput out = model->forward(images, mb);
    const auto t2 = clock::now();
    opt.zero_grad();
    out.loss.backward();
    const auto t3 = clock::now();
    if (recipe.clip_grad() > 0) simmim::clip_grad_norm(*model, recipe.clip_grad());
    opt.step();
    const auto t4 = clock::now();
    benchmark::DoNotOptimize(out.loss.data_ptr());
    t_mask += ms(t1 - t0), t_forward += ms(t2 - t1), t_backward += ms(t3 - t2), t_optim += ms(t4 - t3);
  }
  state.SetItemsProcessed(state.iterations() * images.size(0));
  const auto avg = benchmark::Counter::kAvgIterations;
  state.counters["mask_ms"] = benchmark::Counter(t_mask, avg);
  state.counters["fwd_ms"] = benchmark::Counter(t_forward, avg);
  state.counters["bwd_ms"] = benchmark::Counter(t_backward, avg);
  state.counters["optim_ms"] = benchmark::Counter(t_optim, avg);
}

void simmim_train_step(benchmark::State& state, simmim::SimMIMOptions options, int64_t batch, std::string spec) {
  torch::manual_seed(0);
  simmim::SimMIM model(options);
  const auto& enc = options.encoder();
  const auto images = torch::randn({batch, enc.in_chans(), enc.img_size().h, enc.img_size().w});
  const auto masks = simmim::make_mask_generator(spec, simmim::MaskGeometry(enc.img_size(), enc.patch_size()));
  train_steps(state, model, simmim::PretrainRecipe::simmim(), *masks, images);
}

void mae_train_step(benchmark::State& state, simmim::MAEOptions options, int64_t batch) {
  torch::manual_seed(0);
  simmim::MAE model(options);
  const auto& enc = options.encoder();
  const auto images = torch::randn({batch, enc.in_chans(), enc.img_size().h, enc.img_size().w});
  const auto masks = simmim::make_mask_generator("mae:ratio=0.75", simmim::MaskGeometry(enc.img_size(), enc.patch_size()));
  train_steps(state, model, simmim::PretrainRecipe::mae(), *masks, images);
}

}  // namespace

// clang-format off (it would put spaces into the benchmark names)
BENCHMARK_CAPTURE(simmim_step, vit_tiny/B4_224, simmim::SimMIMOptions::vit_tiny(), 4)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);  // ~2-10 s a step here: three steps, not a time budget
BENCHMARK_CAPTURE(mae_step, vit_tiny/B4_224/ratio:0.5, simmim::MAEOptions::vit_tiny(), 4, 0.5)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);  // ~2-10 s a step here: three steps, not a time budget
BENCHMARK_CAPTURE(mae_step, vit_tiny/B4_224/ratio:0.75, simmim::MAEOptions::vit_tiny(), 4, 0.75)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);  // ~2-10 s a step here: three steps, not a time budget
BENCHMARK_CAPTURE(mae_step, vit_tiny/B4_224/ratio:0.9, simmim::MAEOptions::vit_tiny(), 4, 0.9)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);  // ~2-10 s a step here: three steps, not a time budget
BENCHMARK_CAPTURE(simmim_step, mnist/B64_28, simmim::SimMIMOptions::mnist(), 64)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(mae_step, mnist/B64_28/ratio:0.75, simmim::MAEOptions::mnist(), 64, 0.75)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(simmim_step, mnist_w64/B64_28, simmim::SimMIMOptions(simmim::SimMIMOptions::mnist().encoder().embed_dim(64)), 64)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(distill_step, mnist_to_w64/B64_28/fp32, 64, simmim::TeacherPrecision::kFloat32)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
BENCHMARK_CAPTURE(distill_step, mnist_to_w64/B64_28/bf16, 64, simmim::TeacherPrecision::kBFloat16)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(3.0);
// clang-format on
BENCHMARK_CAPTURE(resnet_step, resnet18/B4_224, simmim::ResNetOptions::resnet18(), 4)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK_CAPTURE(resnet_step, resnet50/B4_224, simmim::ResNetOptions::resnet50(), 4)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK_CAPTURE(convnext_step, convnext_tiny/B4_224, simmim::ConvNeXtOptions::tiny(), 4)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK_CAPTURE(swin_step, swin_tiny/B4_224, simmim::SwinOptions::tiny(), 4)
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
// The whole step (issue 15's three cases, against bench/python/step_original.py).
BENCHMARK_CAPTURE(simmim_train_step, vit_tiny/B8_224, simmim::SimMIMOptions::vit_tiny(), 8,
                  std::string("simmim:ratio=0.6,mask_patch=32"))
    ->Unit(benchmark::kMillisecond)->MinTime(5.0);
BENCHMARK_CAPTURE(mae_train_step, vit_tiny/B8_224/ratio:0.75, simmim::MAEOptions::vit_tiny(), 8)
    ->Unit(benchmark::kMillisecond)->MinTime(5.0);
BENCHMARK_CAPTURE(simmim_train_step, mnist/B128_28, simmim::SimMIMOptions::mnist(), 128,
                  std::string("simmim:ratio=0.6,mask_patch=7"))
    ->Unit(benchmark::kMillisecond)->MinTime(5.0);
