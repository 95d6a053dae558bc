#pragma once
// Distillation through masked prediction (MaskDistill, Peng et al. 2022; data2vec's targets, Baevski et
// al. 2022): a frozen teacher sees the full image, a smaller student sees it with the masked patches
// replaced by its mask token (SimMIM's input), and a light head maps the student's tokens to the
// teacher's width; the loss scores the masked patches only. The student is what one keeps: its encoder is
// saved, probed and fine-tuned like a SimMIM encoder (docs/distillation.md).
//
// The teacher is held through a TeacherTarget (its layer choice, normalization and loss are that
// target's options) and is not a submodule: parameters() and the checkpoints hold the student and the
// head only. It follows the model's device (to() is overridden) in the precision the options ask for.

#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize.h>

#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/decoder/simmim_head.hpp"
#include "simmim/dispatch/backend.hpp"
#include "simmim/encoder/encoder_adapter.hpp"
#include "simmim/masking/mask_batch.hpp"
#include "simmim/model/pretrain_output.hpp"
#include "simmim/target/teacher_target.hpp"

SIMMIM_NAMESPACE_BEGIN

// The dtype the teacher's weights and forward run in.
enum class TeacherPrecision {
  kAuto,      // bf16 on CUDA (the teacher's forward is most of a step), float32 elsewhere
  kFloat32,   // always float32
  kBFloat16,  // always bf16 (also on the CPU: slower there on most CPUs; for tests and CPUs with bf16 units)
};

inline constexpr const char* to_string(TeacherPrecision p) {
  switch (p) {
    case TeacherPrecision::kAuto:
      return "auto";
    case TeacherPrecision::kFloat32:
      return "float32";
    case TeacherPrecision::kBFloat16:
      return "bfloat16";
  }
  return "unknown TeacherPrecision";
}

// What to do when the student's token grid (H / its patch) is not the teacher's (H / its stride).
enum class GridResample {
  kReject,    // an error naming both grids
  kBilinear,  // the teacher's normalized feature map resized bilinearly (align_corners = false)
  kArea,      // adaptive average pooling (area): the mean of the teacher cells under each student cell
};

inline constexpr const char* to_string(GridResample r) {
  switch (r) {
    case GridResample::kReject:
      return "reject";
    case GridResample::kBilinear:
      return "bilinear";
    case GridResample::kArea:
      return "area";
  }
  return "unknown GridResample";
}

struct DistillerOptions {
  // The teacher's side: which layers, how normalized, which loss (TeacherTarget's options; MaskDistill's
  // by default: the last layer, per-token layer norm, smooth-L1).
  TORCH_ARG(TeacherTargetOptions, target) = TeacherTargetOptions::mask_distill();
  // The predictor head: 0 is one linear map per token (a 1x1 conv, MaskDistill's); > 0 adds a hidden
  // layer of this width with GELU in front of it (a two-layer MLP per token).
  TORCH_ARG(int64_t, head_hidden_dim) = 0;
  TORCH_ARG(TeacherPrecision, teacher_precision) = TeacherPrecision::kAuto;
  TORCH_ARG(GridResample, resample) = GridResample::kReject;
  // Backend of the masked loss (kAuto: fused where available).
  TORCH_ARG(Backend, loss_backend) = Backend::kAuto;
};

// Submodules "encoder" (the student, so load_pretrained_encoder and the probe / fine-tune examples read a
// Distiller's checkpoint like a SimMIM one) and "head". The teacher is shared, never a child.
class DistillerImpl : public torch::nn::Cloneable<DistillerImpl> {
 public:
  // forward() reads only the mask of a MaskBatch (mask_outputs_read_by).
  static constexpr MaskOutputs kMaskOutputs = MaskOutputs::kMaskOnly;

