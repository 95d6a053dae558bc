#pragma once
// Training checkpoints: model, optimizer, schedule, loss scaler, RNG states and step in one file, written
// atomically (temp file + rename: a run killed while saving keeps its previous checkpoint), so that a
// resumed run continues the same loss curve bit for bit. Also reads back one submodule (e.g. the
// encoder of a pretraining model) for linear probes and fine-tuning.
// The file is LibTorch's zip archive followed by simmim's checksum trailer (core/checksum.hpp): the CRC is
// computed as the archive streams to disk and verified in one pass over the bytes read back, so flipped
// bytes, truncation and foreign files are errors naming the file, before anything is loaded. Loading
// checks every saved tensor's shape and dtype against the module's before it changes anything.

#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <ATen/Context.h>
#include <ATen/core/Generator.h>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/checksum.hpp"
#include "simmim/train/atomic_file.hpp"
#include "simmim/train/loss_scaler.hpp"
#include "simmim/train/lr_schedule.hpp"


SIMMIM_NAMESPACE_BEGIN

// What a checkpoint holds. Pointers are borrowed; null ones are skipped on save and on load.
struct CheckpointParts {
  torch::nn::Module* model = nullptr;
  torch::optim::Optimizer* optimizer = nullptr;
  WarmupCosineSchedule* schedule = nullptr;
  LossScaler* scaler = nullptr;
  // Generators the run draws from besides the global ones (mask generators, data augmentation), by name.
  std::vector<std::pair<std::string, at::Generator>> generators;
  // The default CPU generator and every CUDA device's (dropout, init, anything that draws without a
  // generator argument).
  bool global_rng = true;
  // Free-form text kept with the checkpoint (the examples store their model config as JSON here).
  std::string metadata;
};

