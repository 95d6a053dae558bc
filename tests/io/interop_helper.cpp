// The C++ half of tests/io/interop_timm.py: exports a simmim ViT (timm names) with its features on fixed
// images, loads timm's weights strictly and computes features on timm's images, copies safetensors files and
// resamples position tables, so that the Python side can compare each against timm and Python's safetensors.
//   interop_helper export   DIR CONFIG   -> DIR/simmim_vit.safetensors, DIR/simmim_features.safetensors
//   interop_helper import   DIR CONFIG   DIR/timm_vit.safetensors, DIR/timm_features.safetensors ->
//                                        DIR/simmim_from_timm.safetensors
//   interop_helper copy     IN OUT
//   interop_helper resample IN OUT SRC_H SRC_W DST_H DST_W PREFIX   (the tensor "pos_embed")
//   interop_helper encoder  KIND DIR     -> DIR/KIND.safetensors (weights under simmim's own names, which are
//                                        timm's), DIR/KIND_features.safetensors; KIND: resnet_basic,
//                                        resnet_bottleneck, convnext, swin (the small configs of interop_timm.py)
//   interop_helper beit     DIR VARIANT  -> DIR/simmim_beit.safetensors (BEiT's names, without the relative
//                                        position indices timm does not save), DIR/simmim_beit_features.safetensors
//   interop_helper beit_import DIR VARIANT  DIR/timm_beit.safetensors, DIR/timm_features.safetensors ->
//                                        DIR/simmim_from_beit.safetensors
//                                        VARIANT: block (absolute positions, a relative position bias per block)
//                                        or shared (no absolute positions, one shared bias: the official SimMIM
//                                        ViT-B recipe), both 32 x 48, patch 8, 64 wide, depth 2, LayerScale 0.1
//   interop_helper rpb      IN OUT SRC_H SRC_W DST_H DST_W   (the tensor "table": resize_rel_pos_bias_table)
// CONFIG: "H,W,patch,dim,depth,heads,in_chans,cls_token,layer_scale,qkv_bias".
#include <torch/torch.h>

#include <cstdio>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "simmim/encoder/convnext.hpp"
#include "simmim/encoder/resnet.hpp"
#include "simmim/encoder/swin.hpp"
#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/io/adapt_weights.hpp"
#include "simmim/io/module_weights.hpp"

namespace {

simmim::VisionTransformerOptions parse_config(const std::string& text) {
  std::vector<double> v;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) v.push_back(std::stod(item));
  TORCH_CHECK(v.size() == 10, "interop_helper: CONFIG must have 10 fields; got '", text, "'");
  const auto i = [&](size_t k) { return static_cast<int64_t>(v[k]); };
  return simmim::VisionTransformerOptions(simmim::Size2d(i(0), i(1)), i(2), i(3), i(4), i(5))
      .in_chans(i(6))
      .cls_token(v[7] != 0)
      .pool(simmim::FeaturePool::kMean)
      .layer_scale_init(v[8])
      .qkv_bias(v[9] != 0);
}

// The official SimMIM / BEiT flavour of the ViT (see the usage above).
simmim::VisionTransformerOptions beit_options(const std::string& variant) {
  TORCH_CHECK(variant == "block" || variant == "shared", "interop_helper: VARIANT must be block or shared; got '",
              variant, "'");
  auto o = simmim::VisionTransformerOptions(simmim::Size2d(32, 48), 8, 64, 2, 4)
               .key_bias(false)
               .layer_scale_init(0.1)
               .pool(simmim::FeaturePool::kMean);
  if (variant == "block") return o.rel_pos_bias(simmim::RelPosBias::kPerBlock);
  return o.rel_pos_bias(simmim::RelPosBias::kShared).pos_embed(simmim::PosEmbedKind::kNone);
}

