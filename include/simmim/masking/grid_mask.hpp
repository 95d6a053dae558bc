#pragma once
// A regular pattern (MAE's "grid-wise sampling" ablation): in every period x period tile of patches one
// patch stays visible and the rest are masked, ratio 1 - 1/period^2 (period 2: 75%). The visible patch
// sits at the tile's top-left, or at a per-sample random offset.

#include <torch/arg.h>

#include <algorithm>
#include <memory>
#include <string>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct GridMaskOptions {
  GridMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size.
  TORCH_ARG(int64_t, patch_size) = 16;
  // Tile side: patch (i, j) is visible iff i % period == dy and j % period == dx. 1 <= period <= min(h, w).
  TORCH_ARG(int64_t, period) = 2;
  // false: (dy, dx) = (0, 0) for every sample (no randomness); true: uniform in [0, period)^2 per sample.
  TORCH_ARG(bool, random_offset) = false;
};

class GridMask final : public MaskGenerator {
 public:
  using Options = GridMaskOptions;
  static constexpr const char* kName = "grid";
  static constexpr const char* kApi = "simmim::GridMask";

  explicit GridMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    const int64_t side = std::min(grid().h, grid().w);
    SIMMIM_CHECK_VALUE(
        options.period() >= 1 && options.period() <= side, kApi, "period",
        "in [1, " + std::to_string(side) + "] (every sample keeps a patch) for a " + c10::str(grid()) + " grid",
        options.period());
  }

  const Options& options() const { return options_; }
  // Whether every sample hides the same count (then ids_keep / ids_restore are given): always with a fixed
  // offset; with random offsets only when period divides both grid sides.
  bool fixed_count() const {
    const int64_t k = options_.period();
    return !options_.random_offset() || (grid().h % k == 0 && grid().w % k == 0);
  }

  std::string name() const override { return kName; }
  std::string spec() const override {
    return MaskSpecWriter(kName)
        .integer("period", options_.period())
        .flag("random_offset", options_.random_offset())
        .str();
  }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<GridMask>(*this); }

  // Keys: period (2), random_offset (false).
  static GridMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    o.period(r.integer("period", o.period())).random_offset(r.flag("random_offset", o.random_offset()));
    r.finish();
    return GridMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& gen) const override {
    const int64_t k = options_.period(), h = grid().h, w = grid().w;
    const at::Tensor rows = at::arange(h, at::kLong).remainder(k).view({1, h, 1});
    const at::Tensor cols = at::arange(w, at::kLong).remainder(k).view({1, 1, w});
    at::Tensor dy = at::zeros({B, 1, 1}, at::kLong), dx = dy;
    if (options_.random_offset()) {
      const at::Tensor offsets = at::randint(k, {B, 2}, gen, at::kLong);
      dy = offsets.select(1, 0).view({B, 1, 1});
      dx = offsets.select(1, 1).view({B, 1, 1});
    }
    const at::Tensor mask = rows.ne(dy).logical_or(cols.ne(dx));  // broadcasts to [B, h, w]
    if (fixed_count()) return mask_batch_from_mask(mask);
    MaskBatch out;
    out.mask = mask;
    return out;
  }

 private:
  Options options_;
};

SIMMIM_NAMESPACE_END
