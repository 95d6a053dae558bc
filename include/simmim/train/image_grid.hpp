#pragma once
// Image grids and PNG files: tile batches of images into one picture and write it, and the standard MIM
// picture of a fixed set of images, one row each for original | masked | reconstruction.
// PNG encoding comes from stb_image_write (Debian libstb-dev): a program including this header links the
// compiled stb library (`simmim::train` does that; by hand: pkg-config --libs stb, i.e. -lstb).

#include <ATen/ATen.h>
#include <torch/arg.h>
#include <stb/stb_image_write.h>

#include <filesystem>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/train/atomic_file.hpp"


SIMMIM_NAMESPACE_BEGIN

// Undoes a per-channel normalization ((x - mean) / std) and clamps to [0, 1]. Empty mean/std: just clamp.
// `images` is [B, C, H, W] or [C, H, W].
inline at::Tensor denormalize(const at::Tensor& images, const std::vector<double>& mean = {},
                              const std::vector<double>& stddev = {}) {
  constexpr const char* api = "simmim::denormalize";
  SIMMIM_CHECK(images.defined() && (images.dim() == 3 || images.dim() == 4), api, "images",
               "[B, C, H, W] or [C, H, W]", describe(images));
  at::Tensor x = images.detach().to(at::kFloat);
  if (mean.empty() && stddev.empty()) return x.clamp(0.0, 1.0);
  const int64_t C = x.size(x.dim() - 3);
  SIMMIM_CHECK_VALUE(mean.size() == stddev.size() && (static_cast<int64_t>(mean.size()) == C || mean.size() == 1), api,
                     "mean / std", "one value per channel (" + std::to_string(C) + ") or one for all",
                     std::to_string(mean.size()) + " means, " + std::to_string(stddev.size()) + " stds");
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[static_cast<size_t>(x.dim() - 3)] = static_cast<int64_t>(mean.size());
  const auto opts = x.options();
  const at::Tensor m = at::tensor(mean, opts.dtype(at::kDouble)).to(at::kFloat).reshape(shape);
  const at::Tensor s = at::tensor(stddev, opts.dtype(at::kDouble)).to(at::kFloat).reshape(shape);
  return (x * s + m).clamp(0.0, 1.0);
}

// A patch-resolution mask [B, h, w] (true / nonzero = masked) as a pixel mask [B, 1, H, W] float, where
// each cell covers (H/h) x (W/w) pixels.
inline at::Tensor mask_to_pixels(const at::Tensor& mask, Size2d image) {
  constexpr const char* api = "simmim::mask_to_pixels";
  SIMMIM_CHECK_DIM(mask, 3, api, "mask", "[B, h, w]");
  SIMMIM_CHECK(mask.size(1) > 0 && mask.size(2) > 0 && image.h % mask.size(1) == 0 && image.w % mask.size(2) == 0,
               api, "mask", "a grid that divides the image " + c10::str(image), shape_str(mask));
  const int64_t sh = image.h / mask.size(1), sw = image.w / mask.size(2);
  return mask.to(at::kFloat).repeat_interleave(sh, 1).repeat_interleave(sw, 2).unsqueeze(1);
}

// Tiles rows of images into one [C, H', W'] float picture. rows[r] is [N_r, C, H, W] with values in [0, 1]
// (C is 1 or 3; 1-channel rows are shown gray next to colour ones); `padding` pixels of `pad_value` between
// tiles and around.
inline at::Tensor make_image_grid(const std::vector<at::Tensor>& rows, int64_t padding = 2, double pad_value = 1.0) {
  constexpr const char* api = "simmim::make_image_grid";
  SIMMIM_CHECK(!rows.empty(), api, "rows", "at least one row", "none");
  SIMMIM_CHECK_VALUE(padding >= 0, api, "padding", "non-negative", padding);
  int64_t C = 1, H = -1, W = -1, N = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    const at::Tensor& t = rows[r];
    SIMMIM_CHECK(t.defined() && t.dim() == 4 && (t.size(1) == 1 || t.size(1) == 3) && t.size(0) > 0, api,
                 "rows[" + std::to_string(r) + "]", "a non-empty [N, C, H, W] tensor with C = 1 or 3", describe(t));
    if (H < 0) {
      H = t.size(2);
      W = t.size(3);
    }
    SIMMIM_CHECK(t.size(2) == H && t.size(3) == W, api, "rows[" + std::to_string(r) + "]",
                 "images of the first row's size " + std::to_string(H) + "x" + std::to_string(W), shape_str(t));
    C = std::max(C, t.size(1));
    N = std::max(N, t.size(0));
  }
  const int64_t R = static_cast<int64_t>(rows.size());
  at::Tensor grid = at::full({C, R * (H + padding) + padding, N * (W + padding) + padding}, pad_value,
                             at::TensorOptions().dtype(at::kFloat));
  for (int64_t r = 0; r < R; ++r) {
    const at::Tensor t = rows[static_cast<size_t>(r)].detach().to(at::kCPU, at::kFloat).expand({-1, C, H, W});
    const int64_t y = padding + r * (H + padding);
    for (int64_t n = 0; n < t.size(0); ++n) {
      const int64_t x = padding + n * (W + padding);
      grid.slice(1, y, y + H).slice(2, x, x + W).copy_(t[n]);
    }
  }
  return grid;
}