// A small encoder of each kind, its weights moved off their init (BatchNorm statistics included), its
// weights without what timm does not save (our mask token; Swin's index and mask buffers, which timm keeps
// out of its state dict), and its stride-32 features on fixed images in eval mode.
void export_encoder(const std::string& kind, const std::string& dir) {
  torch::manual_seed(13);
  std::shared_ptr<torch::nn::Module> module;
  std::function<at::Tensor(const at::Tensor&)> features;
  int64_t chans = 3, h = 64, w = 96;
  if (kind == "resnet_basic" || kind == "resnet_bottleneck") {
    simmim::ResNet m(simmim::ResNetOptions({1, 2, 1, 1}, kind == "resnet_bottleneck").in_chans(chans));  // timm: 64-wide stem
    module = m.ptr();
    features = [m](const at::Tensor& x) mutable { return m->forward(x); };
  } else if (kind == "convnext") {
    chans = 4;
    simmim::ConvNeXt m(simmim::ConvNeXtOptions({1, 2, 1, 1}, {16, 24, 32, 40}).in_chans(chans));
    module = m.ptr();
    features = [m](const at::Tensor& x) mutable { return m->forward(x); };
  } else if (kind == "swin") {
    simmim::SwinTransformer m(simmim::SwinOptions({h, w}, 7, 16, {1, 2, 1, 1}, {1, 2, 2, 4}));
    module = m.ptr();
    features = [m](const at::Tensor& x) mutable { return m->forward(x); };
  } else {
    TORCH_CHECK(false, "interop_helper encoder: unknown KIND '", kind, "'");
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& p : module->parameters()) p.add_(torch::randn_like(p) * 0.05);
    for (auto& b : module->named_buffers()) {
      if (b.key().find("running_") != std::string::npos) b.value().add_(torch::rand_like(b.value()) * 0.5);
    }
  }
  module->eval();
  simmim::TensorMap weights;
  for (auto& [name, t] : simmim::module_tensors(*module)) {
    if (name.find("mask_token") != std::string::npos || name.find("relative_position_index") != std::string::npos ||
        name.find("attn_mask") != std::string::npos) {
      continue;
    }
    weights.emplace(name, t.contiguous());
  }
  simmim::save_safetensors(dir + "/" + kind + ".safetensors", weights);
  const auto images = torch::randn({2, chans, h, w});
  torch::NoGradGuard no_grad;
  simmim::save_safetensors(dir + "/" + kind + "_features.safetensors", {{"images", images}, {"features", features(images)}});
}

