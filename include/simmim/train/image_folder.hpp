#pragma once
// A folder of images as a dataset, torchvision-ImageFolder style: one class per subfolder (searched
// recursively), or a single unlabeled class when the images sit directly in the root. Decoding (PNG, JPEG,
// BMP, TGA, ...) comes from stb_image (Debian libstb-dev): link the stb library (`simmim::train` does).

#include <ATen/ATen.h>
#include <stb/stb_image.h>

#include <algorithm>
#include <cstring>
#include <cctype>
#include <filesystem>
#include <limits>
#include <system_error>
#include <memory>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"
#include "simmim/train/atomic_file.hpp"
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/image_transform.hpp"

SIMMIM_NAMESPACE_BEGIN

// The most pixels one decoded image may have (2^28, 768 MiB as RGB): a header that claims more is an absurd
// or hostile file, refused before stb allocates for it.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 28;

// Decodes an encoded image (the bytes of a PNG, JPEG, ... file) to uint8 [channels, H, W] (channels 1 =
// gray, 3 = RGB, 4 = RGBA: converted as needed). `shown` names the file in messages.
inline at::Tensor decode_image(const void* bytes, size_t size, int channels, const std::string& shown,
                               const char* api = "simmim::decode_image") {
  SIMMIM_CHECK_VALUE(channels == 1 || channels == 3 || channels == 4, api, "channels", "1 (gray), 3 (RGB) or 4 (RGBA)", channels);
  const char* kinds = "an image stb_image can decode (PNG, JPEG, BMP, TGA, GIF)";
  SIMMIM_CHECK(size > 0 && size <= static_cast<size_t>(std::numeric_limits<int>::max()), api, "path", kinds,
               "'" + shown + "' (" + std::to_string(size) + " bytes)");
  const auto* buf = static_cast<const stbi_uc*>(bytes);
  const int len = static_cast<int>(size);
  // PSD, PNM, HDR and PIC are refused before stb sees them: Debian's stb crashed on a 16-bit PNM under
  // fuzzing (tests/fuzz/corpus/image/repro-pnm16-segv), and no image folder needs them.
  auto starts = [&](const char* magic, size_t m) { return size >= m && std::memcmp(buf, magic, m) == 0; };
  const bool refused = starts("8BPS", 4) || starts("P5", 2) || starts("P6", 2) || starts("#?", 2) ||
                       starts("\x53\x80\xF6\x34", 4);
  SIMMIM_CHECK(!refused, api, "path", "a PNG, JPEG, BMP, TGA or GIF image (PSD, PNM, HDR and PIC are not read)",
               "'" + shown + "'");
  int w = 0, h = 0, n = 0;
  SIMMIM_CHECK(stbi_info_from_memory(buf, len, &w, &h, &n) != 0, api, "path", kinds,
               "'" + shown + "' (" + (stbi_failure_reason() ? stbi_failure_reason() : "unknown format") + ")");
  SIMMIM_CHECK(w > 0 && h > 0 && int64_t{w} * h <= kMaxImagePixels, api, "path",
               "an image of at most " + std::to_string(kMaxImagePixels) + " pixels",
               "'" + shown + "' claiming " + std::to_string(w) + "x" + std::to_string(h));
  unsigned char* data = stbi_load_from_memory(buf, len, &w, &h, &n, channels);
  SIMMIM_CHECK(data != nullptr, api, "path", kinds,
               "'" + shown + "' (" + (stbi_failure_reason() ? stbi_failure_reason() : "unknown error") + ")");
  at::Tensor out;
  try {
    out = at::from_blob(data, {h, w, channels}, at::TensorOptions().dtype(at::kByte)).permute({2, 0, 1}).clone();
  } catch (...) {
    stbi_image_free(data);
    throw;
  }
  stbi_image_free(data);
  return out;
}

// Decodes an image file to uint8 [channels, H, W] (channels 1 = gray, 3 = RGB, 4 = RGBA: converted as needed).
inline at::Tensor read_image(const std::string& path, int channels = 3) {
  constexpr const char* api = "simmim::read_image";
  SIMMIM_CHECK_VALUE(channels == 1 || channels == 3 || channels == 4, api, "channels", "1 (gray), 3 (RGB) or 4 (RGBA)", channels);
  const std::string bytes = read_file_bytes(path, api);
  return decode_image(bytes.data(), bytes.size(), channels, path, api);
}