// Writes a [C, H, W] (C = 1, 3 or 4) or [H, W] image to a PNG file: float values in [0, 1] (clamped) or
// uint8. Atomic: a viewer never sees half a file.
inline void write_png(const std::string& path, const at::Tensor& image) {
  constexpr const char* api = "simmim::write_png";
  SIMMIM_CHECK(image.defined() && (image.dim() == 2 || image.dim() == 3), api, "image", "[C, H, W] or [H, W]",
               describe(image));
  at::Tensor img = image.dim() == 2 ? image.unsqueeze(0) : image;
  SIMMIM_CHECK(img.size(0) == 1 || img.size(0) == 3 || img.size(0) == 4, api, "image", "1, 3 or 4 channels",
               describe(image));
  SIMMIM_CHECK(img.size(1) > 0 && img.size(2) > 0, api, "image", "non-empty", describe(image));
  img = img.detach().to(at::kCPU);
  if (img.scalar_type() != at::kByte) img = img.to(at::kFloat).clamp(0.0, 1.0).mul(255.0).round().to(at::kByte);
  img = img.permute({1, 2, 0}).contiguous();  // stb wants interleaved rows
  const int h = static_cast<int>(img.size(0)), w = static_cast<int>(img.size(1)), c = static_cast<int>(img.size(2));

  // Encoded in memory, then written through checked I/O: stbi_write_png ignores fwrite's result, so a full
  // disk would report success.
  std::string png;
  const int ok = stbi_write_png_to_func(
      [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
      },
      &png, w, h, c, img.data_ptr<uint8_t>(), w * c);
  SIMMIM_CHECK(ok != 0, api, "image", "an image stb can encode", describe(image));
  write_file_atomically(path, api, [&](const std::string& tmp) {
    CheckedFileWriter out(tmp, api, path);
    out.write(png.data(), png.size());
    out.finish();
  });
}

struct ReconstructionGridOptions {
  // The normalization the images went through, to undo for display (empty: images are in [0, 1]).
  TORCH_ARG(std::vector<double>, mean) = std::vector<double>{};
  TORCH_ARG(std::vector<double>, stddev) = std::vector<double>{};
  // Show the original pixels where the mask is off (the model was only asked for the masked ones).
  TORCH_ARG(bool, paste_visible) = true;
  // Gray level of masked cells in the "masked" row.
  TORCH_ARG(double, masked_value) = 0.5;
  TORCH_ARG(int64_t, padding) = 2;
  // Integer enlargement (nearest neighbour) so small images (28 x 28) are visible in a viewer.
  TORCH_ARG(int64_t, scale) = 1;
  // Channels to show: one index (gray) or three (as R, G, B), e.g. {3, 2, 1} for a multispectral band
  // triplet. Empty: 1- and 3-channel images as they are; any other count shows every channel as its own
  // gray tile (image 0's channels, then image 1's, ...).
  TORCH_ARG(std::vector<int64_t>, display_channels) = std::vector<int64_t>{};
};

// The displayable form of images [B, C, H, W] in [0, 1] for a grid row (see display_channels).
inline at::Tensor display_channels(const at::Tensor& images, const std::vector<int64_t>& channels, const char* api) {
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  if (channels.empty()) return C == 1 || C == 3 ? images : images.reshape({B * C, 1, H, W});
  SIMMIM_CHECK_VALUE(channels.size() == 1 || channels.size() == 3, api, "options.display_channels",
                     "one or three channel indices", channels.size(), " indices");
  for (int64_t c : channels) {
    SIMMIM_CHECK_VALUE(c >= 0 && c < C, api, "options.display_channels", "indices in [0, " + std::to_string(C) + ")", c);
  }
  return images.index_select(1, at::tensor(channels, at::TensorOptions().dtype(at::kLong)));
}

// The rows original | masked | reconstruction as one picture: images and reconstruction [B, C, H, W]
// (same normalization; any C, shown as options.display_channels says), mask [B, h, w] at any patch
// resolution that divides H and W (non-square images too).
inline at::Tensor make_reconstruction_grid(const at::Tensor& images, const at::Tensor& mask,
                                           const at::Tensor& reconstruction,
                                           const ReconstructionGridOptions& options = {}) {
  constexpr const char* api = "simmim::make_reconstruction_grid";
  SIMMIM_CHECK_DIM(images, 4, api, "images", "[B, C, H, W]");
  SIMMIM_CHECK(reconstruction.defined() && reconstruction.sizes() == images.sizes(), api, "reconstruction",
               "the shape of images " + shape_str(images), describe(reconstruction));
  SIMMIM_CHECK_DIM(mask, 3, api, "mask", "[B, h, w]");
  SIMMIM_CHECK(mask.size(0) == images.size(0), api, "mask", "one mask per image (B = " +
               std::to_string(images.size(0)) + ")", shape_str(mask));
  const at::Tensor orig = denormalize(images.to(at::kCPU), options.mean(), options.stddev());
  at::Tensor rec = denormalize(reconstruction.to(at::kCPU), options.mean(), options.stddev());
  const at::Tensor m = mask_to_pixels(mask.to(at::kCPU), {images.size(2), images.size(3)});
  SIMMIM_CHECK_VALUE(options.scale() >= 1, api, "options.scale", ">= 1", options.scale());
  const at::Tensor masked = orig * (1 - m) + options.masked_value() * m;
  if (options.paste_visible()) rec = orig * (1 - m) + rec * m;
  std::vector<at::Tensor> rows{display_channels(orig, options.display_channels(), api),
                               display_channels(masked, options.display_channels(), api),
                               display_channels(rec, options.display_channels(), api)};
  if (options.scale() > 1)
    for (auto& r : rows) r = r.repeat_interleave(options.scale(), 2).repeat_interleave(options.scale(), 3);
  return make_image_grid(rows, options.padding());
}

inline void write_reconstruction_grid(const std::string& path, const at::Tensor& images, const at::Tensor& mask,
                                      const at::Tensor& reconstruction,
                                      const ReconstructionGridOptions& options = {}) {
  write_png(path, make_reconstruction_grid(images, mask, reconstruction, options));
}

SIMMIM_NAMESPACE_END
