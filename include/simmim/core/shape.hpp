#pragma once
// Shape helpers shared by masking, losses and models: patch grids of an image.

#include <cstdint>
#include <ostream>
#include <string>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

// A 2-D size (rows, cols): an image in pixels or a grid in patches. Non-square is first-class.
struct Size2d {
  int64_t h = 0;
  int64_t w = 0;
  constexpr Size2d() = default;
  constexpr Size2d(int64_t square) : h(square), w(square) {}  // NOLINT: 224 means 224 x 224
  constexpr Size2d(int64_t rows, int64_t cols) : h(rows), w(cols) {}
  constexpr int64_t area() const { return h * w; }
  constexpr bool operator==(const Size2d& o) const { return h == o.h && w == o.w; }
  constexpr bool operator!=(const Size2d& o) const { return !(*this == o); }
};

inline std::ostream& operator<<(std::ostream& os, const Size2d& s) { return os << s.h << "x" << s.w; }

// The largest image side (pixels) simmim accepts: bigger sizes are typos or overflows, and would fail later
// as a raw allocation error or wrap an int64 product (side * side * channels * batch).
inline constexpr int64_t kMaxImageSide = int64_t{1} << 16;

// The grid of `patch` x `patch` cells covering `image`; errors when the patch does not divide the image.
inline Size2d patch_grid(Size2d image, int64_t patch, const char* api, const char* what = "image size") {
  SIMMIM_CHECK_VALUE(patch > 0, api, "patch size", "positive", patch);
  SIMMIM_CHECK_VALUE(image.h > 0 && image.w > 0, api, what, "positive", image);
  SIMMIM_CHECK_VALUE(image.h <= kMaxImageSide && image.w <= kMaxImageSide, api, what,
                     "at most " + std::to_string(kMaxImageSide) + " pixels per side", image);
  SIMMIM_CHECK_VALUE(image.h % patch == 0 && image.w % patch == 0, api, what,
                     "divisible by the patch size " + std::to_string(patch), image);
  return {image.h / patch, image.w / patch};
}

SIMMIM_NAMESPACE_END
