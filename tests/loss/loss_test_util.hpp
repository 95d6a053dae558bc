#pragma once
// Shared pieces of the loss tests: values laid out in memory several ways, per-dtype tolerances, and one
// call that returns a loss with the gradients it sends to pred and target.

#include <torch/torch.h>

#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "simmim/loss/masked_loss.hpp"

namespace loss_test {

enum class Memory { kContiguous, kChannelsLast, kTransposed, kSliced, kStepped, kExpanded };

inline const char* to_string(Memory m) {
  switch (m) {
    case Memory::kContiguous:
      return "contiguous";
    case Memory::kChannelsLast:
      return "channels-last";
    case Memory::kTransposed:
      return "transposed";
    case Memory::kSliced:
      return "sliced";
    case Memory::kStepped:
      return "stepped";
    case Memory::kExpanded:
      return "expanded";
  }
  return "?";
}

// `values` laid out as `memory`, same values. Sliced and stepped views sit in a buffer padded with NaN (or
// ones for integer/bool masks), so a kernel that reads outside the view changes the result. kExpanded
// repeats sample 0 over the batch (stride 0): callers pass values whose samples are all equal.
inline torch::Tensor arrange(const torch::Tensor& values, Memory memory) {
  const auto fill = [&](std::vector<int64_t> sizes) {
    return at::isFloatingType(values.scalar_type())
               ? torch::full(sizes, std::numeric_limits<double>::quiet_NaN(), values.options())
               : torch::ones(sizes, values.options());
  };
  switch (memory) {
    case Memory::kContiguous:
      return values.contiguous();
    case Memory::kChannelsLast:
      return values.dim() == 4 ? values.contiguous(at::MemoryFormat::ChannelsLast) : values.contiguous();
    case Memory::kTransposed:
      return values.transpose(-1, -2).contiguous().transpose(-1, -2);
    case Memory::kSliced: {
      auto sizes = values.sizes().vec();
      const bool pad_dim1 = values.dim() >= 3;
      if (pad_dim1) sizes[1] += 1;
      sizes.back() += 3;
      torch::Tensor view = fill(sizes).narrow(-1, 2, values.size(-1));
      if (pad_dim1) view = view.narrow(1, 1, values.size(1));
      view.copy_(values);
      return view;
    }
    case Memory::kStepped: {
      auto sizes = values.sizes().vec();
      sizes.back() *= 2;
      torch::Tensor view = fill(sizes).slice(-1, 0, 2 * values.size(-1), 2);
      view.copy_(values);
      return view;
    }
    case Memory::kExpanded: {
      auto sizes = values.sizes().vec();
      return values.narrow(0, 0, 1).contiguous().expand(sizes);
    }
  }
  return values;
}

struct Tolerance {
  double rtol;
  double atol_rel;  // times max |expected|
  double atol_abs;
};

// Fused vs reference in the same dtype. Double and float: only the summation order differs. Half and
// bfloat16: the reference rounds every intermediate to the dtype (the originals' op sequence), the fused
// pass rounds once, so this is loose; tight_tolerance compares the fused pass with a double oracle.
inline Tolerance same_dtype_tolerance(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return {1e-10, 1e-12, 0};
    case at::kFloat:
      return {5e-5, 2e-6, 0};
    case at::kHalf:
      // atol_abs: 8 of half's subnormal steps (6e-8). Gradients of a mean over ~1e5 elements are ~1e-6,
      // subnormal in half, where each of the reference's rounded ops adds up to half a step (seen on an H100:
      // 5 steps apart on [1, 197, 768] norm-pix L2, while the fused pass was within 2 of the double oracle).
      return {3e-2, 5e-3, 4.8e-7};
    default:
      return {1e-1, 2e-2, 0};
  }
}

// The fused pass in half/bfloat16 against the reference in double on the same values: rounding the result
// (and each gradient element) once to the dtype, plus float accumulation. atol_abs covers half's subnormal
// step (6e-8), where small gradients land.
inline Tolerance tight_tolerance(at::ScalarType t) {
  switch (t) {
    case at::kHalf:
      return {2e-3, 2e-4, 1.2e-7};
    case at::kBFloat16:
      return {1.6e-2, 2e-3, 0};
    default:
      return same_dtype_tolerance(t);
  }
}

inline bool close(const torch::Tensor& actual, const torch::Tensor& expected, Tolerance tol, std::string* why) {
  if (actual.defined() != expected.defined()) {
    *why = "one tensor is undefined";
    return false;
  }
  if (!actual.defined()) return true;
  if (actual.sizes() != expected.sizes()) {
    *why = "shapes differ";
    return false;
  }
  const torch::Tensor a = actual.detach().to(torch::kDouble), e = expected.detach().to(torch::kDouble);
  const double scale = e.numel() ? torch::nan_to_num(e.abs(), 0.0, 0.0, 0.0).max().item<double>() : 0.0;
  const double atol = tol.atol_rel * scale + tol.atol_abs;
  if (torch::allclose(a, e, tol.rtol, atol, /*equal_nan=*/true)) return true;
  const torch::Tensor err = torch::nan_to_num((a - e).abs() - tol.rtol * e.abs(), 0.0, 1e300, 1e300);
  const int64_t worst = err.reshape({-1}).argmax().item<int64_t>();
  std::ostringstream os;
  os << "worst element " << worst << ": actual " << a.reshape({-1})[worst].item<double>() << " expected "
     << e.reshape({-1})[worst].item<double>() << " (atol " << atol << ", rtol " << tol.rtol << ")";
  *why = os.str();
  return false;
}

struct LossRun {
  torch::Tensor loss;
  torch::Tensor grad_pred;
  torch::Tensor grad_target;  // undefined unless the target required grad
};

// Loss and gradients for fresh leaves that alias pred/target (same strides). grad_out: the upstream
// gradient (undefined: ones).
inline LossRun run_loss(const torch::Tensor& pred, const torch::Tensor& target, const torch::Tensor& mask,
                        const simmim::MaskedLossOptions& options, bool target_grad = false,
                        torch::Tensor grad_out = {}) {
  torch::Tensor p = pred.detach().requires_grad_(true);
  torch::Tensor t = target.detach().requires_grad_(target_grad);
  LossRun run;
  run.loss = simmim::masked_reconstruction_loss(p, t, mask, options);
  if (!grad_out.defined()) grad_out = torch::ones_like(run.loss);
  torch::autograd::backward({run.loss}, {grad_out.to(run.loss.scalar_type())});
  run.loss = run.loss.detach();
  run.grad_pred = p.grad();
  if (target_grad) run.grad_target = t.grad();
  return run;
}

}  // namespace loss_test

// CHECK that actual is close to expected, reporting the worst element when not.
#define LOSS_CHECK_CLOSE(actual, expected, tol)                                              \
  do {                                                                                       \
    std::string loss_check_why_;                                                             \
    const bool loss_check_ok_ = ::loss_test::close(actual, expected, tol, &loss_check_why_); \
    INFO(loss_check_why_);                                                                   \
    CHECK(loss_check_ok_);                                                                   \
  } while (0)
