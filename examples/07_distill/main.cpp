// 07_distill: compresses a pretrained encoder into a smaller one by masked prediction (MaskDistill, Peng et
// al. 2022). A frozen teacher (a SimMIM or MAE checkpoint's encoder, or one pretrained here first) sees the
// full image; the student sees it with 60% of its patches replaced by its mask token and learns, through a
// linear head, to predict the teacher's layer-normalized features of the masked patches (smooth-L1).
// The student is saved like any pretraining checkpoint's encoder: 04_linear_probe and 05_finetune read it.
//
//   simmim_07_distill --teacher out/pretrain_simmim/checkpoint.pt --embed-dim 64 --out out/distill
//   simmim_07_distill --teacher-steps 600 --embed-dim 64 --out out/distill      # pretrain a teacher first
//   simmim_04_linear_probe --checkpoint out/distill/checkpoint.pt --features tokens
//
// Writes <out>/checkpoint.pt (kind "distill"; resumable with --resume), <out>/metrics.jsonl, <out>/loss.png;
// with --teacher-steps also <out>/teacher/ (02_pretrain_simmim's outputs).

#include "../common/pretrain_flags.hpp"
#include "simmim/model/distiller.hpp"

int main(int argc, char** argv) {
  return examples::guarded_main("simmim_07_distill", [&] {
    CLI::App app{"Distillation: a smaller ViT student predicts a frozen teacher's features of the masked patches."};
    examples::PretrainFlags f;
    f.out = "out/distill";
    f.model.embed_dim = 64;  // the mnist preset's 128 halved: a quarter of its multiply-adds per token
    std::string teacher, target = "mask-distill", loss = "smooth-l1", precision = "auto", resample = "reject";
    int64_t teacher_steps = 0, top_k = 8, head_hidden = 0;
    f.add_to(app);
    auto* t = app.add_option("--teacher", teacher, "pretraining checkpoint (02 / 03) whose encoder is the teacher");
    auto* ts = app.add_option("--teacher-steps", teacher_steps,
                              "no checkpoint: pretrain a SimMIM teacher of the mnist preset this many steps first "
                              "(same data, batch and seed) into <out>/teacher")
                   ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
    t->excludes(ts);
    app.add_option("--target", target, "mask-distill (last layer, layer norm) or data2vec (top-k, instance norm)")
        ->capture_default_str()
        ->check(CLI::IsMember({"mask-distill", "data2vec"}));
    app.add_option("--top-k", top_k, "data2vec: average of the teacher's last k blocks")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{1}, int64_t{1024}));
    app.add_option("--loss", loss, "smooth-l1, l2 or cosine")
        ->capture_default_str()
        ->check(CLI::IsMember({"smooth-l1", "l2", "cosine"}));
    app.add_option("--head-hidden", head_hidden, "predictor head: 0 linear, > 0 an MLP with this hidden width")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 16));
    app.add_option("--teacher-precision", precision, "auto (bf16 on CUDA, fp32 on the CPU), fp32 or bf16")
        ->capture_default_str()
        ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
    app.add_option("--resample", resample,
                   "student patch grid != teacher grid: reject, or resize the teacher's features (bilinear, area)")
        ->capture_default_str()
        ->check(CLI::IsMember({"reject", "bilinear", "area"}));
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (teacher.empty() && teacher_steps == 0)
      throw CLI::ValidationError("--teacher", "give a teacher checkpoint, or --teacher-steps N to pretrain one");
    const std::string out = f.out;
    if (teacher.empty()) {
      examples::PretrainFlags tf = f;
      tf.model = simmim::ModelSpec();  // the teacher: the preset itself, not the student's size
      tf.model.preset = f.model.preset;
      tf.steps = teacher_steps;
      tf.stop_after = 0;
      tf.out = out + "/teacher";
      examples::run_pretraining(tf, "simmim", [](const simmim::ModelSpec& spec) {
        return simmim::SimMIM(spec.simmim_options());
      });
      teacher = tf.out + "/checkpoint.pt";
    }

    const simmim::ModelSpec teacher_spec = simmim::checkpoint_model_spec(teacher);
    const auto teacher_norm = simmim::checkpoint_normalization(teacher);
    f.check_data = [&](const examples::Split& data) {
      // The teacher's features mean something only on images like the ones it was pretrained on.
      if (teacher_spec.in_chans != data.channels || teacher_spec.image_size != data.image_size.h ||
          teacher_norm.first != data.mean || teacher_norm.second != data.stddev)
        throw CLI::ValidationError("--teacher", "a teacher pretrained on images like these (" +
                                                    std::to_string(data.channels) + " channels, " +
                                                    std::to_string(data.image_size.h) +
                                                    " px, the same normalization); '" + teacher + "' is not");
    };
    auto options = simmim::DistillerOptions()
                       .target(target == "data2vec" ? simmim::TeacherTargetOptions::data2vec(top_k)
                                                    : simmim::TeacherTargetOptions::mask_distill())
                       .head_hidden_dim(head_hidden)
                       .teacher_precision(precision == "fp32"   ? simmim::TeacherPrecision::kFloat32
                                          : precision == "bf16" ? simmim::TeacherPrecision::kBFloat16
                                                                : simmim::TeacherPrecision::kAuto)
                       .resample(resample == "bilinear" ? simmim::GridResample::kBilinear
                                 : resample == "area"   ? simmim::GridResample::kArea
                                                        : simmim::GridResample::kReject);
    if (loss != "smooth-l1")
      options.target().loss(loss == "l2" ? simmim::LossKind::kL2 : simmim::LossKind::kCosine);
    // Stored with the checkpoint: a resume must distil the same teacher the same way.
    f.extra_settings = {{"teacher", teacher},   {"target", target},       {"top_k", top_k},
                        {"loss", loss},         {"head_hidden", head_hidden}, {"teacher_precision", precision},
                        {"resample", resample}};
    return examples::run_pretraining(f, "distill", [&](const simmim::ModelSpec& spec) {
      simmim::VisionTransformer teacher_encoder = simmim::load_pretrained_encoder(teacher);
      simmim::VisionTransformer student(spec.encoder_options());
      simmim::Distiller model(teacher_encoder, student, options);
      std::cout << "distill: ";
      model->pretty_print(std::cout);
      std::cout << "\ndistill: teacher " << teacher << " (" << teacher_encoder->parameters().size()
                << " tensors, not trained, not saved)\n";
      return model;
    });
  });
}
