#pragma once
// Helpers shared by the model tests: tolerance comparison, tiny ViT options (dim 32, depth 2 keep every
// test in milliseconds), and masks with a fixed masked count per sample (MAE needs equal counts).
#include <torch/torch.h>

#include "simmim/core/shape.hpp"
#include "simmim/encoder/vision_transformer.hpp"

namespace simmim_test {

inline bool close(const at::Tensor& a, const at::Tensor& b, double rtol = 1e-5, double atol = 1e-6) {
  return a.sizes() == b.sizes() && at::allclose(a, b, rtol, atol);
}

inline simmim::VisionTransformerOptions tiny_vit(simmim::Size2d img, int64_t patch, int64_t chans = 3) {
  return simmim::VisionTransformerOptions(img, patch, 32, 2, 4).in_chans(chans);
}

// A random mask [B, h, w] with exactly `count` masked cells per sample.
inline at::Tensor random_mask(int64_t B, simmim::Size2d grid, int64_t count) {
  auto order = std::get<1>(torch::rand({B, grid.area()}).sort(1));
  return torch::zeros({B, grid.area()}, torch::kBool)
      .scatter_(1, order.narrow(1, 0, count), true)
      .view({B, grid.h, grid.w});
}

}  // namespace simmim_test
