#pragma once
// Independent per-patch masking: each patch is hidden with probability p. The masked count varies from
// sample to sample (Binomial(L, p)), so no ids_keep / ids_restore; a baseline for ablations.

#include <torch/arg.h>

#include <memory>
#include <string>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct BernoulliMaskOptions {
  BernoulliMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size.
  TORCH_ARG(int64_t, patch_size) = 16;
  // Probability that a patch is masked, in [0, 1].
  TORCH_ARG(double, p) = 0.5;
};

class BernoulliMask final : public MaskGenerator {
 public:
  using Options = BernoulliMaskOptions;
  static constexpr const char* kName = "bernoulli";
  static constexpr const char* kApi = "simmim::BernoulliMask";

  explicit BernoulliMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    SIMMIM_CHECK_VALUE(options.p() >= 0.0 && options.p() <= 1.0, kApi, "p", "in [0, 1]", options.p());
  }

  const Options& options() const { return options_; }

  std::string name() const override { return kName; }
  std::string spec() const override { return MaskSpecWriter(kName).number("p", options_.p()).str(); }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<BernoulliMask>(*this); }

  // Keys: p (0.5).
  static BernoulliMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    o.p(r.number("p", o.p()));
    r.finish();
    return BernoulliMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& gen) const override {
    // Double noise: P(u < p) is p to 2^-53, not to float's 2^-24.
    MaskBatch out;
    out.mask = at::rand({B, grid().h, grid().w}, gen, at::kDouble).lt(options_.p());
    return out;
  }

 private:
  Options options_;
};

SIMMIM_NAMESPACE_END
