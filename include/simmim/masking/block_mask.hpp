#pragma once
// BEiT's block-wise mask (Bao et al. 2022, official MaskingGenerator): rectangles of random area and
// aspect are added until `num_masking_patches` are hidden. A block is accepted only if it adds between 1
// and the remaining budget, so the count never overshoots; a round that adds nothing ends the draw, so
// it always terminates and may fall short of the target.

#include <torch/arg.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct BlockMaskOptions {
  BlockMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size.
  TORCH_ARG(int64_t, patch_size) = 16;
  // Target fraction of patches, in [0, 1], used when num_masking_patches is unset: target = int(L * ratio).
  TORCH_ARG(double, ratio) = 0.4;
  // Target count of masked patches (BEiT: 75 of 196). Overrides ratio.
  TORCH_ARG(c10::optional<int64_t>, num_masking_patches) = c10::nullopt;
  // Smallest block area drawn. 4 as in BEiT's class; BEiT's training scripts pass 16.
  TORCH_ARG(int64_t, min_num_patches) = 4;
  // Largest block area; unset = the target.
  TORCH_ARG(c10::optional<int64_t>, max_num_patches) = c10::nullopt;
  // Aspect ratio (h / w) range, drawn log-uniformly; max_aspect unset = 1 / min_aspect.
  TORCH_ARG(double, min_aspect) = 0.3;
  TORCH_ARG(c10::optional<double>, max_aspect) = c10::nullopt;
};

class BlockMask final : public MaskGenerator {
 public:
  using Options = BlockMaskOptions;
  static constexpr const char* kName = "block";
  static constexpr const char* kApi = "simmim::BlockMask";
  // Tries per block before a round gives up (BEiT's `for attempt in range(10)`).
  static constexpr int kAttempts = 10;

