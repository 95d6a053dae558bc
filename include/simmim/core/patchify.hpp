#pragma once
// Patchify / unpatchify in MAE's layout: images [B, C, H, W] <-> tokens [B, L, p*p*C] with L = h*w in
// row-major patch order and each token ordered (row in patch, column in patch, channel). Losses (norm-pix
// targets, the patchified layout) and the models share this one definition.

#include <ATen/ATen.h>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

// [B, C, H, W] -> [B, h*w, p*p*C].
inline at::Tensor patchify(const at::Tensor& images, int64_t p) {
  constexpr const char* api = "simmim::patchify";
  SIMMIM_CHECK_DIM(images, 4, api, "images", "[B, C, H, W]");
  const int64_t B = images.size(0), C = images.size(1);
  const Size2d grid = patch_grid({images.size(2), images.size(3)}, p, api);
  return images.reshape({B, C, grid.h, p, grid.w, p})
      .permute({0, 2, 4, 3, 5, 1})
      .reshape({B, grid.area(), p * p * C});
}

// [B, h*w, p*p*C] -> [B, C, h*p, w*p]; `grid` gives (h, w) so non-square images round-trip.
inline at::Tensor unpatchify(const at::Tensor& tokens, int64_t p, Size2d grid) {
  constexpr const char* api = "simmim::unpatchify";
  SIMMIM_CHECK_DIM(tokens, 3, api, "tokens", "[B, L, p*p*C]");
  SIMMIM_CHECK_VALUE(p > 0, api, "patch size", "positive", p);
  SIMMIM_CHECK(tokens.size(1) == grid.area(), api, "tokens",
               "[B, L, p*p*C] with L = " + std::to_string(grid.area()) + " for a " + c10::str(grid) + " grid",
               shape_str(tokens));
  SIMMIM_CHECK(tokens.size(2) % (p * p) == 0, api, "tokens",
               "a last dimension divisible by p*p = " + std::to_string(p * p), shape_str(tokens));
  const int64_t B = tokens.size(0), C = tokens.size(2) / (p * p);
  return tokens.reshape({B, grid.h, grid.w, p, p, C})
      .permute({0, 5, 1, 3, 2, 4})
      .reshape({B, C, grid.h * p, grid.w * p});
}

SIMMIM_NAMESPACE_END
