#pragma once
// A folder of images as a dataset, torchvision-ImageFolder style: one class per subfolder (searched
// recursively), or a single unlabeled class when the images sit directly in the root. Decoding (PNG, JPEG,
// BMP, TGA, ...) comes from stb_image (Debian libstb-dev): link the stb library (`simmim::train` does).

#include <ATen/ATen.h>
#include <stb/stb_image.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/image_transform.hpp"

SIMMIM_NAMESPACE_BEGIN

// Decodes an image file to uint8 [channels, H, W] (channels 1 = gray, 3 = RGB: converted as needed).
inline at::Tensor read_image(const std::string& path, int channels = 3) {
  constexpr const char* api = "simmim::read_image";
  SIMMIM_CHECK_VALUE(channels == 1 || channels == 3, api, "channels", "1 or 3", channels);
  int w = 0, h = 0, n = 0;
  unsigned char* data = stbi_load(path.c_str(), &w, &h, &n, channels);
  SIMMIM_CHECK(data != nullptr, api, "path", "an image stb_image can decode (PNG, JPEG, BMP, TGA, GIF, PSD, PNM)",
               "'" + path + "' (" + (stbi_failure_reason() ? stbi_failure_reason() : "unknown error") + ")");
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

class ImageFolder {
 public:
  // `extensions`: lower-case suffixes of the files to take.
  explicit ImageFolder(const std::string& root, int channels = 3,
                       std::vector<std::string> extensions = {".png", ".jpg", ".jpeg", ".bmp", ".tga"})
      : root_(root), channels_(channels), extensions_(std::move(extensions)) {
    constexpr const char* api = "simmim::ImageFolder";
    namespace fs = std::filesystem;
    SIMMIM_CHECK_VALUE(channels == 1 || channels == 3, api, "channels", "1 or 3", channels);
    SIMMIM_CHECK(fs::is_directory(root), api, "root", "a directory", "'" + root + "'");
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
    SIMMIM_CHECK(!samples_.empty(), api, "root", "a folder with images (one subfolder per class, or images directly)",
                 "'" + root + "' with no files ending in one of the accepted extensions");
  }

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
