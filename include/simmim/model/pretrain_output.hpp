#pragma once
// What a pretraining model's forward returns: the loss to back-propagate, the reconstruction as an
// image (for grids and metrics) and the mask the loss counted.

#include <ATen/ATen.h>

#include "simmim/core/version.hpp"

SIMMIM_NAMESPACE_BEGIN

struct PretrainOutput {
  // Scalar masked reconstruction loss.
  at::Tensor loss;
  // [B, C, H, W] in the input images' pixel space (MAE with norm-pix: de-normalized per patch; with a
  // target: its to_image(), undefined where it has no pixel space, e.g. HOG).
  at::Tensor reconstruction;
  // [B, h, w] at patch resolution, true / nonzero = masked: the cells the loss counted.
  at::Tensor mask;
};

SIMMIM_NAMESPACE_END
