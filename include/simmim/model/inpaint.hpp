#pragma once
// Inpainting with a trained pretraining model (SimMIM or MAE): the region to fill becomes the model's mask,
// the model predicts the masked patches, and the result is the input with only the region replaced, in
// the input's own values (visible pixels are the input's bits, exactly). The region: a patch mask from
// any strategy, a pixel mask (a user's mask image), or rectangles in pixels. Images whose size is not a
// multiple of the model's patch are padded (edge pixels repeated) and cropped back.

#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/masking/mask_batch.hpp"
#include "simmim/model/mae_model.hpp"
#include "simmim/model/pretrain_output.hpp"
#include "simmim/model/simmim_model.hpp"

SIMMIM_NAMESPACE_BEGIN

// A rectangle in pixels: columns [x, x + w), rows [y, y + h).
struct PixelBox {
  int64_t x = 0, y = 0, w = 0, h = 0;
};

// What to fill. A patch mask is at the model's patch resolution (a mask generator's output); a pixel mask
// and boxes are in pixels, and every patch they touch is masked for the model, while only their own
// pixels are replaced.
class InpaintRegion {
 public:
  enum class Kind { kPatches, kPixels, kBoxes };

  // [B, h, w] (h = H / patch after padding), bool or integer, nonzero = fill the whole patch.
  static InpaintRegion patches(at::Tensor mask) { return InpaintRegion(Kind::kPatches, std::move(mask), {}); }
  // [B, H, W] or [B, 1, H, W] at the images' size, nonzero = fill that pixel.
  static InpaintRegion pixels(at::Tensor mask) { return InpaintRegion(Kind::kPixels, std::move(mask), {}); }
  // The same rectangles in every image; each must lie inside it and be non-empty.
  static InpaintRegion boxes(std::vector<PixelBox> boxes) { return InpaintRegion(Kind::kBoxes, {}, std::move(boxes)); }

  Kind kind() const { return kind_; }
  const at::Tensor& mask() const { return mask_; }
  const std::vector<PixelBox>& box_list() const { return boxes_; }

 private:
  InpaintRegion(Kind kind, at::Tensor mask, std::vector<PixelBox> boxes)
      : kind_(kind), mask_(std::move(mask)), boxes_(std::move(boxes)) {}
  Kind kind_;
  at::Tensor mask_;
  std::vector<PixelBox> boxes_;
};

struct InpaintOptions {
  // The normalization the model was trained with, per channel (or one for all): it sees (x - mean) / std
  // of the images' values (for uint8 images, of value / 255). Empty: the images as they are.
  TORCH_ARG(std::vector<double>, mean) = {};
  TORCH_ARG(std::vector<double>, stddev) = {};
  // Floating images: clamp the predicted pixels to [clamp_min, clamp_max] when clamp_min < clamp_max
  // (e.g. 0, 1); uint8 images are always clamped to [0, 255] and rounded.
  TORCH_ARG(double, clamp_min) = 0.0;
  TORCH_ARG(double, clamp_max) = 0.0;
};

struct InpaintResult {
  // The input with the region replaced by the prediction: same shape, dtype and device as the input.
  at::Tensor images;
  // [B, 1, H, W] bool: the pixels replaced.
  at::Tensor filled;
  // [B, h, w] bool at the (padded) patch grid: the patches the model was asked to predict.
  at::Tensor patch_mask;
  // The model's whole reconstruction in the images' values (float, [B, C, H, W]), for pictures.
  at::Tensor prediction;
};

// What inpaint needs of a model: its forward, its module (device, eval mode) and the multiple image sides
// must have (the patch; for a CNN or Swin encoder under SimMIM, its stride).
struct InpaintModel {
  std::function<PretrainOutput(const at::Tensor&, const MaskBatch&)> forward;
  torch::nn::Module* module = nullptr;
  int64_t patch = 0;  // the mask's cell side in pixels
  int64_t multiple = 0;  // image sides are padded to a multiple of this
  bool equal_mask_counts = false;  // MAE: every image of a forward needs the same number of masked patches
};