  explicit BlockMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    const Size2d g = grid();
    const int64_t L = g.area();
    SIMMIM_CHECK_VALUE(g.h >= 2 && g.w >= 2, kApi, "the patch grid",
                       "at least 2x2 (BEiT blocks are strictly smaller than the grid on both axes)", g);
    if (options.num_masking_patches().has_value()) {
      target_ = *options.num_masking_patches();
      SIMMIM_CHECK_VALUE(target_ >= 0 && target_ <= L, kApi, "num_masking_patches",
                         "in [0, " + std::to_string(L) + "] for a " + c10::str(g) + " grid", target_);
    } else {
      SIMMIM_CHECK_VALUE(options.ratio() >= 0.0 && options.ratio() <= 1.0, kApi, "ratio", "in [0, 1]", options.ratio());
      target_ = static_cast<int64_t>(static_cast<double>(L) * options.ratio());
    }
    min_ = options.min_num_patches();
    max_ = options.max_num_patches().value_or(target_);
    const int64_t largest = (g.h - 1) * (g.w - 1);
    SIMMIM_CHECK_VALUE(min_ >= 1, kApi, "min_num_patches", "at least 1", min_);
    SIMMIM_CHECK_VALUE(min_ <= largest, kApi, "min_num_patches",
                       "at most the largest block that fits, (h-1)*(w-1) = " + std::to_string(largest) + " for a " +
                           c10::str(g) + " grid",
                       min_);
    if (target_ > 0) {
      SIMMIM_CHECK_VALUE(min_ <= target_, kApi, "min_num_patches",
                         "at most the target count " + std::to_string(target_) + " (no block could be placed)", min_);
      SIMMIM_CHECK_VALUE(max_ >= min_, kApi, "max_num_patches", "at least min_num_patches " + std::to_string(min_),
                         max_);
    }
    const double amin = options.min_aspect();
    SIMMIM_CHECK_VALUE(std::isfinite(amin) && amin > 0.0, kApi, "min_aspect", "a positive number", amin);
    const double amax = options.max_aspect().value_or(1.0 / amin);
    SIMMIM_CHECK_VALUE(std::isfinite(amax) && amax >= amin, kApi, "max_aspect",
                       "a finite number >= min_aspect " + detail::format_double(amin), amax);
    log_aspect_lo_ = std::log(amin);
    log_aspect_hi_ = std::log(amax);
  }

  const Options& options() const { return options_; }
  // The count a sample aims for; a draw never exceeds it.
  int64_t target() const { return target_; }

  // One sample: BEiT's __call__ on a zeroed row-major [h, w] mask. Returns the accepted blocks in order.
  std::vector<MaskRect> draw_blocks(bool* mask, ScalarRng& rng) const {
    std::vector<MaskRect> blocks;
    int64_t count = 0;
    while (count < target_) {
      const int64_t cap = std::min(target_ - count, max_);
      const int64_t delta = place_block(mask, cap, rng, blocks);
      if (delta == 0) break;
      count += delta;
    }
    return blocks;
  }

  std::string name() const override { return kName; }
  std::string spec() const override {
    MaskSpecWriter w(kName);
    if (options_.num_masking_patches().has_value())
      w.integer("count", *options_.num_masking_patches());
    else
      w.number("ratio", options_.ratio());
    w.integer("min", options_.min_num_patches());
    if (options_.max_num_patches().has_value()) w.integer("max", *options_.max_num_patches());
    w.number("min_aspect", options_.min_aspect());
    if (options_.max_aspect().has_value()) w.number("max_aspect", *options_.max_aspect());
    return w.str();
  }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<BlockMask>(*this); }

  // Keys: ratio (0.4) or count, min (4), max (= target), min_aspect (0.3), max_aspect (1 / min_aspect).
  static BlockMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    const auto ratio = r.optional_number("ratio");
    const auto count = r.optional_integer("count");
    SIMMIM_CHECK_VALUE(!(ratio && count), kApi, "spec", "ratio or count, not both", "ratio=", *ratio,
                       " and count=", *count);
    if (ratio) o.ratio(*ratio);
    o.num_masking_patches(count);
    o.min_num_patches(r.integer("min", o.min_num_patches()));
    o.max_num_patches(r.optional_integer("max"));
    o.min_aspect(r.number("min_aspect", o.min_aspect()));
    o.max_aspect(r.optional_number("max_aspect"));
    r.finish();
    return BlockMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& gen) const override {
    at::Tensor mask = at::zeros({B, grid().h, grid().w}, at::kBool);
    bool* data = mask.data_ptr<bool>();
    ScalarRng rng(gen);
    for (int64_t b = 0; b < B; ++b) draw_blocks(data + b * grid().area(), rng);
    MaskBatch out;
    out.mask = mask;
    return out;
  }

 private:
  // BEiT's _mask: up to kAttempts rectangles; the first that adds 0 < delta <= cap cells is kept.
  int64_t place_block(bool* mask, int64_t cap, ScalarRng& rng, std::vector<MaskRect>& blocks) const {
    const Size2d g = grid();
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      // random.uniform(a, b) = a + (b - a) * random(); also when cap < min, as in the official code.
      const double area = rng.uniform(static_cast<double>(min_), static_cast<double>(cap));
      const double aspect = std::exp(rng.uniform(log_aspect_lo_, log_aspect_hi_));
      // int(round(x)): nearbyint rounds half to even, as Python's round does.
      const double hd = std::nearbyint(std::sqrt(area * aspect));
      const double wd = std::nearbyint(std::sqrt(area / aspect));
      if (!(wd < static_cast<double>(g.w) && hd < static_cast<double>(g.h))) continue;  // compared before the cast
      const auto h = static_cast<int64_t>(hd), w = static_cast<int64_t>(wd);
      const MaskRect r{rng.randint(0, g.h - h), rng.randint(0, g.w - w), h, w};
      const int64_t added = h * w - detail::count_in_rect(mask, g, r);  // 0 when h or w is 0
      if (added > 0 && added <= cap) {
        detail::fill_rect(mask, g, r);
        blocks.push_back(r);
        return added;
      }
    }
    return 0;
  }

  Options options_;
  int64_t target_ = 0;
  int64_t min_ = 0;
  int64_t max_ = 0;
  double log_aspect_lo_ = 0.0;
  double log_aspect_hi_ = 0.0;
};

SIMMIM_NAMESPACE_END
