// The masked losses and mask drawing on a GPU, timed with CUDA events (manual time):
//   simmim_l1/<fused_cuda|reference_cuda>/<B>x<C>x<H>x<W>_p<p>_<dtype>   forward + backward, bool mask
//   simmim_l1_normpix/fused_cuda/...                                     the same with norm-pix targets
//   mae_l2_normpix/<fused_cuda|reference_cuda>/<B>x<L>x<D>_<dtype>       MAE's norm-pix loss on tokens
//   cosine/<fused_cuda|reference_cuda>/<B>x<L>x<D>_<dtype>               kCosine on tokens (teacher features)
//   cross_entropy/<fused_cuda|reference_cuda>/<B>x<L>x<D>_g<G>_<dtype>   kCrossEntropy, G ids of D / G classes per token
//   copy/aten_cuda/<B>x<C>x<H>x<W>_<dtype>                                dst.copy_(src): the bandwidth yardstick
//   simmim_mask/cpu_then_copy_cuda/<B>                                   SimMIM masks for a batch at 192 px, drawn on
//                                                                        the CPU and copied to the GPU
// Bytes processed: pred + target read and the gradient written (3 tensors) for the losses (the token kinds:
// pred read, gradient written, target values or int64 ids read); 2 for the copy.
// Without a CUDA device every benchmark reports an error and nothing runs.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <functional>
#include <utility>
#include <string>
#include <vector>

#include "bench_names.hpp"
#include "simmim/core/random.hpp"
#include "simmim/loss/masked_loss.hpp"
#include "simmim/masking/mask_factory.hpp"

