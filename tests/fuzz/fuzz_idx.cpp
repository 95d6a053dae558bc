// Fuzzes the IDX reader behind the Fashion-MNIST cache: any input must parse to exactly the bytes its
// header describes, or raise a c10::Error (never read past the end, never a zero tail).
#include <cstddef>
#include <cstdint>

#include "simmim/train/fashion_mnist.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const simmim::IdxArray a = simmim::parse_idx(data, size, "<fuzz input>");
    // The data is exactly what follows the header.
    if (a.data.sizes() != at::IntArrayRef(a.dims) ||
        static_cast<size_t>(a.data.numel()) + 4 + 4 * a.dims.size() != size)
      __builtin_trap();
  } catch (const c10::Error&) {
  }
  return 0;
}