// Smallest size >= `size` whose sides are multiples of `multiple`.
inline Size2d padded_size(Size2d size, int64_t multiple) {
  SIMMIM_CHECK_VALUE(multiple > 0, "simmim::padded_size", "multiple", "positive", multiple);
  return Size2d((size.h + multiple - 1) / multiple * multiple, (size.w + multiple - 1) / multiple * multiple);
}

// A model given a prediction target (target/) predicts that target, not the pixels (HOG, bins, a teacher's
// features), or pixels normalized by the hidden patch's own statistics: refused. Models without one
// predict the pixels.
inline void check_inpaints_pixels(const std::shared_ptr<const Target>& target) {
  SIMMIM_CHECK(target == nullptr, "simmim::inpaint", "model",
               "a model that predicts the pixels themselves (no options.target)",
               "one trained on target " + target->name() + ", whose output is not the hidden pixels");
}

inline InpaintModel inpaint_model(SimMIM& model) {
  SIMMIM_CHECK(!model.is_empty(), "simmim::inpaint", "model", "a SimMIM model", "an empty holder");
  check_inpaints_pixels(model->options.target());
  InpaintModel m;
  m.forward = [model](const at::Tensor& x, const MaskBatch& masks) mutable { return model->forward(x, masks); };
  m.module = model.ptr().get();
  m.patch = model->adapter().patch_size();
  m.multiple = std::max(m.patch, model->adapter().stride());
  return m;
}

// MAE with norm_pix_loss predicts each masked patch in its own standardized units; turning that into pixels
// needs the hidden patch's mean and std, so such a model cannot inpaint (refused).
inline InpaintModel inpaint_model(MAE& model) {
  SIMMIM_CHECK(!model.is_empty(), "simmim::inpaint", "model", "an MAE model", "an empty holder");
  check_inpaints_pixels(model->options.target());
  SIMMIM_CHECK(!model->options.norm_pix_loss(), "simmim::inpaint", "model",
               "a model that predicts pixels (SimMIM, or MAE trained without norm_pix_loss)",
               "an MAE trained with norm_pix_loss: it predicts each patch standardized by the hidden patch's own "
               "mean and std, which an inpainting cannot know");
  InpaintModel m;
  m.forward = [model](const at::Tensor& x, const MaskBatch& masks) mutable { return model->forward(x, masks); };
  m.module = model.ptr().get();
  m.patch = model->options.encoder().patch_size();
  m.multiple = m.patch;
  m.equal_mask_counts = true;
  return m;
}

