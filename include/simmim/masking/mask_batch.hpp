#pragma once
// The result of one mask draw for a batch: a boolean mask at model-patch resolution and, for strategies
// that hide the same number of patches in every sample, MAE's index tensors (the encoder keeps ids_keep,
// the decoder puts tokens back in place with ids_restore). One function builds those indices for every
// strategy, so they mean the same thing everywhere.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

// What a caller of MaskGenerator::generate() will read. MAE's ids are two int64 [B, h*w] tensors against a
// one-byte-per-patch mask, and a model that only multiplies by the mask (SimMIM) never reads them, so it can
// ask for the mask alone. The mask is the same either way, and so is what the generator draws from its RNG.
enum class MaskOutputs {
  kMaskAndIds,  // the mask, plus ids_keep / ids_restore where the strategy hides a fixed count per sample
  kMaskOnly,    // the mask; ids_keep / ids_restore left undefined
};

inline const char* to_string(MaskOutputs o) {
  switch (o) {
    case MaskOutputs::kMaskAndIds: return "mask_and_ids";
    case MaskOutputs::kMaskOnly: return "mask_only";
  }
  return "?";
}

struct MaskBatch {
  MaskBatch() = default;
  // A plain mask, without ids: what every pretraining model's forward(images, MaskBatch) also takes, so a
  // mask tensor passes where a MaskBatch is expected (implicit on purpose).
  MaskBatch(at::Tensor mask_) : mask(std::move(mask_)) {}  // NOLINT(google-explicit-constructor)

  // [B, h, w] bool, true = masked (hidden from the encoder, reconstructed by the loss).
  at::Tensor mask;
  // int64 [B, len_keep]: the visible patches (row-major indices into h*w), in the order the encoder sees
  // them. Undefined where the visible count varies between samples (block, Bernoulli, multi-block).
  at::Tensor ids_keep;
  // int64 [B, h*w]: position of each patch in [visible..., masked...]; gathering the decoder's
  // [visible, mask tokens] sequence with it restores row-major order. Undefined with ids_keep.
  at::Tensor ids_restore;

  bool has_ids() const { return ids_keep.defined(); }
  int64_t batch_size() const { return mask.size(0); }
  Size2d grid() const { return {mask.size(1), mask.size(2)}; }
  // [B, h*w] view of the mask, MAE's layout.
  at::Tensor flat_mask() const { return mask.reshape({mask.size(0), -1}); }

  MaskBatch to(at::Device device) const {
    if (mask.device() == device) return *this;
    MaskBatch out;
    out.mask = mask.to(device);
    if (ids_keep.defined()) out.ids_keep = ids_keep.to(device);
    if (ids_restore.defined()) out.ids_restore = ids_restore.to(device);
    return out;
  }
};