namespace detail {

// 2: the archive is followed by the checksum trailer (format 1 had none and is not read).
inline constexpr int64_t kCheckpointFormat = 2;

inline at::Tensor generator_state(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

inline void set_generator_state(at::Generator gen, const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

inline int64_t cuda_generator_count() { return at::hasCUDA() ? static_cast<int64_t>(torch::cuda::device_count()) : 0; }

}  // namespace detail

// Writes `parts` and `step` to `path` through a temp file in the same directory and a rename.
inline void save_checkpoint(const std::string& path, const CheckpointParts& parts, int64_t step) {
  constexpr const char* api = "simmim::save_checkpoint";
  SIMMIM_CHECK(parts.model != nullptr, api, "parts.model", "a module", "null");
  torch::serialize::OutputArchive root;
  root.write("format", c10::IValue(detail::kCheckpointFormat));
  root.write("step", c10::IValue(step));
  root.write("metadata", c10::IValue(parts.metadata));
  {
    torch::serialize::OutputArchive a;
    parts.model->save(a);
    root.write("model", a);
  }
  if (parts.optimizer) {
    torch::serialize::OutputArchive a;
    parts.optimizer->save(a);
    root.write("optimizer", a);
  }
  if (parts.schedule) {
    torch::serialize::OutputArchive a;
    parts.schedule->save(a);
    root.write("schedule", a);
  }
  if (parts.scaler) {
    torch::serialize::OutputArchive a;
    parts.scaler->save(a);
    root.write("scaler", a);
  }
  {
    torch::serialize::OutputArchive a;
    for (const auto& g : parts.generators) a.write(g.first, detail::generator_state(g.second));
    if (parts.global_rng) {
      a.write("@cpu", detail::generator_state(at::detail::getDefaultCPUGenerator()));
      const int64_t n = detail::cuda_generator_count();
      for (int64_t i = 0; i < n; ++i)
        a.write("@cuda" + std::to_string(i),
                detail::generator_state(at::globalContext().defaultGenerator(
                    c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(i)))));
    }
    root.write("rng", a);
  }

  write_file_atomically(path, api, [&](const std::string& tmp) {
    CheckedFileWriter out(tmp, api, path);
    uint32_t crc = 0;
    uint64_t size = 0;
    root.save_to([&](const void* data, size_t n) -> size_t {
      out.write(data, n);
      crc = crc32_update(crc, data, n);
      size += n;
      return n;
    });
    const auto trailer = checksum_trailer(size, crc);
    out.write(trailer.data(), trailer.size());
    out.finish();
  });
}

namespace detail {

// Parses a checkpoint file's bytes (as read from `path`, named in messages): the trailer is verified first,
// then the archive is read from memory. Every failure is a c10::Error naming `api` and the path.
inline torch::serialize::InputArchive parse_checkpoint(const std::string& bytes, const std::string& path,
                                                       const char* api, c10::optional<c10::Device> device) {
  size_t payload = 0;
  const ChecksumStatus status = verify_checksum_trailer(bytes.data(), bytes.size(), &payload);
  SIMMIM_CHECK(status == ChecksumStatus::kOk, api, "path", "a simmim checkpoint (save_checkpoint) that is intact",
               "'" + path + "' (" + std::to_string(bytes.size()) + " bytes): " + to_string(status));
  torch::serialize::InputArchive root;
  try {
    root.load_from(bytes.data(), payload, device);
  } catch (const c10::Error& e) {
    // A file with a valid checksum that LibTorch cannot read was not written by save_checkpoint. LibTorch's
    // first line says why (its dispatcher appends a list of every backend).
    const std::string why = e.what_without_backtrace();
    SIMMIM_CHECK(false, api, "path", "a simmim checkpoint (save_checkpoint)",
                 "'" + path + "' that LibTorch cannot read (" + why.substr(0, why.find('\n')) + ")");
  } catch (const std::exception& e) {
    // LibTorch's unpickler also throws other types (found by fuzzing: its type parser's errors).
    SIMMIM_CHECK(false, api, "path", "a simmim checkpoint (save_checkpoint)",
                 "'" + path + "' that LibTorch cannot read (" + e.what() + ")");
  }
  c10::IValue v;
  SIMMIM_CHECK(root.try_read("format", v) && v.isInt(), api, "path", "a simmim checkpoint (save_checkpoint)",
               "'" + path + "' without a format entry");
  SIMMIM_CHECK(v.toInt() == kCheckpointFormat, api, "the format of checkpoint '" + path + "'",
               std::to_string(kCheckpointFormat), v.toInt());
  return root;
}

inline torch::serialize::InputArchive open_checkpoint(const std::string& path, const char* api,
                                                      c10::optional<c10::Device> device) {
  return parse_checkpoint(read_file_bytes(path, api), path, api, device);
}

// Checks that `archive` holds every parameter and buffer of `module` (recursively) with the same shape and
// dtype, before Module::load, which would silently replace a tensor by one of another shape.
inline void check_module_archive(torch::serialize::InputArchive& archive, torch::nn::Module& module,
                                 const std::string& prefix, const std::string& path, const char* api) {
  auto check = [&](const std::string& name, const at::Tensor& mine, bool is_buffer) {
    if (!mine.defined()) return;
    at::Tensor saved;
    const char* what = is_buffer ? "buffer" : "parameter";
    SIMMIM_CHECK(archive.try_read(name, saved, is_buffer), api, std::string(what) + " '" + prefix + name + "'",
                 "in checkpoint '" + path + "' (was it saved from a model of this architecture?)", "none");
    SIMMIM_CHECK(saved.sizes() == mine.sizes() && saved.scalar_type() == mine.scalar_type(), api,
                 std::string(what) + " '" + prefix + name + "' of checkpoint '" + path + "'",
                 std::string(c10::toString(mine.scalar_type())) + " " + shape_str(mine) + " (the model's)",
                 c10::toString(saved.scalar_type()), " ", shape_str(saved));
  };
  for (const auto& p : module.named_parameters(/*recurse=*/false)) check(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/false)) check(b.key(), b.value(), true);
  for (const auto& child : module.named_children()) {
    torch::serialize::InputArchive sub;
    SIMMIM_CHECK(archive.try_read(child.key(), sub), api, "submodule '" + prefix + child.key() + "'",
                 "in checkpoint '" + path + "' (was it saved from a model of this architecture?)", "none");
    check_module_archive(sub, *child.value(), prefix + child.key() + ".", path, api);
  }
}

// Module::load after the shape check.
inline void load_module_checked(torch::serialize::InputArchive& archive, torch::nn::Module& module,
                                const std::string& prefix, const std::string& path, const char* api) {
  check_module_archive(archive, module, prefix, path, api);
  module.load(archive);
}

}  // namespace detail

