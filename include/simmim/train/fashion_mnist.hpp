#pragma once
// Fashion-MNIST from Debian's dataset-fashion-mnist: the gzipped IDX files are unpacked once into a cache
// directory, validated first (IDX header, exact length, Fashion-MNIST's shapes and labels) and stored with a
// checksum trailer that every later read verifies; a cache file that fails is rebuilt from the source.
// Needs zlib (`simmim::train` links it).

#include <torch/arg.h>
#include <ATen/ATen.h>
#include <zlib.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/checksum.hpp"
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

namespace detail {

// The content of a gzip file, or an error naming `api` and the path: unreadable, not gzip-compressed at all
// (zlib would pass plain bytes through), corrupt or cut short.
inline std::string gunzip_bytes(const std::string& gz, const char* api) {
  gzFile in = gzopen(gz.c_str(), "rb");
  SIMMIM_CHECK(in != nullptr, api, "gz", "a readable gzip file", "'" + gz + "'");
  std::string out;
  std::vector<char> buf(1 << 16);
  int n = 0;
  while ((n = gzread(in, buf.data(), static_cast<unsigned>(buf.size()))) > 0) out.append(buf.data(), static_cast<size_t>(n));
  int err = Z_OK;
  const char* msg = n < 0 ? gzerror(in, &err) : nullptr;
  std::string why = msg ? msg : "";
  const bool plain = gzdirect(in) != 0;
  // A stream cut short reads as a short file; only gzclose tells (Z_BUF_ERROR).
  const int closed = gzclose(in);
  if (closed == Z_BUF_ERROR && why.empty()) why = "truncated";
  if (plain) why = "not gzip-compressed";
  SIMMIM_CHECK(n >= 0 && closed == Z_OK && !plain, api, "gz", "a valid gzip file",
               "'" + gz + "' (" + (why.empty() ? "read failed" : why) + ")");
  return out;
}

}  // namespace detail

// Unpacks `gz` into `out` through a temp file and a rename, so concurrent first uses never see a partial
// file. A file that is not gzip-compressed is an error (zlib alone would copy it as is).
inline void gunzip_file(const std::string& gz, const std::string& out) {
  constexpr const char* api = "simmim::gunzip_file";
  const std::string bytes = detail::gunzip_bytes(gz, api);
  write_file_atomically(out, api, [&](const std::string& tmp) {
    CheckedFileWriter w(tmp, api, out);
    w.write(bytes.data(), bytes.size());
    w.finish();
  });
}

// An IDX array of unsigned bytes (the MNIST format): dims, and the data as a uint8 tensor of those dims.
struct IdxArray {
  std::vector<int64_t> dims;
  at::Tensor data;
};

// Parses IDX bytes (magic 0x00 0x00 0x08 ndim, ndim big-endian u32 sizes, then the data), checking that the
// data is exactly as long as the sizes say (a truncated file is an error, never a zero tail). `shown` names
// the file in messages.
inline IdxArray parse_idx(const void* bytes, size_t n, const std::string& shown,
                          const char* api = "simmim::parse_idx") {
  const auto* p = static_cast<const unsigned char*>(bytes);
  const std::string where = "'" + shown + "' (" + std::to_string(n) + " bytes)";
  SIMMIM_CHECK(n >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 0x08 && p[3] >= 1 && p[3] <= 4, api, "file",
               "an IDX file of unsigned bytes (magic 00 00 08 <1..4>)", where);
  const size_t ndim = p[3];
  SIMMIM_CHECK(n >= 4 + 4 * ndim, api, "file", "an IDX file with its " + std::to_string(ndim) + " sizes", where);
  IdxArray out;
  uint64_t count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    const unsigned char* q = p + 4 + 4 * d;
    const uint64_t v = (uint64_t{q[0]} << 24) | (uint64_t{q[1]} << 16) | (uint64_t{q[2]} << 8) | uint64_t{q[3]};
    // IDX sizes are int32 in practice (torch's reader reads them so); larger ones are damage.
    SIMMIM_CHECK(v <= 0x7FFFFFFFu, api, "file", "an IDX file with sizes below 2^31", where, " with size ", v);
    out.dims.push_back(static_cast<int64_t>(v));
    // Bounded by the bytes there are, so the product cannot overflow.
    count = v == 0 || count <= n / v ? count * v : n + 1;
  }
  const size_t header = 4 + 4 * ndim;
  SIMMIM_CHECK(count == n - header, api, "file",
               "an IDX file whose data is as long as its sizes say (" + std::to_string(count) + " bytes)", where,
               " with ", n - header, " bytes of data");
  out.data = at::empty(out.dims, at::kByte);
  if (count > 0) std::memcpy(out.data.data_ptr<uint8_t>(), p + header, static_cast<size_t>(count));
  return out;
}

