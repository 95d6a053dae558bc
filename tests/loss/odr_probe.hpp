#pragma once
// Compiled into two translation units of simmim_test_loss under different -m flags (odr_probe_avx2.cpp
// gets -mavx2): each runs the fused CPU pass with the baseline build forced and reports which copy of
// the code ran. Before the ISA namespace, the linker kept one copy for both, so one of them ran the
// other's code (an AVX2-compiled "baseline" could run on a CPU without AVX2).

#include <ATen/ATen.h>

#include <string>

#include "simmim/dispatch/masked_loss_fused.hpp"
#include "simmim/dispatch/masked_loss_problem.hpp"

namespace odr_probe {

struct Report {
  std::string compiled_isa;  // the ISA namespace this TU compiles the pass into
  std::string ran;           // what the kernel reported running
};

// Internal linkage: the probe itself must not be merged across the two TUs (it would be, as an inline
// function with one symbol, and then both TUs would run one TU's probe).
namespace {

Report forced_baseline_pass() {
  using namespace simmim::kernels::cpu;
  const CpuIsa saved = cpu_isa_override();
  cpu_isa_override() = CpuIsa::kBaseline;
  const at::Tensor x = at::ones({2, 3, 8, 8});
  const auto pb = simmim::dispatch::make_masked_loss_problem(x, x * 2, at::ones({2, 4, 4}),
                                                             simmim::MaskedLossOptions::simmim(2), "odr_probe");
  last_cpu_pass_build().store("");
  simmim::dispatch::masked_loss_fused_cpu(pb, /*want_grad=*/true, "odr_probe");
  cpu_isa_override() = saved;
  return {compiled_isa(), last_cpu_pass_build().load()};
}

}  // namespace

}  // namespace odr_probe
