#pragma once
// Target: what a pretraining model must predict at the masked positions, and the loss that scores it.
// Pixels (raw, norm-pix, local norm), HOG, color bins: each turns the clean images into per-patch
// targets [B, L, Dt] and names its masked loss; a model takes any of them (SimMIMOptions::target,
// MAEOptions::target) and sizes its head from prediction_dim(). docs/targets.md has every target's formula.

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/dispatch/backend.hpp"
#include "simmim/dispatch/masked_loss_options.hpp"
#include "simmim/loss/masked_loss.hpp"

SIMMIM_NAMESPACE_BEGIN

class Target {
 public:
  virtual ~Target() = default;

  // For messages and pretty_print, e.g. "pixels(norm-pix)".
  virtual std::string name() const = 0;

  // D, the width of the student's prediction per patch of patch x patch pixels of `channels` channels.
  virtual int64_t prediction_dim(int64_t patch, int64_t channels) const = 0;

  // The target of every patch of images [B, C, H, W] (patch | H, W): [B, L, Dt], L = (H/p)(W/p) in
  // row-major patch order (patchify's), float values or int64 class ids. Computed on the images' device,
  // without grad (the images are data).
  virtual at::Tensor compute(const at::Tensor& images, int64_t patch) const = 0;

  // The masked loss of a prediction [B, L, D] against compute()'s target (backend left at kAuto).
  virtual MaskedLossOptions loss_options() const = 0;

  // The prediction [B, L, D] as an image [B, C, H, W] in the input's pixel space, for viewing (grids); an
  // undefined tensor where the target has no pixel space (HOG). `images` are the clean inputs.
  virtual at::Tensor to_image(const at::Tensor& pred, const at::Tensor& images, int64_t patch) const = 0;

  // The masked loss: pred [B, L, D], target from compute(), mask [B, L] (or [B, h, w], flattened).
  at::Tensor loss(const at::Tensor& pred, const at::Tensor& target, const at::Tensor& mask,
                  Backend backend = Backend::kAuto) const {
    const at::Tensor flat = mask.defined() && mask.dim() == 3 ? mask.flatten(1) : mask;
    return masked_reconstruction_loss(pred, target, flat, loss_options().backend(backend));
  }
};

// The shared check of compute()'s input: images [B, C, H, W] with data and a patch that divides H and W.
inline Size2d check_target_images(const at::Tensor& images, int64_t patch, const char* api) {
  SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0 && images.size(1) > 0, api, "images",
               "a non-empty [B, C, H, W] tensor", describe(images));
  SIMMIM_CHECK(at::isFloatingType(images.scalar_type()), api, "images", "a floating-point tensor", describe(images));
  SIMMIM_CHECK_HAS_DATA(images, api, "images");
  SIMMIM_CHECK_VALUE(patch > 0, api, "patch", "positive", patch);
  return patch_grid({images.size(2), images.size(3)}, patch, api, "the images' size");
}

SIMMIM_NAMESPACE_END