  // `teacher`: any Module + EncoderAdapter with its weights loaded (frozen here: its parameters stop
  // requiring grad, eval mode). `student`: any Module + EncoderAdapter that takes a mask (SimMIM's mask
  // token); the model shares it with the caller (training it trains theirs).
  template <typename Teacher, typename Student>
  DistillerImpl(std::shared_ptr<Teacher> teacher, std::shared_ptr<Student> student, DistillerOptions options_ = {})
      : options(std::move(options_)) {
    static_assert(is_encoder_module_v<Student>,
                  "simmim::Distiller: the student must derive from both torch::nn::Module and simmim::EncoderAdapter");
    constexpr const char* api = "simmim::Distiller";
    SIMMIM_CHECK(student != nullptr, api, "student", "a module", "a null pointer");
    SIMMIM_CHECK(teacher != nullptr, api, "teacher", "a module", "a null pointer");
    SIMMIM_CHECK(static_cast<const void*>(teacher.get()) != static_cast<const void*>(student.get()), api, "student",
                 "a module other than the teacher (the teacher is frozen)", "the teacher itself");
    // TeacherTarget checks the teacher's type and the target options, and freezes it.
    target_ = std::make_shared<TeacherTarget>(std::move(teacher), options.target());
    teacher_adapter_ = std::dynamic_pointer_cast<EncoderAdapter>(target_->teacher());
    TORCH_INTERNAL_ASSERT(teacher_adapter_ != nullptr, "a TeacherTarget's teacher is not an EncoderAdapter");
    student_ = student;
    student_adapter_ = student;
    reset();
    place_teacher(teacher_device());
  }
  template <typename TeacherImpl, typename StudentImpl>
  DistillerImpl(const torch::nn::ModuleHolder<TeacherImpl>& teacher, const torch::nn::ModuleHolder<StudentImpl>& student,
                DistillerOptions options_ = {})
      : DistillerImpl(teacher.ptr(), student.ptr(), std::move(options_)) {}