// Restores every non-null part of `parts` from `path` and returns the step it was saved at. Build the
// model and optimizer exactly as for the saved run first (same groups, same order). `device`: where the
// tensors go (default: where they were saved).
inline int64_t load_checkpoint(const std::string& path, const CheckpointParts& parts,
                               c10::optional<c10::Device> device = c10::nullopt) {
  constexpr const char* api = "simmim::load_checkpoint";
  auto root = detail::open_checkpoint(path, api, device);
  c10::IValue v;
  root.read("step", v);
  const int64_t step = v.toInt();
  auto section = [&](const char* name) {
    torch::serialize::InputArchive a;
    SIMMIM_CHECK(root.try_read(name, a), api, "the checkpoint", std::string("a '") + name + "' section",
                 "'" + path + "' without one");
    return a;
  };
  if (parts.model) {
    auto a = section("model");
    detail::load_module_checked(a, *parts.model, "", path, api);
  }
  if (parts.optimizer) {
    auto a = section("optimizer");
    parts.optimizer->load(a);
  }
  if (parts.schedule) {
    auto a = section("schedule");
    parts.schedule->load(a);
  }
  if (parts.scaler) {
    auto a = section("scaler");
    parts.scaler->load(a);
  }
  auto rng = section("rng");
  for (const auto& g : parts.generators) {
    at::Tensor state;
    SIMMIM_CHECK(rng.try_read(g.first, state), api, "generator '" + g.first + "'", "saved in the checkpoint",
                 "'" + path + "' without it");
    // Generator states are CPU byte tensors whatever `device` the rest was mapped to.
    detail::set_generator_state(g.second, state.cpu());
  }
  if (parts.global_rng) {
    at::Tensor state;
    if (rng.try_read("@cpu", state)) detail::set_generator_state(at::detail::getDefaultCPUGenerator(), state.cpu());
    const int64_t n = detail::cuda_generator_count();
    for (int64_t i = 0; i < n; ++i) {
      at::Tensor s;
      if (rng.try_read("@cuda" + std::to_string(i), s))
        detail::set_generator_state(at::globalContext().defaultGenerator(
                                        c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(i))),
                                    s.cpu());
    }
  }
  return step;
}

// The step and metadata of a checkpoint, without loading anything else.
inline std::pair<int64_t, std::string> read_checkpoint_info(const std::string& path) {
  auto root = detail::open_checkpoint(path, "simmim::read_checkpoint_info", c10::Device(c10::kCPU));
  c10::IValue step, meta;
  root.read("step", step);
  root.read("metadata", meta);
  return {step.toInt(), meta.toStringRef()};
}

// Loads `module` from the submodule at dotted path `submodule` of the checkpoint's model ("" = the whole
// model; "encoder" = a pretraining model's encoder, for probes and fine-tuning). The tensors are read onto
// `device`, by default the module's own (so a checkpoint written on a GPU loads into a CPU module, also
// where LibTorch has no CUDA).
inline void load_module_from_checkpoint(const std::string& path, torch::nn::Module& module,
                                        const std::string& submodule = "",
                                        c10::optional<c10::Device> device = c10::nullopt) {
  constexpr const char* api = "simmim::load_module_from_checkpoint";
  if (!device) {
    device = c10::Device(c10::kCPU);
    for (const auto& p : module.parameters()) {
      device = p.device();
      break;
    }
  }
  auto root = detail::open_checkpoint(path, api, device);
  torch::serialize::InputArchive cur;
  root.read("model", cur);
  std::string walked = "model";
  size_t start = 0;
  while (start < submodule.size()) {
    const size_t dot = submodule.find('.', start);
    const std::string part = submodule.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    torch::serialize::InputArchive next;
    SIMMIM_CHECK(cur.try_read(part, next), api, "submodule", "a child of the saved " + walked,
                 "'" + submodule + "' (no '" + part + "')");
    cur = std::move(next);
    walked += "." + part;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  detail::load_module_checked(cur, module, submodule.empty() ? "" : submodule + ".", path, api);
}

SIMMIM_NAMESPACE_END
