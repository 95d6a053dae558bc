#pragma once
// MAE's random shuffle mask (He et al. 2022, official random_masking): per sample, uniform noise is
// sorted, the first len_keep patches stay visible. Gives the index tensors MAE's encoder and decoder use.

#include <torch/arg.h>

#include <memory>
#include <string>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct MAEMaskOptions {
  MAEMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size (16 for ViT-B/16).
  TORCH_ARG(int64_t, patch_size) = 16;
  // Fraction of patches masked, in [0, 1): len_keep = int(L * (1 - ratio)), at least 1.
  TORCH_ARG(double, ratio) = 0.75;
};

class MAEMask final : public MaskGenerator {
 public:
  using Options = MAEMaskOptions;
  static constexpr const char* kName = "mae";
  static constexpr const char* kApi = "simmim::MAEMask";

  explicit MAEMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    SIMMIM_CHECK_VALUE(options.ratio() >= 0.0 && options.ratio() < 1.0, kApi, "ratio", "in [0, 1)", options.ratio());
    // Python's int(L * (1 - mask_ratio)) on the same doubles (truncation: L=10, ratio 0.8 keeps 1).
    len_keep_ = static_cast<int64_t>(static_cast<double>(grid().area()) * (1.0 - options.ratio()));
    SIMMIM_CHECK_VALUE(
        len_keep_ >= 1, kApi, "ratio",
        "small enough to leave a visible patch: int(L * (1 - ratio)) >= 1 with L = " + std::to_string(grid().area()),
        options.ratio());
  }

  const Options& options() const { return options_; }
  // Visible patches per sample.
  int64_t len_keep() const { return len_keep_; }

  std::string name() const override { return kName; }
  std::string spec() const override { return MaskSpecWriter(kName).number("ratio", options_.ratio()).str(); }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<MAEMask>(*this); }

  // Keys: ratio (0.75).
  static MAEMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    o.ratio(r.number("ratio", o.ratio()));
    r.finish();
    return MAEMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& gen) const override {
    const at::Tensor noise = at::rand({B, grid().area()}, gen);
    return mask_batch_from_shuffle(detail::argsort_noise(noise), len_keep_, grid());
  }

 private:
  Options options_;
  int64_t len_keep_ = 0;
};

SIMMIM_NAMESPACE_END
