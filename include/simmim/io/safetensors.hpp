#pragma once
// safetensors, the weights format Python's ecosystem (timm, Hugging Face) shares: an 8-byte little-endian
// header length N, N bytes of JSON ({name: {dtype, shape, data_offsets}}, optional "__metadata__" string
// map), then the raw little-endian bytes. Files are written atomically and deterministically (sorted
// names); reading checks every bound and every field before it allocates, so any input is a tensor map or
// an error naming the file and what was wrong (tests/fuzz/fuzz_safetensors.cpp). Needs nlohmann-json
// (simmim::train).

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/train/atomic_file.hpp"

SIMMIM_NAMESPACE_BEGIN

// Tensors by name; std::map keeps the names sorted, which is the order a file stores them in.
using TensorMap = std::map<std::string, at::Tensor>;

// What a safetensors file holds.
struct SafetensorsContent {
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

namespace detail {

// The largest header read (safetensors' own reader refuses more than 100 MB too): a corrupt length must not
// make the reader allocate gigabytes before it finds out.
inline constexpr uint64_t kSafetensorsMaxHeader = 100000000;
// The most dimensions a tensor may have (no weight has more; a header of millions of 1s is refused early).
inline constexpr size_t kSafetensorsMaxDims = 64;

struct SafetensorsDtype {
  const char* name;
  at::ScalarType type;
  int64_t itemsize;
};

inline const std::vector<SafetensorsDtype>& safetensors_dtypes() {
  static const std::vector<SafetensorsDtype> table = {
      {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2}, {"BF16", at::kBFloat16, 2},
      {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
      {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1}};
  return table;
}

inline const SafetensorsDtype* safetensors_dtype_of(at::ScalarType type) {
  for (const auto& d : safetensors_dtypes())
    if (d.type == type) return &d;
  return nullptr;
}

inline const SafetensorsDtype* safetensors_dtype_named(const std::string& name) {
  for (const auto& d : safetensors_dtypes())
    if (name == d.name) return &d;
  return nullptr;
}

// The format is little-endian; so is every machine LibTorch ships for, but a big-endian one is an error
// rather than swapped bytes.
inline bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

inline void check_little_endian_host(const char* api) {
  SIMMIM_CHECK(host_is_little_endian(), api, "host", "little-endian (safetensors stores little-endian bytes)",
               "a big-endian machine");
}

// A short, printable excerpt of a JSON value for error messages.
inline std::string json_excerpt(const nlohmann::json& j) {
  std::string s = j.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

}  // namespace detail

// The bytes of a safetensors file holding `tensors` (any device, any strides; copied to contiguous CPU
// memory) and `metadata`. Names are stored sorted and the data follows in that order; the header is padded
// with spaces to a multiple of 8 bytes so every tensor's data starts 8-byte aligned in the file.
inline std::string serialize_safetensors(const TensorMap& tensors,
                                         const std::map<std::string, std::string>& metadata = {}) {
  constexpr const char* api = "simmim::serialize_safetensors";
  detail::check_little_endian_host(api);
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    SIMMIM_CHECK(name != "__metadata__" && !name.empty(), api, "tensors",
                 "named by non-empty names other than \"__metadata__\"", "a tensor named '" + name + "'");
    SIMMIM_CHECK(t.defined(), api, "tensors['" + name + "']", "a defined tensor", "an undefined tensor");
    SIMMIM_CHECK_HAS_DATA(t, api, "tensors['" + name + "']");
    SIMMIM_CHECK(t.layout() == at::kStrided, api, "tensors['" + name + "']", "a dense (strided) tensor", describe(t),
                 " with layout ", t.layout());
    const auto* dt = detail::safetensors_dtype_of(t.scalar_type());
    SIMMIM_CHECK(dt != nullptr, api, "tensors['" + name + "']",
                 "of a dtype safetensors stores (double, float, half, bfloat16, int64, int32, int16, int8, uint8, bool)",
                 describe(t));
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const auto nbytes = static_cast<uint64_t>(c.numel()) * static_cast<uint64_t>(dt->itemsize);
    header[name] = {{"dtype", dt->name}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    data.push_back(std::move(c));
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {  // a name or metadata that is not valid UTF-8
    SIMMIM_CHECK(false, api, "tensors and metadata", "named in valid UTF-8 (JSON text)", e.what());
  }
  json.append((8 - (8 + json.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  out.reserve(8 + json.size() + offset);
  out += json;
  for (const auto& c : data) {
    if (c.numel() > 0) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  return out;
}

// Parses the bytes of a safetensors file; `shown` names it in errors ("simmim::load_safetensors: file must
// be ...; got '<shown>' (<what was wrong>)"). Every check runs before any tensor is allocated.
inline SafetensorsContent parse_safetensors(const std::string& bytes, const std::string& shown,
                                            const char* api = "simmim::parse_safetensors") {
  detail::check_little_endian_host(api);
  const auto fail = [&](const std::string& why) {
    SIMMIM_CHECK(false, api, "file", "a valid safetensors file", "'" + shown + "' (" + why + ")");
  };
  if (bytes.size() < 8) fail("only " + std::to_string(bytes.size()) + " bytes; the header length alone is 8");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[static_cast<size_t>(i)]);
  const uint64_t available = bytes.size() - 8;
  if (n > available) {
    fail("header length " + std::to_string(n) + " exceeds the " + std::to_string(available) +
         " bytes after the length field");
  }
  if (n > detail::kSafetensorsMaxHeader) {
    fail("header length " + std::to_string(n) + " exceeds the limit of " +
         std::to_string(detail::kSafetensorsMaxHeader) + " bytes");
  }
  if (n < 2 || bytes[8] != '{') fail("the header does not start with '{' (not a JSON object)");

  // Duplicate names are an error (a JSON parser would keep one silently): one set of keys per open object.
  // A safetensors header nests three deep (root, tensor entry, shape / offsets array); deeper input stops
  // the parse at once instead of building millions of nested values first.
  struct TooDeep {};
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  const auto callback = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth > 3) throw TooDeep{};
    if (event == E::object_start) {
      keys.emplace_back();
    } else if (event == E::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == E::key && !keys.empty() && parsed.is_string()) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n), callback);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  } catch (const TooDeep&) {
    fail("the header nests deeper than a safetensors header (object, tensor entry, array)");
  }
  if (!duplicate.empty()) fail("the header names '" + duplicate + "' twice");
  if (!header.is_object()) fail("the header is not a JSON object");

  struct Entry {
    std::string name;
    const detail::SafetensorsDtype* dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  SafetensorsContent content;
  std::vector<Entry> entries;
  const uint64_t data_size = available - n;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("__metadata__ is not an object of strings: " + detail::json_excerpt(value));
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) fail("__metadata__['" + k + "'] is not a string: " + detail::json_excerpt(v));
        content.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!value.is_object()) fail(where + " is not an object: " + detail::json_excerpt(value));
    for (const auto& [k, v] : value.items()) {
      (void)v;
      if (k != "dtype" && k != "shape" && k != "data_offsets") fail(where + " has an unknown field '" + k + "'");
    }
    const auto dt = value.find("dtype");
    const auto sh = value.find("shape");
    const auto off = value.find("data_offsets");
    if (dt == value.end() || sh == value.end() || off == value.end())
      fail(where + " lacks one of dtype, shape, data_offsets");
    if (!dt->is_string()) fail(where + " has a dtype that is not a string: " + detail::json_excerpt(*dt));
    Entry e{name, detail::safetensors_dtype_named(dt->get<std::string>()), {}, 0, 0};
    if (e.dtype == nullptr) {
      fail(where + " has dtype " + detail::json_excerpt(*dt) +
           ", not one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
    }
    if (!sh->is_array()) fail(where + " has a shape that is not an array: " + detail::json_excerpt(*sh));
    if (sh->size() > detail::kSafetensorsMaxDims)
      fail(where + " has " + std::to_string(sh->size()) + " dimensions; at most " +
           std::to_string(detail::kSafetensorsMaxDims) + " are read");
    // The product of the non-zero sizes times the item size must fit int64 (LibTorch's sizes are int64), even
    // when a zero size makes the tensor empty; the byte count is then held against the data area.
    uint64_t product = 1;
    bool has_zero = false, overflow = false;
    constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) fail(where + " has a shape entry that is not a non-negative integer: " +
                                        detail::json_excerpt(*sh));
      const uint64_t v = d.get<uint64_t>();
      if (v == 0) {
        has_zero = true;
      } else if (v > kMax / product) {
        overflow = true;
      } else {
        product *= v;
      }
      e.shape.push_back(static_cast<int64_t>(std::min(v, kMax)));
    }
    if (overflow || product > kMax / static_cast<uint64_t>(e.dtype->itemsize))
      fail(where + " has a shape whose size overflows 64 bits: " + detail::json_excerpt(*sh));
    const uint64_t numel = has_zero ? 0 : product;
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      fail(where + " has data_offsets that are not two non-negative integers: " + detail::json_excerpt(*off));
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.begin > e.end) fail(where + " has data_offsets " + detail::json_excerpt(*off) + " that end before they begin");
    if (e.end > data_size) {
      fail(where + " has data_offsets " + detail::json_excerpt(*off) + " past the end of the data (" +
           std::to_string(data_size) + " bytes)");
    }
    const uint64_t nbytes = numel * static_cast<uint64_t>(e.dtype->itemsize);
    if (e.end - e.begin != nbytes) {
      fail(where + " has " + std::to_string(e.end - e.begin) + " bytes of data for " + std::to_string(nbytes) +
           " bytes of " + e.dtype->name + " " + detail::json_excerpt(*sh));
    }
    entries.push_back(std::move(e));
  }
  // The tensors must tile the data area: in offset order, each begins where the previous one ended, and the
  // last ends at the end of the file (no gaps, no overlaps, no trailing bytes).
  std::vector<const Entry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t cursor = 0;
  for (const Entry* e : order) {
    if (e->begin != cursor) {
      fail("tensor '" + e->name + "' begins at data offset " + std::to_string(e->begin) + ", but the data before it " +
           (e->begin < cursor ? "ends at " : "covers only up to ") + std::to_string(cursor) +
           (e->begin < cursor ? " (overlap)" : " (gap)"));
    }
    cursor = e->end;
  }
  if (cursor != data_size) {
    fail("the tensors cover " + std::to_string(cursor) + " of the " + std::to_string(data_size) +
         " bytes of data after the header");
  }
  const char* data = bytes.data() + 8 + n;
  for (const auto& e : entries) {
    // BOOL bytes other than 0 and 1 would be invalid bools in LibTorch: read them as bytes, then compare.
    const at::ScalarType read_as = e.dtype->type == at::kBool ? at::kByte : e.dtype->type;
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(read_as));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, static_cast<size_t>(e.end - e.begin));
    if (e.dtype->type == at::kBool) t = t.ne(0);
    content.tensors.emplace(e.name, std::move(t));
  }
  return content;
}

// Reads a safetensors file (tensors on the CPU, in the file's dtypes).
inline SafetensorsContent load_safetensors(const std::string& path) {
  constexpr const char* api = "simmim::load_safetensors";
  return parse_safetensors(read_file_bytes(path, api), path, api);
}

// Writes `tensors` (and `metadata`) to `path` atomically: a temporary file beside it, then a rename.
inline void save_safetensors(const std::string& path, const TensorMap& tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  constexpr const char* api = "simmim::save_safetensors";
  const std::string bytes = serialize_safetensors(tensors, metadata);
  write_file_atomically(path, api, [&](const std::string& tmp) {
    CheckedFileWriter out(tmp, api, path);
    out.write(bytes.data(), bytes.size());
    out.finish();
  });
}

SIMMIM_NAMESPACE_END
