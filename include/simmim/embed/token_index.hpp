#pragma once
// Token indexing shared by the encoder and decoders: a patch mask as [B, L], the one gather both the
// MAE encoder (keep) and decoder (un-shuffle) use, and the check of an (ids_keep, ids_restore) pair.
// The pair itself comes from masking/ (MaskBatch, mask_batch_from_mask).

#include <ATen/ATen.h>

#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/core/value_checks.hpp"

SIMMIM_NAMESPACE_BEGIN

// A patch mask as [B, L] (same dtype): accepts [B, h, w] with (h, w) == grid, or [B, L] with L == grid.area().
// bool / uint8 masks (true = masked) and floating masks (weights in [0, 1]) are accepted.
inline at::Tensor flatten_token_mask(const at::Tensor& mask, int64_t batch, Size2d grid, const char* api) {
  const std::string expected = "[B, h, w] = [" + std::to_string(batch) + ", " + std::to_string(grid.h) + ", " +
                               std::to_string(grid.w) + "] or [B, L] = [" + std::to_string(batch) + ", " +
                               std::to_string(grid.area()) + "]";
  SIMMIM_CHECK(mask.defined() && (mask.dim() == 2 || mask.dim() == 3), api, "mask", expected, describe(mask));
  const bool ok_shape = mask.dim() == 3 ? (mask.size(0) == batch && mask.size(1) == grid.h && mask.size(2) == grid.w)
                                        : (mask.size(0) == batch && mask.size(1) == grid.area());
  SIMMIM_CHECK(ok_shape, api, "mask", expected, describe(mask));
  const auto t = mask.scalar_type();
  SIMMIM_CHECK(t == at::kBool || at::isIntegralType(t, /*includeBool=*/false) || at::isFloatingType(t), api, "mask",
               "bool, integer (uint8, int32, int64, ...) or floating",
               describe(mask));
  return mask.reshape({batch, grid.area()});
}

// x [B, L, D] gathered along tokens by ids [B, K] -> [B, K, D].
inline at::Tensor gather_tokens(const at::Tensor& x, const at::Tensor& ids) {
  return x.gather(1, ids.unsqueeze(-1).expand({ids.size(0), ids.size(1), x.size(2)}));
}

// Validates an (ids_keep, ids_restore) pair against L tokens: shapes, int64, ids_restore a permutation
// per row, and ids_keep exactly the tokens ids_restore sends to the first len_keep slots.
inline void check_token_ids(const at::Tensor& ids_keep, const at::Tensor& ids_restore, int64_t batch,
                            int64_t num_tokens, const char* api) {
  SIMMIM_CHECK(ids_keep.defined() && ids_keep.dim() == 2 && ids_keep.size(0) == batch && ids_keep.size(1) >= 1 &&
                   ids_keep.size(1) <= num_tokens && ids_keep.scalar_type() == at::kLong,
               api, "ids_keep",
               "an int64 tensor [B, len_keep] with B = " + std::to_string(batch) +
                   ", 1 <= len_keep <= L = " + std::to_string(num_tokens),
               describe(ids_keep));
  SIMMIM_CHECK(ids_restore.defined() && ids_restore.dim() == 2 && ids_restore.size(0) == batch &&
                   ids_restore.size(1) == num_tokens && ids_restore.scalar_type() == at::kLong,
               api, "ids_restore",
               "an int64 tensor [B, L] = [" + std::to_string(batch) + ", " + std::to_string(num_tokens) + "]",
               describe(ids_restore));
  // The rest reads the ids: free on the CPU, a host-device sync per step elsewhere (value_checks()).
  if (batch == 0 || !check_values_of(ids_restore) || !check_values_of(ids_keep)) return;
  const at::Tensor iota = at::arange(num_tokens, ids_restore.options()).expand_as(ids_restore);
  SIMMIM_CHECK(std::get<0>(at::sort(ids_restore, 1)).equal(iota), api, "ids_restore",
               "a permutation of 0..L-1 in every row", "a row that is not");
  const int64_t len_keep = ids_keep.size(1);
  // The decoder writes the encoder's j-th token to slot j and un-shuffles with ids_restore, so the pair
  // is consistent exactly when ids_restore[ids_keep[j]] == j.
  SIMMIM_CHECK(ids_keep.min().item<int64_t>() >= 0 && ids_keep.max().item<int64_t>() < num_tokens &&
                   ids_restore.gather(1, ids_keep).equal(iota.narrow(1, 0, len_keep)),
               api, "ids_keep", "ids_shuffle[:, :len_keep] for ids_restore = argsort(ids_shuffle)",
               "ids that disagree with ids_restore");
}

SIMMIM_NAMESPACE_END
