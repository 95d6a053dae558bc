#pragma once
// Fixed rectangles, for inpainting-style evaluation (hide a known hole) or outpainting (invert: hide all
// but the rectangles). Boxes come in patch or pixel coordinates; a pixel box masks every patch it touches,
// so no pixel of the hole stays visible. No randomness: every sample gets the same mask.

#include <torch/arg.h>

#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class RegionUnits { kPatches, kPixels };

inline const char* region_units_name(RegionUnits u) { return u == RegionUnits::kPixels ? "pixels" : "patches"; }

struct RegionMaskOptions {
  RegionMaskOptions(Size2d input_size = 224) : input_size_(input_size) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size.
  TORCH_ARG(int64_t, patch_size) = 16;
  // The rectangles (at least one), each non-empty and inside the image in `units`.
  TORCH_ARG(std::vector<MaskRect>, boxes);
  // Coordinates of `boxes`: patches of the grid (default) or pixels of the image.
  TORCH_ARG(RegionUnits, units) = RegionUnits::kPatches;
  // false: the boxes are masked; true: everything but the boxes is masked.
  TORCH_ARG(bool, invert) = false;
};

class RegionMask final : public MaskGenerator {
 public:
  using Options = RegionMaskOptions;
  static constexpr const char* kName = "region";
  static constexpr const char* kApi = "simmim::RegionMask";

  explicit RegionMask(Options options = Options())
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    SIMMIM_CHECK_ENUM(options.units(), 2, "RegionUnits", kApi, "units", "RegionUnits::kPatches or kPixels");
    const bool pixels = options.units() == RegionUnits::kPixels;
    const Size2d bounds = pixels ? options.input_size() : grid();
    SIMMIM_CHECK_VALUE(!options.boxes().empty(), kApi, "boxes", "at least one rectangle", "none");
    // Each box covers at least one patch: more boxes than patches only repeat work.
    SIMMIM_CHECK_VALUE(static_cast<int64_t>(options.boxes().size()) <= grid().area(), kApi, "boxes",
                       "at most " + std::to_string(grid().area()) + " rectangles (the patches of the " +
                           c10::str(grid()) + " grid)",
                       options.boxes().size());
    at::Tensor mask = at::zeros({1, grid().h, grid().w}, at::kBool);
    for (const MaskRect& box : options.boxes()) {
      SIMMIM_CHECK_VALUE(box.inside(bounds), kApi, "each box",
                         std::string("a non-empty rectangle inside the ") + c10::str(bounds) + " " +
                             region_units_name(options.units()),
                         box);
      detail::fill_rect(mask.data_ptr<bool>(), grid(), pixels ? to_patches(box) : box);
    }
    if (options.invert()) mask = mask.logical_not();
    one_ = mask_batch_from_mask(mask);
  }

  const Options& options() const { return options_; }
  // A pixel box as the patch rectangle it touches.
  MaskRect to_patches(const MaskRect& px) const {
    const int64_t p = options_.patch_size();
    const int64_t top = px.top / p, left = px.left / p;
    return {top, left, (px.top + px.height + p - 1) / p - top, (px.left + px.width + p - 1) / p - left};
  }

  std::string name() const override { return kName; }
  std::string spec() const override {
    MaskSpecWriter w(kName);
    for (const MaskRect& b : options_.boxes()) w.word("box", c10::str(b.top, ":", b.left, ":", b.height, ":", b.width));
    return w.word("units", region_units_name(options_.units())).flag("invert", options_.invert()).str();
  }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<RegionMask>(*this); }

  // Keys: box=top:left:height:width (repeat for more boxes), units (patches | pixels), invert (false).
  static RegionMask from_spec(MaskSpecReader& r, const MaskGeometry& g) {
    Options o(g.input_size);
    o.patch_size(g.patch_size);
    std::vector<MaskRect> boxes;
    for (const std::string& v : r.all("box")) boxes.push_back(parse_box(v, r.where("box")));
    o.boxes(boxes);
    const std::string units = r.word("units", "patches");
    SIMMIM_CHECK_VALUE(units == "patches" || units == "pixels", kApi, r.where("units"), "patches or pixels", "'", units,
                       "'");
    o.units(units == "pixels" ? RegionUnits::kPixels : RegionUnits::kPatches);
    o.invert(r.flag("invert", o.invert()));
    r.finish();
    return RegionMask(o);
  }

 protected:
  MaskBatch draw(int64_t B, at::Generator& /*gen*/) const override {
    MaskBatch out;
    out.mask = one_.mask.expand({B, -1, -1}).contiguous();
    out.ids_keep = one_.ids_keep.expand({B, -1}).contiguous();
    out.ids_restore = one_.ids_restore.expand({B, -1}).contiguous();
    return out;
  }

 private:
  static MaskRect parse_box(const std::string& v, const std::string& where) {
    int64_t f[4] = {0, 0, 0, 0};
    const char* s = v.c_str();
    bool ok = true;
    for (int i = 0; i < 4 && ok; ++i) {
      char* end = nullptr;
      errno = 0;
      f[i] = std::strtoll(s, &end, 10);
      ok = end != s && errno != ERANGE && *end == (i < 3 ? ':' : '\0');
      s = end + 1;
    }
    SIMMIM_CHECK_VALUE(ok, kApi, where, "top:left:height:width (four integers)", "'", v, "'");
    return {f[0], f[1], f[2], f[3]};
  }

  Options options_;
  MaskBatch one_;  // the mask and its ids for one sample
};

SIMMIM_NAMESPACE_END
