// 01_masks: what each mask strategy hides. Draws a few masks per strategy with one seed and writes a PNG
// with a row per strategy (masked patches dark over a colour test image), each row labelled with its
// strategy's spec string (the labels are drawn by gnuplot where it is installed), so the strategies can be
// compared at a glance and a spec string can be checked before a long run.
//
//   simmim_01_masks --out masks.png --image-size 192x256 --patch 16 --seed 0
//   simmim_01_masks -s "simmim:ratio=0.6,mask_patch=32" -s "block:count=75,min=16"
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "simmim/masking/mask_factory.hpp"
#include "simmim/train/image_grid.hpp"
#include "simmim/train/plots.hpp"

namespace {

// "224" or "192x256" (rows x cols).
simmim::Size2d parse_size(const std::string& text) {
  long long h = 0, w = 0;
  char x = 0, extra = 0;
  const int n = std::sscanf(text.c_str(), "%lld%c%lld%c", &h, &x, &w, &extra);
  if (n == 1) return simmim::Size2d(h);
  if (n == 3 && (x == 'x' || x == 'X')) return {h, w};
  throw CLI::ValidationError("--image-size", "expected N or HxW, got '" + text + "'");
}

// A smooth colour picture [3, H, W] in [0, 1], so dark masked patches stand out against something that
// looks like an image rather than a flat field.
torch::Tensor test_image(simmim::Size2d size) {
  const auto y = torch::linspace(0, 1, size.h).view({size.h, 1}).expand({size.h, size.w});
  const auto x = torch::linspace(0, 1, size.w).view({1, size.w}).expand({size.h, size.w});
  const auto r = 0.55 + 0.4 * torch::sin(6.0 * x + 1.0);
  const auto g = 0.55 + 0.4 * torch::sin(5.0 * y + 2.0 * x);
  const auto b = 0.55 + 0.4 * torch::cos(4.0 * (x - y));
  return torch::stack({r, g, b}).clamp(0, 1);
}

// The default rows: every factory strategy with a spec that fits the grid, and a user tensor (a disc).
std::vector<std::string> default_specs(simmim::Size2d grid) {
  std::vector<std::string> specs;
  for (const auto& name : simmim::mask_strategy_names()) {
    if (name == "region") {
      // The centre half of the image, in patches.
      const int64_t h = std::max<int64_t>(1, grid.h / 2), w = std::max<int64_t>(1, grid.w / 2);
      specs.push_back("region:box=" + std::to_string((grid.h - h) / 2) + ":" + std::to_string((grid.w - w) / 2) + ":" +
                      std::to_string(h) + ":" + std::to_string(w));
    } else {
      specs.push_back(name);
    }
  }
  specs.emplace_back("tensor");
  return specs;
}

std::unique_ptr<simmim::MaskGenerator> make_row(const std::string& spec, const simmim::MaskGeometry& geometry) {
  if (spec != "tensor") return simmim::make_mask_generator(spec, geometry);
  // A user mask: a disc in the middle of the grid, as a 0/1 float tensor.
  const simmim::Size2d g = geometry.grid("01_masks");
  const auto y = torch::arange(g.h).to(torch::kFloat).add(0.5).sub(g.h / 2.0).view({g.h, 1});
  const auto x = torch::arange(g.w).to(torch::kFloat).add(0.5).sub(g.w / 2.0).view({1, g.w});
  const double radius = 0.35 * static_cast<double>(std::min(g.h, g.w));
  const auto disc = (y * y + x * x).le(radius * radius).to(torch::kFloat);
  return std::make_unique<simmim::TensorMask>(
      simmim::TensorMaskOptions(disc, geometry.input_size, geometry.patch_size));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Renders each mask strategy to a PNG: one row per strategy, masked patches dark."};
  std::string out = "masks.png", image_size = "224";
  int64_t patch = 16, samples = 6;
  uint64_t seed = 0;
  std::vector<std::string> specs;
  bool list = false;
  app.add_option("-o,--out", out, "PNG file to write")->capture_default_str();
  app.add_option("--image-size", image_size, "image size in pixels: N or HxW")->capture_default_str();
  app.add_option("--patch", patch, "model patch size in pixels")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--seed", seed, "seed of the mask draws")->capture_default_str();
  app.add_option("-n,--samples", samples, "masks per row")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("-s,--strategy", specs,
                 "spec string of a row, e.g. \"simmim:ratio=0.6,mask_patch=32\" (repeat for more rows; "
                 "default: every strategy, plus \"tensor\" = a disc given as a user mask)");
  app.add_flag("--list", list, "list the strategies and their keys, then exit");
  CLI11_PARSE(app, argc, argv);

  if (list) {
    for (const auto& s : simmim::mask_strategies()) std::printf("%-11s %s\n  keys: %s\n", s.name, s.summary, s.keys);
    return 0;
  }
  try {
    const simmim::MaskGeometry geometry(parse_size(image_size), patch);
    const simmim::Size2d grid = geometry.grid("01_masks");
    if (specs.empty()) specs = default_specs(grid);

    const auto image = test_image(geometry.input_size);
    std::vector<torch::Tensor> rows;
    std::vector<std::string> labels;
    auto rng = simmim::make_generator(seed);
    std::printf(
        "%zu rows of %lld masks, %s images, %lldx%lld patches of %lld px (fixed / varies: the count per sample):\n",
        specs.size(), static_cast<long long>(samples), c10::str(geometry.input_size).c_str(),
        static_cast<long long>(grid.h), static_cast<long long>(grid.w), static_cast<long long>(patch));
    for (const auto& spec : specs) {
      const auto gen = make_row(spec, geometry);
      const auto batch = gen->generate(samples, rng);
      const double frac = batch.mask.to(torch::kDouble).mean().item<double>();
      std::printf("  masked %5.1f%% %s  %s\n", 100.0 * frac, batch.has_ids() ? "fixed " : "varies",
                  gen->spec().c_str());
      const auto pixels = simmim::mask_to_pixels(batch.mask, geometry.input_size);  // [N, 1, H, W]
      rows.push_back(image.unsqueeze(0) * (1.0 - 0.85 * pixels));
      labels.push_back(gen->spec());
    }
    constexpr int64_t padding = 4;
    const simmim::PlotResult labeled = simmim::write_png_with_row_labels(
        out, simmim::make_image_grid(rows, padding), labels, geometry.input_size.h, padding);
    if (labeled)
      std::printf("wrote %s (rows labelled with their spec strings)\n", out.c_str());
    else
      std::printf("wrote %s; %s\n", out.c_str(), labeled.message.c_str());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "01_masks: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const CLI::Error& e) {
    return app.exit(e);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "01_masks: out of memory (a size or count too large for this machine?)\n");
    return 1;
  } catch (const std::exception& e) {  // std::filesystem errors among them: never std::terminate
    std::fprintf(stderr, "01_masks: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "01_masks: an unknown error\n");
    return 1;
  }
  return 0;
}
