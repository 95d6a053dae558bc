// Forward + backward of the masked reconstruction losses, fused CPU against the reference (the originals'
// op sequence), beside a plain tensor copy of the same size (the bandwidth yardstick):
//   simmim_l1/<fused|reference>/<B>x<C>x<H>x<W>_p<p>_<dtype>   SimMIM's loss on images, bool mask [B, h, w]
//   simmim_l1/fused_reuse_grad/...                              the same with MaskedLossOptions::reuse_grad_memory
//   mae_l2_normpix/<fused|reference>/<B>x<L>x<D>_<dtype>       MAE's norm-pix loss on tokens, mask [B, L]
//   copy/aten/<B>x<C>x<H>x<W>_<dtype>                          dst.copy_(src)
//   cosine/<fused|reference>/<B>x<L>x<D>_<dtype>               kCosine on tokens (teacher features), mask [B, L]
//   cross_entropy/<fused|reference>/<B>x<L>x<D>_g<G>_<dtype>   kCrossEntropy, G ids of D / G classes per token
// Bytes processed: pred + target read and the gradient written (3 tensors) for the losses, src read and
// dst written (2 tensors) for the copy. Wall time: ATen's worker threads do the work. Threads: every
// hardware thread (ATen's default counts physical cores as its cpuinfo sees them, 1 on some VMs), or
// SIMMIM_BENCH_THREADS. SIMMIM_BENCH_ISA=baseline runs the CPU pass's baseline build instead of the AVX2
// one it picks on an AVX2 machine.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <sys/resource.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench_names.hpp"
#include "simmim/core/random.hpp"
#include "simmim/loss/masked_loss.hpp"

namespace {

using simmim::Backend;
using simmim::MaskedLossOptions;

using bench_names::dims;
using bench_names::dtype_name;

// Minor page faults of the process so far: first touches of memory the kernel had not mapped yet, which
// a pass over a fresh gradient pays for every page (the "faults" counter, per iteration).
double minor_faults() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_minflt);
}

// One training step's loss work: forward, backward into a fresh pred.grad.
void loss_step(benchmark::State& state, std::vector<int64_t> shape, std::vector<int64_t> mask_shape,
               torch::ScalarType dtype, MaskedLossOptions options) {
  auto gen = simmim::make_generator(0);
  const torch::Tensor pred = torch::randn(shape, gen).to(dtype).requires_grad_(true);
  const torch::Tensor target = torch::randn(shape, gen).to(dtype);
  const torch::Tensor mask = torch::rand(mask_shape, gen) < 0.6;
  const double faults0 = minor_faults();
  for (auto _ : state) {
    pred.mutable_grad().reset();
    simmim::masked_reconstruction_loss(pred, target, mask, options).backward();
    benchmark::DoNotOptimize(pred.grad().data_ptr());
  }
  state.counters["faults"] = benchmark::Counter(minor_faults() - faults0, benchmark::Counter::kAvgIterations);
  state.SetBytesProcessed(state.iterations() * 3 * pred.numel() * static_cast<int64_t>(pred.element_size()));
  state.counters["threads"] = at::get_num_threads();
}

// The same for a token kind: kCosine against a float target of pred's shape, kCrossEntropy against G
// class ids per token (groups > 0).
void token_loss_step(benchmark::State& state, std::vector<int64_t> shape, int64_t groups, torch::ScalarType dtype,
                     MaskedLossOptions options) {
  auto gen = simmim::make_generator(0);
  const torch::Tensor pred = torch::randn(shape, gen).to(dtype).requires_grad_(true);
  const torch::Tensor target = groups > 0
                                   ? torch::randint(0, shape[2] / groups, {shape[0], shape[1], groups}, gen, torch::kLong)
                                   : torch::randn(shape, gen).to(dtype);
  const torch::Tensor mask = torch::rand({shape[0], shape[1]}, gen) < 0.6;
  for (auto _ : state) {
    pred.mutable_grad().reset();
    simmim::masked_reconstruction_loss(pred, target, mask, options).backward();
    benchmark::DoNotOptimize(pred.grad().data_ptr());
  }
  // pred read, its gradient written, and the target (values, or ids) read.
  const int64_t target_bytes = target.numel() * static_cast<int64_t>(target.element_size());
  state.SetBytesProcessed(state.iterations() * (2 * pred.numel() * static_cast<int64_t>(pred.element_size()) + target_bytes));
  state.counters["threads"] = at::get_num_threads();
}

