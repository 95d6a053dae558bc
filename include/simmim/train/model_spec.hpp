#pragma once
// A pretraining model described by name: its kind (simmim, mae, distill), an encoder preset (mnist, tiny,
// small, base) with its width, depth and heads optionally overridden, image size, patch size and channels. It builds the model and its encoder, and travels as JSON in
// a checkpoint's metadata, so a probe or a fine-tune rebuilds the pretrained encoder from the file alone
// (load_pretrained_encoder), or the whole pretraining model at any image size (load_pretrain_model: for
// inpainting).

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/io/adapt_weights.hpp"
#include "simmim/io/module_weights.hpp"
#include "simmim/model/inpaint.hpp"
#include "simmim/model/mae_model.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/train/checkpoint.hpp"

SIMMIM_NAMESPACE_BEGIN

struct ModelSpec {
  // simmim | mae | distill: the model, and the encoder's flavour (positions, init, token). A distill
  // checkpoint's encoder is a student pretrained by simmim::Distiller; its encoder is SimMIM's flavour.
  std::string kind = "simmim";
  std::string preset = "mnist";  // mnist (28 px, patch 7, 128 wide, depth 4) | tiny | small | base
  int64_t image_size = 28;
  int64_t patch_size = 0;  // 0: the preset's (7 for mnist, 16 otherwise)
  // The preset's encoder made narrower, shallower or with other heads (a distilled student); 0: the preset's.
  int64_t embed_dim = 0;
  int64_t depth = 0;
  int64_t num_heads = 0;
  int64_t in_chans = 1;
  bool norm_pix = false;  // mae: trained on per-patch normalized targets (MAEOptions::norm_pix_loss)
  // false when read from a description written before norm_pix was recorded (an MAE's is then unknown)
  bool norm_pix_recorded = true;

  static bool known_preset(const std::string& p) { return p == "mnist" || p == "tiny" || p == "small" || p == "base"; }

  // The preset's patch where none was chosen. Errors on an unknown kind or preset.
  ModelSpec& resolve() {
    constexpr const char* api = "simmim::ModelSpec";
    SIMMIM_CHECK_VALUE(kind == "simmim" || kind == "mae" || kind == "distill", api, "kind", "simmim, mae or distill",
                       "'" + kind + "'");
    SIMMIM_CHECK_VALUE(known_preset(preset), api, "preset", "one of mnist, tiny, small, base", "'" + preset + "'");
    SIMMIM_CHECK_VALUE(image_size > 0, api, "image_size", "positive", image_size);
    SIMMIM_CHECK_VALUE(in_chans > 0, api, "in_chans", "positive", in_chans);
    SIMMIM_CHECK_VALUE(patch_size >= 0, api, "patch_size", "non-negative (0: the preset's)", patch_size);
    SIMMIM_CHECK_VALUE(embed_dim >= 0, api, "embed_dim", "non-negative (0: the preset's)", embed_dim);
    SIMMIM_CHECK_VALUE(depth >= 0, api, "depth", "non-negative (0: the preset's)", depth);
    SIMMIM_CHECK_VALUE(num_heads >= 0, api, "num_heads", "non-negative (0: the preset's)", num_heads);
    if (patch_size == 0) patch_size = preset == "mnist" ? 7 : 16;
    return *this;
  }

  nlohmann::json to_json() const {
    nlohmann::json j{{"kind", kind}, {"preset", preset}, {"image_size", image_size}, {"patch_size", patch_size},
                     {"in_chans", in_chans}};
    if (kind == "mae") j["norm_pix"] = norm_pix;
    // Written only when set, so the description of a preset's model (and a resume's comparison) is unchanged.
    if (embed_dim > 0) j["embed_dim"] = embed_dim;
    if (depth > 0) j["depth"] = depth;
    if (num_heads > 0) j["num_heads"] = num_heads;
    return j;
  }
  static ModelSpec from_json(const nlohmann::json& j) {
    constexpr const char* api = "simmim::ModelSpec::from_json";
    SIMMIM_CHECK(j.is_object() && j.contains("kind") && j.contains("preset") && j.contains("image_size") &&
                     j.contains("patch_size") && j.contains("in_chans"),
                 api, "the model description", "an object with kind, preset, image_size, patch_size, in_chans",
                 j.dump());
    ModelSpec s;
    s.kind = j.at("kind").get<std::string>();
    s.preset = j.at("preset").get<std::string>();
    s.image_size = j.at("image_size").get<int64_t>();
    s.patch_size = j.at("patch_size").get<int64_t>();
    s.in_chans = j.at("in_chans").get<int64_t>();
    for (const auto& [key, field] : {std::pair<const char*, int64_t*>{"embed_dim", &s.embed_dim},
                                     {"depth", &s.depth},
                                     {"num_heads", &s.num_heads}}) {
      if (!j.contains(key)) continue;
      SIMMIM_CHECK(j.at(key).is_number_integer(), api, key, "an integer", j.at(key).dump());
      *field = j.at(key).get<int64_t>();
    }
    if (j.contains("norm_pix")) {
      SIMMIM_CHECK(j.at("norm_pix").is_boolean(), api, "norm_pix", "true or false", j.at("norm_pix").dump());
      s.norm_pix = j.at("norm_pix").get<bool>();
    } else {
      s.norm_pix_recorded = s.kind != "mae";
    }
    return s.resolve();
  }