int run(const std::vector<std::string>& a) {
  if (a.size() == 3 && a[0] == "encoder") {
    export_encoder(a[1], a[2]);
    return 0;
  }
  if (a.size() == 3 && a[0] == "export") {
    torch::manual_seed(11);
    simmim::VisionTransformer vit(parse_config(a[2]));
    {
      // Away from the init's zeros and ones, so that a bias or a norm mapped wrongly shows.
      torch::NoGradGuard no_grad;
      for (auto& p : vit->parameters()) p.add_(torch::randn_like(p) * 0.05);
    }
    vit->eval();
    const auto& o = vit->options;
    const auto images = torch::randn({3, o.in_chans(), o.img_size().h, o.img_size().w});
    simmim::save_module_safetensors(*vit, a[1] + "/simmim_vit.safetensors", simmim::NameMap::timm_vit());
    torch::NoGradGuard no_grad;
    simmim::save_safetensors(a[1] + "/simmim_features.safetensors", {{"images", images}, {"tokens", vit->forward(images)}});
    return 0;
  }
  if (a.size() == 3 && a[0] == "import") {
    simmim::VisionTransformer vit(parse_config(a[2]));
    vit->eval();
    const auto report = simmim::load_module_safetensors(*vit, a[1] + "/timm_vit.safetensors", simmim::NameMap::timm_vit());
    std::printf("interop_helper import: %s\n", report.summary().c_str());
    const auto in = simmim::load_safetensors(a[1] + "/timm_features.safetensors");
    torch::NoGradGuard no_grad;
    simmim::save_safetensors(a[1] + "/simmim_from_timm.safetensors", {{"tokens", vit->forward(in.tensors.at("images"))}});
    return 0;
  }
  if (a.size() == 3 && a[0] == "beit") {
    torch::manual_seed(17);
    simmim::VisionTransformer vit(beit_options(a[2]));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : vit->parameters()) p.add_(torch::randn_like(p) * 0.05);
    }
    vit->eval();
    simmim::TensorMap weights;
    for (auto& [name, t] : simmim::module_tensors(*vit, simmim::NameMap::beit()))
      if (name.find("relative_position_index") == std::string::npos && name != "mask_token") weights.emplace(name, t);
    simmim::save_safetensors(a[1] + "/simmim_beit.safetensors", weights);
    const auto images = torch::randn({3, 3, 32, 48});
    torch::NoGradGuard no_grad;
    simmim::save_safetensors(a[1] + "/simmim_beit_features.safetensors", {{"images", images}, {"tokens", vit->forward(images)}});
    return 0;
  }
  if (a.size() == 3 && a[0] == "beit_import") {
    simmim::VisionTransformer vit(beit_options(a[2]));
    vit->eval();
    // timm's file lacks the relative position indices (fixed by the geometry) and has no mask token: the
    // report must list exactly those, nothing unexpected or mismatched.
    const auto report = simmim::load_module_safetensors(
        *vit, a[1] + "/timm_beit.safetensors", simmim::LoadWeightsOptions(simmim::NameMap::beit()).strict(false));
    std::printf("interop_helper beit_import: %s\n", report.summary().c_str());
    bool only_fixed = report.unexpected.empty() && report.mismatched.empty();
    for (const auto& m : report.missing)
      only_fixed = only_fixed && (m.find("relative_position_index") != std::string::npos || m.find("mask_token") != std::string::npos);
    TORCH_CHECK(only_fixed, "interop_helper beit_import: more than the fixed indices and the mask token differ: ", report.summary());
    const auto in = simmim::load_safetensors(a[1] + "/timm_features.safetensors");
    torch::NoGradGuard no_grad;
    simmim::save_safetensors(a[1] + "/simmim_from_beit.safetensors", {{"tokens", vit->forward(in.tensors.at("images"))}});
    return 0;
  }
  if (a.size() == 7 && a[0] == "rpb") {
    const auto c = simmim::load_safetensors(a[1]);
    const auto n = [&](size_t k) { return static_cast<int64_t>(std::stoll(a[k])); };
    simmim::save_safetensors(a[2], {{"table", simmim::resize_rel_pos_bias_table(c.tensors.at("table"), {n(3), n(4)},
                                                                                {n(5), n(6)})}});
    return 0;
  }
  if (a.size() == 3 && a[0] == "copy") {
    const auto c = simmim::load_safetensors(a[1]);
    simmim::save_safetensors(a[2], c.tensors, c.metadata);
    return 0;
  }
  if (a.size() == 8 && a[0] == "resample") {
    const auto c = simmim::load_safetensors(a[1]);
    const auto n = [&](size_t k) { return static_cast<int64_t>(std::stoll(a[k])); };
    simmim::save_safetensors(a[2], {{"pos_embed", simmim::resample_pos_embed(c.tensors.at("pos_embed"), {n(3), n(4)},
                                                                             {n(5), n(6)}, n(7))}});
    return 0;
  }
  std::fprintf(stderr, "usage: interop_helper export|import DIR CONFIG | beit|beit_import DIR VARIANT | copy IN OUT | "
                       "resample IN OUT SH SW DH DW P | rpb IN OUT SH SW DH DW | encoder KIND DIR\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    const auto* c10 = dynamic_cast<const c10::Error*>(&e);
    std::fprintf(stderr, "interop_helper: %s\n", c10 ? c10->what_without_backtrace() : e.what());
    return 1;
  }
}
