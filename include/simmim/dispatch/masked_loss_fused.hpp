#pragma once
// The fused backends of the masked losses behind one autograd Function: the forward runs one fused pass
// (loss and d(loss)/d(pred) together), the backward only scales the saved gradient by grad_output. Here
// the torch-facing glue of the CPU kernel; the CUDA glue is compiled in simmim::cuda (src/cuda) and
// reached through the runtime table of dispatch/cuda_registry.hpp.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/graph_task.h>

#include <memory>
#include <vector>

#include "simmim/dispatch/backend.hpp"
#include "simmim/dispatch/dispatch_macros.hpp"
#include "simmim/dispatch/masked_loss_problem.hpp"
#include "simmim/kernels/cpu/masked_loss_cpu.hpp"
#include "simmim/kernels/cpu/token_loss_cpu.hpp"
#include "simmim/kernels/masked_loss_params.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace dispatch {


// Fills the kernel parameters from a problem and the image views the pass reads and writes: the options
// reach the params contract here, in one step.
inline MaskedLossParams masked_loss_params(const MaskedLossProblem& pb, const at::Tensor& pred4,
                                           const at::Tensor& target4, const at::Tensor& grad4,
                                           const at::Tensor& weights) {
  MaskedLossParams P;
  P.batch = pred4.size(0);
  P.channels = pred4.size(1);
  P.height = pred4.size(2);
  P.width = pred4.size(3);
  P.patch = pb.patch;
  P.pred = pred4.data_ptr();
  P.target = target4.data_ptr();
  P.grad = grad4.defined() ? grad4.data_ptr() : nullptr;
  P.weights = weights.data_ptr();
  for (int d = 0; d < 4; ++d) {
    P.pred_stride[d] = pred4.stride(d);
    P.target_stride[d] = target4.stride(d);
    P.grad_stride[d] = grad4.defined() ? grad4.stride(d) : 0;
  }
  for (int d = 0; d < 3; ++d) P.weight_stride[d] = weights.stride(d);
  P.kind = pb.options.kind();
  P.norm_pix = pb.options.norm_pix();
  P.norm_eps = pb.options.norm_eps();
  P.beta = pb.options.beta();
  P.classes = pb.classes;
  P.reduction = pb.options.reduction();
  P.eps = pb.options.eps();
  P.unit_elems = pb.unit_elems;
  P.units_per_cell = pb.units_per_cell;
  return P;
}

// MaskedLossOptions::reuse_grad_memory: the fused CPU gradient's memory, kept per calling thread. The cache
// holds the storage, never a tensor, so the gradient handed to autograd is that memory's only tensor and a
// leaf's AccumulateGrad adopts it as .grad rather than copying it. The memory is reused only once no
// tensor refers to it (the caller dropped the last gradient), so a gradient still in use is never written.
inline c10::Storage& cpu_grad_memory_cache() {
  static thread_local c10::Storage storage;
  return storage;
}

// An uninitialized gradient like pred (the pass writes every element) in memory format `format`.
inline at::Tensor new_cpu_grad(const at::Tensor& pred, at::MemoryFormat format, bool reuse) {
  const at::TensorOptions options = pred.options().memory_format(format);
  if (!reuse) return at::empty(pred.sizes(), options);
  const size_t bytes = static_cast<size_t>(pred.numel()) * pred.element_size();
  c10::Storage& cache = cpu_grad_memory_cache();
  if (!cache || cache.use_count() != 1 || cache.nbytes() < bytes) {
    cache = at::empty(pred.sizes(), options).storage();  // the old memory, if any, goes back when unused
  }
  const std::vector<int64_t> strides =
      at::empty(pred.sizes(), options.device(at::kMeta)).strides().vec();  // the format's strides, no data
  at::Tensor grad = at::empty({0}, pred.options());
  grad.set_(cache, 0, pred.sizes(), strides);
  return grad;
}

// The CPU glue instantiates the kernel's templates, so it lives in the kernel's ISA namespace too (see
// kernels/cpu/masked_loss_cpu.hpp): a copy compiled under -mavx2 never stands in for a baseline one.
inline namespace SIMMIM_CPU_ISA_NAMESPACE {

// The per-sample sums of the mask weights (acc_t [B, h, w] at patch resolution), double [B], with the
// value check of the weights made in the same pass.
inline at::Tensor weight_sums_cpu(const MaskedLossProblem& pb, const at::Tensor& weights, const char* api) {
  const int64_t B = weights.size(0);
  at::Tensor weight_sums = at::empty({B}, weights.options().dtype(at::kDouble));
  std::vector<int64_t> bad_weights(static_cast<size_t>(B), 0);
  AT_DISPATCH_FLOATING_TYPES(weights.scalar_type(), "simmim::masked_weight_sums_cpu", [&] {
    kernels::cpu::masked_weight_sums_cpu<scalar_t>(weights.data_ptr<scalar_t>(), weights.strides().data(), B,
                                                   weights.size(1), weights.size(2), weight_sums.data_ptr<double>(),
                                                   bad_weights.data());
  });
  for (int64_t b = 0; b < B; ++b) {
    SIMMIM_CHECK(bad_weights[static_cast<size_t>(b)] == 0, api, "mask", "non-negative weights (0 = visible)",
                 bad_weights[static_cast<size_t>(b)], " negative or NaN weight(s) in sample ", b, " of ",
                 describe(pb.mask));
  }
  return weight_sums;
}

// The fused CPU forward of a token kind (kCosine, kCrossEntropy; patchified layout). The token pass reads
// any strides, so nothing is copied but integer class ids that are not int64 and the mask (at token
// resolution, in the accumulation type).
inline FusedLossForward token_loss_fused_cpu(const MaskedLossProblem& pb, bool want_grad, const char* api) {
  const at::Tensor& pred = pb.pred4;  // [B, D, L, 1]
  const at::Tensor target = pb.options.kind() == LossKind::kCrossEntropy ? pb.target4.to(at::kLong) : pb.target4;
  at::Tensor grad, grad4;
  if (want_grad) {
    grad = new_cpu_grad(pb.pred, at::MemoryFormat::Contiguous, pb.options.reuse_grad_memory());  // [B, L, D]
    grad4 = pb.to_view(grad);
  }
  const at::Tensor weights = pb.mask3.to(at::toOpMathType(pred.scalar_type()));
  const at::Tensor den = pb.denominator(weight_sums_cpu(pb, weights, api));
  const at::Tensor grad_scale = pb.grad_scale(den);
  at::Tensor loss_sums = at::empty({pred.size(0)}, pred.options().dtype(at::kDouble));
  MaskedLossParams P = masked_loss_params(pb, pred, target, grad4, weights);
  P.grad_scale = grad_scale.data_ptr<double>();
  P.loss_sum = loss_sums.data_ptr<double>();
  int64_t bad_ids = 0;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "simmim::token_loss_fused_cpu", [&] {
    if (P.kind == LossKind::kCosine) {
      bad_ids = kernels::cpu::token_loss_cpu<scalar_t, LossKind::kCosine>(P);
    } else {
      TORCH_INTERNAL_ASSERT(P.kind == LossKind::kCrossEntropy, api, ": token_loss_fused_cpu got ", P.kind);
      bad_ids = kernels::cpu::token_loss_cpu<scalar_t, LossKind::kCrossEntropy>(P);
    }
  });
  SIMMIM_CHECK(bad_ids == 0, api, "target", "class ids in [0, K) with K = " + std::to_string(pb.classes), bad_ids,
               " id(s) outside it in ", describe(pb.target));
  return {pb.finish(loss_sums, den), grad};
}