  // The encoder options of the preset at this image size, patch and channel count (SimMIM's flavour).
  VisionTransformerOptions vit_options() const {
    ModelSpec s = *this;
    s.resolve();
    const Size2d img(s.image_size);
    VisionTransformerOptions o;
    if (s.preset == "mnist") {
      o = VisionTransformerOptions::mnist();
      o.img_size(img).patch_size(s.patch_size);
    } else if (s.preset == "tiny") {
      o = VisionTransformerOptions::tiny(img, s.patch_size);
    } else if (s.preset == "small") {
      o = VisionTransformerOptions::small(img, s.patch_size);
    } else {
      o = VisionTransformerOptions::base(img, s.patch_size);
    }
    return s.sized(o).in_chans(s.in_chans);
  }

  // The width, depth and heads set here on top of a preset's encoder options.
  VisionTransformerOptions sized(VisionTransformerOptions o) const {
    if (embed_dim > 0) o.embed_dim(embed_dim);
    if (depth > 0) o.depth(depth);
    if (num_heads > 0) o.num_heads(num_heads);
    return o;
  }

  SimMIMOptions simmim_options() const {
    ModelSpec s = *this;
    s.resolve();
    SimMIMOptions o(SimMIMOptions::simmim_encoder(vit_options()));
    if (s.preset == "base") o = SimMIMOptions::vit_base(Size2d(s.image_size), s.patch_size);
    o.encoder(s.sized(o.encoder()));
    o.encoder().in_chans(s.in_chans);
    return o;
  }

  MAEOptions mae_options() const {
    ModelSpec s = *this;
    s.resolve();
    const Size2d img(s.image_size);
    MAEOptions o;
    if (s.preset == "mnist") {
      o = MAEOptions::mnist();
      o.encoder().img_size(img).patch_size(s.patch_size);
    } else if (s.preset == "tiny") {
      o = MAEOptions::vit_tiny(img, s.patch_size);
    } else if (s.preset == "small") {
      o = MAEOptions::vit_small(img, s.patch_size);
    } else {
      o = MAEOptions::vit_base(img, s.patch_size);
    }
    o.encoder(s.sized(o.encoder()));
    o.encoder().in_chans(s.in_chans);
    return o.norm_pix_loss(s.norm_pix);
  }

  // The default mask strategy of the kind, as a spec string: MAE's 75% of patches; SimMIM's 60% of cells
  // twice the patch (32 px for patch 16). On the 28 x 28 preset a 14 px cell is a quarter of the image;
  // cells of one patch (7 px) measured better there (docs/results.md).
  std::string default_mask_spec() const {
    ModelSpec s = *this;
    s.resolve();
    if (s.kind == "mae") return "mae:ratio=0.75";
    const int64_t cell = s.preset == "mnist" ? s.patch_size : 2 * s.patch_size;
    return "simmim:ratio=0.6,mask_patch=" + std::to_string(cell);
  }

  // The encoder alone, as the pretraining model of `kind` builds it (MAE's has no mask token; a distilled
  // student is SimMIM's encoder).
  VisionTransformerOptions encoder_options() const {
    ModelSpec s = *this;
    s.resolve();
    if (s.kind == "mae") return VisionTransformerOptions(mae_options().encoder()).mask_token(false);
    return simmim_options().encoder();
  }
};

// The model spec a pretraining checkpoint stores in its metadata ("model").
inline ModelSpec checkpoint_model_spec(const std::string& path) {
  constexpr const char* api = "simmim::checkpoint_model_spec";
  const std::string meta = read_checkpoint_info(path).second;
  const auto j = nlohmann::json::parse(meta, nullptr, /*allow_exceptions=*/false);
  SIMMIM_CHECK(j.is_object() && j.contains("model"), api, "the checkpoint's metadata",
               "a JSON object with a \"model\" description (written by simmim::pretrain)", "'" + path + "'");
  return ModelSpec::from_json(j.at("model"));
}

// The pretrained encoder of a checkpoint written by simmim::pretrain, rebuilt from its model spec and
// loaded (on the CPU). drop_path: stochastic depth for fine-tuning (it has no weights).
inline VisionTransformer load_pretrained_encoder(const std::string& path, double drop_path = 0.0) {
  const ModelSpec spec = checkpoint_model_spec(path);
  VisionTransformer encoder(spec.encoder_options().drop_path_rate(drop_path));
  load_module_from_checkpoint(path, *encoder, "encoder");
  return encoder;
}

