#pragma once
// A mask the user already has (from a file, a saliency model, another library), validated once and then
// served like any strategy: same interface, same [B, h, w] bool layout, on the device asked for.

#include <torch/arg.h>

#include <memory>
#include <string>

#include "simmim/masking/mask_generator.hpp"

SIMMIM_NAMESPACE_BEGIN

struct TensorMaskOptions {
  TensorMaskOptions(at::Tensor mask, Size2d input_size = 224, int64_t patch_size = 16)
      : input_size_(input_size), patch_size_(patch_size), mask_(std::move(mask)) {}

  // Image size in pixels (rows x cols).
  TORCH_ARG(Size2d, input_size);
  // The model's patch size.
  TORCH_ARG(int64_t, patch_size) = 16;
  // [h, w] (one mask for every sample) or [N, h, w] (N = 1, or N = the batch size asked for), matching the
  // grid; bool, or any integer / floating dtype holding only 0 and 1. Any device. Nonzero = masked.
  TORCH_ARG(at::Tensor, mask);
};

class TensorMask final : public MaskGenerator {
 public:
  using Options = TensorMaskOptions;
  static constexpr const char* kName = "tensor";
  static constexpr const char* kApi = "simmim::TensorMask";

  explicit TensorMask(Options options)
      : MaskGenerator(kApi, {options.input_size(), options.patch_size()}), options_(options) {
    const at::Tensor& m = options.mask();
    const Size2d g = grid();
    const std::string expected = "[h, w] or [N, h, w] with h x w = the " + c10::str(g) + " patch grid";
    SIMMIM_CHECK(m.defined() && (m.dim() == 2 || m.dim() == 3), kApi, "mask", expected, describe(m));
    SIMMIM_CHECK(m.size(-2) == g.h && m.size(-1) == g.w && (m.dim() == 2 || m.size(0) > 0), kApi, "mask", expected,
                 describe(m));
    const auto t = m.scalar_type();
    SIMMIM_CHECK(t == at::kBool || at::isIntegralType(t, /*includeBool=*/false) || at::isFloatingType(t), kApi, "mask",
                 "bool, integer or floating point", describe(m));
    at::Tensor cpu = m.to(at::kCPU);
    if (t != at::kBool) {
      SIMMIM_CHECK(cpu.eq(0).logical_or(cpu.eq(1)).all().item<bool>(), kApi, "mask",
                   "0 or 1 everywhere (true = masked)", "values in [", cpu.min().item<double>(), ", ",
                   cpu.max().item<double>(), "]", cpu.isnan().any().item<bool>() ? " and NaN" : "");
      cpu = cpu.ne(0);
    }
    mask_ = (cpu.dim() == 2 ? cpu.unsqueeze(0) : cpu).contiguous();
    // Index tensors exist where every stored sample hides the same count.
    const at::Tensor counts = mask_.reshape({mask_.size(0), -1}).sum(1);
    if (counts.eq(counts[0]).all().item<bool>()) one_ = mask_batch_from_mask(mask_);
  }

  const Options& options() const { return options_; }
  // The validated mask, [N, h, w] bool on the CPU.
  const at::Tensor& mask() const { return mask_; }

  std::string name() const override { return kName; }
  // Only the name: a tensor has no spec string, so the factory cannot rebuild this one.
  std::string spec() const override { return kName; }
  std::unique_ptr<MaskGenerator> clone() const override { return std::make_unique<TensorMask>(*this); }

 protected:
  MaskBatch draw(int64_t B, at::Generator& /*gen*/) const override {
    const int64_t n = mask_.size(0);
    SIMMIM_CHECK_VALUE(n == 1 || n == B, kApi, "batch_size",
                       "the mask's batch " + std::to_string(n) + " (or give one mask for every sample)", B);
    MaskBatch out;
    out.mask = mask_.expand({B, -1, -1}).contiguous();
    if (one_.has_ids()) {
      out.ids_keep = one_.ids_keep.expand({B, -1}).contiguous();
      out.ids_restore = one_.ids_restore.expand({B, -1}).contiguous();
    }
    return out;
  }

 private:
  Options options_;
  at::Tensor mask_;
  MaskBatch one_;
};

SIMMIM_NAMESPACE_END
