// Module weights under a naming: timm's and the official MAE's names both ways, the load report (strict
// throws listing every key, non-strict reports), and fitting weights to another grid or channel count.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <set>
#include <string>
#include <vector>

#include "../support/scratch_dir.hpp"
#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/io/adapt_weights.hpp"
#include "simmim/io/module_weights.hpp"
#include "simmim/model/mae_model.hpp"
#include "simmim/model/simmim_model.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::scratch_dir;

namespace {

simmim::VisionTransformer small_vit(bool layer_scale = true, int64_t chans = 3) {
  return simmim::VisionTransformer(simmim::VisionTransformerOptions(simmim::Size2d(16, 24), 8, 32, 2, 4)
                                       .in_chans(chans)
                                       .layer_scale_init(layer_scale ? 0.1 : 0.0));
}

std::set<std::string> keys(const simmim::TensorMap& m) {
  std::set<std::string> out;
  for (const auto& kv : m) out.insert(kv.first);
  return out;
}

}  // namespace

TEST_CASE("NameMap: simmim's ViT names are timm's but for pos, cls and the mask token", "[io][names]") {
  auto vit = small_vit();
  const auto timm = simmim::module_tensors(*vit, simmim::NameMap::timm_vit());
  std::set<std::string> expected = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
                                    "norm.weight", "norm.bias"};
  for (const std::string b : {"blocks.0.", "blocks.1."}) {
    for (const char* leaf : {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                             "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                             "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"})
      expected.insert(b + leaf);
  }
  REQUIRE(keys(timm) == expected);
  const auto map = simmim::NameMap::timm_vit();
  for (const auto& p : vit->named_parameters()) {
    INFO(p.key());
    const auto ext = map.to_external(p.key());
    if (p.key() == "mask_mixer.mask_token") {
      REQUIRE_FALSE(ext.has_value());
      continue;
    }
    REQUIRE(ext.has_value());
    REQUIRE(map.to_simmim(*ext) == p.key());
  }
  REQUIRE(map.to_external("pos.pos_embed") == std::string("pos_embed"));
  REQUIRE_FALSE(map.to_simmim("head.weight").has_value());
  REQUIRE(simmim::NameMap::identity().to_external("anything.at.all") == std::string("anything.at.all"));
  REQUIRE_THROWS_WITH(simmim::NameMap().rule("a.", "b"), ContainsSubstring("a prefix ending in '.'"));
}

TEST_CASE("load_module_safetensors: timm names round-trip, the mask token is reported as kept", "[io][names]") {
  torch::manual_seed(1);
  auto src = small_vit();
  torch::manual_seed(2);
  auto dst = small_vit();
  const auto dir = scratch_dir("weights_timm");
  const auto path = (dir / "vit.safetensors").string();
  simmim::save_module_safetensors(*src, path, simmim::NameMap::timm_vit(), {{"format", "pt"}});
  const auto token_before = dst->mask_mixer->mask_token.clone();
  const auto report = simmim::load_module_safetensors(*dst, path, simmim::NameMap::timm_vit());
  REQUIRE(report.ok());
  REQUIRE(report.unmapped == std::vector<std::string>{"mask_mixer.mask_token"});
  REQUIRE(report.loaded.size() == src->named_parameters().size() - 1);
  REQUIRE(torch::equal(dst->mask_mixer->mask_token, token_before));
  const auto x = torch::randn({2, 3, 16, 24});
  REQUIRE(torch::equal(src->forward(x), dst->forward(x)));
  REQUIRE_THAT(report.summary(), ContainsSubstring("1 without a name in this naming (kept): mask_mixer.mask_token"));
}

TEST_CASE("load_module_safetensors: strict lists every bad key and changes nothing; non-strict reports",
          "[io][names]") {
  torch::manual_seed(1);
  auto src = small_vit();
  auto tensors = simmim::module_tensors(*src, simmim::NameMap::timm_vit());
  tensors.erase("blocks.1.mlp.fc2.bias");
  tensors.erase("cls_token");
  tensors["head.weight"] = torch::zeros({10, 32});
  tensors["pos_embed"] = torch::zeros({1, 13, 32});
  const auto path = (scratch_dir("weights_strict") / "bad.safetensors").string();
  simmim::save_safetensors(path, tensors);

  torch::manual_seed(2);
  auto dst = small_vit();
  const auto before = simmim::module_tensors(*dst);
  try {
    simmim::load_module_safetensors(*dst, path, simmim::NameMap::timm_vit());
    FAIL("a strict load of a bad file must throw");
  } catch (const c10::Error& e) {
    const std::string m = e.what_without_backtrace();
    CHECK_THAT(m, ContainsSubstring("simmim::load_module_safetensors: '" + path + "' must be weights whose names"));
    CHECK_THAT(m, ContainsSubstring("2 missing: blocks.1.mlp.fc2.bias, cls_token (pos.cls_token)"));
    CHECK_THAT(m, ContainsSubstring("1 unexpected: head.weight"));
    CHECK_THAT(m, ContainsSubstring("1 shape-mismatched: pos_embed (pos.pos_embed): file [1, 13, 32], module [1, 7, 32]"));
  }
  for (const auto& [name, t] : simmim::module_tensors(*dst)) REQUIRE(torch::equal(t, before.at(name)));

  const auto report =
      simmim::load_module_safetensors(*dst, path, simmim::LoadWeightsOptions(simmim::NameMap::timm_vit()).strict(false));
  REQUIRE_FALSE(report.ok());
  REQUIRE(report.missing.size() == 2);
  REQUIRE(report.unexpected == std::vector<std::string>{"head.weight"});
  REQUIRE(report.mismatched.size() == 1);
  REQUIRE(torch::equal(dst->norm->weight, src->norm->weight));             // loaded
  REQUIRE(torch::equal(dst->pos->pos_embed, before.at("pos.pos_embed")));  // left as it was
  // simmim's own names into a timm-named file: nothing matches, and the report says so.
  auto fresh = small_vit();
  REQUIRE_THROWS_WITH(simmim::load_module_safetensors(*fresh, path),
                      ContainsSubstring("mask_mixer.mask_token, pos.cls_token, pos.pos_embed; 2 unexpected: head.weight, "
                                        "pos_embed"));
}

TEST_CASE("NameMap::mae: the official MAE names of encoder, decoder and mask token", "[io][names]") {
  torch::manual_seed(4);
  auto opts = simmim::MAEOptions(simmim::MAEOptions::mae_encoder(simmim::VisionTransformerOptions(simmim::Size2d(16), 8, 32, 1, 4)))
                  .decoder_embed_dim(16)
                  .decoder_depth(1)
                  .decoder_num_heads(2);
  simmim::MAE src(opts);
  const auto t = simmim::module_tensors(*src, simmim::NameMap::mae());
  for (const char* name : {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
                           "norm.bias", "decoder_embed.weight", "mask_token", "decoder_pos_embed",
                           "decoder_blocks.0.mlp.fc1.weight", "decoder_norm.weight", "decoder_pred.bias"}) {
    INFO(name);
    REQUIRE(t.count(name) == 1);
  }
  REQUIRE(t.size() == simmim::module_tensors(*src).size());  // every entry has an MAE name
  torch::manual_seed(5);
  simmim::MAE dst(opts);
  const auto report = simmim::load_module_tensors(*dst, t, simmim::NameMap::mae());
  REQUIRE(report.ok());
  REQUIRE(report.unmapped.empty());
  REQUIRE(torch::equal(dst->decoder->mask_token, src->decoder->mask_token));
}

TEST_CASE("NameMap::simmim_official: the official SimMIM checkpoint's names, every entry, both ways", "[io][names]") {
  // The official ViT-B recipe's layout, small: shared relative position bias, no absolute positions, q/v
  // biases, LayerScale; the names its checkpoint's "model" state dict has (models/simmim.py and
  // models/vision_transformer.py of the official repository: a BEiT-style ViT under "encoder.", the
  // PixelShuffle decoder as "decoder.0").
  const auto opts = simmim::SimMIMOptions(simmim::VisionTransformerOptions(simmim::Size2d(32), 8, 32, 2, 4)
                                              .pos_embed(simmim::PosEmbedKind::kNone)
                                              .rel_pos_bias(simmim::RelPosBias::kShared)
                                              .key_bias(false)
                                              .layer_scale_init(0.1));
  torch::manual_seed(6);
  simmim::SimMIM src(opts);
  const auto t = simmim::module_tensors(*src, simmim::NameMap::simmim_official());
  std::set<std::string> expected = {"encoder.cls_token", "encoder.mask_token", "encoder.patch_embed.proj.weight",
                                    "encoder.patch_embed.proj.bias", "encoder.rel_pos_bias.relative_position_bias_table",
                                    "encoder.rel_pos_bias.relative_position_index", "encoder.norm.weight",
                                    "encoder.norm.bias", "decoder.0.weight", "decoder.0.bias"};
  for (int i = 0; i < 2; ++i) {
    const std::string b = "encoder.blocks." + std::to_string(i) + ".";
    for (const char* leaf : {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.q_bias", "attn.v_bias",
                             "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                             "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "gamma_1", "gamma_2"})
      expected.insert(b + leaf);
  }
  REQUIRE(keys(t) == expected);
  REQUIRE(t.at("encoder.rel_pos_bias.relative_position_bias_table").sizes() == torch::IntArrayRef({7 * 7 + 3, 4}));
  torch::manual_seed(7);
  simmim::SimMIM dst(opts);
  const auto report = simmim::load_module_tensors(*dst, t, simmim::NameMap::simmim_official());
  REQUIRE(report.ok());
  REQUIRE(report.unmapped.empty());
  for (const auto& [name, value] : simmim::module_tensors(*src)) {
    INFO(name);
    REQUIRE(torch::equal(simmim::module_tensors(*dst).at(name), value));
  }
  // Patterns: one '*' per dotted component, in order; an exact rule wins over a pattern.
  const auto m = simmim::NameMap().rule("a.*.b.*.c", "x.*.*.y").rule("a.1.b.2.c", "exact").rule("a.", "p.");
  REQUIRE(m.to_external("a.7.b.q.c").value() == "x.7.q.y");
  REQUIRE(m.to_simmim("x.7.q.y").value() == "a.7.b.q.c");
  REQUIRE(m.to_external("a.1.b.2.c").value() == "exact");
  REQUIRE(m.to_external("a.7.b.q.d").value() == "p.7.b.q.d");  // no pattern match: the prefix
  REQUIRE_THROWS_WITH(simmim::NameMap().rule("a.*.b", "x.y"), ContainsSubstring("the same number of '*'"));
  REQUIRE_THROWS_WITH(simmim::NameMap().rule("a.b*.c", "x.*.c"), ContainsSubstring("each a whole dotted component"));
}

TEST_CASE("resize_rel_pos_bias_table and adapt_to_grid: tables fitted to another grid", "[io][adapt]") {
  const at::Tensor table = torch::randn({7 * 7 + 3, 4});
  REQUIRE(simmim::resize_rel_pos_bias_table(table, simmim::Size2d(4), simmim::Size2d(4)).is_same(table));
  const at::Tensor resized = simmim::resize_rel_pos_bias_table(table, simmim::Size2d(4), simmim::Size2d(5, 3));
  REQUIRE(resized.sizes() == torch::IntArrayRef({9 * 5 + 3, 4}));
  REQUIRE(torch::equal(resized.narrow(0, 45, 3), table.narrow(0, 49, 3)));  // the CLS rows kept
  const at::Tensor constant = torch::full({7 * 7, 2}, 0.25);  // a constant table stays constant
  REQUIRE(torch::allclose(simmim::resize_rel_pos_bias_table(constant, simmim::Size2d(4), simmim::Size2d(6)),
                          torch::full({11 * 11, 2}, 0.25), 1e-6, 1e-6));
  REQUIRE_THROWS_WITH(simmim::resize_rel_pos_bias_table(torch::randn({50, 4}), simmim::Size2d(4), simmim::Size2d(5)),
                      ContainsSubstring("with E = 0 or 3 for the src grid 4x4 (49 or 52 rows)"));

  // A ViT with absolute positions and per-block tables, fitted from a 4 x 4 to a 5 x 6 grid: loads strictly.
  const auto vit_at = [](simmim::Size2d size) {
    return simmim::VisionTransformer(simmim::VisionTransformerOptions(size, 8, 32, 2, 4)
                                         .rel_pos_bias(simmim::RelPosBias::kPerBlock)
                                         .key_bias(false));
  };
  torch::manual_seed(8);
  auto small = vit_at(simmim::Size2d(32));
  auto large = vit_at(simmim::Size2d(40, 48));
  const auto fitted = simmim::adapt_to_grid(simmim::module_tensors(*small), *large, simmim::Size2d(4), simmim::Size2d(5, 6));
  REQUIRE(simmim::load_module_tensors(*large, fitted).ok());
  REQUIRE(torch::equal(large->pos->pos_embed,
                       simmim::resample_pos_embed(small->pos->pos_embed, simmim::Size2d(4), simmim::Size2d(5, 6), 1)));
  const std::string table_name = "blocks.1.attn.relative_position_bias_table";
  REQUIRE(torch::equal(simmim::module_tensors(*large).at(table_name),
                       simmim::resize_rel_pos_bias_table(simmim::module_tensors(*small).at(table_name), simmim::Size2d(4),
                                                         simmim::Size2d(5, 6))));
  REQUIRE(torch::equal(simmim::module_tensors(*large).at("blocks.0.attn.relative_position_index"),
                       simmim::relative_position_index(simmim::Size2d(5, 6), true)));
  REQUIRE(torch::equal(simmim::module_tensors(*large).at("blocks.0.mlp.fc1.weight"),
                       simmim::module_tensors(*small).at("blocks.0.mlp.fc1.weight")));
}

TEST_CASE("resample_pos_embed: prefix kept, constants preserved, non-square grids, dtype kept", "[io][adapt]") {
  torch::manual_seed(6);
  const auto table = torch::randn({1, 1 + 3 * 4, 8});
  const auto same = simmim::resample_pos_embed(table, {3, 4}, {3, 4});
  REQUIRE(same.is_same(table));
  const auto r = simmim::resample_pos_embed(table, {3, 4}, {5, 7});
  REQUIRE(r.sizes() == torch::IntArrayRef({1, 1 + 35, 8}));
  REQUIRE(torch::equal(r.narrow(1, 0, 1), table.narrow(1, 0, 1)));
  // A table constant over the grid stays constant (bicubic weights sum to 1).
  const auto flat = torch::cat({torch::zeros({1, 2, 4}), torch::full({1, 6, 4}, 0.25)}, 1);
  const auto up = simmim::resample_pos_embed(flat, {2, 3}, {4, 5}, 2);
  REQUIRE(torch::allclose(up.narrow(1, 2, 20), torch::full({1, 20, 4}, 0.25), 0, 1e-6));
  REQUIRE(torch::equal(up.narrow(1, 0, 2), torch::zeros({1, 2, 4})));
  // A row pattern stays a row pattern: resampling only the columns keeps each row's value.
  const auto rows = torch::arange(3, torch::kFloat).view({1, 3, 1, 1}).expand({1, 3, 4, 2}).reshape({1, 12, 2});
  const auto wide = simmim::resample_pos_embed(rows, {3, 4}, {3, 9}, 0);
  REQUIRE(torch::allclose(wide.view({3, 9, 2}).select(1, 5), torch::arange(3, torch::kFloat).view({3, 1}).expand({3, 2})));
  REQUIRE(simmim::resample_pos_embed(table.to(torch::kBFloat16), {3, 4}, {2, 2}).scalar_type() == torch::kBFloat16);
  REQUIRE_THROWS_WITH(simmim::resample_pos_embed(table, {4, 4}, {2, 2}),
                      ContainsSubstring("src grid 4x4 (17 rows); got Float tensor [1, 13, 8]"));
}

TEST_CASE("inflate_patch_embed: 3 channels to C keeps the response to gray images", "[io][adapt]") {
  torch::manual_seed(7);
  const auto w = torch::randn({6, 3, 4, 4});
  REQUIRE(torch::allclose(simmim::inflate_patch_embed(w, 1), w.sum(1, true)));
  REQUIRE(simmim::inflate_patch_embed(w, 3).is_same(w));
  for (int64_t C : {1, 2, 5}) {
    INFO(C);
    const auto wc = simmim::inflate_patch_embed(w, C);
    REQUIRE(wc.sizes() == torch::IntArrayRef({6, C, 4, 4}));
    const auto gray = torch::randn({2, 1, 8, 8});
    const auto a = torch::conv2d(gray.expand({2, 3, 8, 8}), w, {}, 4);
    const auto b = torch::conv2d(gray.expand({2, C, 8, 8}), wc, {}, 4);
    REQUIRE(torch::allclose(a, b, 1e-5, 1e-5));
  }
  // Loading an RGB ViT into a one-channel one: inflate, then the strict load passes.
  torch::manual_seed(8);
  auto rgb = small_vit(false, 3);
  auto one = small_vit(false, 1);
  auto t = simmim::module_tensors(*rgb, simmim::NameMap::timm_vit());
  REQUIRE_THROWS_WITH(simmim::load_module_tensors(*one, t, simmim::NameMap::timm_vit()),
                      ContainsSubstring("patch_embed.proj.weight: file [32, 3, 8, 8], module [32, 1, 8, 8]"));
  t["patch_embed.proj.weight"] = simmim::inflate_patch_embed(t["patch_embed.proj.weight"], 1);
  REQUIRE(simmim::load_module_tensors(*one, t, simmim::NameMap::timm_vit()).ok());
  REQUIRE_THROWS_WITH(simmim::inflate_patch_embed(torch::zeros({3, 3}), 1), ContainsSubstring("[D, S, p, p]"));
}
