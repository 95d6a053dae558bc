#pragma once
// An in-memory labelled image set (Fashion-MNIST, CIFAR-like tensors) and the batch function that feeds it
// to a BatchLoader, with optional per-image augmentation.

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/image_transform.hpp"

SIMMIM_NAMESPACE_BEGIN

struct LabeledImages {
  at::Tensor images;  // [N, C, H, W] float in [0, 1] (or uint8)
  at::Tensor labels;  // [N] int64
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// The first `n` items (all if n < 0 or n >= size): small runs and smoke tests.
inline LabeledImages take_first(const LabeledImages& data, int64_t n) {
  if (n < 0 || n >= data.size()) return data;
  return {data.images.slice(0, 0, n), data.labels.defined() ? data.labels.slice(0, 0, n) : at::Tensor()};
}

// Batches of `data`: without a transform, the rows as they are (float); with one, each image through it,
// drawing from the batch's seed.
inline BatchFn make_batch_fn(LabeledImages data, std::shared_ptr<const ImageTransform> transform = nullptr) {
  constexpr const char* api = "simmim::make_batch_fn";
  SIMMIM_CHECK_DIM(data.images, 4, api, "data.images", "[N, C, H, W]");
  SIMMIM_CHECK(!data.labels.defined() || (data.labels.dim() == 1 && data.labels.size(0) == data.images.size(0)),
               api, "data.labels", "[N] with N = " + std::to_string(data.images.size(0)), describe(data.labels));
  return [data = std::move(data), transform = std::move(transform)](const std::vector<int64_t>& indices,
                                                                     uint64_t seed) {
    const at::Tensor idx = at::tensor(indices, at::TensorOptions().dtype(at::kLong));
    Batch b;
    at::Tensor images = data.images.index_select(0, idx);
    if (data.labels.defined()) b.labels = data.labels.index_select(0, idx);
    if (!transform) {
      b.images = images.scalar_type() == at::kByte ? images.to(at::kFloat).div_(255.0) : images.to(at::kFloat);
      return b;
    }
    at::Generator gen = make_generator(seed);
    std::vector<at::Tensor> out;
    out.reserve(indices.size());
    for (int64_t i = 0; i < images.size(0); ++i) out.push_back((*transform)(images[i], gen));
    b.images = at::stack(out);
    return b;
  };
}

SIMMIM_NAMESPACE_END
