// Fuzzes the image-folder decoding path (simmim::decode_image over stb_image): any input must decode to a
// uint8 [C, H, W] tensor or raise a c10::Error. Debian's libstb is not instrumented: a memory error inside
// it shows as a crash, not an ASan report.
#include <cstddef>
#include <cstdint>

#include "simmim/train/image_folder.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int channels = (data[0] & 1) ? 3 : 1;
  // A resource limit of the harness, not of the library: decode_image accepts up to kMaxImagePixels (2^28),
  // but a few bytes can claim that many (a decompression bomb) and take seconds each under ASan.
  int w = 0, h = 0, n = 0;
  if (size > 1 && stbi_info_from_memory(data + 1, static_cast<int>(size - 1), &w, &h, &n) &&
      int64_t{w} * h > (int64_t{1} << 22))
    return 0;
  try {
    const at::Tensor img = simmim::decode_image(data + 1, size - 1, channels, "<fuzz input>");
    if (img.dim() != 3 || img.size(0) != channels) __builtin_trap();
  } catch (const c10::Error&) {
  }
  return 0;
}
