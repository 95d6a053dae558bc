#pragma once
// Geometry every mask strategy shares: the image and the model's patch size (which give the [h, w] grid
// of patches a mask covers), and rectangles of patches (BEiT blocks, I-JEPA blocks, inpainting regions).

#include <cstdint>
#include <ostream>

#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

// The image a mask is drawn for: input_size in pixels (non-square allowed) and the model's patch size.
// The mask grid is input_size / patch_size on each axis.
struct MaskGeometry {
  Size2d input_size = Size2d(224);
  int64_t patch_size = 16;

  MaskGeometry() = default;
  MaskGeometry(Size2d input, int64_t patch) : input_size(input), patch_size(patch) {}

  // The [h, w] patch grid; errors (naming `api`) when the patch does not divide the image.
  Size2d grid(const char* api) const { return patch_grid(input_size, patch_size, api, "input_size"); }

  bool operator==(const MaskGeometry& o) const { return input_size == o.input_size && patch_size == o.patch_size; }
  bool operator!=(const MaskGeometry& o) const { return !(*this == o); }
};

inline std::ostream& operator<<(std::ostream& os, const MaskGeometry& g) {
  return os << "input " << g.input_size << ", patch " << g.patch_size;
}

// A rectangle of cells: rows [top, top + height), columns [left, left + width).
struct MaskRect {
  int64_t top = 0;
  int64_t left = 0;
  int64_t height = 0;
  int64_t width = 0;

  int64_t area() const { return height * width; }
  // Non-empty and inside a grid of `grid` cells. Written without top + height, which wraps for a huge
  // height and would let the rectangle pass.
  bool inside(Size2d grid) const {
    return top >= 0 && left >= 0 && height > 0 && width > 0 && height <= grid.h && width <= grid.w &&
           top <= grid.h - height && left <= grid.w - width;
  }
  bool operator==(const MaskRect& o) const {
    return top == o.top && left == o.left && height == o.height && width == o.width;
  }
};

inline std::ostream& operator<<(std::ostream& os, const MaskRect& r) {
  return os << "(top " << r.top << ", left " << r.left << ", " << r.height << "x" << r.width << ")";
}

namespace detail {

// Cells already set inside `r` of a row-major [grid.h, grid.w] mask. `r` must be inside the grid.
inline int64_t count_in_rect(const bool* mask, Size2d grid, const MaskRect& r) {
  int64_t n = 0;
  for (int64_t i = r.top; i < r.top + r.height; ++i) {
    const bool* row = mask + i * grid.w;
    for (int64_t j = r.left; j < r.left + r.width; ++j) n += row[j] ? 1 : 0;
  }
  return n;
}

// Sets every cell of `r`; returns how many were newly set. `r` must be inside the grid.
inline int64_t fill_rect(bool* mask, Size2d grid, const MaskRect& r) {
  int64_t added = 0;
  for (int64_t i = r.top; i < r.top + r.height; ++i) {
    bool* row = mask + i * grid.w;
    for (int64_t j = r.left; j < r.left + r.width; ++j) {
      added += row[j] ? 0 : 1;
      row[j] = true;
    }
  }
  return added;
}

}  // namespace detail

SIMMIM_NAMESPACE_END
