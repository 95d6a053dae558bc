// Fuzzes the mask spec parser and every strategy's option checks: any input must either build a generator
// that draws valid masks quickly, or raise a c10::Error. A crash, a sanitizer report, a hang (libFuzzer's
// -timeout) or an allocation beyond -malloc_limit_mb is a finding.
#include <cstddef>
#include <cstdint>
#include <string>

#include "simmim/masking/mask_factory.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // First byte: the geometry (a few image sizes and patch sizes, square and not); the rest: the spec.
  static const simmim::MaskGeometry kGeometries[] = {
      {simmim::Size2d(224), 16}, {simmim::Size2d(192), 4}, {simmim::Size2d(28), 7}, {simmim::Size2d(64, 96), 16},
      {simmim::Size2d(32), 32},  {simmim::Size2d(16), 16}, {simmim::Size2d(48, 16), 8}, {simmim::Size2d(96), 32}};
  const simmim::MaskGeometry& g = kGeometries[data[0] % 8];
  const std::string spec(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    auto gen = simmim::make_mask_generator(spec, g);
    const auto masks = gen->generate(2, simmim::make_generator(data[0]));
    // The spec round-trips: the same strategy rebuilt from its own spec.
    auto again = simmim::make_mask_generator(gen->spec(), g);
    const auto twice = again->generate(2, simmim::make_generator(data[0]));
    if (!masks.mask.equal(twice.mask)) __builtin_trap();
  } catch (const c10::Error&) {
  }
  return 0;
}