namespace {

using simmim::Backend;
using simmim::MaskedLossOptions;

using bench_names::dims;
using bench_names::dtype_name;

// Times `body` with CUDA events on the current stream, per iteration (manual time).
void timed(benchmark::State& state, const std::function<void()>& body) {
  if (!torch::cuda::is_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  for (int k = 0; k < 3; ++k) body();  // warm up: allocator, lazy init
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);
  for (auto _ : state) {
    start.record();
    body();
    stop.record();
    stop.synchronize();
    state.SetIterationTime(static_cast<double>(start.elapsed_time(stop)) / 1e3);
  }
}

void loss_step(benchmark::State& state, std::vector<int64_t> shape, std::vector<int64_t> mask_shape,
               torch::ScalarType dtype, MaskedLossOptions options) {
  if (!torch::cuda::is_available()) return timed(state, [] {});
  auto gen = simmim::make_generator(0);
  const torch::Tensor pred = torch::randn(shape, gen).to(torch::kCUDA, dtype).requires_grad_(true);
  const torch::Tensor target = torch::randn(shape, gen).to(torch::kCUDA, dtype);
  const torch::Tensor mask = (torch::rand(mask_shape, gen) < 0.6).to(torch::kCUDA);
  timed(state, [&] {
    pred.mutable_grad().reset();
    simmim::masked_reconstruction_loss(pred, target, mask, options).backward();
  });
  state.SetBytesProcessed(state.iterations() * 3 * pred.numel() * static_cast<int64_t>(pred.element_size()));
}

// A token kind: kCosine against a target of pred's shape, kCrossEntropy against G class ids per token
// (groups > 0).
void token_loss_step(benchmark::State& state, std::vector<int64_t> shape, int64_t groups, torch::ScalarType dtype,
                     MaskedLossOptions options) {
  if (!torch::cuda::is_available()) return timed(state, [] {});
  auto gen = simmim::make_generator(0);
  const torch::Tensor pred = torch::randn(shape, gen).to(torch::kCUDA, dtype).requires_grad_(true);
  const torch::Tensor target =
      groups > 0 ? torch::randint(0, shape[2] / groups, {shape[0], shape[1], groups}, gen, torch::kLong).to(torch::kCUDA)
                 : torch::randn(shape, gen).to(torch::kCUDA, dtype);
  const torch::Tensor mask = (torch::rand({shape[0], shape[1]}, gen) < 0.6).to(torch::kCUDA);
  timed(state, [&] {
    pred.mutable_grad().reset();
    simmim::masked_reconstruction_loss(pred, target, mask, options).backward();
  });
  const int64_t target_bytes = target.numel() * static_cast<int64_t>(target.element_size());
  state.SetBytesProcessed(state.iterations() *
                          (2 * pred.numel() * static_cast<int64_t>(pred.element_size()) + target_bytes));
}

void copy(benchmark::State& state, std::vector<int64_t> shape, torch::ScalarType dtype) {
  if (!torch::cuda::is_available()) return timed(state, [] {});
  const torch::Tensor src = torch::randn(shape).to(torch::kCUDA, dtype);
  torch::Tensor dst = torch::empty_like(src);
  timed(state, [&] { dst.copy_(src); });
  state.SetBytesProcessed(state.iterations() * 2 * src.numel() * static_cast<int64_t>(src.element_size()));
}

// simmim draws masks on a CPU generator (the same seed gives the same masks on every device), then copies
// them: this is what a CUDA training step pays for its masks.
void masks_cpu_then_copy(benchmark::State& state, int64_t batch) {
  if (!torch::cuda::is_available()) return timed(state, [] {});
  const auto generator =
      simmim::make_mask_generator("simmim:ratio=0.6,mask_patch=32", simmim::MaskGeometry(simmim::Size2d(192), 4));
  auto gen = simmim::make_generator(0);
  timed(state, [&] { benchmark::DoNotOptimize(generator->generate(batch, gen, torch::kCUDA).mask.data_ptr()); });
  state.SetItemsProcessed(state.iterations() * batch);
}

const bool registered = [] {
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const int64_t size : {192, 224}) {
      const std::vector<int64_t> shape{128, 3, size, size};
      benchmark::RegisterBenchmark(("copy/aten_cuda/" + dims(shape) + "_" + dtype_name(dtype)).c_str(), copy, shape,
                                   dtype)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      for (const int64_t p : {4, 16}) {
        const std::vector<int64_t> mask_shape{128, size / p, size / p};
        for (const auto backend : {Backend::kFusedCUDA, Backend::kReference}) {
          const std::string name = std::string("simmim_l1/") +
                                   (backend == Backend::kFusedCUDA ? "fused_cuda/" : "reference_cuda/") + dims(shape) +
                                   "_p" + std::to_string(p) + "_" + dtype_name(dtype);
          benchmark::RegisterBenchmark(name.c_str(), loss_step, shape, mask_shape, dtype,
                                       MaskedLossOptions::simmim(p).backend(backend))
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond);
        }
        benchmark::RegisterBenchmark(("simmim_l1_normpix/fused_cuda/" + dims(shape) + "_p" + std::to_string(p) + "_" +
                                      dtype_name(dtype))
                                         .c_str(),
                                     loss_step, shape, mask_shape, dtype,
                                     MaskedLossOptions::simmim(p).norm_pix(true).backend(Backend::kFusedCUDA))
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
    const std::vector<int64_t> tokens{128, 196, 768};
    for (const auto backend : {Backend::kFusedCUDA, Backend::kReference}) {
      const std::string name = std::string("mae_l2_normpix/") +
                               (backend == Backend::kFusedCUDA ? "fused_cuda/" : "reference_cuda/") + dims(tokens) +
                               "_" + dtype_name(dtype);
      benchmark::RegisterBenchmark(name.c_str(), loss_step, tokens, std::vector<int64_t>{128, 196}, dtype,
                                   MaskedLossOptions::mae(true).backend(backend))
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  // Token kinds, the CPU benchmark's cases at batch 128: a ViT-B teacher's features under the cosine; BEiT's
  // 8192 visual tokens (G = 1) and SimMIM's 8 color bins of a 16 x 16 x 3 patch (G = 768) under the
  // cross-entropy (batch 32 there: 128 x 196 x 8192 logits are 0.8 GB in fp32).
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const auto backend : {Backend::kFusedCUDA, Backend::kReference}) {
      const std::string backend_name = backend == Backend::kFusedCUDA ? "fused_cuda/" : "reference_cuda/";
      const std::vector<int64_t> features{128, 196, 768};
      benchmark::RegisterBenchmark(("cosine/" + backend_name + dims(features) + "_" + dtype_name(dtype)).c_str(),
                                   token_loss_step, features, int64_t{0}, dtype,
                                   MaskedLossOptions().kind(simmim::LossKind::kCosine).eps(0).backend(backend))
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      for (const auto& [logits, groups] : {std::pair<std::vector<int64_t>, int64_t>{{32, 196, 8192}, 1},
                                           std::pair<std::vector<int64_t>, int64_t>{{32, 196, 6144}, 768}}) {
        const std::string name = "cross_entropy/" + backend_name + dims(logits) + "_g" + std::to_string(groups) + "_" +
                                 dtype_name(dtype);
        benchmark::RegisterBenchmark(name.c_str(), token_loss_step, logits, groups, dtype,
                                     MaskedLossOptions().kind(simmim::LossKind::kCrossEntropy).eps(0).backend(backend))
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  benchmark::RegisterBenchmark("simmim_mask/cpu_then_copy_cuda/128", masks_cpu_then_copy, int64_t{128})
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace
