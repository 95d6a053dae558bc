#pragma once
// DropPath (stochastic depth): during training each sample's residual branch is dropped with
// probability p and the survivors scaled by 1 / (1 - p); identity at eval. Draws come from the
// given CPU generator (or the global one), so a seed fixes which samples drop.

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>

#include <ostream>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"

SIMMIM_NAMESPACE_BEGIN

struct DropPathOptions {
  /* implicit */ DropPathOptions(double p = 0.0) : p_(p) {}  // NOLINT
  // Drop probability of a sample's branch, in [0, 1).
  TORCH_ARG(double, p);
  // Where the Bernoulli draws come from (a CPU generator); the global default when unset.
  TORCH_ARG(c10::optional<at::Generator>, generator) = c10::nullopt;
};

// x [B, ...] -> x with whole samples zeroed (probability p) and the rest scaled by 1 / (1 - p).
inline at::Tensor drop_path(const at::Tensor& x, double p, bool training,
                            const c10::optional<at::Generator>& generator = c10::nullopt) {
  constexpr const char* api = "simmim::drop_path";
  SIMMIM_CHECK_VALUE(p >= 0.0 && p < 1.0, api, "p", "in [0, 1)", p);
  if (!training || p == 0.0) return x;
  SIMMIM_CHECK(x.defined() && x.dim() >= 1, api, "x", "a tensor [B, ...]", describe(x));
  const double keep = 1.0 - p;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  at::Tensor draw = at::empty(shape, at::TensorOptions().dtype(at::kFloat));
  draw.bernoulli_(keep, resolve_generator(generator, api));
  return x * draw.div_(keep).to(x.device(), x.scalar_type());
}

class DropPathImpl : public torch::nn::Cloneable<DropPathImpl> {
 public:
  explicit DropPathImpl(DropPathOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    SIMMIM_CHECK_VALUE(options.p() >= 0.0 && options.p() < 1.0, "simmim::DropPath", "p", "in [0, 1)", options.p());
  }

  void pretty_print(std::ostream& os) const override { os << "simmim::DropPath(p=" << options.p() << ")"; }

  at::Tensor forward(const at::Tensor& x) { return drop_path(x, options.p(), is_training(), options.generator()); }

  DropPathOptions options;
};

TORCH_MODULE(DropPath);

SIMMIM_NAMESPACE_END
