#pragma once
// SimMIM's random patch mask (Xie et al. 2022, official MaskGenerator): a random `ratio` of coarse
// mask_patch_size cells is hidden, then each cell is repeated to the model's finer patch grid. Exactly
// the official semantics, batched, and for non-square images too.

#include <torch/arg.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct SimMIMMaskOptions {
  SimMIMMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Official name of patch_size (the model's patch: 16 for ViT, 4 for Swin).
  SimMIMMaskOptions& model_patch_size(int64_t v) { return patch_size(v); }
  int64_t model_patch_size() const { return patch_size_; }

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size; the mask comes out at this resolution. Default 16 (ViT); Swin uses 4.
  TORCH_ARG(int64_t, patch_size) = 16;
  // Side of the cells that are masked as a whole; a multiple of patch_size that divides input_size.
  TORCH_ARG(int64_t, mask_patch_size) = 32;
  // Fraction of cells masked, in [0, 1]: count = ceil(cells * ratio).
  TORCH_ARG(double, ratio) = 0.6;
};

class SimMIMMask final : public MaskGenerator {
 public:
  using Options = SimMIMMaskOptions;
  static constexpr const char* kName = "simmim";
  static constexpr const char* kApi = "simmim::SimMIMMask";

  explicit SimMIMMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    SIMMIM_CHECK_VALUE(options.ratio() >= 0.0 && options.ratio() <= 1.0, kApi, "ratio", "in [0, 1]", options.ratio());
    SIMMIM_CHECK_VALUE(options.mask_patch_size() > 0 && options.mask_patch_size() % options.patch_size() == 0, kApi,
                       "mask_patch_size", "a positive multiple of patch_size " + std::to_string(options.patch_size()),
                       options.mask_patch_size());
    cells_ = patch_grid(options.input_size(), options.mask_patch_size(), kApi, "input_size");
    scale_ = options.mask_patch_size() / options.patch_size();
    // Python's math.ceil(token_count * mask_ratio) on the same doubles: the same count, bit for bit.
    mask_count_ = static_cast<int64_t>(std::ceil(static_cast<double>(cells_.area()) * options.ratio()));
  }

  const Options& options() const { return options_; }
  // The grid of mask_patch_size cells, and how many model patches one cell spans per axis.
  Size2d cell_grid() const { return cells_; }
  int64_t scale() const { return scale_; }
  // Cells masked per sample, and model patches left visible per sample.
  int64_t mask_count() const { return mask_count_; }
  int64_t len_keep() const { return (cells_.area() - mask_count_) * scale_ * scale_; }

  std::string name() const override { return kName; }
  std::string spec() const override {
    return MaskSpecWriter(kName)
        .number("ratio", options_.ratio())
        .integer("mask_patch", options_.mask_patch_size())
        .str();
  }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<SimMIMMask>(*this); }

  // Keys: ratio (0.6), mask_patch (32). The model patch comes from the geometry.
  static SimMIMMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    o.ratio(r.number("ratio", o.ratio())).mask_patch_size(r.integer("mask_patch", o.mask_patch_size()));
    r.finish();
    return SimMIMMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& gen) const override { return mask_batch_from_mask(draw_mask(B, gen)); }
  // SimMIM's models only read the mask: no ids, which cost far more than the mask itself (issue 15).
  MaskBatch draw_mask_only(int64_t B, at::Generator& gen) const override { return MaskBatch(draw_mask(B, gen)); }

 private:
  // [B, h, w] bool. Official: np.random.permutation(cells)[:count] per sample. The first `count` of a
  // stable argsort of uniform noise are a uniform random subset: drawn for the whole batch at once, and
  // found without a sort (mark_lowest_noise), since only the set matters. Each cell is then
  // written as scale x scale patches straight into the mask (a row of cells, then copies of that row).
  at::Tensor draw_mask(int64_t B, at::Generator& gen) const {
    const int64_t cells = cells_.area(), w = cells_.w * scale_;
    const at::Tensor noise = at::rand({B, cells}, gen);
    at::Tensor mask = at::empty({B, cells_.h * scale_, w}, at::kBool);
    const float* src = noise.data_ptr<float>();
    bool* out = mask.data_ptr<bool>();
    std::vector<uint64_t> keys(static_cast<size_t>(cells));
    std::vector<unsigned char> hidden(static_cast<size_t>(cells));
    for (int64_t b = 0; b < B; ++b) {
      detail::mark_lowest_noise(src + b * cells, cells, mask_count_, hidden.data(), keys.data());
      for (int64_t r = 0; r < cells_.h; ++r) {
        bool* row = out + (b * cells_.h + r) * scale_ * w;
        for (int64_t c = 0; c < cells_.w; ++c) {
          const bool v = hidden[static_cast<size_t>(r * cells_.w + c)] != 0;
          for (int64_t k = 0; k < scale_; ++k) row[c * scale_ + k] = v;
        }
        for (int64_t k = 1; k < scale_; ++k) std::memcpy(row + k * w, row, static_cast<size_t>(w));
      }
    }
    return mask;
  }

  Options options_;
  Size2d cells_;
  int64_t scale_ = 1;
  int64_t mask_count_ = 0;
};

SIMMIM_NAMESPACE_END
