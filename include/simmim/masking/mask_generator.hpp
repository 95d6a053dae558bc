#pragma once
// The interface every mask strategy implements, so an experiment swaps strategies at run time (a
// MaskGenerator pointer from make_mask_generator) or by type (each strategy is a final class with the
// same generate() and an Options type, usable as a template argument without virtual calls).

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <memory>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/masking/mask_batch.hpp"
#include "simmim/masking/mask_geometry.hpp"
#include "simmim/masking/mask_spec.hpp"

SIMMIM_NAMESPACE_BEGIN

class MaskGenerator {
 public:
  // The most mask cells (batch * h * w) one generate() call draws: 2^30 (their int64 ids take 8 GiB).
  static constexpr int64_t kMaxMaskCells = int64_t{1} << 30;

  virtual ~MaskGenerator() = default;

  // Masks for a whole batch: mask [B, h, w] bool (true = masked) plus ids_keep / ids_restore where the
  // strategy hides a fixed count per sample. Draws on the CPU generator `gen` (the global default if
  // none), then moves the result to `device` once, so a seed gives the same masks on every device.
  // `outputs` = MaskOutputs::kMaskOnly skips the ids: the same mask, and the generator ends in the same
  // state, so later draws do not depend on what earlier callers asked for.
  MaskBatch generate(int64_t batch_size, c10::optional<at::Generator> gen = c10::nullopt,
                     at::Device device = at::kCPU, MaskOutputs outputs = MaskOutputs::kMaskAndIds) const {
    SIMMIM_CHECK_VALUE(batch_size > 0, api_, "batch_size", "positive (an empty batch has no masks)", batch_size);
    SIMMIM_CHECK_ENUM(outputs, 2, "MaskOutputs", api_, "outputs", "MaskOutputs::kMaskAndIds or kMaskOnly");
    // Checked before anything is allocated: an absurd batch is an error here, not std::bad_alloc later.
    const int64_t max_batch = std::max<int64_t>(1, kMaxMaskCells / grid_.area());
    SIMMIM_CHECK_VALUE(batch_size <= max_batch, api_, "batch_size",
                       "at most " + std::to_string(max_batch) + " for a " + c10::str(grid_) + " grid (" +
                           std::to_string(kMaxMaskCells) + " mask cells per call)",
                       batch_size);
    check_device_available(device, api_, "device");
    at::Generator g = resolve_generator(gen, api_);
    MaskBatch out = outputs == MaskOutputs::kMaskOnly ? draw_mask_only(batch_size, g) : draw(batch_size, g);
    TORCH_INTERNAL_ASSERT(out.mask.defined() && out.mask.scalar_type() == at::kBool &&
                              out.mask.sizes() == at::IntArrayRef({batch_size, grid_.h, grid_.w}),
                          api_, ": drew ", describe(out.mask), " for batch ", batch_size, " on a ", grid_, " grid");
    TORCH_INTERNAL_ASSERT(out.ids_keep.defined() == out.ids_restore.defined(), api_, ": ids half defined");
    TORCH_INTERNAL_ASSERT(outputs == MaskOutputs::kMaskAndIds || !out.has_ids(), api_, ": ids drawn for a mask-only call");
    return out.to(device);
  }

  // The patch grid [h, w] the masks cover: input_size / patch_size.
  Size2d grid() const { return grid_; }
  const MaskGeometry& geometry() const { return geometry_; }
  // Strategy name as the factory knows it ("simmim", "mae", ...).
  virtual std::string name() const = 0;
  // The strategy and its options as a spec string: make_mask_generator(g.spec(), g.geometry()) draws the
  // same masks as g under the same seed (TensorMask excepted: a tensor has no spec string).
  virtual std::string spec() const = 0;
  virtual std::unique_ptr<MaskGenerator> clone() const = 0;

 protected:
  MaskGenerator(const char* api, MaskGeometry geometry) : api_(api), geometry_(geometry), grid_(geometry.grid(api)) {}
  MaskGenerator(const MaskGenerator&) = default;
  MaskGenerator& operator=(const MaskGenerator&) = default;

  // One batch on the CPU; batch_size > 0 is checked.
  virtual MaskBatch draw(int64_t batch_size, at::Generator& gen) const = 0;
  // The same draw without ids (generate with MaskOutputs::kMaskOnly). It must consume `gen` exactly as
  // draw() does. The default drops what draw() built; a strategy whose ids cost more than its mask
  // overrides it to skip them.
  virtual MaskBatch draw_mask_only(int64_t batch_size, at::Generator& gen) const {
    return MaskBatch(draw(batch_size, gen).mask);
  }

  const char* api() const { return api_; }

 private:
  const char* api_;
  MaskGeometry geometry_;
  Size2d grid_;
};

SIMMIM_NAMESPACE_END