// The fused CPU forward. Inputs whose rows are neither planar (NCHW-like) nor interleaved (channels-last,
// contiguous tokens) are copied once; the mask is only converted at patch resolution.
inline FusedLossForward masked_loss_fused_cpu(const MaskedLossProblem& pb, bool want_grad, const char* api) {
  using kernels::cpu::RunLayout;
  at::Tensor pred = pb.pred4, target = pb.target4;
  const int64_t B = pred.size(0), C = pred.size(1), W = pred.size(3);
  auto layout_of = [&](const at::Tensor& t) { return kernels::cpu::run_layout(C, W, t.strides().data()); };
  auto to_layout = [](const at::Tensor& t, RunLayout layout) {
    return layout == RunLayout::kInterleaved ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
  };
  RunLayout layout = layout_of(pred);
  if (layout == RunLayout::kStrided) {
    // A contiguous copy; with C == 1 it classifies as interleaved, which is as good.
    pred = to_layout(pred, W == 1 ? RunLayout::kInterleaved : RunLayout::kPlanar);
    layout = layout_of(pred);
  }
  if (layout_of(target) != layout) target = to_layout(target, layout);
  TORCH_INTERNAL_ASSERT(layout_of(pred) == layout && layout_of(target) == layout);

  at::Tensor grad;
  if (want_grad) {
    const auto format =
        layout == RunLayout::kInterleaved ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    grad = new_cpu_grad(pred, format, pb.options.reuse_grad_memory());
    TORCH_INTERNAL_ASSERT(layout_of(grad) == layout);
  }
  const at::Tensor weights = pb.mask3.to(at::toOpMathType(pred.scalar_type()));
  const at::Tensor den = pb.denominator(weight_sums_cpu(pb, weights, api) * static_cast<double>(pb.units_per_cell));
  const auto f64 = pred.options().dtype(at::kDouble);
  const at::Tensor grad_scale = pb.grad_scale(den);
  at::Tensor loss_sums = at::empty({B}, f64);

  MaskedLossParams P = masked_loss_params(pb, pred, target, grad, weights);
  P.grad_scale = grad_scale.data_ptr<double>();
  P.loss_sum = loss_sums.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "simmim::masked_loss_fused_cpu", [&] {
    SIMMIM_DISPATCH_LOSS_KIND(P.kind, kKind, api, [&] {
      SIMMIM_DISPATCH_BOOL(P.norm_pix, kNorm, [&] { kernels::cpu::masked_loss_cpu<scalar_t, kKind, kNorm>(P); });
    });
  });
  return {pb.finish(loss_sums, den), grad.defined() ? pb.from_view(grad) : grad};
}

}  // inline namespace SIMMIM_CPU_ISA_NAMESPACE

// The fused forward of `backend` (kFusedCPU or kFusedCUDA, already checked available).
inline FusedLossForward masked_loss_fused_forward(const MaskedLossProblem& pb, Backend backend, bool want_grad,
                                                  const char* api) {
  if (backend == Backend::kFusedCPU) {
    return is_token_kind(pb.options.kind()) ? token_loss_fused_cpu(pb, want_grad, api)
                                            : masked_loss_fused_cpu(pb, want_grad, api);
  }
  const CudaEntryPoints* cuda = cuda_entry_points();
  TORCH_INTERNAL_ASSERT(backend == Backend::kFusedCUDA && cuda != nullptr, api, ": no fused masked loss for ",
                        backend, " in this process");
  return cuda->masked_loss_forward(pb, want_grad, api);
}

