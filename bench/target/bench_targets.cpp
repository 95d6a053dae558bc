// The target computations of one training batch (target/), on the CPU, as a model runs them every step:
//   hog/fused/<B>x<C>x<H>x<W>_p<p>           HOGTarget::compute (9 bins, 8 x 8 cells) -> [B, L, (p/8)^2 C 9]: on
//                                            the CPU, hog_cells' fused pass, then the token layout
//   hog_cells/<fused|reference>/<B>x<C>x<H>x<W>_c<c>  hog_cells (the CPU pass) or hog_cells_reference (tensor ops)
//   local_norm/aten/<B>x<C>x<H>x<W>_k<k>_p<p> PixelTarget local norm (k x k windows) -> [B, L, p*p*C]
//   color_bins/aten/<B>x<C>x<H>x<W>_K<K>_p<p> ColorBinsTarget::compute -> int64 ids [B, L, p*p*C]
//   norm_pix/aten/...                        PixelTarget norm-pix (a patchify view; the loss normalizes)
//   teacher/vit_tiny/<B>x3x224x224_top<k>    TeacherTarget: a ViT-Ti/16 teacher's forward, k layers averaged
// Bytes processed: the float images read. Threads: every hardware thread, or SIMMIM_BENCH_THREADS.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/target/color_bins_target.hpp"
#include "simmim/target/hog_target.hpp"
#include "simmim/target/pixel_target.hpp"
#include "simmim/target/teacher_target.hpp"

namespace {

std::string dims(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

void compute(benchmark::State& state, std::shared_ptr<const simmim::Target> target, std::vector<int64_t> shape,
             int64_t patch) {
  auto gen = simmim::make_generator(0);
  const torch::Tensor images = torch::rand(shape, gen);
  for (auto _ : state) {
    torch::Tensor t = target->compute(images, patch);
    if (!t.is_contiguous()) t = t.contiguous();  // what the loss reads: materialize a view
    benchmark::DoNotOptimize(t.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * images.numel() * static_cast<int64_t>(images.element_size()));
  state.counters["threads"] = at::get_num_threads();
}

// The HOG cells alone, by one of the two paths (9 bins, cell x cell).
void hog_cells(benchmark::State& state, at::Tensor (*cells)(const at::Tensor&, int64_t, int64_t, double),
               std::vector<int64_t> shape, int64_t cell) {
  auto gen = simmim::make_generator(0);
  const torch::Tensor images = torch::rand(shape, gen);
  for (auto _ : state) {
    const torch::Tensor t = cells(images, 9, cell, 1e-6);
    benchmark::DoNotOptimize(t.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * images.numel() * static_cast<int64_t>(images.element_size()));
  state.counters["threads"] = at::get_num_threads();
}

const bool registered = [] {
  const char* threads = std::getenv("SIMMIM_BENCH_THREADS");
  at::set_num_threads(threads != nullptr ? std::atoi(threads) : static_cast<int>(std::thread::hardware_concurrency()));
  const std::vector<int64_t> vit{32, 3, 224, 224}, swin{32, 3, 192, 192};
  const auto add = [](const std::string& name, std::shared_ptr<const simmim::Target> target,
                      const std::vector<int64_t>& shape, int64_t patch) {
    benchmark::RegisterBenchmark(name.c_str(), compute, std::move(target), shape, patch)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  add("hog/fused/" + dims(vit) + "_p16", std::make_shared<simmim::HOGTarget>(), vit, 16);
  for (const bool fused : {true, false}) {
    benchmark::RegisterBenchmark(("hog_cells/" + std::string(fused ? "fused/" : "reference/") + dims(vit) + "_c8").c_str(),
                                 hog_cells, fused ? &simmim::hog_cells : &simmim::hog_cells_reference, vit, int64_t{8})
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  add("local_norm/aten/" + dims(swin) + "_k47_p4",
      std::make_shared<simmim::PixelTarget>(simmim::PixelTargetOptions::local_norm(47)), swin, 4);
  add("color_bins/aten/" + dims(vit) + "_K8_p16",
      std::make_shared<simmim::ColorBinsTarget>(simmim::ColorBinsTargetOptions().bins(8)), vit, 16);
  add("norm_pix/aten/" + dims(vit) + "_p16",
      std::make_shared<simmim::PixelTarget>(simmim::PixelTargetOptions::norm_pix()), vit, 16);
  // A ViT-Ti/16 teacher (a forward without grad dominates; data2vec averages its top layers).
  for (const int64_t k : {1, 8}) {
    simmim::VisionTransformer teacher(simmim::VisionTransformerOptions::tiny(simmim::Size2d(224), 16));
    const auto options = k == 1 ? simmim::TeacherTargetOptions::mask_distill() : simmim::TeacherTargetOptions::data2vec(k);
    add("teacher/vit_tiny/8x3x224x224_top" + std::to_string(k), std::make_shared<simmim::TeacherTarget>(teacher, options),
        {8, 3, 224, 224}, 16);
  }
  return true;
}();

}  // namespace
