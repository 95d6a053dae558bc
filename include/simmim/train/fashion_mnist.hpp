#pragma once
// Fashion-MNIST from Debian's dataset-fashion-mnist: the gzipped IDX files are unpacked once into a cache
// directory, then read by torch::data::datasets::MNIST (same format). Needs zlib (`simmim::train` links it).

#include <torch/arg.h>
#include <torch/data/datasets/mnist.h>
#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/train/atomic_file.hpp"
#include "simmim/train/labeled_images.hpp"


SIMMIM_NAMESPACE_BEGIN

// The ten Fashion-MNIST classes, by label.
inline constexpr std::array<const char*, 10> kFashionMnistClasses = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

// Per-channel statistics of the Fashion-MNIST training images in [0, 1], for normalization.
inline constexpr double kFashionMnistMean = 0.2860;
inline constexpr double kFashionMnistStd = 0.3530;

// The default cache directory: $SIMMIM_CACHE_DIR, else $XDG_CACHE_HOME/simmim, else ~/.cache/simmim, else
// the system temp directory's simmim/.
inline std::string default_cache_dir() {
  if (const char* d = std::getenv("SIMMIM_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d) return std::string(d) + "/simmim";
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/simmim";
  return (std::filesystem::temp_directory_path() / "simmim").string();
}

struct FashionMnistOptions {
  // Where the .gz files are ($SIMMIM_FASHION_MNIST_DIR overrides the Debian location when set).
  TORCH_ARG(std::string, source_dir) = [] {
    const char* d = std::getenv("SIMMIM_FASHION_MNIST_DIR");
    return std::string(d && *d ? d : "/usr/share/datasets/fashion-mnist");
  }();
  // Where the unpacked IDX files go; "" = default_cache_dir() + "/fashion-mnist".
  TORCH_ARG(std::string, cache_dir) = "";
};

// Unpacks `gz` into `out` through a temp file and a rename, so concurrent first uses never see a partial
// file.
inline void gunzip_file(const std::string& gz, const std::string& out) {
  constexpr const char* api = "simmim::gunzip_file";
  write_file_atomically(out, api, [&](const std::string& tmp) {
    gzFile in = gzopen(gz.c_str(), "rb");
    SIMMIM_CHECK(in != nullptr, api, "gz", "a readable gzip file", "'" + gz + "'");
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    if (!os) {
      gzclose(in);
      SIMMIM_CHECK(false, api, "out", "a writable path", "'" + out + "'");
    }
    std::vector<char> buf(1 << 16);
    int n = 0;
    while ((n = gzread(in, buf.data(), static_cast<unsigned>(buf.size()))) > 0) os.write(buf.data(), n);
    int err = Z_OK;
    const char* msg = n < 0 ? gzerror(in, &err) : nullptr;
    std::string why = msg ? msg : "";
    // A stream cut short reads as a short file; only gzclose tells (Z_BUF_ERROR).
    const int closed = gzclose(in);
    if (closed == Z_BUF_ERROR && why.empty()) why = "truncated";
    os.close();
    SIMMIM_CHECK(n >= 0 && closed == Z_OK && os, api, "gz", "a valid gzip file",
                 "'" + gz + "' (" + (why.empty() ? "write failed" : why) + ")");
  });
}

// Makes sure the four IDX files are unpacked in the cache and returns that directory.
inline std::string prepare_fashion_mnist(const FashionMnistOptions& options = {}) {
  constexpr const char* api = "simmim::prepare_fashion_mnist";
  namespace fs = std::filesystem;
  const std::string cache = options.cache_dir().empty() ? default_cache_dir() + "/fashion-mnist" : options.cache_dir();
  static const char* const kFiles[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                                       "t10k-labels-idx1-ubyte"};
  for (const char* f : kFiles) {
    const fs::path out = fs::path(cache) / f;
    if (fs::is_regular_file(out)) continue;
    const fs::path gz = fs::path(options.source_dir()) / (std::string(f) + ".gz");
    SIMMIM_CHECK(fs::is_regular_file(gz), api, "source_dir",
                 "a directory with the Fashion-MNIST .gz files (Debian: apt install dataset-fashion-mnist)",
                 "'" + options.source_dir() + "' without " + gz.filename().string());
    fs::create_directories(cache);
    gunzip_file(gz.string(), out.string());
  }
  return cache;
}

// Fashion-MNIST's training split (60000) or test split (10000): images [N, 1, 28, 28] in [0, 1].
inline LabeledImages load_fashion_mnist(bool train, const FashionMnistOptions& options = {}) {
  const std::string dir = prepare_fashion_mnist(options);
  torch::data::datasets::MNIST ds(dir, train ? torch::data::datasets::MNIST::Mode::kTrain
                                             : torch::data::datasets::MNIST::Mode::kTest);
  return {ds.images(), ds.targets().to(at::kLong)};
}

SIMMIM_NAMESPACE_END
