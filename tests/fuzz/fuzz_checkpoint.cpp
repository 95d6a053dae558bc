// Fuzzes the checkpoint reader: the checksum trailer check, LibTorch's archive reader behind it, and the
// shape check against a model. First byte even: the input is a whole file (the trailer must catch any
// change); odd: the rest is an archive that gets a valid trailer appended, so the fuzzer reaches
// LibTorch's archive parsing and simmim's module check too. Any input must load or raise a c10::Error.
// The odd ("sealed") mode is on only with SIMMIM_FUZZ_SEALED=1: it fuzzes LibTorch 1.13's unpickler,
// which segfaults on some crafted archives (tests/fuzz/libtorch-findings/checkpoint/): a file must forge
// simmim's checksum to get there, so damaged files never do, but a hostile one can (docs/reliability.md).
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "simmim/train/checkpoint.hpp"

namespace {

struct Net : torch::nn::Module {
  Net() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({3})));
  }
  torch::nn::Linear fc{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};

}  // namespace

// SIMMIM_FUZZ_WRITE_SEEDS=<dir>: writes the seeds (a whole checkpoint of Net, and its archive alone) there
// and exits; that is how tests/fuzz/corpus/checkpoint/ was made.
extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  const char* dir = std::getenv("SIMMIM_FUZZ_WRITE_SEEDS");
  if (dir == nullptr) return 0;
  Net net;
  simmim::CheckpointParts parts;
  parts.model = &net;
  parts.global_rng = false;
  parts.metadata = "{\"seed\": true}";
  const std::string file = std::string(dir) + "/whole.ckpt";
  simmim::save_checkpoint(file, parts, 7);
  const std::string bytes = simmim::read_file_bytes(file, "seed");
  std::ofstream(std::string(dir) + "/whole", std::ios::binary) << '\0' << bytes;
  std::ofstream(std::string(dir) + "/sealed", std::ios::binary)
      << '\1' << bytes.substr(0, bytes.size() - simmim::kChecksumTrailerSize);
  std::remove(file.c_str());
  std::exit(0);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const bool sealed_mode = [] {
    const char* e = std::getenv("SIMMIM_FUZZ_SEALED");
    return e != nullptr && std::string(e) == "1";
  }();
  if ((data[0] & 1) && !sealed_mode) return 0;
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) {
    const auto trailer = simmim::checksum_trailer(bytes.size(), simmim::crc32(bytes.data(), bytes.size()));
    bytes.append(reinterpret_cast<const char*>(trailer.data()), trailer.size());
  }
  constexpr const char* api = "fuzz_checkpoint";
  try {
    auto root = simmim::detail::parse_checkpoint(bytes, "<fuzz input>", api, c10::Device(c10::kCPU));
    torch::serialize::InputArchive model;
    if (root.try_read("model", model)) {
      Net net;
      simmim::detail::load_module_checked(model, net, "", "<fuzz input>", api);
    }
  } catch (const c10::Error&) {
  }
  return 0;
}