namespace detail {

// Per-channel [1, C, 1, 1] float from a list of one value or C values.
inline at::Tensor channel_values(const std::vector<double>& v, int64_t C, const char* what, const at::Tensor& like) {
  SIMMIM_CHECK_VALUE(static_cast<int64_t>(v.size()) == C || v.size() == 1, "simmim::inpaint", what,
                     "one value per channel (" + std::to_string(C) + ") or one for all", v.size());
  return at::tensor(v, like.options().dtype(at::kDouble)).to(at::kFloat).reshape({1, -1, 1, 1});
}

// The region as a pixel mask [B, 1, H, W] bool at the images' size (patch regions: at the padded size).
inline at::Tensor region_pixels(const InpaintRegion& region, int64_t B, Size2d image, Size2d padded, int64_t patch,
                                 const at::Device& device) {
  constexpr const char* api = "simmim::inpaint";
  const auto bool_opts = at::TensorOptions().dtype(at::kBool).device(device);
  switch (region.kind()) {
    case InpaintRegion::Kind::kBoxes: {
      SIMMIM_CHECK(!region.box_list().empty(), api, "region", "at least one box", "none");
      at::Tensor m = at::zeros({B, 1, image.h, image.w}, bool_opts);
      for (const PixelBox& b : region.box_list()) {
        SIMMIM_CHECK(b.w > 0 && b.h > 0 && b.x >= 0 && b.y >= 0 && b.x + b.w <= image.w && b.y + b.h <= image.h, api,
                     "region box", "a non-empty box inside the " + std::to_string(image.w) + "x" +
                                       std::to_string(image.h) + " (W x H) image",
                     "x=" + std::to_string(b.x) + ", y=" + std::to_string(b.y) + ", w=" + std::to_string(b.w) +
                         ", h=" + std::to_string(b.h));
        m.narrow(2, b.y, b.h).narrow(3, b.x, b.w).fill_(true);
      }
      return m;
    }
    case InpaintRegion::Kind::kPixels: {
      at::Tensor m = region.mask();
      SIMMIM_CHECK(m.defined() && (m.dim() == 3 || (m.dim() == 4 && m.size(1) == 1)), api, "region pixel mask",
                   "[B, H, W] or [B, 1, H, W]", describe(m));
      if (m.dim() == 3) m = m.unsqueeze(1);
      SIMMIM_CHECK(m.size(0) == B && m.size(2) == image.h && m.size(3) == image.w, api, "region pixel mask",
                   "the images' batch and size " + shape_str({B, 1, image.h, image.w}), describe(region.mask()));
      SIMMIM_CHECK(m.scalar_type() == at::kBool || at::isIntegralType(m.scalar_type(), false) ||
                       at::isFloatingType(m.scalar_type()),
                   api, "region pixel mask", "bool, integer or floating (nonzero = fill)", describe(m));
      return m.to(device).ne(0);
    }
    case InpaintRegion::Kind::kPatches: {
      const at::Tensor& m = region.mask();
      const int64_t h = padded.h / patch, w = padded.w / patch;
      SIMMIM_CHECK(m.defined() && m.dim() == 3 && m.size(0) == B && m.size(1) == h && m.size(2) == w &&
                       (m.scalar_type() == at::kBool || at::isIntegralType(m.scalar_type(), false)),
                   api, "region patch mask",
                   "a bool or integer [B, h, w] = " + shape_str({B, h, w}) + " (patch " + std::to_string(patch) +
                       " over the padded size " + c10::str(padded) + ")",
                   describe(m));
      return m.to(device).ne(0).repeat_interleave(patch, 1).repeat_interleave(patch, 2).unsqueeze(1);
    }
  }
  TORCH_INTERNAL_ASSERT(false, "unknown InpaintRegion kind");
  return {};
}

}  // namespace detail