  void reset() override {
    constexpr const char* api = "simmim::Distiller";
    SIMMIM_CHECK_ENUM(options.teacher_precision(), 3, "TeacherPrecision", api, "options.teacher_precision",
                      "TeacherPrecision::kAuto, kFloat32 or kBFloat16");
    SIMMIM_CHECK_ENUM(options.resample(), 3, "GridResample", api, "options.resample",
                      "GridResample::kReject, kBilinear or kArea");
    SIMMIM_CHECK_VALUE(options.head_hidden_dim() >= 0, api, "options.head_hidden_dim",
                       ">= 0 (0: a linear head)", options.head_hidden_dim());
    if (student_registered_) {
      // A second reset() comes from clone(): the copy gets its own student (the frozen teacher is shared).
      student_ = student_->clone();
      student_adapter_ = std::dynamic_pointer_cast<EncoderAdapter>(student_);
      TORCH_INTERNAL_ASSERT(student_adapter_ != nullptr, "a cloned student lost its EncoderAdapter base");
    }
    register_module("encoder", student_);
    student_registered_ = true;
    const EncoderAdapter& s = *student_adapter_;
    const EncoderAdapter& t = *teacher_adapter_;
    SIMMIM_CHECK_VALUE(s.in_channels() > 0 && s.patch_size() > 0 && s.stride() > 0 && s.out_channels() > 0, api,
                       "student", "positive in_channels, patch_size, stride and out_channels", "in_channels ",
                       s.in_channels(), ", patch_size ", s.patch_size(), ", stride ", s.stride(), ", out_channels ",
                       s.out_channels());
    SIMMIM_CHECK_VALUE(s.stride() % s.patch_size() == 0, api, "student",
                       "a stride that is a multiple of its patch size (one prediction per masked patch)", "stride ",
                       s.stride(), ", patch_size ", s.patch_size());
    SIMMIM_CHECK_VALUE(s.in_channels() == t.in_channels(), api, "student",
                       "the teacher's in_channels " + std::to_string(t.in_channels()), s.in_channels());
    // The head predicts, per student patch, the teacher's feature: a 1x1 conv on the student's stride-s map
    // to (s / p)^2 x D_teacher channels, shuffled to the patch grid (SimMIMHead; one linear map per token
    // for a ViT, whose stride is its patch).
    const int64_t D = s.out_channels(), hidden = options.head_hidden_dim();
    torch::nn::Sequential head_seq;
    if (hidden > 0) {
      head_seq->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(D, hidden, 1)));
      head_seq->push_back(torch::nn::GELU());
    }
    head_seq->push_back(SimMIMHead(SimMIMHeadOptions(hidden > 0 ? hidden : D, s.stride() / s.patch_size(),
                                                     t.out_channels())));
    head = register_module("head", head_seq);
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::Distiller(student: patch_size=" << student_adapter_->patch_size()
       << ", width=" << student_adapter_->out_channels() << "; teacher: stride=" << teacher_adapter_->stride()
       << ", width=" << teacher_adapter_->out_channels() << "; target=" << target_->name()
       << ", head=" << (options.head_hidden_dim() > 0 ? "mlp(" + std::to_string(options.head_hidden_dim()) + ")" : "linear")
       << ", teacher_precision=" << to_string(options.teacher_precision())
       << ", resample=" << to_string(options.resample()) << ")";
  }

  // The student and head move as any module's; the teacher goes to the same device in the precision of
  // options.teacher_precision (a dtype given here applies to the student only).
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(device, dtype, non_blocking);
    place_teacher(device, non_blocking);
  }
  void to(torch::Dtype dtype, bool non_blocking = false) override { torch::nn::Module::to(dtype, non_blocking); }
  void to(torch::Device device, bool non_blocking = false) override {
    torch::nn::Module::to(device, non_blocking);
    place_teacher(device, non_blocking);
  }

  // images [B, C, H, W] (H, W divisible by the student's stride and patch and by the teacher's stride);
  // masks.mask [B, H/p, W/p] at the student's patch p (bool, integer or floating weights). Returns {loss,
  // undefined reconstruction (features have no pixel space), mask}. The loss is
  //   target.loss(head(student(images, mask)), resample(TeacherTarget(teacher).compute(images)), mask).
  PretrainOutput forward(const at::Tensor& images, const MaskBatch& masks) {
    constexpr const char* api = "simmim::Distiller::forward";
    const at::Tensor& mask = masks.mask;
    const EncoderAdapter& s = *student_adapter_;
    const int64_t C = s.in_channels(), p = s.patch_size(), st = s.stride(), tt = teacher_adapter_->stride();
    SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0 && images.size(1) == C &&
                     images.size(2) % st == 0 && images.size(3) % st == 0 && images.size(2) % p == 0 &&
                     images.size(3) % p == 0 && images.size(2) % tt == 0 && images.size(3) % tt == 0,
                 api, "images",
                 "a non-empty [B, " + std::to_string(C) + ", H, W] with H, W divisible by the student's stride " +
                     std::to_string(st) + " and patch size " + std::to_string(p) + " and by the teacher's stride " +
                     std::to_string(tt),
                 describe(images));
    SIMMIM_CHECK(at::isFloatingType(images.scalar_type()), api, "images", "a floating-point tensor", describe(images));
    SIMMIM_CHECK_HAS_DATA(images, api, "images");
    SIMMIM_CHECK_HAS_DATA(mask, api, "mask");
    const int64_t B = images.size(0), h = images.size(2) / p, w = images.size(3) / p;
    SIMMIM_CHECK(mask.defined() && mask.dim() == 3 && mask.size(0) == B && mask.size(1) == h && mask.size(2) == w, api,
                 "mask",
                 "[B, H/p, W/p] = [" + std::to_string(B) + ", " + std::to_string(h) + ", " + std::to_string(w) +
                     "] (p = the student's patch " + std::to_string(p) + ")",
                 describe(mask));
    const at::Tensor targets = teacher_targets(images, {h, w});
    const at::Tensor features = student_adapter_->forward_features(images, mask);
    check_feature_map(s, images, features, api);
    const at::Tensor pred = head->forward(features).flatten(2).transpose(1, 2);  // [B, L, D_teacher]
    at::Tensor loss = target_->loss(pred, targets, mask, options.loss_backend());
    return {loss, at::Tensor(), mask};
  }

  // The teacher's normalized features of the full images on the student's token grid [B, h*w, D_teacher]
  // (float), computed without grad in the teacher's precision: what the student's head must predict.
  at::Tensor teacher_targets(const at::Tensor& images, Size2d student_grid) const {
    constexpr const char* api = "simmim::Distiller::teacher_targets";
    const int64_t tt = teacher_adapter_->stride();
    const c10::Device teacher_at = teacher_device();
    SIMMIM_CHECK(teacher_at == images.device(), api, "the teacher's device",
                 "the images' " + images.device().str() +
                     " (move the Distiller with ->to(device): the teacher follows it; a teacher moved by hand after "
                     "that does not)",
                 teacher_at.str());
    const Size2d tgrid(images.size(2) / tt, images.size(3) / tt);
    SIMMIM_CHECK(tgrid == student_grid || options.resample() != GridResample::kReject, api,
                 "the student's token grid (H / patch)",
                 "the teacher's grid (H / stride) " + c10::str(tgrid) +
                     ", or DistillerOptions::resample set to GridResample::kBilinear or kArea",
                 c10::str(student_grid), " (student patch ", student_adapter_->patch_size(), ", teacher stride ", tt,
                 ", images ", shape_str(images), ")");
    at::NoGradGuard no_grad;
    at::Tensor t = target_->compute(images.to(teacher_dtype(images.device())), tt);  // [B, Lt, D] float
    if (tgrid == student_grid) return t;
    const int64_t B = t.size(0), D = t.size(2);
    const at::Tensor map = t.transpose(1, 2).reshape({B, D, tgrid.h, tgrid.w});
    const std::vector<int64_t> size{student_grid.h, student_grid.w};
    namespace F = torch::nn::functional;
    const at::Tensor resized =
        options.resample() == GridResample::kBilinear
            ? F::interpolate(map, F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false))
            : at::adaptive_avg_pool2d(map, size);
    return resized.flatten(2).transpose(1, 2).contiguous();
  }

  // The dtype the teacher runs in on `device` (options.teacher_precision).
  at::ScalarType teacher_dtype(c10::Device device) const {
    switch (options.teacher_precision()) {
      case TeacherPrecision::kBFloat16:
        return at::kBFloat16;
      case TeacherPrecision::kFloat32:
        return at::kFloat;
      case TeacherPrecision::kAuto:
        break;
    }
    return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  }

  // The student alone: to save, probe, fine-tune. student_as<VisionTransformerImpl>() for our ViT.
  std::shared_ptr<torch::nn::Module> student() const { return student_; }
  template <typename T>
  std::shared_ptr<T> student_as() const {
    return std::dynamic_pointer_cast<T>(student_);
  }
  EncoderAdapter& student_adapter() const { return *student_adapter_; }
  std::shared_ptr<torch::nn::Module> teacher() const { return target_->teacher(); }
  const TeacherTarget& target() const { return *target_; }

  // Writes the student's parameters and buffers alone (torch::save), as SimMIM::save_encoder.
  void save_student(const std::string& path) const { torch::save(student_, path); }

  DistillerOptions options;
  torch::nn::Sequential head{nullptr};

 private:
  c10::Device teacher_device() const {
    for (const auto& t : target_->teacher()->parameters()) return t.device();
    for (const auto& t : target_->teacher()->buffers()) return t.device();
    return c10::Device(c10::kCPU);
  }
  // Moves the teacher to `device` in the precision the options ask for there. Going back from bf16 to
  // float32 does not restore the bits bf16 dropped.
  // Module::to(device, dtype) would also cast integer buffers (a relative position index): only the
  // floating tensors change dtype here.
  void place_teacher(c10::Device device, bool non_blocking = false) {
    torch::nn::Module& teacher = *target_->teacher();
    teacher.to(device, non_blocking);
    const at::ScalarType dtype = teacher_dtype(device);
    at::NoGradGuard no_grad;
    const auto cast = [&](at::Tensor& t) {
      if (t.defined() && at::isFloatingType(t.scalar_type()) && t.scalar_type() != dtype) t.set_data(t.to(dtype));
    };
    for (auto& t : teacher.parameters()) cast(t);
    for (auto& t : teacher.buffers()) cast(t);
  }

  std::shared_ptr<TeacherTarget> target_;
  std::shared_ptr<EncoderAdapter> teacher_adapter_;
  std::shared_ptr<torch::nn::Module> student_;
  std::shared_ptr<EncoderAdapter> student_adapter_;
  bool student_registered_ = false;
};

TORCH_MODULE(Distiller);

SIMMIM_NAMESPACE_END
