#pragma once
// Seeding. Every random component takes an optional generator; the same seed gives the same result.
// Random draws happen on a CPU generator (results then move to the requested device), so a seed means
// the same masks on every device and every LibTorch build.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <cstdint>
#include <mutex>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

// A CPU generator seeded with `seed`.
inline at::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

// The generator to draw from: the caller's if given (must be a CPU generator), else the global default.
inline at::Generator resolve_generator(const c10::optional<at::Generator>& gen, const char* api) {
  if (gen.has_value() && gen->defined()) {
    SIMMIM_CHECK(gen->device().is_cpu(), api, "generator", "a CPU generator (simmim draws on the CPU)",
                 gen->device());
    return *gen;
  }
  return at::detail::getDefaultCPUGenerator();
}

// Scalar draws for per-sample algorithms (BEiT blocks, multi-block) that would be slow as tensor ops.
// Holds the generator's lock for its lifetime: build one per call, not per draw.
class ScalarRng {
 public:
  explicit ScalarRng(at::Generator gen) : gen_(std::move(gen)), lock_(gen_.mutex()) {
    impl_ = gen_.get<at::CPUGeneratorImpl>();
  }
  ScalarRng(const ScalarRng&) = delete;
  ScalarRng& operator=(const ScalarRng&) = delete;

  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(impl_->random64() >> 11) * (1.0 / 9007199254740992.0); }
  // Uniform in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [lo, hi] (inclusive, like Python's random.randint). Requires lo <= hi.
  int64_t randint(int64_t lo, int64_t hi) {
    TORCH_INTERNAL_ASSERT(lo <= hi, "ScalarRng::randint: empty range");
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    // Rejection sampling removes the modulo bias.
    const uint64_t limit = UINT64_MAX - (UINT64_MAX % span);
    uint64_t r;
    do {
      r = impl_->random64();
    } while (r >= limit);
    return lo + static_cast<int64_t>(r % span);
  }

 private:
  at::Generator gen_;
  std::lock_guard<std::mutex> lock_;
  at::CPUGeneratorImpl* impl_;
};

SIMMIM_NAMESPACE_END