// Makes sure the four IDX files are unpacked in the cache and returns that directory.
inline std::string prepare_fashion_mnist(const FashionMnistOptions& options = {});

namespace detail {

inline std::string fashion_mnist_cache_dir(const FashionMnistOptions& options) {
  return options.cache_dir().empty() ? default_cache_dir() + "/fashion-mnist" : options.cache_dir();
}

// What each file must hold: [N, 28, 28] images or [N] labels, N = 60000 (train) or 10000 (t10k).
inline std::vector<int64_t> fashion_mnist_dims(const std::string& name) {
  const int64_t n = name.rfind("train", 0) == 0 ? 60000 : 10000;
  if (name.find("images") != std::string::npos) return {n, 28, 28};
  return {n};
}

// Validates the IDX bytes of Fashion-MNIST file `name` (shape, label range); errors name `shown`.
inline IdxArray validate_fashion_mnist(const std::string& name, const std::string& bytes, const std::string& shown,
                                       const char* api) {
  IdxArray a = parse_idx(bytes.data(), bytes.size(), shown, api);
  const std::vector<int64_t> want = fashion_mnist_dims(name);
  SIMMIM_CHECK(a.dims == want, api, "file", "Fashion-MNIST's " + name + " " + shape_str(want),
               "'" + shown + "' holding ", shape_str(a.dims));
  if (a.dims.size() == 1) {
    const int64_t top = a.data.max().item<uint8_t>();
    SIMMIM_CHECK(top <= 9, api, "file", "labels in 0..9", "'" + shown + "' with a label ", top);
  }
  return a;
}

// The validated content of cache file `name`: read and verified when the cache holds an intact copy;
// otherwise (missing, truncated, corrupt) unpacked from the source .gz, validated, then cached with a
// checksum trailer. Nothing invalid is ever cached, so restoring a bad source file fixes the next run.
inline IdxArray cached_fashion_mnist_file(const std::string& name, const FashionMnistOptions& options,
                                          const char* api) {
  namespace fs = std::filesystem;
  const fs::path cached = fs::path(fashion_mnist_cache_dir(options)) / name;
  std::error_code ec;
  if (fs::is_regular_file(cached, ec)) {
    const std::string bytes = read_file_bytes(cached.string(), api, "cache file");
    size_t payload = 0;
    if (verify_checksum_trailer(bytes.data(), bytes.size(), &payload) == ChecksumStatus::kOk) {
      return validate_fashion_mnist(name, bytes.substr(0, payload), cached.string(), api);
    }
    // Not intact: rebuilt below from the source.
  }
  const fs::path gz = fs::path(options.source_dir()) / (name + ".gz");
  SIMMIM_CHECK(fs::is_regular_file(gz, ec), api, "source_dir",
               "a directory with the Fashion-MNIST .gz files (Debian: apt install dataset-fashion-mnist)",
               "'" + options.source_dir() + "' without " + gz.filename().string());
  const std::string bytes = gunzip_bytes(gz.string(), api);
  IdxArray a = validate_fashion_mnist(name, bytes, gz.string(), api);
  write_file_atomically(cached.string(), api, [&](const std::string& tmp) {
    CheckedFileWriter w(tmp, api, cached.string());
    w.write(bytes.data(), bytes.size());
    const auto trailer = checksum_trailer(bytes.size(), crc32(bytes.data(), bytes.size()));
    w.write(trailer.data(), trailer.size());
    w.finish();
  });
  return a;
}

inline constexpr const char* kFashionMnistFiles[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

}  // namespace detail

// Makes sure the four IDX files are unpacked, validated and intact in the cache (each with a checksum
// trailer) and returns that directory.
inline std::string prepare_fashion_mnist(const FashionMnistOptions& options) {
  constexpr const char* api = "simmim::prepare_fashion_mnist";
  for (const char* f : detail::kFashionMnistFiles) detail::cached_fashion_mnist_file(f, options, api);
  return detail::fashion_mnist_cache_dir(options);
}

// Fashion-MNIST's training split (60000) or test split (10000): images [N, 1, 28, 28] in [0, 1].
inline LabeledImages load_fashion_mnist(bool train, const FashionMnistOptions& options = {}) {
  constexpr const char* api = "simmim::load_fashion_mnist";
  const std::string split = train ? "train" : "t10k";
  const IdxArray images = detail::cached_fashion_mnist_file(split + "-images-idx3-ubyte", options, api);
  const IdxArray labels = detail::cached_fashion_mnist_file(split + "-labels-idx1-ubyte", options, api);
  return {images.data.unsqueeze(1).to(at::kFloat).div_(255.0), labels.data.to(at::kLong)};
}

SIMMIM_NAMESPACE_END
