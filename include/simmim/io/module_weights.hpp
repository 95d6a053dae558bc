#pragma once
// A module's weights to and from safetensors under a NameMap (timm's names, the official MAE's, simmim's
// own). Loading checks every key first and reports by name what is missing, unexpected or of another shape:
// strict (the default) throws with the lists before anything changes, non-strict loads what fits and
// returns the report. Nothing is skipped silently.

#include <torch/nn/module.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/io/name_map.hpp"
#include "simmim/io/safetensors.hpp"

SIMMIM_NAMESPACE_BEGIN

// What a load did. Names in `missing` and `mismatched` are the file's (external) names, each followed by the
// module's own name where they differ.
struct LoadReport {
  std::vector<std::string> loaded;      // module names set from the file
  std::vector<std::string> missing;     // the module has them, the naming names them, the file lacks them
  std::vector<std::string> unexpected;  // the file has them, nothing in the module maps to them
  std::vector<std::string> mismatched;  // in both, of different shapes: "name: file [..], module [..]"
  std::vector<std::string> unmapped;    // module names the naming has no name for, left as they were

  // No missing, unexpected or shape-mismatched key (unmapped entries are the naming's, not the file's fault).
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }

  // "2 missing: a, b; 1 unexpected: c; ..." (the empty lists left out; "all keys matched" when ok()).
  std::string summary() const {
    std::ostringstream os;
    const auto list = [&](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return;
      if (os.tellp() > 0) os << "; ";
      os << names.size() << " " << what << ": ";
      for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << names[i];
    };
    list("missing", missing);
    list("unexpected", unexpected);
    list("shape-mismatched", mismatched);
    list("without a name in this naming (kept)", unmapped);
    return os.tellp() > 0 ? os.str() : "all keys matched";
  }
};

struct LoadWeightsOptions {
  /* implicit */ LoadWeightsOptions(NameMap names = NameMap::identity()) : names_(std::move(names)) {}  // NOLINT
  // How the file names the module's entries.
  TORCH_ARG(NameMap, names);
  // Throw on any missing, unexpected or shape-mismatched key (listing them all) before changing anything;
  // false: load the keys that match and return the report.
  TORCH_ARG(bool, strict) = true;
};

// The module's parameters and buffers under the external names of `names` (entries without one are left
// out), as they are (device, dtype).
inline TensorMap module_tensors(const torch::nn::Module& module, const NameMap& names = NameMap::identity()) {
  TensorMap out;
  const auto add = [&](const std::string& name, const at::Tensor& t) {
    if (!t.defined()) return;
    if (auto ext = names.to_external(name)) {
      const bool fresh = out.emplace(*ext, t.detach()).second;
      SIMMIM_CHECK(fresh, "simmim::module_tensors", "names", "a naming that gives distinct names",
                   "two entries named '" + *ext + "'");
    }
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true)) add(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) add(b.key(), b.value());
  return out;
}

// Sets the module's parameters and buffers from `tensors` (external names of options.names), converting
// dtype and device as needed. `shown` names the source in errors.
inline LoadReport load_module_tensors(torch::nn::Module& module, const TensorMap& tensors,
                                      const LoadWeightsOptions& options = {}, const std::string& shown = "tensors",
                                      const char* api = "simmim::load_module_tensors") {
  LoadReport report;
  std::map<std::string, at::Tensor> entries;  // module name -> its tensor
  for (const auto& p : module.named_parameters(true)) entries[p.key()] = p.value();
  for (const auto& b : module.named_buffers(true))
    if (b.value().defined()) entries[b.key()] = b.value();
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  std::map<std::string, bool> used;
  for (const auto& [name, t] : entries) {
    const auto ext = options.names().to_external(name);
    if (!ext) {
      report.unmapped.push_back(name);
      continue;
    }
    const std::string label = *ext == name ? name : *ext + " (" + name + ")";
    const auto it = tensors.find(*ext);
    if (it == tensors.end()) {
      report.missing.push_back(label);
      continue;
    }
    used[*ext] = true;
    if (!it->second.defined() || it->second.sizes() != t.sizes()) {
      report.mismatched.push_back(label + ": file " + shape_str(it->second) + ", module " + shape_str(t));
      continue;
    }
    copies.emplace_back(t, it->second);
    report.loaded.push_back(name);
  }
  for (const auto& [ext, t] : tensors)
    if (!used.count(ext)) report.unexpected.push_back(ext);
  SIMMIM_CHECK(!options.strict() || report.ok(), api, shown,
               "weights whose names and shapes match the module (or pass LoadWeightsOptions().strict(false) for "
               "a report instead)",
               report.summary());
  torch::NoGradGuard no_grad;
  for (auto& [dst, src] : copies) dst.copy_(src);
  return report;
}

// Writes the module's parameters and buffers, under `names`, to a safetensors file (atomically).
inline void save_module_safetensors(const torch::nn::Module& module, const std::string& path,
                                    const NameMap& names = NameMap::identity(),
                                    const std::map<std::string, std::string>& metadata = {}) {
  save_safetensors(path, module_tensors(module, names), metadata);
}

// Reads a safetensors file into the module; see load_module_tensors and LoadWeightsOptions.
inline LoadReport load_module_safetensors(torch::nn::Module& module, const std::string& path,
                                          const LoadWeightsOptions& options = {}) {
  constexpr const char* api = "simmim::load_module_safetensors";
  return load_module_tensors(module, parse_safetensors(read_file_bytes(path, api), path, api).tensors, options,
                             "'" + path + "'", api);
}

SIMMIM_NAMESPACE_END