// Fills `region` of `images` ([B, C, H, W] floating in the value range the normalization refers to, or
// uint8) with the model's prediction. The model runs in eval mode without gradients on its own device
// (its training flag is restored afterwards); the images and the region may live anywhere. The padded
// size must be one the model takes (a ViT's img_size: load the weights into a model of that size with
// adapt_to_grid for other sizes).
inline InpaintResult inpaint(const InpaintModel& model, const at::Tensor& images, const InpaintRegion& region,
                             const InpaintOptions& options = {}) {
  constexpr const char* api = "simmim::inpaint";
  SIMMIM_CHECK(model.forward && model.module != nullptr && model.patch > 0 && model.multiple > 0, api, "model",
               "a model from inpaint_model()", "an incomplete InpaintModel");
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0 && images.size(1) > 0 &&
                   images.size(2) > 0 && images.size(3) > 0 &&
                   (images.scalar_type() == at::kByte || at::isFloatingType(images.scalar_type())),
               api, "images", "a non-empty uint8 or floating [B, C, H, W]", describe(images));
  SIMMIM_CHECK_VALUE(options.clamp_min() <= options.clamp_max(), api, "options.clamp_min / clamp_max",
                     "clamp_min <= clamp_max (equal: no clamp)",
                     std::to_string(options.clamp_min()) + " > " + std::to_string(options.clamp_max()));
  const int64_t B = images.size(0), C = images.size(1);
  const Size2d image(images.size(2), images.size(3));
  const Size2d padded = padded_size(image, model.multiple);
  // The model's device, and the floating dtype its parameters are kept in (a model kept in bf16 gets
  // bf16 input; everything before and after the forward is float).
  at::Device device = images.device();
  at::ScalarType model_dtype = at::kFloat;
  for (const auto& p : model.module->parameters()) {
    device = p.device();
    if (at::isFloatingType(p.scalar_type())) model_dtype = p.scalar_type();
    break;
  }
  const bool is_byte = images.scalar_type() == at::kByte;

  // The model's input: values (uint8 / 255), normalized, edge-padded to the padded size.
  at::Tensor values = images.to(device).to(at::kFloat);
  if (is_byte) values = values / 255.0;
  at::Tensor mean, stddev;
  if (!options.mean().empty() || !options.stddev().empty()) {
    SIMMIM_CHECK_VALUE(options.mean().size() == options.stddev().size(), api, "options.mean / stddev",
                       "as many means as stds", std::to_string(options.mean().size()) + " means, " +
                                                    std::to_string(options.stddev().size()) + " stds");
    mean = detail::channel_values(options.mean(), C, "options.mean", values);
    stddev = detail::channel_values(options.stddev(), C, "options.stddev", values);
  }
  at::Tensor x = mean.defined() ? (values - mean) / stddev : values;
  if (padded != image) {
    x = at::replication_pad2d(x, {0, padded.w - image.w, 0, padded.h - image.h});
  }

  // Pixels to fill at the images' size, and at the padded size for the patch mask.
  at::Tensor fill = detail::region_pixels(region, B, image, padded, model.patch, device);
  at::Tensor fill_padded = fill;
  if (region.kind() == InpaintRegion::Kind::kPatches) {
    fill = fill_padded.narrow(2, 0, image.h).narrow(3, 0, image.w);
  } else if (padded != image) {
    fill_padded = at::constant_pad_nd(fill, {0, padded.w - image.w, 0, padded.h - image.h}, 0);
  }
  const int64_t h = padded.h / model.patch, w = padded.w / model.patch;
  const at::Tensor patch_mask =
      fill_padded.view({B, h, model.patch, w, model.patch}).any(4).any(2).contiguous();  // [B, h, w]

  at::Tensor recon;
  {
    torch::NoGradGuard no_grad;
    const bool was_training = model.module->is_training();
    model.module->eval();
    try {
      const at::Tensor input = x.to(model_dtype);
      // MAE needs the same number of masked patches in every image of a batch: else image by image.
      const bool split = model.equal_mask_counts && B > 1 && [&] {
        const at::Tensor counts = patch_mask.view({B, -1}).sum(1);
        return !counts.eq(counts[0]).all().item<bool>();
      }();
      if (split) {
        std::vector<at::Tensor> parts;
        for (int64_t i = 0; i < B; ++i) {
          parts.push_back(model.forward(input.narrow(0, i, 1), MaskBatch(patch_mask.narrow(0, i, 1))).reconstruction);
        }
        recon = at::cat(parts, 0);
      } else {
        recon = model.forward(input, MaskBatch(patch_mask)).reconstruction;
      }
    } catch (...) {
      model.module->train(was_training);
      throw;
    }
    model.module->train(was_training);
  }
  SIMMIM_CHECK(recon.defined() && recon.sizes() == x.sizes(), api, "model",
               "a reconstruction of the input's shape " + shape_str(x), describe(recon));
  recon = recon.to(at::kFloat).narrow(2, 0, image.h).narrow(3, 0, image.w);
  if (mean.defined()) recon = recon * stddev + mean;

  InpaintResult out;
  at::Tensor predicted;
  if (is_byte) {
    predicted = (recon * 255.0).round().clamp(0.0, 255.0);
    out.prediction = predicted / 255.0;
  } else {
    predicted = options.clamp_min() < options.clamp_max() ? recon.clamp(options.clamp_min(), options.clamp_max()) : recon;
    out.prediction = predicted;
  }
  const at::Tensor original = images.to(device);
  out.images = at::where(fill, predicted.to(images.scalar_type()), original).to(images.device());
  out.filled = fill.to(images.device());
  out.patch_mask = patch_mask.to(images.device());
  out.prediction = out.prediction.to(images.device());
  return out;
}

// The same with a SimMIM or MAE model.
inline InpaintResult inpaint(SimMIM& model, const at::Tensor& images, const InpaintRegion& region,
                             const InpaintOptions& options = {}) {
  return inpaint(inpaint_model(model), images, region, options);
}
inline InpaintResult inpaint(MAE& model, const at::Tensor& images, const InpaintRegion& region,
                             const InpaintOptions& options = {}) {
  return inpaint(inpaint_model(model), images, region, options);
}

SIMMIM_NAMESPACE_END
