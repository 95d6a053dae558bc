#pragma once
// Integrity of the files simmim writes for itself to read back (checkpoints, the dataset cache): CRC-32
// (the zip / PNG / gzip polynomial) computed while the bytes stream past, and a 24-byte trailer appended
// to the file that records the payload's length and checksum:
//   [payload][magic "SIMMIMCK"][payload length, u64 little-endian][CRC-32, u32 LE][4 bytes 0]
// A reader that verifies the trailer catches flipped bytes anywhere, truncation (the length or the magic
// no longer match) and files that were never written by simmim. Torch-free.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "simmim/core/abi.hpp"

SIMMIM_NAMESPACE_BEGIN

namespace detail {

// Slicing-by-8 tables: 8 bytes per step (about 8x the speed of the byte-wise loop), so verifying a
// checkpoint costs little next to reading it.
struct Crc32Tables {
  uint32_t t[8][256];
  constexpr Crc32Tables() : t() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xFFu];
  }
};

inline constexpr Crc32Tables kCrc32Tables{};

}  // namespace detail

// Running CRC-32: crc32_update(crc32_update(0, a, n), b, m) == CRC-32 of a then b.
inline uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto& T = detail::kCrc32Tables.t;
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    lo = __builtin_bswap32(lo);
    hi = __builtin_bswap32(hi);
#endif
    lo ^= c;
    c = T[7][lo & 0xFFu] ^ T[6][(lo >> 8) & 0xFFu] ^ T[5][(lo >> 16) & 0xFFu] ^ T[4][lo >> 24] ^
        T[3][hi & 0xFFu] ^ T[2][(hi >> 8) & 0xFFu] ^ T[1][(hi >> 16) & 0xFFu] ^ T[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) c = T[0][(c ^ *p) & 0xFFu] ^ (c >> 8);
  return ~c;
}

inline uint32_t crc32(const void* data, size_t n) { return crc32_update(0, data, n); }

// The trailer simmim appends to its own files.
inline constexpr size_t kChecksumTrailerSize = 24;
inline constexpr char kChecksumMagic[9] = "SIMMIMCK";

inline std::array<unsigned char, kChecksumTrailerSize> checksum_trailer(uint64_t payload_size, uint32_t crc) {
  std::array<unsigned char, kChecksumTrailerSize> t{};
  std::memcpy(t.data(), kChecksumMagic, 8);
  for (int i = 0; i < 8; ++i) t[8 + i] = static_cast<unsigned char>(payload_size >> (8 * i));
  for (int i = 0; i < 4; ++i) t[16 + i] = static_cast<unsigned char>(crc >> (8 * i));
  return t;
}

// What verify_checksum_trailer found.
enum class ChecksumStatus {
  kOk,
  kNoTrailer,     // too short, or no magic at the end: not written by simmim, truncated, or empty
  kSizeMismatch,  // the recorded length is not the payload's: truncated or extended
  kCrcMismatch,   // bytes changed
};

inline const char* to_string(ChecksumStatus s) {
  switch (s) {
    case ChecksumStatus::kOk:
      return "ok";
    case ChecksumStatus::kNoTrailer:
      return "no simmim checksum record at its end (empty, truncated, or not written by simmim)";
    case ChecksumStatus::kSizeMismatch:
      return "its length disagrees with its checksum record (truncated or appended to)";
    case ChecksumStatus::kCrcMismatch:
      return "checksum mismatch (the bytes changed since they were written)";
  }
  return "unknown";
}

// Checks a whole file's bytes (payload + trailer) in one pass; *payload_size gets the payload's length.
inline ChecksumStatus verify_checksum_trailer(const void* data, size_t n, size_t* payload_size = nullptr) {
  if (n < kChecksumTrailerSize) return ChecksumStatus::kNoTrailer;
  const auto* t = static_cast<const unsigned char*>(data) + (n - kChecksumTrailerSize);
  if (std::memcmp(t, kChecksumMagic, 8) != 0) return ChecksumStatus::kNoTrailer;
  uint64_t size = 0;
  uint32_t crc = 0;
  for (int i = 0; i < 8; ++i) size |= static_cast<uint64_t>(t[8 + i]) << (8 * i);
  for (int i = 0; i < 4; ++i) crc |= static_cast<uint32_t>(t[16 + i]) << (8 * i);
  const size_t payload = n - kChecksumTrailerSize;
  if (size != payload) return ChecksumStatus::kSizeMismatch;
  if (crc32(data, payload) != crc) return ChecksumStatus::kCrcMismatch;
  if (payload_size) *payload_size = payload;
  return ChecksumStatus::kOk;
}

SIMMIM_NAMESPACE_END
