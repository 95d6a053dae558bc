#pragma once
// Renaming between simmim's parameter and buffer names and another codebase's (timm, the official MAE and
// SimMIM, BEiT), both ways. A map is a list of rules, each an exact name, a pattern whose '*' components
// stand for any one dotted component ("blocks.*.ls1.gamma" <-> "blocks.*.gamma_1"), or a prefix (ending in
// '.'); a name no rule covers has no counterpart (simmim's SimMIM mask token in a timm ViT, for one), which
// loading reports rather than hides.

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Optional.h>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

class NameMap {
 public:
  // One rule: `simmim` <-> `external`. Both exact names; both patterns with the same number of '*'
  // components (each '*' is one whole dotted component, matched in order); or both prefixes ending in '.'
  // (or an empty external prefix: the external names are simmim's without the prefix). An exact rule wins
  // over a pattern, a pattern over a prefix, a longer prefix over a shorter one.
  NameMap& rule(std::string simmim, std::string external) {
    constexpr const char* api = "simmim::NameMap::rule";
    const bool prefix = !simmim.empty() && simmim.back() == '.';
    SIMMIM_CHECK_VALUE(!simmim.empty(), api, "simmim", "a name or a prefix ending in '.'", "an empty string");
    SIMMIM_CHECK_VALUE(prefix ? (external.empty() || external.back() == '.') : !external.empty(), api, "external",
                       prefix ? "a prefix ending in '.' (or empty), as the simmim side is a prefix"
                              : "a non-empty name, as the simmim side is an exact name",
                       "'" + external + "' for '" + simmim + "'");
    // '*' components of a name, or -1 when a '*' is part of a longer component.
    const auto stars = [](const std::string& n) {
      int64_t whole = 0;
      for (const auto& part : split(n)) {
        if (part == "*") ++whole;
      }
      const auto all = static_cast<int64_t>(std::count(n.begin(), n.end(), '*'));
      return all == whole ? whole : int64_t{-1};
    };
    const int64_t ks = stars(simmim), ke = stars(external);
    SIMMIM_CHECK_VALUE(ks >= 0 && ks == ke && (ks == 0 || !prefix), api, "simmim / external",
                       "names with the same number of '*', each a whole dotted component (no '*' in prefixes)",
                       "'" + simmim + "' / '" + external + "'");
    rules_.push_back({std::move(simmim), std::move(external), prefix, ks > 0});
    return *this;
  }

  // simmim's own names: every name maps to itself.
  static NameMap identity() { return NameMap().rule_all(); }

  // simmim's VisionTransformer <-> timm's VisionTransformer (timm.models.vision_transformer): the same
  // names but for the position table and the CLS token, which simmim keeps in its "pos" submodule. The SimMIM
  // mask token ("mask_mixer.mask_token") has no timm name. Layouts are the same (PyTorch's Linear, Conv2d and
  // LayerNorm on both sides; timm's LayerScale is "ls1.gamma" as here), so no tensor is reshaped.
  static NameMap timm_vit() { return NameMap().vit_rules("", ""); }

  // simmim's MAE model <-> the official MAE's MaskedAutoencoderViT (models_mae.py): the encoder's names are
  // timm's, the decoder's carry a "decoder_" prefix, and the decoder's mask token is "mask_token".
  static NameMap mae() {
    NameMap m;
    m.vit_rules("encoder.", "");
    m.rule("decoder.embed.", "decoder_embed.")
        .rule("decoder.mask_token", "mask_token")
        .rule("decoder.pos_embed", "decoder_pos_embed")
        .rule("decoder.blocks.", "decoder_blocks.")
        .rule("decoder.norm.", "decoder_norm.")
        .rule("decoder.pred.", "decoder_pred.");
    return m;
  }

  // simmim's VisionTransformer in the official SimMIM / BEiT layout (q/v-only biases, relative position
  // bias per block or shared, LayerScale) <-> BEiT's names, which the official SimMIM ViT (its
  // models/vision_transformer.py) and timm's Beit share: LayerScale is "blocks.<i>.gamma_1" / "gamma_2"
  // there ("ls1.gamma" / "ls2.gamma" here), the mask token
  // "mask_token", the shared table "rel_pos_bias.*"; the rest as timm_vit(). timm's Beit does not save
  // its relative_position_index buffers (non-persistent); the official checkpoints do.
  static NameMap beit() { return NameMap().beit_rules("", ""); }

