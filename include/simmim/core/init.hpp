#pragma once
// Weight initializers the modules share. LibTorch 1.13 has no trunc_normal_ (Python's
// torch.nn.init.trunc_normal_ and timm's are the references): ViT weights, mask and CLS tokens use it.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Optional.h>

#include <cmath>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"

SIMMIM_NAMESPACE_BEGIN

// Fills `tensor` in place from N(mean, std^2) truncated to [a, b]. The bounds are absolute values, as in
// PyTorch and timm (defaults -2, 2: for std 0.02 the truncation practically never bites). Inverse-CDF
// sampling (timm's method); the draw happens on the CPU generator so a seed gives the same values on
// every device.
inline at::Tensor trunc_normal_(at::Tensor tensor, double mean = 0.0, double std = 1.0, double a = -2.0, double b = 2.0,
                                c10::optional<at::Generator> generator = c10::nullopt) {
  constexpr const char* api = "simmim::trunc_normal_";
  SIMMIM_CHECK(tensor.defined() && tensor.is_floating_point(), api, "tensor", "a floating-point tensor",
               describe(tensor));
  SIMMIM_CHECK_VALUE(std > 0.0, api, "std", "positive", std);
  SIMMIM_CHECK_VALUE(a < b, api, "bounds", "a < b", "a = ", a, ", b = ", b);
  const auto norm_cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  const double lo = norm_cdf((a - mean) / std);
  const double hi = norm_cdf((b - mean) / std);
  at::NoGradGuard no_grad;
  auto gen = resolve_generator(generator, api);
  // Half types lack erfinv on the CPU; draw in float (double for double tensors) and copy.
  const auto draw_type = tensor.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor draw = at::empty(tensor.sizes(), at::TensorOptions().dtype(draw_type));
  draw.uniform_(2.0 * lo - 1.0, 2.0 * hi - 1.0, gen);
  draw.erfinv_().mul_(std * std::sqrt(2.0)).add_(mean).clamp_(a, b);
  tensor.copy_(draw);
  return tensor;
}

SIMMIM_NAMESPACE_END