namespace detail {

// One row of [0, 1) noise as sortable keys: non-negative floats order like their bit patterns, so each
// (value, index) pair packs into one uint64 whose order is a stable sort's.
inline void noise_keys(const float* noise, int64_t L, uint64_t* keys) {
  for (int64_t i = 0; i < L; ++i) {
    uint32_t bits;
    std::memcpy(&bits, noise + i, sizeof(bits));
    keys[i] = (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(i);
  }
}

// The index part of a key.
inline int64_t noise_key_index(uint64_t key) { return static_cast<int64_t>(key & 0xFFFFFFFFu); }

// hidden[i] = 1 for the `count` cells that come first in a stable argsort of one row of [0, 1) noise, 0 for
// the others: the set argsort_noise(noise)[:count] marks, without ordering it (SimMIM needs only the set).
// Up to 64 cells, each cell's rank is counted (cells before it with noise <= its own, after it with noise
// <): no branches, so a whole batch costs less than the noise. Beyond, a selection on noise_keys.
// `keys` is scratch space for L values.
inline void mark_lowest_noise(const float* noise, int64_t L, int64_t count, unsigned char* hidden, uint64_t* keys) {
  if (L <= 64) {
    for (int64_t i = 0; i < L; ++i) {
      const float v = noise[i];
      int32_t rank = 0;
      for (int64_t j = 0; j < i; ++j) rank += noise[j] <= v ? 1 : 0;
      for (int64_t j = i + 1; j < L; ++j) rank += noise[j] < v ? 1 : 0;
      hidden[i] = rank < count ? 1 : 0;
    }
    return;
  }
  noise_keys(noise, L, keys);
  std::nth_element(keys, keys + count, keys + L);
  std::fill(hidden, hidden + L, static_cast<unsigned char>(0));
  for (int64_t i = 0; i < count; ++i) hidden[noise_key_index(keys[i])] = 1;
}

// argsort(noise, dim=1) for noise drawn by at::rand (float [B, L] on the CPU, values in [0, 1)), ties
// broken by index like a stable sort. An integer sort of noise_keys does the work: about 5x faster than
// at::argsort on 128 x 196, which dominated the SimMIM and MAE draws.
inline at::Tensor argsort_noise(const at::Tensor& noise) {
  TORCH_INTERNAL_ASSERT(noise.dim() == 2 && noise.scalar_type() == at::kFloat && noise.device().is_cpu() &&
                            noise.size(1) <= INT64_C(0xFFFFFFFF),
                        "argsort_noise: needs float [B, L] CPU noise; got ", describe(noise));
  const at::Tensor x = noise.contiguous();
  const int64_t B = x.size(0), L = x.size(1);
  at::Tensor out = at::empty({B, L}, at::kLong);
  const float* src = x.data_ptr<float>();
  int64_t* dst = out.data_ptr<int64_t>();
  at::parallel_for(0, B, 16, [&](int64_t begin, int64_t end) {
    std::vector<uint64_t> keys(static_cast<size_t>(L));
    for (int64_t b = begin; b < end; ++b) {
      noise_keys(src + b * L, L, keys.data());
      std::sort(keys.begin(), keys.end());
      for (int64_t i = 0; i < L; ++i) dst[b * L + i] = noise_key_index(keys[static_cast<size_t>(i)]);
    }
  });
  return out;
}

}  // namespace detail

// MAE's construction from a per-sample shuffle: ids_shuffle [B, L] lists every patch once per row, the
// first len_keep visible. ids_restore = argsort(ids_shuffle), computed as the inverse permutation by a
// scatter (same result, O(L) instead of a sort); mask = 1 except the kept, in original order.
inline MaskBatch mask_batch_from_shuffle(const at::Tensor& ids_shuffle, int64_t len_keep, Size2d grid) {
  constexpr const char* api = "simmim::mask_batch_from_shuffle";
  SIMMIM_CHECK_DIM(ids_shuffle, 2, api, "ids_shuffle", "[B, L]");
  SIMMIM_CHECK(ids_shuffle.scalar_type() == at::kLong && ids_shuffle.size(1) == grid.area(), api, "ids_shuffle",
               "an int64 [B, L] tensor with L = " + std::to_string(grid.area()), describe(ids_shuffle));
  SIMMIM_CHECK_VALUE(len_keep >= 0 && len_keep <= grid.area(), api, "len_keep",
                     "in [0, " + std::to_string(grid.area()) + "]", len_keep);
  const int64_t B = ids_shuffle.size(0), L = grid.area();
  const at::Tensor shuffle = ids_shuffle.contiguous();
  const at::Tensor positions = at::arange(L, shuffle.options()).expand({B, L});
  at::Tensor ids_restore = at::empty_like(shuffle).scatter_(1, shuffle, positions);
  MaskBatch out;
  out.ids_keep = shuffle.narrow(1, 0, len_keep).contiguous();
  out.mask = ids_restore.ge(len_keep).view({B, grid.h, grid.w});
  out.ids_restore = std::move(ids_restore);
  return out;
}

// Indices for a mask that hides the same number of patches in every sample: the shuffle is "visible
// patches in row-major order, then masked ones in row-major order" (what a stable sort of the mask would
// give), built in one pass over the mask on the CPU. Errors if the counts differ.
inline MaskBatch mask_batch_from_mask(const at::Tensor& mask) {
  constexpr const char* api = "simmim::mask_batch_from_mask";
  SIMMIM_CHECK_DIM(mask, 3, api, "mask", "[B, h, w]");
  SIMMIM_CHECK(mask.scalar_type() == at::kBool, api, "mask", "a bool tensor", describe(mask));
  const int64_t B = mask.size(0), L = mask.size(1) * mask.size(2);
  const at::Tensor flat = mask.reshape({B, L}).to(at::kCPU).contiguous();
  const bool* m = flat.data_ptr<bool>();
  const int64_t masked = B == 0 ? 0 : std::count(m, m + L, true);
  for (int64_t b = 1; b < B; ++b) {
    const int64_t n = std::count(m + b * L, m + (b + 1) * L, true);
    SIMMIM_CHECK(n == masked, api, "mask", "the same number of masked patches in every sample",
                 masked, " in sample 0 and ", n, " in sample ", b);
  }
  const int64_t len_keep = L - masked;
  at::Tensor ids_shuffle = at::empty({B, L}, at::kLong);
  int64_t* out = ids_shuffle.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    int64_t* visible = out + b * L;
    int64_t* hidden = visible + len_keep;
    for (int64_t i = 0; i < L; ++i) *(m[b * L + i] ? hidden++ : visible++) = i;
  }
  MaskBatch result = mask_batch_from_shuffle(ids_shuffle.to(mask.device()), len_keep, {mask.size(1), mask.size(2)});
  result.mask = mask;  // the caller's tensor, identical to the rebuilt one
  return result;
}

SIMMIM_NAMESPACE_END