class ImageFolder {
 public:
  // `extensions`: lower-case suffixes of the files to take.
  explicit ImageFolder(const std::string& root, int channels = 3,
                       std::vector<std::string> extensions = {".png", ".jpg", ".jpeg", ".bmp", ".tga"})
      : root_(root), channels_(channels), extensions_(std::move(extensions)) {
    constexpr const char* api = "simmim::ImageFolder";
    namespace fs = std::filesystem;
    SIMMIM_CHECK_VALUE(channels == 1 || channels == 3 || channels == 4, api, "channels", "1 (gray), 3 (RGB) or 4 (RGBA)",
                       channels);
    std::error_code ec;
    SIMMIM_CHECK(fs::is_directory(root, ec), api, "root", "a directory", "'" + root + "'");
    try {
      scan(root);
    } catch (const fs::filesystem_error& e) {
      SIMMIM_CHECK(false, api, "root", "a folder tree simmim can list", "'" + root + "' (" + e.what() + ")");
    }
    SIMMIM_CHECK(!samples_.empty(), api, "root", "a folder with images (one subfolder per class, or images directly)",
                 "'" + root + "' with no files ending in one of the accepted extensions");
  }

 private:
  void scan(const std::string& root) {
    namespace fs = std::filesystem;
    std::vector<fs::path> class_dirs;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) class_dirs.push_back(e.path());
    std::sort(class_dirs.begin(), class_dirs.end());
    for (const auto& dir : class_dirs) {
      std::vector<std::string> files;
      for (const auto& e : fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink))
        if (e.is_regular_file() && is_image(e.path())) files.push_back(e.path().string());
      if (files.empty()) continue;  // not a class: nothing to learn from
      std::sort(files.begin(), files.end());
      const int64_t label = static_cast<int64_t>(classes_.size());
      classes_.push_back(dir.filename().string());
      for (auto& f : files) samples_.push_back({std::move(f), label});
    }
    if (classes_.empty()) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(root))
        if (e.is_regular_file() && is_image(e.path())) files.push_back(e.path().string());
      std::sort(files.begin(), files.end());
      if (!files.empty()) classes_.push_back(".");
      for (auto& f : files) samples_.push_back({std::move(f), 0});
    }
  }

 public:
  int64_t size() const { return static_cast<int64_t>(samples_.size()); }
  const std::vector<std::string>& classes() const { return classes_; }
  const std::string& path(int64_t i) const { return samples_.at(static_cast<size_t>(i)).path; }
  int64_t label(int64_t i) const { return samples_.at(static_cast<size_t>(i)).label; }
  int channels() const { return channels_; }

  // The decoded image i: uint8 [channels, H, W].
  at::Tensor load(int64_t i) const {
    SIMMIM_CHECK(i >= 0 && i < size(), "simmim::ImageFolder::load", "index", "in [0, " + std::to_string(size()) + ")",
                 i);
    return read_image(path(i), channels_);
  }

 private:
  struct Sample {
    std::string path;
    int64_t label;
  };

  bool is_image(const std::filesystem::path& p) const {
    std::string ext = p.extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    return std::find(extensions_.begin(), extensions_.end(), ext) != extensions_.end();
  }

  std::string root_;
  int channels_;
  std::vector<std::string> extensions_;
  std::vector<std::string> classes_;
  std::vector<Sample> samples_;
};

// Batches of decoded, transformed images from `folder` (images differ in size, so a transform that fixes the
// size is required).
inline BatchFn make_batch_fn(std::shared_ptr<const ImageFolder> folder, std::shared_ptr<const ImageTransform> transform) {
  constexpr const char* api = "simmim::make_batch_fn";
  SIMMIM_CHECK(folder != nullptr, api, "folder", "an ImageFolder", "null");
  SIMMIM_CHECK(transform != nullptr, api, "transform", "an ImageTransform (it sets the batch's image size)", "null");
  return [folder = std::move(folder), transform = std::move(transform)](const std::vector<int64_t>& indices,
                                                                       uint64_t seed) {
    at::Generator gen = make_generator(seed);
    std::vector<at::Tensor> images;
    std::vector<int64_t> labels;
    images.reserve(indices.size());
    for (int64_t i : indices) {
      images.push_back((*transform)(folder->load(i), gen));
      labels.push_back(folder->label(i));
    }
    Batch b;
    b.images = at::stack(images);
    b.labels = at::tensor(labels, at::TensorOptions().dtype(at::kLong));
    return b;
  };
}

SIMMIM_NAMESPACE_END
