#pragma once
// Checks shared by the masking tests: the invariants every MaskBatch must satisfy.

#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>

#include "simmim/masking/mask_batch.hpp"

namespace simmim_test {

// Shape, dtype, and, where ids are given, MAE's contract: ids_keep are unmasked patches, ids_restore is
// a permutation, and gathering [visible tokens, mask tokens] with ids_restore puts every token back.
inline void check_mask_batch(const simmim::MaskBatch& b, int64_t batch, simmim::Size2d grid) {
  REQUIRE(b.mask.scalar_type() == torch::kBool);
  REQUIRE(b.mask.sizes() == torch::IntArrayRef({batch, grid.h, grid.w}));
  REQUIRE(b.ids_keep.defined() == b.ids_restore.defined());
  if (!b.has_ids()) return;
  const int64_t L = grid.area();
  const auto flat = b.flat_mask().cpu();
  const auto keep = b.ids_keep.cpu(), restore = b.ids_restore.cpu();
  REQUIRE(keep.scalar_type() == torch::kLong);
  REQUIRE(restore.scalar_type() == torch::kLong);
  REQUIRE(keep.dim() == 2);
  REQUIRE(keep.size(0) == batch);
  REQUIRE(restore.sizes() == torch::IntArrayRef({batch, L}));
  const int64_t len_keep = keep.size(1);
  // Exactly len_keep visible per sample, and they are the kept ones.
  REQUIRE(torch::equal(flat.logical_not().sum(1), torch::full({batch}, len_keep, torch::kLong)));
  if (len_keep > 0) REQUIRE_FALSE(flat.gather(1, keep).any().item<bool>());
  REQUIRE(torch::equal(std::get<0>(restore.sort(1)), torch::arange(L).expand({batch, L})));
  // MAE's decoder: tokens = patch index; visible first, then -1 mask tokens; restore order.
  const auto tokens = torch::arange(L).expand({batch, L});
  const auto seq = torch::cat({tokens.gather(1, keep), torch::full({batch, L - len_keep}, -1, torch::kLong)}, 1);
  const auto restored = seq.gather(1, restore);
  REQUIRE(torch::equal(restored, torch::where(flat, torch::full_like(tokens, -1), tokens)));
}

}  // namespace simmim_test
