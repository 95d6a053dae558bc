#pragma once
// What a pretraining model's forward returns: the loss to back-propagate, the reconstruction as an
// image (for grids and metrics) and the mask the loss counted.

#include <ATen/ATen.h>

#include <type_traits>

#include "simmim/core/version.hpp"
#include "simmim/masking/mask_batch.hpp"

SIMMIM_NAMESPACE_BEGIN

struct PretrainOutput {
  // Scalar masked reconstruction loss.
  at::Tensor loss;
  // [B, C, H, W] in the input images' pixel space (MAE with norm-pix: de-normalized per patch; with a
  // target: its to_image(), undefined where it has no pixel space, e.g. HOG).
  at::Tensor reconstruction;
  // [B, h, w] at patch resolution, true / nonzero = masked: the cells the loss counted.
  at::Tensor mask;
};

namespace detail {
template <typename M, typename = void>
struct declared_mask_outputs : std::integral_constant<MaskOutputs, MaskOutputs::kMaskAndIds> {};
template <typename M>
struct declared_mask_outputs<M, std::void_t<decltype(M::kMaskOutputs)>>
    : std::integral_constant<MaskOutputs, M::kMaskOutputs> {};
template <typename M, typename = void>
struct module_impl {
  using type = M;
};
template <typename M>
struct module_impl<M, std::void_t<typename M::ContainedType>> {
  using type = typename M::ContainedType;
};
}  // namespace detail

// What a pretraining model's forward(images, MaskBatch) reads of the MaskBatch, so a loop draws only that
// (MaskGenerator::generate's `outputs`). A model (its Impl, for a TORCH_MODULE holder) declares
// `static constexpr MaskOutputs kMaskOutputs`; one that does not gets the mask and the ids.
template <typename Model>
constexpr MaskOutputs mask_outputs_read_by() {
  return detail::declared_mask_outputs<typename detail::module_impl<std::decay_t<Model>>::type>::value;
}

SIMMIM_NAMESPACE_END
