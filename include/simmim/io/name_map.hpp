#pragma once
// Renaming between simmim's parameter and buffer names and another codebase's (timm, the official MAE), both
// ways. A map is a list of rules, each an exact name or a prefix (ending in '.'); a name no rule covers has
// no counterpart (simmim's SimMIM mask token in a timm ViT, for one), which loading reports rather than hides.

#include <string>
#include <utility>
#include <vector>

#include <c10/util/Optional.h>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

class NameMap {
 public:
  // One rule: `simmim` <-> `external`. Both exact names, or both prefixes ending in '.' (or an empty
  // external prefix: the external names are simmim's without the prefix).
  NameMap& rule(std::string simmim, std::string external) {
    constexpr const char* api = "simmim::NameMap::rule";
    const bool prefix = !simmim.empty() && simmim.back() == '.';
    SIMMIM_CHECK_VALUE(!simmim.empty(), api, "simmim", "a name or a prefix ending in '.'", "an empty string");
    SIMMIM_CHECK_VALUE(prefix ? (external.empty() || external.back() == '.') : !external.empty(), api, "external",
                       prefix ? "a prefix ending in '.' (or empty), as the simmim side is a prefix"
                              : "a non-empty name, as the simmim side is an exact name",
                       "'" + external + "' for '" + simmim + "'");
    rules_.push_back({std::move(simmim), std::move(external), prefix});
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

  // The external name of a simmim name (none when no rule covers it).
  c10::optional<std::string> to_external(const std::string& name) const { return translate(name, true); }
  // The simmim name of an external name (none when no rule covers it).
  c10::optional<std::string> to_simmim(const std::string& name) const { return translate(name, false); }

 private:
  struct Rule {
    std::string simmim, external;
    bool prefix;
  };

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

  // An exact rule wins over a prefix; among prefixes the longest wins.
  c10::optional<std::string> translate(const std::string& name, bool forward) const {
    const Rule* best = nullptr;
    size_t best_len = 0;
    for (const auto& r : rules_) {
      const std::string& from = forward ? r.simmim : r.external;
      if (!r.prefix) {
        if (name == from) return forward ? r.external : r.simmim;
        continue;
      }
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
