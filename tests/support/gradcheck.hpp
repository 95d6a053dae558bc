#pragma once
// A central-difference gradient check in double precision for simmim's tests: LibTorch's C++ API has no
// torch.autograd.gradcheck. It compares autograd's full Jacobian of f with finite differences, element by
// element, for every input that requires grad (all inputs must be double; keep shapes small).

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace simmim_test {

struct GradcheckResult {
  bool ok = true;
  std::string report;  // the first mismatches, for the failure message
};

using GradcheckFn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;

// Checks d f(inputs) / d inputs[k] for every k with requires_grad. |numeric - analytic| must be within
// atol + rtol * |numeric| for every (output, input element) pair.
inline GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<torch::Tensor>& inputs, double step = 1e-6,
                                 double atol = 1e-5, double rtol = 1e-3) {
  GradcheckResult result;
  std::vector<size_t> checked;
  for (size_t k = 0; k < inputs.size(); ++k) {
    TORCH_CHECK(inputs[k].scalar_type() == torch::kDouble, "gradcheck: input ", k, " must be double");
    if (inputs[k].requires_grad()) checked.push_back(k);
  }
  TORCH_CHECK(!checked.empty(), "gradcheck: no input requires grad");

  // Analytic Jacobian, one row (output element) at a time.
  const torch::Tensor out = f(inputs).reshape({-1});
  const int64_t n_out = out.numel();
  std::vector<torch::Tensor> rows(checked.size());  // [n_out, numel] per checked input
  for (size_t c = 0; c < checked.size(); ++c) {
    rows[c] = torch::zeros({n_out, inputs[checked[c]].numel()}, torch::kDouble);
  }
  std::vector<torch::Tensor> wrt;
  for (size_t k : checked) wrt.push_back(inputs[k]);
  for (int64_t o = 0; o < n_out; ++o) {
    const auto grads = torch::autograd::grad({out[o]}, wrt, {}, /*retain_graph=*/true, /*create_graph=*/false,
                                             /*allow_unused=*/true);
    for (size_t c = 0; c < checked.size(); ++c) {
      if (grads[c].defined()) rows[c][o].copy_(grads[c].reshape({-1}));
    }
  }

  // Numeric Jacobian, one column (input element) at a time.
  std::ostringstream report;
  int mismatches = 0;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> base;
  for (const auto& t : inputs) base.push_back(t.detach().contiguous().clone());
  for (size_t c = 0; c < checked.size(); ++c) {
    const size_t k = checked[c];
    // Element writes through tensor ops, so inputs may live on any device.
    torch::Tensor x = base[k].view({-1});
    for (int64_t e = 0; e < base[k].numel(); ++e) {
      const double saved = x[e].item<double>();
      x[e].fill_(saved + step);
      const torch::Tensor plus = f(base).reshape({-1}).clone();
      x[e].fill_(saved - step);
      const torch::Tensor minus = f(base).reshape({-1}).clone();
      x[e].fill_(saved);
      const torch::Tensor numeric = (plus - minus) / (2 * step);
      for (int64_t o = 0; o < n_out; ++o) {
        const double num = numeric[o].item<double>();
        const double ana = rows[c][o][e].item<double>();
        if (!(std::abs(num - ana) <= atol + rtol * std::abs(num))) {
          result.ok = false;
          if (mismatches++ < 8) {
            report << "input " << k << " element " << e << " output " << o << ": numeric " << num << " analytic " << ana
                   << "\n";
          }
        }
      }
    }
  }
  if (mismatches > 8) report << "... " << mismatches << " mismatches in all\n";
  result.report = report.str();
  return result;
}

}  // namespace simmim_test
