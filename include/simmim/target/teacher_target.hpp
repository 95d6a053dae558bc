#pragma once
// Teacher-feature targets (data2vec, Baevski et al. 2022; MaskDistill, Peng et al. 2022; BEiT v2's
// cosine): a frozen teacher (any EncoderAdapter, e.g. a ViT loaded from a checkpoint) sees the full,
// unmasked image; the target of each patch is its feature from one layer, or the average of the top-k
// layers, each normalized first (per-token layer norm, or per-feature standardization over an image's
// tokens as data2vec's instance norm). The student regresses them with smooth-L1, L2 or cosine.
//
// The teacher is not a submodule of the student: it is not saved with it, not trained (its parameters
// stop requiring grad and it is put in eval mode here) and not moved by model->to(device): move it
// yourself.

#include <torch/arg.h>
#include <torch/nn/module.h>

#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/encoder/encoder_adapter.hpp"
#include "simmim/target/target.hpp"

SIMMIM_NAMESPACE_BEGIN

enum class TeacherNorm {
  kNone,
  kLayerNorm,     // each token over its D features, no affine (MaskDistill, BEiT v2)
  kInstanceNorm,  // each feature over an image's L tokens (data2vec's parameter-free instance norm)
};

inline constexpr const char* to_string(TeacherNorm norm) {
  switch (norm) {
    case TeacherNorm::kNone:
      return "none";
    case TeacherNorm::kLayerNorm:
      return "layer-norm";
    case TeacherNorm::kInstanceNorm:
      return "instance-norm";
  }
  return "unknown TeacherNorm";
}

struct TeacherTargetOptions {
  // Average of the last top_k layers of layer_features() (data2vec: 8 of ViT-B's 12); with top_k = 1,
  // `layer` picks the one (negative: from the end; -1 the last block).
  TORCH_ARG(int64_t, top_k) = 1;
  TORCH_ARG(int64_t, layer) = -1;
  // Applied to each chosen layer before the average.
  TORCH_ARG(TeacherNorm, norm) = TeacherNorm::kLayerNorm;
  TORCH_ARG(double, norm_eps) = 1e-6;
  // kSmoothL1 (data2vec, with beta), kL2, or kCosine (MaskDistill / BEiT v2); eps as MaskedLossOptions::eps.
  TORCH_ARG(LossKind, loss) = LossKind::kSmoothL1;
  TORCH_ARG(double, beta) = 1.0;
  TORCH_ARG(double, eps) = 0.0;

 public:
  // data2vec: the average of the top 8 blocks, each instance-normalized, smooth-L1.
  static TeacherTargetOptions data2vec(int64_t top_k = 8) {
    return TeacherTargetOptions().top_k(top_k).norm(TeacherNorm::kInstanceNorm).loss(LossKind::kSmoothL1);
  }
  // MaskDistill: the last layer, layer-normalized per token, smooth-L1. (A cosine loss on the features,
  // as BEiT v2 distils, is .loss(LossKind::kCosine).)
  static TeacherTargetOptions mask_distill() {
    return TeacherTargetOptions().norm(TeacherNorm::kLayerNorm).loss(LossKind::kSmoothL1);
  }
};

class TeacherTarget : public Target {
 public:
  // `teacher`: a module that is an EncoderAdapter (our VisionTransformer, or your own), with its weights
  // already loaded (torch::load, simmim::load_module_weights). Frozen here.
  template <typename Encoder>
  explicit TeacherTarget(std::shared_ptr<Encoder> teacher, TeacherTargetOptions options_ = {})
      : options(std::move(options_)) {
    static_assert(is_encoder_module_v<Encoder>,
                  "simmim::TeacherTarget: the teacher must derive from both torch::nn::Module and "
                  "simmim::EncoderAdapter");
    constexpr const char* api = "simmim::TeacherTarget";
    SIMMIM_CHECK(teacher != nullptr, api, "teacher", "a module", "a null pointer");
    SIMMIM_CHECK_VALUE(options.top_k() >= 1, api, "options.top_k", ">= 1", options.top_k());
    SIMMIM_CHECK_ENUM(options.norm(), 3, "TeacherNorm", api, "options.norm",
                      "TeacherNorm::kNone, kLayerNorm or kInstanceNorm");
    SIMMIM_CHECK_VALUE(std::isfinite(options.norm_eps()) && options.norm_eps() >= 0, api, "options.norm_eps",
                       "finite and >= 0", options.norm_eps());
    const LossKind k = options.loss();
    SIMMIM_CHECK_VALUE(k == LossKind::kSmoothL1 || k == LossKind::kL2 || k == LossKind::kL1 || k == LossKind::kCosine,
                       api, "options.loss", "LossKind::kSmoothL1, kL2, kL1 or kCosine",
                       "LossKind(" + std::to_string(static_cast<int>(k)) + ")");
    module_ = teacher;
    adapter_ = teacher;
    for (auto& param : module_->parameters()) param.requires_grad_(false);
    module_->eval();
  }
  template <typename Impl>
  explicit TeacherTarget(const torch::nn::ModuleHolder<Impl>& teacher, TeacherTargetOptions options_ = {})
      : TeacherTarget(teacher.ptr(), std::move(options_)) {}

