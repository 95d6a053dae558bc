#pragma once
// Run-time choice of a mask strategy from a spec string ("simmim:ratio=0.6,mask_patch=32", "mae", ...),
// for command lines and configs. Each strategy parses its own keys (X::from_spec) and writes them back
// (spec()), so make_mask_generator(g.spec(), g.geometry()) rebuilds g.

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "simmim/masking/bernoulli_mask.hpp"
#include "simmim/masking/block_mask.hpp"
#include "simmim/masking/grid_mask.hpp"
#include "simmim/masking/mae_mask.hpp"
#include "simmim/masking/mask_generator.hpp"
#include "simmim/masking/mask_spec.hpp"
#include "simmim/masking/multi_block_mask.hpp"
#include "simmim/masking/region_mask.hpp"
#include "simmim/masking/simmim_mask.hpp"
#include "simmim/masking/tensor_mask.hpp"

SIMMIM_NAMESPACE_BEGIN

// One row per strategy the factory builds: its name, its keys with defaults, and what it does.
struct MaskStrategyInfo {
  const char* name;
  const char* keys;
  const char* summary;
  std::unique_ptr<MaskGenerator> (*make)(MaskSpecReader&, const MaskGeometry&);
};

namespace detail {

template <class M>
std::unique_ptr<MaskGenerator> make_from_spec(MaskSpecReader& reader, const MaskGeometry& geometry) {
  static_assert(std::is_base_of<MaskGenerator, M>::value, "a mask strategy must derive from simmim::MaskGenerator");
  return std::make_unique<M>(M::from_spec(reader, geometry));
}

}  // namespace detail

inline const std::vector<MaskStrategyInfo>& mask_strategies() {
  static const std::vector<MaskStrategyInfo> table = {
      {SimMIMMask::kName, "ratio=0.6, mask_patch=32", "SimMIM random cells of mask_patch pixels, count = ceil",
       &detail::make_from_spec<SimMIMMask>},
      {MAEMask::kName, "ratio=0.75", "MAE random shuffle, len_keep = int(L * (1 - ratio))",
       &detail::make_from_spec<MAEMask>},
      {BlockMask::kName, "ratio=0.4 | count=N, min=4, max=target, min_aspect=0.3, max_aspect=1/min_aspect",
       "BEiT block-wise, never above the target", &detail::make_from_spec<BlockMask>},
      {BernoulliMask::kName, "p=0.5", "each patch masked with probability p", &detail::make_from_spec<BernoulliMask>},
      {GridMask::kName, "period=2, random_offset=false", "one visible patch per period x period tile",
       &detail::make_from_spec<GridMask>},
      {MultiBlockMask::kName, "blocks=4, scale_min=0.15, scale_max=0.2, aspect_min=0.75, aspect_max=1.5",
       "I-JEPA-style union of blocks", &detail::make_from_spec<MultiBlockMask>},
      {RegionMask::kName, "box=top:left:height:width (repeatable), units=patches|pixels, invert=false",
       "fixed rectangles (inpainting)", &detail::make_from_spec<RegionMask>},
  };
  return table;
}

// The names make_mask_generator accepts, in a stable order ("tensor" is not among them: see TensorMask).
inline std::vector<std::string> mask_strategy_names() {
  std::vector<std::string> names;
  for (const auto& s : mask_strategies()) names.emplace_back(s.name);
  return names;
}

// A strategy from its spec string, for images of `geometry`. Unknown names or keys, malformed values and
// invalid options raise c10::ValueError naming what is accepted.
inline std::unique_ptr<MaskGenerator> make_mask_generator(const std::string& spec_text,
                                                          const MaskGeometry& geometry = MaskGeometry()) {
  constexpr const char* api = "simmim::make_mask_generator";
  const MaskSpec spec = parse_mask_spec(spec_text, api);
  SIMMIM_CHECK_VALUE(spec.name != TensorMask::kName, api, "strategy",
                     "one a spec string can describe; a user mask is data: construct "
                     "simmim::TensorMask(simmim::TensorMaskOptions(mask, input_size, patch_size)) instead",
                     "'", spec.name, "'");
  for (const auto& s : mask_strategies()) {
    if (spec.name != s.name) continue;
    MaskSpecReader reader(spec, api);
    return s.make(reader, geometry);
  }
  SIMMIM_CHECK_VALUE(false, api, "strategy", "one of " + detail::join(mask_strategy_names(), ", "), "'", spec.name,
                     "' in spec \"", spec_text, "\"");
  return nullptr;
}

SIMMIM_NAMESPACE_END
