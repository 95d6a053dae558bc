// Fuzzes the safetensors reader: the header length, the JSON header and every bound on it. Any input must
// parse or raise a c10::Error; what parses must write back to bytes that parse to the same tensors (the
// writer's output is the reader's input).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "simmim/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  simmim::SafetensorsContent content;
  try {
    content = simmim::parse_safetensors(bytes, "<fuzz input>");
  } catch (const c10::Error&) {
    return 0;
  }
  const auto again = simmim::parse_safetensors(simmim::serialize_safetensors(content.tensors, content.metadata),
                                               "<written back>");
  if (again.metadata != content.metadata || again.tensors.size() != content.tensors.size()) std::abort();
  for (const auto& [name, t] : content.tensors) {
    const auto it = again.tensors.find(name);
    // equal() on floating types would call NaN != NaN: compare the bytes through a same-size integer view.
    if (it == again.tensors.end() || it->second.scalar_type() != t.scalar_type() || it->second.sizes() != t.sizes())
      std::abort();
    if (t.numel() > 0 && std::memcmp(t.data_ptr(), it->second.data_ptr(), t.numel() * t.element_size()) != 0)
      std::abort();
  }
  return 0;
}