  // simmim's SimMIM model with such a ViT <-> the official SimMIM checkpoint's "model" state dict
  // (simmim_pretrain__vit_base__img224): the encoder under "encoder." as in beit(), the mask token
  // "encoder.mask_token", and the 1x1-conv head of the PixelShuffle decoder "decoder.0.*" ("head.conv.*").
  static NameMap simmim_official() {
    NameMap m;
    m.beit_rules("encoder.", "encoder.");
    m.rule("head.conv.weight", "decoder.0.weight").rule("head.conv.bias", "decoder.0.bias");
    return m;
  }

  // The external name of a simmim name (none when no rule covers it).
  c10::optional<std::string> to_external(const std::string& name) const { return translate(name, true); }
  // The simmim name of an external name (none when no rule covers it).
  c10::optional<std::string> to_simmim(const std::string& name) const { return translate(name, false); }

 private:
  struct Rule {
    std::string simmim, external;
    bool prefix;
    bool pattern = false;
  };

  static std::vector<std::string> split(const std::string& name) {
    std::vector<std::string> parts;
    size_t start = 0;
    while (true) {
      const size_t dot = name.find('.', start);
      parts.push_back(name.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) return parts;
      start = dot + 1;
    }
  }

  // `name` against pattern `from` ('*' components match any one component): the other side `to` with the
  // matched components put in order, or none.
  static c10::optional<std::string> match_pattern(const std::string& name, const std::string& from, const std::string& to) {
    const auto parts = split(name), want = split(from);
    if (parts.size() != want.size()) return c10::nullopt;
    std::vector<std::string> caught;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (want[i] == "*") {
        if (parts[i].empty()) return c10::nullopt;
        caught.push_back(parts[i]);
      } else if (want[i] != parts[i]) {
        return c10::nullopt;
      }
    }
    std::string out;
    size_t next = 0;
    const auto target = split(to);
    for (size_t i = 0; i < target.size(); ++i) {
      if (i > 0) out += '.';
      out += target[i] == "*" ? caught[next++] : target[i];
    }
    return out;
  }

  NameMap& rule_all() {
    rules_.push_back({"", "", true});
    return *this;
  }

  // A ViT's rules with its simmim names under `sp` and the external ones under `ep`.
  NameMap& vit_rules(const std::string& sp, const std::string& ep) {
    rule(sp + "pos.pos_embed", ep + "pos_embed");
    rule(sp + "pos.cls_token", ep + "cls_token");
    for (const char* part : {"patch_embed.", "blocks.", "norm."}) rule(sp + part, ep + part);
    return *this;
  }

  NameMap& beit_rules(const std::string& sp, const std::string& ep) {
    vit_rules(sp, ep);
    rule(sp + "mask_mixer.mask_token", ep + "mask_token");
    rule(sp + "rel_pos_bias.", ep + "rel_pos_bias.");
    rule(sp + "blocks.*.ls1.gamma", ep + "blocks.*.gamma_1");
    rule(sp + "blocks.*.ls2.gamma", ep + "blocks.*.gamma_2");
    return *this;
  }

  // An exact rule wins over a pattern, a pattern over a prefix; among prefixes the longest wins.
  c10::optional<std::string> translate(const std::string& name, bool forward) const {
    for (const auto& r : rules_) {
      if (!r.prefix && !r.pattern && name == (forward ? r.simmim : r.external)) return forward ? r.external : r.simmim;
    }
    for (const auto& r : rules_) {
      if (!r.pattern) continue;
      if (auto hit = forward ? match_pattern(name, r.simmim, r.external) : match_pattern(name, r.external, r.simmim)) {
        return hit;
      }
    }
    const Rule* best = nullptr;
    size_t best_len = 0;
    for (const auto& r : rules_) {
      const std::string& from = forward ? r.simmim : r.external;
      if (!r.prefix) continue;
      if (name.size() > from.size() && name.compare(0, from.size(), from) == 0 && (!best || from.size() > best_len)) {
        best = &r;
        best_len = from.size();
      }
    }
    if (!best) return c10::nullopt;
    const std::string& to = forward ? best->external : best->simmim;
    return to + name.substr(best_len);
  }

  std::vector<Rule> rules_;
};

SIMMIM_NAMESPACE_END