  std::string name() const override {
    std::string layers = options.top_k() > 1 ? "top " + std::to_string(options.top_k()) + " layers"
                                             : "layer " + std::to_string(options.layer());
    return "teacher(" + layers + ", " + to_string(options.norm()) + ")";
  }

  // One teacher feature vector per patch: the teacher's out_channels().
  int64_t prediction_dim(int64_t patch, int64_t channels) const override {
    check_geometry(patch, channels, "simmim::TeacherTarget::prediction_dim");
    return adapter_->out_channels();
  }

  // [B, L, D] (float): the chosen layers of the teacher on the full images, normalized, averaged.
  at::Tensor compute(const at::Tensor& images, int64_t patch) const override {
    constexpr const char* api = "simmim::TeacherTarget::compute";
    const Size2d grid = check_target_images(images, patch, api);
    check_geometry(patch, images.size(1), api);
    at::NoGradGuard no_grad;
    const std::vector<at::Tensor> layers = adapter_->layer_features(images);
    const int64_t n = static_cast<int64_t>(layers.size());
    int64_t first = 0, count = options.top_k();
    if (count == 1) {
      first = options.layer() < 0 ? n + options.layer() : options.layer();
      SIMMIM_CHECK_VALUE(first >= 0 && first < n, api, "options.layer",
                         "a layer of the teacher's " + std::to_string(n) + " (negative: from the end)", options.layer());
    } else {
      SIMMIM_CHECK_VALUE(count <= n, api, "options.top_k", "at most the teacher's " + std::to_string(n) + " layers",
                         count);
      first = n - count;
    }
    at::Tensor sum;
    for (int64_t i = first; i < first + count; ++i) {
      const at::Tensor& map = layers[static_cast<size_t>(i)];
      SIMMIM_CHECK(map.dim() == 4 && map.size(0) == images.size(0) && map.size(2) == grid.h && map.size(3) == grid.w,
                   api, "the teacher's layer_features()",
                   "maps [B, D, H / patch, W / patch] = [" + std::to_string(images.size(0)) + ", D, " +
                       std::to_string(grid.h) + ", " + std::to_string(grid.w) + "]",
                   "layer ", i, ": ", describe(map));
      const at::Tensor tokens = normalize(map.flatten(2).transpose(1, 2).to(at::kFloat));  // [B, L, D]
      sum = sum.defined() ? sum + tokens : tokens;
    }
    return count == 1 ? sum : sum / static_cast<double>(count);
  }

  MaskedLossOptions loss_options() const override {
    return MaskedLossOptions().kind(options.loss()).beta(options.beta()).eps(options.eps());
  }

  // Features have no pixel space.
  at::Tensor to_image(const at::Tensor&, const at::Tensor&, int64_t) const override { return {}; }

  std::shared_ptr<torch::nn::Module> teacher() const { return module_; }

  TeacherTargetOptions options;

 private:
  at::Tensor normalize(const at::Tensor& tokens) const {
    const double eps = options.norm_eps();
    switch (options.norm()) {
      case TeacherNorm::kNone:
        return tokens;
      case TeacherNorm::kLayerNorm:
        return at::layer_norm(tokens, {tokens.size(2)}, {}, {}, eps);
      case TeacherNorm::kInstanceNorm: {
        const int64_t over_tokens = 1;
        const at::Tensor mean = tokens.mean(at::IntArrayRef(over_tokens), /*keepdim=*/true);
        const at::Tensor var = tokens.var(at::IntArrayRef(over_tokens), /*unbiased=*/false, /*keepdim=*/true);
        return (tokens - mean) / (var + eps).sqrt();
      }
    }
    return tokens;
  }
  void check_geometry(int64_t patch, int64_t channels, const char* api) const {
    SIMMIM_CHECK_VALUE(patch == adapter_->stride(), api, "patch",
                       "the teacher's stride " + std::to_string(adapter_->stride()) +
                           " (one teacher feature per student patch)",
                       patch);
    SIMMIM_CHECK_VALUE(channels == adapter_->in_channels(), api, "the images' channels",
                       "the teacher's in_channels " + std::to_string(adapter_->in_channels()), channels);
  }

  std::shared_ptr<torch::nn::Module> module_;
  std::shared_ptr<EncoderAdapter> adapter_;
};

SIMMIM_NAMESPACE_END