// The autograd Function around a fused forward. Gradients: pred gets the saved d(loss)/d(pred) scaled by
// grad_output (backward makes no pass over the pixels of its own when grad_output is 1); the target, if it requires
// grad, gets its negation (l depends on pred - target only; the dispatch layer never sends a norm-pix target that
// requires grad here); the mask gets none. First-order only, like Python's @once_differentiable: differentiating the
// returned gradients raises.
class FusedMaskedLoss : public torch::autograd::Function<FusedMaskedLoss> {
 public:
  // pred, target and mask are the autograd inputs (they give the graph its edges); the pass reads the
  // problem's views of the same tensors. want_grad comes from the caller: needs_input_grad() is not
  // usable in forward when nothing requires grad.
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& /*pred*/,
                            const at::Tensor& /*target*/, const at::Tensor& /*mask*/, const MaskedLossProblem* problem,
                            Backend backend, bool want_grad, const char* api) {
    FusedLossForward out = masked_loss_fused_forward(*problem, backend, want_grad, api);
    if (want_grad) ctx->saved_data["grad"] = out.grad;
    ctx->saved_data["per_sample"] = problem->options.reduction() == LossReduction::kPerSample;
    return out.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& grad_out = grad_outputs[0];
    const bool pred_grad = ctx->needs_input_grad(0), target_grad = ctx->needs_input_grad(1);
    auto saved_it = ctx->saved_data.find("grad");
    TORCH_CHECK(saved_it != ctx->saved_data.end(),
                "simmim: backward through the fused masked loss a second time: the first backward handed its saved "
                "gradient out; pass retain_graph=true to the first backward");
    const at::Tensor saved = saved_it->second.toTensor();
    // Without retain_graph this is the last backward through this node: the saved buffer itself becomes
    // the gradient (scaled in place, or as is when grad_output is 1), with no pass and no allocation.
    // With retain_graph it stays untouched for the next backward, and the gradient is a new tensor
    // (autograd may steal a returned buffer and accumulate into it).
    const bool last_use = !torch::autograd::get_current_graph_task_keep_graph();
    if (last_use) ctx->saved_data.erase(saved_it);
    at::Tensor grad_pred, grad_target;
    {
      at::NoGradGuard no_grad;
      at::Tensor scale = grad_out;
      if (ctx->saved_data["per_sample"].toBool()) {
        std::vector<int64_t> shape(static_cast<size_t>(saved.dim()), 1);
        shape[0] = saved.size(0);
        scale = grad_out.reshape(shape);
      }
      if (target_grad) grad_target = saved * scale.neg();
      if (pred_grad) {
        const CudaEntryPoints* cuda = saved.is_cuda() ? cuda_entry_points() : nullptr;
        if (!last_use) {
          grad_pred = saved * scale;
        } else if (cuda != nullptr && grad_out.scalar_type() == saved.scalar_type()) {
          // On the GPU reading grad_output would synchronize: a kernel reads it on the device and leaves the
          // gradient untouched (no pass over it) where it is 1, the usual loss.backward().
          cuda->scale_by_grad_output(saved, grad_out);
          grad_pred = saved;
        } else {
          const bool unit = grad_out.is_cpu() && grad_out.numel() == 1 && grad_out.item<double>() == 1.0;
          grad_pred = unit ? saved : saved.mul_(scale);
        }
      }
    }
    if (at::GradMode::is_enabled() && grad_out.requires_grad()) {
      // create_graph=True with a grad_output that has history: hand out gradients whose own backward
      // raises, rather than silently wrong second derivatives.
      auto fake_requires_grad = [](const at::Tensor& g) {
        if (!g.defined()) return g;
        at::Tensor alias = g.detach();
        alias.set_requires_grad(true);
        return alias;
      };
      auto error = std::make_shared<torch::autograd::DelayedError>(
          "simmim: the fused masked loss (Backend::kFusedCPU / kFusedCUDA) is first-order only; use "
          "Backend::kReference for higher-order gradients",
          2);
      torch::autograd::variable_list wrapped =
          (*error)({fake_requires_grad(grad_pred), fake_requires_grad(grad_target)});
      grad_pred = wrapped[0];
      grad_target = wrapped[1];
    }
    return {grad_pred, grad_target, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace dispatch
SIMMIM_NAMESPACE_END