// A pretraining model rebuilt from a checkpoint of simmim::pretrain: the one of its kind that is set.
struct PretrainModel {
  ModelSpec spec;
  Size2d image_size;  // the size it is built for (its position tables fit this size)
  SimMIM simmim{nullptr};
  MAE mae{nullptr};

  torch::nn::Module& module() const {
    if (simmim.is_empty()) return *mae.ptr();
    return *simmim.ptr();
  }
  // The model as simmim::inpaint takes it (refuses an MAE trained with norm_pix_loss).
  InpaintModel inpaint_model() {
    return simmim.is_empty() ? ::simmim::inpaint_model(mae) : ::simmim::inpaint_model(simmim);
  }
};

// The pretraining model of a checkpoint written by simmim::pretrain (its metadata's model description), loaded,
// on `device`. image_size Size2d(0): the training size; another size (any H x W the patch divides): the
// model is built for it and the trained weights fitted by adapt_to_grid (position tables resampled).
inline PretrainModel load_pretrain_model(const std::string& path, Size2d image_size = Size2d(0),
                                         c10::Device device = c10::Device(c10::kCPU)) {
  constexpr const char* api = "simmim::load_pretrain_model";
  PretrainModel m;
  m.spec = checkpoint_model_spec(path);
  SIMMIM_CHECK(m.spec.kind != "distill", api, "path",
               "a SimMIM or MAE checkpoint (a Distiller's predicts its teacher's features, not pixels; its "
               "student encoder loads with load_pretrained_encoder)",
               "'" + path + "' of kind distill");
  SIMMIM_CHECK(m.spec.norm_pix_recorded, api, "path",
               "an MAE checkpoint whose model description records \"norm_pix\" (true or false)",
               "'" + path + "', which does not (written before simmim recorded it)");
  const Size2d trained(m.spec.image_size);
  m.image_size = image_size.h == 0 && image_size.w == 0 ? trained : image_size;
  const int64_t p = m.spec.patch_size;
  SIMMIM_CHECK_VALUE(m.image_size.h > 0 && m.image_size.w > 0 && m.image_size.h % p == 0 && m.image_size.w % p == 0,
                     api, "image_size", "a size whose sides the model's patch " + std::to_string(p) + " divides",
                     m.image_size);
  const auto build = [&](Size2d size) {
    PretrainModel b;
    if (m.spec.kind == "mae") {
      MAEOptions o = m.spec.mae_options();
      o.encoder().img_size(size);
      b.mae = MAE(o);
    } else {
      SimMIMOptions o = m.spec.simmim_options();
      o.encoder().img_size(size);
      b.simmim = SimMIM(o);
    }
    return b;
  };
  PretrainModel at_trained = build(trained);
  load_module_from_checkpoint(path, at_trained.module());
  if (m.image_size == trained) {
    m.simmim = at_trained.simmim;
    m.mae = at_trained.mae;
  } else {
    PretrainModel resized = build(m.image_size);
    const Size2d src(trained.h / p, trained.w / p), dst(m.image_size.h / p, m.image_size.w / p);
    load_module_tensors(resized.module(), adapt_to_grid(module_tensors(at_trained.module()), resized.module(), src, dst),
                        LoadWeightsOptions(), "'" + path + "' fitted to " + c10::str(m.image_size), api);
    m.simmim = resized.simmim;
    m.mae = resized.mae;
  }
  m.module().to(device);
  m.module().eval();
  return m;
}

// The per-channel normalization a pretraining checkpoint's model was trained with (its metadata's
// "normalization", written by simmim::pretrain): {mean, std}.
inline std::pair<std::vector<double>, std::vector<double>> checkpoint_normalization(const std::string& path) {
  constexpr const char* api = "simmim::checkpoint_normalization";
  const auto j = nlohmann::json::parse(read_checkpoint_info(path).second, nullptr, /*allow_exceptions=*/false);
  const bool ok = j.is_object() && j.contains("normalization") && j["normalization"].is_object() &&
                  j["normalization"].contains("mean") && j["normalization"].contains("std") &&
                  j["normalization"]["mean"].is_array() && j["normalization"]["std"].is_array() &&
                  !j["normalization"]["mean"].empty() &&
                  j["normalization"]["mean"].size() == j["normalization"]["std"].size();
  SIMMIM_CHECK(ok, api, "the checkpoint's metadata",
               "a \"normalization\" object with equal-length \"mean\" and \"std\" lists (written by simmim::pretrain)",
               "'" + path + "'");
  std::vector<double> mean, stddev;
  for (const char* key : {"mean", "std"}) {
    for (const auto& v : j["normalization"][key]) {
      SIMMIM_CHECK(v.is_number() && (key[0] == 'm' || v.get<double>() > 0), api, std::string("normalization.") + key,
                   key[0] == 'm' ? "numbers" : "positive numbers", "'" + path + "' has " + v.dump());
      (key[0] == 'm' ? mean : stddev).push_back(v.get<double>());
    }
  }
  return {mean, stddev};
}

SIMMIM_NAMESPACE_END
