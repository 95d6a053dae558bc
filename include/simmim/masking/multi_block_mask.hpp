#pragma once
// I-JEPA-style target blocks (Assran et al. 2023): the mask is the union of num_blocks rectangles, each
// with an area fraction drawn from [scale_min, scale_max] and an aspect (h / w) from [aspect_min,
// aspect_max]. Blocks may overlap, so the masked count varies between samples.

#include <torch/arg.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MultiBlockMaskOptions {
  MultiBlockMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size.
  TORCH_ARG(int64_t, patch_size) = 16;
  // Blocks per sample (I-JEPA: 4 target blocks).
  TORCH_ARG(int64_t, num_blocks) = 4;
  // Area of each block as a fraction of the grid, uniform in [scale_min, scale_max] within (0, 1].
  TORCH_ARG(double, scale_min) = 0.15;
  TORCH_ARG(double, scale_max) = 0.2;
  // Aspect h / w of each block, log-uniform in [aspect_min, aspect_max].
  TORCH_ARG(double, aspect_min) = 0.75;
  TORCH_ARG(double, aspect_max) = 1.5;
};

class MultiBlockMask final : public MaskGenerator {
 public:
  using Options = MultiBlockMaskOptions;
  static constexpr const char* kName = "multiblock";
  static constexpr const char* kApi = "simmim::MultiBlockMask";
  // The most blocks a small grid accepts (see the constructor).
  static constexpr int64_t kMinBlockBound = 16;

  explicit MultiBlockMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    const auto& o = options;
    // More blocks than patches add nothing but work; the bound keeps a typo ("blocks=40000000") from
    // running for minutes or exhausting memory. Tiny grids may still overlap up to kMinBlockBound blocks.
    const int64_t most = std::max(grid().area(), kMinBlockBound);
    SIMMIM_CHECK_VALUE(o.num_blocks() >= 1 && o.num_blocks() <= most, kApi, "num_blocks",
                       "in [1, " + std::to_string(most) + "] (the patches of the " + c10::str(grid()) +
                           " grid, or " + std::to_string(kMinBlockBound) + " on smaller grids)",
                       o.num_blocks());
    SIMMIM_CHECK_VALUE(o.scale_min() > 0.0 && o.scale_min() <= 1.0, kApi, "scale_min", "in (0, 1]", o.scale_min());
    SIMMIM_CHECK_VALUE(o.scale_max() >= o.scale_min() && o.scale_max() <= 1.0, kApi, "scale_max",
                       "in [scale_min, 1] = [" + detail::format_double(o.scale_min()) + ", 1]", o.scale_max());
    SIMMIM_CHECK_VALUE(std::isfinite(o.aspect_min()) && o.aspect_min() > 0.0, kApi, "aspect_min", "a positive number",
                       o.aspect_min());
    SIMMIM_CHECK_VALUE(std::isfinite(o.aspect_max()) && o.aspect_max() >= o.aspect_min(), kApi, "aspect_max",
                       "a finite number >= aspect_min " + detail::format_double(o.aspect_min()), o.aspect_max());
  }

  const Options& options() const { return options_; }

  // One sample's blocks, each inside the grid. Sides are rounded and clamped to [1, grid side], so a
  // block never has zero area and never leaves the grid.
  std::vector<MaskRect> draw_blocks(ScalarRng& rng) const {
    const Size2d g = grid();
    const auto& o = options_;
    std::vector<MaskRect> blocks;
    blocks.reserve(static_cast<size_t>(o.num_blocks()));
    for (int64_t n = 0; n < o.num_blocks(); ++n) {
      const double area = static_cast<double>(g.area()) * rng.uniform(o.scale_min(), o.scale_max());
      const double aspect = std::exp(rng.uniform(std::log(o.aspect_min()), std::log(o.aspect_max())));
      const int64_t h = clamp_side(std::nearbyint(std::sqrt(area * aspect)), g.h);
      const int64_t w = clamp_side(std::nearbyint(std::sqrt(area / aspect)), g.w);
      const int64_t top = rng.randint(0, g.h - h);
      blocks.push_back({top, rng.randint(0, g.w - w), h, w});
    }
    return blocks;
  }

  std::string name() const override { return kName; }
  std::string spec() const override {
    const auto& o = options_;
    return MaskSpecWriter(kName)
        .integer("blocks", o.num_blocks())
        .number("scale_min", o.scale_min())
        .number("scale_max", o.scale_max())
        .number("aspect_min", o.aspect_min())
        .number("aspect_max", o.aspect_max())
        .str();
  }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<MultiBlockMask>(*this); }

  // Keys: blocks (4), scale_min (0.15), scale_max (0.2), aspect_min (0.75), aspect_max (1.5).
  static MultiBlockMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    o.num_blocks(r.integer("blocks", o.num_blocks()));
    o.scale_min(r.number("scale_min", o.scale_min())).scale_max(r.number("scale_max", o.scale_max()));
    o.aspect_min(r.number("aspect_min", o.aspect_min())).aspect_max(r.number("aspect_max", o.aspect_max()));
    r.finish();
    return MultiBlockMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& gen) const override {
    at::Tensor mask = at::zeros({B, grid().h, grid().w}, at::kBool);
    bool* data = mask.data_ptr<bool>();
    ScalarRng rng(gen);
    for (int64_t b = 0; b < B; ++b)
      for (const MaskRect& r : draw_blocks(rng)) detail::fill_rect(data + b * grid().area(), grid(), r);
    MaskBatch out;
    out.mask = mask;
    return out;
  }

 private:
  static int64_t clamp_side(double side, int64_t limit) {
    return static_cast<int64_t>(std::min(std::max(side, 1.0), static_cast<double>(limit)));
  }

  Options options_;
};

SIMMIM_NAMESPACE_END