void copy(benchmark::State& state, std::vector<int64_t> shape, torch::ScalarType dtype) {
  const torch::Tensor src = torch::randn(shape).to(dtype);
  torch::Tensor dst = torch::empty_like(src);
  const double faults0 = minor_faults();
  for (auto _ : state) {
    dst.copy_(src);
    benchmark::DoNotOptimize(dst.data_ptr());
  }
  state.counters["faults"] = benchmark::Counter(minor_faults() - faults0, benchmark::Counter::kAvgIterations);
  state.SetBytesProcessed(state.iterations() * 2 * src.numel() * static_cast<int64_t>(src.element_size()));
  state.counters["threads"] = at::get_num_threads();
}

const bool registered = [] {
  const char* threads = std::getenv("SIMMIM_BENCH_THREADS");
  at::set_num_threads(threads != nullptr ? std::atoi(threads) : static_cast<int>(std::thread::hardware_concurrency()));
  const char* isa = std::getenv("SIMMIM_BENCH_ISA");
  if (isa != nullptr && std::string(isa) == "baseline") {
    simmim::kernels::cpu::cpu_isa_override() = simmim::kernels::cpu::CpuIsa::kBaseline;
  }
  constexpr int64_t B = 32, C = 3;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const int64_t size : {192, 224}) {
      const std::vector<int64_t> shape{B, C, size, size};
      benchmark::RegisterBenchmark(("copy/aten/" + dims(shape) + "_" + dtype_name(dtype)).c_str(), copy, shape, dtype)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      for (const int64_t p : {4, 16}) {
        for (const auto backend : {Backend::kFusedCPU, Backend::kReference}) {
          for (const bool reuse : {false, true}) {
            if (reuse && backend != Backend::kFusedCPU) continue;
            const std::string name = std::string("simmim_l1/") +
                                     (backend == Backend::kFusedCPU ? (reuse ? "fused_reuse_grad/" : "fused/")
                                                                    : "reference/") +
                                     dims(shape) + "_p" + std::to_string(p) + "_" + dtype_name(dtype);
            benchmark::RegisterBenchmark(name.c_str(), loss_step, shape, std::vector<int64_t>{B, size / p, size / p},
                                         dtype, MaskedLossOptions::simmim(p).backend(backend).reuse_grad_memory(reuse))
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
          }
        }
      }
    }
    // MAE ViT-B/16 on 224 x 224: 196 tokens of 16*16*3.
    const std::vector<int64_t> tokens{B, 196, 768};
    for (const auto backend : {Backend::kFusedCPU, Backend::kReference}) {
      const std::string name = std::string("mae_l2_normpix/") +
                               (backend == Backend::kFusedCPU ? "fused/" : "reference/") + dims(tokens) + "_" +
                               dtype_name(dtype);
      benchmark::RegisterBenchmark(name.c_str(), loss_step, tokens, std::vector<int64_t>{B, 196}, dtype,
                                   MaskedLossOptions::mae(true).backend(backend))
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
  }
  // Token kinds: teacher features of a ViT-B (196 tokens of 768) under the cosine; BEiT's 8192 visual
  // tokens (G = 1) and SimMIM's 8 color bins of a 16 x 16 x 3 patch (G = 768, D = 6144) under the
  // cross-entropy, on 8 images; and 2 classes per id (G = 3072), the smallest K, where per-group work weighs most.
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const auto backend : {Backend::kFusedCPU, Backend::kReference}) {
      const std::string backend_name = backend == Backend::kFusedCPU ? "fused/" : "reference/";
      const std::vector<int64_t> features{B, 196, 768};
      benchmark::RegisterBenchmark(("cosine/" + backend_name + dims(features) + "_" + dtype_name(dtype)).c_str(),
                                   token_loss_step, features, int64_t{0}, dtype,
                                   MaskedLossOptions().kind(simmim::LossKind::kCosine).eps(0).backend(backend))
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
      for (const auto& [logits, groups] : {std::pair<std::vector<int64_t>, int64_t>{{8, 196, 8192}, 1},
                                           std::pair<std::vector<int64_t>, int64_t>{{8, 196, 6144}, 768},
                                           std::pair<std::vector<int64_t>, int64_t>{{8, 196, 6144}, 3072}}) {
        const std::string name = "cross_entropy/" + backend_name + dims(logits) + "_g" + std::to_string(groups) + "_" +
                                 dtype_name(dtype);
        benchmark::RegisterBenchmark(name.c_str(), token_loss_step, logits, groups, dtype,
                                     MaskedLossOptions().kind(simmim::LossKind::kCrossEntropy).eps(0).backend(backend))
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  return true;
}();

}  // namespace
