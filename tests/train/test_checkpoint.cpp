#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include <unistd.h>

#include "../support/scratch_dir.hpp"
#include "simmim/core/random.hpp"
#include "simmim/train/atomic_file.hpp"
#include "simmim/train/checkpoint.hpp"
#include "simmim/train/grad_clip.hpp"
#include "simmim/train/loss_scaler.hpp"
#include "simmim/train/lr_schedule.hpp"
#include "simmim/train/metrics_log.hpp"
#include "simmim/train/param_groups.hpp"
#include "simmim/train/progress_bar.hpp"

using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using simmim_test::scratch_dir;

namespace {

struct TinyNetImpl : torch::nn::Module {
  torch::nn::Linear encoder{nullptr}, decoder{nullptr};
  torch::nn::Dropout dropout{nullptr};
  torch::Tensor mask_token;
  TinyNetImpl() {
    encoder = register_module("encoder", torch::nn::Linear(6, 16));
    decoder = register_module("decoder", torch::nn::Linear(16, 6));
    dropout = register_module("dropout", torch::nn::Dropout(0.2));
    mask_token = register_parameter("mask_token", torch::randn({6}) * 0.02);
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& m) {
    auto mixed = x * (1 - m) + mask_token * m;
    return decoder(dropout(torch::gelu(encoder(mixed))));
  }
};
TORCH_MODULE(TinyNet);

constexpr int64_t kSteps = 9;

// Everything a training run owns. Draws from the global generator (init, data, dropout) and from its own
// mask generator, so a resume must restore both.
struct Run {
  TinyNet model;
  simmim::ParamGroups groups;
  torch::optim::AdamW opt;
  simmim::WarmupCosineSchedule sched;
  simmim::LossScaler scaler;
  at::Generator mask_gen;

  explicit Run(uint64_t init_seed)
      : model((torch::manual_seed(init_seed), TinyNet())),
        groups(simmim::make_param_groups(*model)),
        opt(groups.groups),
        sched(opt, simmim::CosineScheduleOptions().base_lr(3e-2).min_lr(1e-4).warmup_steps(3).total_steps(kSteps),
              groups.lr_scales),
        scaler(simmim::LossScalerOptions().init_scale(256.0).growth_interval(2)),
        mask_gen(simmim::make_generator(1234)) {}

  simmim::CheckpointParts parts() {
    simmim::CheckpointParts p;
    p.model = model.ptr().get();
    p.optimizer = &opt;
    p.schedule = &sched;
    p.scaler = &scaler;
    p.generators = {{"mask", mask_gen}};
    p.metadata = R"({"kind": "tiny"})";
    return p;
  }

  float step() {
    auto x = torch::randn({8, 6});
    auto m = torch::bernoulli(torch::full({8, 6}, 0.5), mask_gen);
    sched.step();
    opt.zero_grad();
    auto loss = ((model->forward(x, m) - x).pow(2) * m).sum() / (m.sum() + 1e-5);
    scaler.scale(loss).backward();
    scaler.unscale_(opt);
    simmim::clip_grad_norm(opt, 1.0);
    scaler.step(opt);
    scaler.update();
    return loss.item<float>();
  }
};

}  // namespace

TEST_CASE("a resumed run continues the same loss curve bit for bit", "[train][checkpoint]") {
  const auto dir = scratch_dir("resume");
  const std::string path = (dir / "ckpt.pt").string();

  std::vector<float> straight;
  {
    torch::manual_seed(0);
    Run run(42);
    for (int64_t s = 0; s < kSteps; ++s) straight.push_back(run.step());
  }

  for (int64_t k : {1, 4}) {
    std::vector<float> resumed;
    {
      torch::manual_seed(0);
      Run run(42);
      for (int64_t s = 0; s < k; ++s) resumed.push_back(run.step());
      simmim::save_checkpoint(path, run.parts(), k);
      // Work after the save that a killed run loses: must not leak into the resumed curve.
      run.step();
    }
    torch::manual_seed(999);  // a new process starts from other global RNG state
    Run fresh(7);             // and other weights
    const int64_t step = simmim::load_checkpoint(path, fresh.parts());
    REQUIRE(step == k);
    REQUIRE(fresh.sched.step_count() == k);
    for (int64_t s = k; s < kSteps; ++s) resumed.push_back(fresh.step());
    INFO("resumed after step " << k);
    REQUIRE(resumed == straight);  // exact float equality
  }
  // The losses moved: the comparison above is not between constant curves.
  REQUIRE(straight.front() != straight.back());
}

TEST_CASE("checkpoint files: atomic replace, info, submodules, clear errors", "[train][checkpoint]") {
  const auto dir = scratch_dir("files");
  const std::string path = (dir / "sub" / "ckpt.pt").string();
  torch::manual_seed(0);
  Run run(1);
  simmim::save_checkpoint(path, run.parts(), 3);
  run.step();
  simmim::save_checkpoint(path, run.parts(), 4);  // replaces
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir / "sub")) {
    ++files;
    REQUIRE(e.path().filename() == "ckpt.pt");  // no temp file left behind
  }
  REQUIRE(files == 1);
  auto info = simmim::read_checkpoint_info(path);
  REQUIRE(info.first == 4);
  REQUIRE(info.second == R"({"kind": "tiny"})");

  // One submodule into a standalone module (a probe taking the pretrained encoder).
  torch::nn::Linear enc(6, 16);
  simmim::load_module_from_checkpoint(path, *enc, "encoder");
  REQUIRE(torch::equal(enc->weight, run.model->encoder->weight));
  REQUIRE_THROWS_WITH(simmim::load_module_from_checkpoint(path, *enc, "backbone"),
                      ContainsSubstring("submodule must be a child of the saved model"));

  REQUIRE_THROWS_WITH(simmim::load_checkpoint((dir / "missing.pt").string(), run.parts()),
                      ContainsSubstring("simmim::load_checkpoint: path must be an existing readable file; got '" +
                                        (dir / "missing.pt").string() + "' (no such file)"));
  const std::string plain = (dir / "plain.pt").string();
  torch::save(torch::nn::Linear(2, 2), plain);
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(plain, run.parts()), ContainsSubstring("a simmim checkpoint"));
  simmim::CheckpointParts none;
  REQUIRE_THROWS_WITH(simmim::save_checkpoint(path, none, 0), ContainsSubstring("parts.model must be a module"));
  // A generator the checkpoint does not have is reported by name.
  auto p = run.parts();
  p.generators.push_back({"augment", simmim::make_generator(1)});
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, p), ContainsSubstring("generator 'augment'"));
}

TEST_CASE("progress bar: a line every N steps off a terminal, redraws on one", "[train][progress]") {
  std::ostringstream os;
  {
    simmim::ProgressBar bar(5, os, simmim::ProgressBarOptions().tty(0).log_every(2).label("pretrain"));
    for (int s = 1; s <= 5; ++s) bar.update(s, 0.5 / s, 1e-3, 16);
  }
  const std::string out = os.str();
  REQUIRE(std::count(out.begin(), out.end(), '\n') == 3);  // steps 2, 4 and the last
  REQUIRE(out.find('\r') == std::string::npos);
  REQUIRE_THAT(out, ContainsSubstring("pretrain step 2/5  loss 0.2500  lr 1.000e-03"));
  REQUIRE_THAT(out, ContainsSubstring("step 5/5  loss 0.1000"));
  REQUIRE_THAT(out, ContainsSubstring("img/s  eta"));

  std::ostringstream tty;
  {
    simmim::ProgressBar bar(3, tty, simmim::ProgressBarOptions().tty(1).bar_width(6));
    for (int s = 1; s <= 3; ++s) bar.update(s, 1.0, 1e-3, 4);
  }
  const std::string t = tty.str();
  REQUIRE(std::count(t.begin(), t.end(), '\r') == 3);
  REQUIRE(std::count(t.begin(), t.end(), '\n') == 1);
  REQUIRE_THAT(t, ContainsSubstring("[######] step 3/3"));
  REQUIRE_THAT(t, ContainsSubstring("[##....] step 1/3"));

  REQUIRE(simmim::format_duration(7) == "7s");
  REQUIRE(simmim::format_duration(187) == "3m07s");
  REQUIRE(simmim::format_duration(3720) == "1h02m");
  REQUIRE(simmim::format_duration(NAN) == "?");
  REQUIRE_THROWS_AS(simmim::ProgressBar(0, os), c10::ValueError);
}

TEST_CASE("metrics log: JSON lines, flushed, append to resume", "[train][metrics]") {
  const auto dir = scratch_dir("metrics");
  const std::string path = (dir / "m" / "metrics.jsonl").string();
  {
    simmim::MetricsLog log(path);
    log.write({{"step", 1}, {"loss", 0.5}});
    log.write({{"step", 2}, {"loss", 0.25}, {"lr", 1e-3}});
    // Readable while the log is open.
    std::ifstream in(path);
    std::string first;
    std::getline(in, first);
    REQUIRE(nlohmann::json::parse(first)["loss"] == 0.5);
    REQUIRE_THROWS_WITH(log.write(nlohmann::json::array({1, 2})), ContainsSubstring("record must be a JSON object"));
  }
  {
    simmim::MetricsLog log(path, /*append=*/true);
    log.write({{"step", 3}, {"loss", 0.125}});
  }
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 3);
  REQUIRE(rows[2]["step"] == 3);
  { simmim::MetricsLog fresh(path); }  // not appending: starts over
  std::ifstream again(path);
  std::string any;
  REQUIRE_FALSE(static_cast<bool>(std::getline(again, any)));
}

TEST_CASE("write_file_atomically: the target appears whole or keeps its old content", "[train]") {
  namespace fs = std::filesystem;
  const fs::path dir = scratch_dir("atomic");
  const std::string path = (dir / "sub" / "file.txt").string();
  auto write_text = [](const std::string& text) {
    return [text](const std::string& tmp) { std::ofstream(tmp) << text; };
  };
  auto read_text = [&] {
    std::ifstream is(path);
    return std::string((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
  };
  simmim::write_file_atomically(path, "t", write_text("first"));  // creates the missing folders
  REQUIRE(read_text() == "first");
  // A writer that fails halfway: the old content stays and no temporary is left behind.
  REQUIRE_THROWS_WITH(simmim::write_file_atomically(path, "t",
                                                    [](const std::string& tmp) {
                                                      std::ofstream(tmp) << "half";
                                                      TORCH_CHECK(false, "disk full");
                                                    }),
                      Catch::Matchers::ContainsSubstring("disk full"));
  REQUIRE(read_text() == "first");
  REQUIRE(std::distance(fs::directory_iterator(dir / "sub"), fs::directory_iterator()) == 1);
  simmim::write_file_atomically(path, "t", write_text("second"));
  REQUIRE(read_text() == "second");
  fs::remove_all(dir);
}

namespace {

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("checkpoints carry a checksum: flipped, truncated, empty or foreign files are clear errors",
          "[train][checkpoint][integrity]") {
  const auto dir = scratch_dir("integrity");
  const std::string path = (dir / "ckpt.pt").string();
  torch::manual_seed(0);
  Run run(1);
  simmim::save_checkpoint(path, run.parts(), 3);
  const std::string good = file_bytes(path);
  REQUIRE(simmim::verify_checksum_trailer(good.data(), good.size()) == simmim::ChecksumStatus::kOk);
  const std::string api = "simmim::load_checkpoint: path must be a simmim checkpoint (save_checkpoint) that is intact; got '";

  // One flipped byte in the middle (inside a tensor's data: it used to load, one parameter silently different).
  std::string flipped = good;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x10);
  put_bytes(path, flipped);
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, run.parts()),
                      ContainsSubstring(api + path + "'") && ContainsSubstring("checksum mismatch"));
  REQUIRE_THROWS_WITH(simmim::read_checkpoint_info(path), ContainsSubstring("checksum mismatch"));
  // Truncated, empty, plain text: never the zip reader's bare "failed finding central directory".
  put_bytes(path, good.substr(0, good.size() / 3));
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, run.parts()),
                      ContainsSubstring(api + path + "' (") && ContainsSubstring("truncated"));
  put_bytes(path, "");
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, run.parts()),
                      ContainsSubstring(api + path + "' (0 bytes): no simmim checksum record"));
  put_bytes(path, "hello, I am a text file\n");
  REQUIRE_THROWS_WITH(simmim::load_module_from_checkpoint(path, *run.model),
                      ContainsSubstring("simmim::load_module_from_checkpoint: path must be a simmim checkpoint"));
  // A checksum that matches bytes LibTorch cannot read: still named.
  std::string junk = "not a zip archive at all";
  const auto trailer = simmim::checksum_trailer(junk.size(), simmim::crc32(junk.data(), junk.size()));
  junk.append(reinterpret_cast<const char*>(trailer.data()), trailer.size());
  put_bytes(path, junk);
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, run.parts()),
                      ContainsSubstring("'" + path + "' that LibTorch cannot read"));
  put_bytes(path, good);
  REQUIRE(simmim::load_checkpoint(path, run.parts()) == 3);
}

TEST_CASE("crc32 is the standard CRC-32 and streams", "[train][checkpoint][integrity]") {
  const std::string s = "123456789";
  REQUIRE(simmim::crc32(s.data(), s.size()) == 0xCBF43926u);  // the check value of CRC-32/ISO-HDLC
  std::string long_text;
  for (int i = 0; i < 1000; ++i) long_text.push_back(static_cast<char>(i * 31));
  uint32_t c = 0;
  for (size_t i = 0; i < long_text.size(); i += 7) c = simmim::crc32_update(c, long_text.data() + i, std::min<size_t>(7, long_text.size() - i));
  REQUIRE(c == simmim::crc32(long_text.data(), long_text.size()));
}

TEST_CASE("loading a checkpoint into a model of another shape names the parameter and both shapes",
          "[train][checkpoint]") {
  const auto dir = scratch_dir("shapes");
  const std::string path = (dir / "wide.pt").string();
  struct Net : torch::nn::Module {
    explicit Net(int64_t width) { fc = register_module("fc", torch::nn::Linear(4, width)); }
    torch::nn::Linear fc{nullptr};
  };
  Net wide(64), narrow(32);
  simmim::CheckpointParts parts;
  parts.model = &wide;
  parts.global_rng = false;
  simmim::save_checkpoint(path, parts, 1);
  parts.model = &narrow;
  const torch::Tensor before = narrow.fc->weight.clone();
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, parts),
                      ContainsSubstring("simmim::load_checkpoint: parameter 'fc.weight' of checkpoint '" + path +
                                        "' must be Float [32, 4] (the model's); got Float [64, 4]"));
  REQUIRE(torch::equal(narrow.fc->weight, before));  // nothing half-loaded
  torch::nn::Linear probe(4, 32);
  REQUIRE_THROWS_WITH(simmim::load_module_from_checkpoint(path, *probe, "fc"),
                      ContainsSubstring("parameter 'fc.weight' of checkpoint"));
  struct Other : torch::nn::Module {
    Other() { head = register_module("head", torch::nn::Linear(4, 64)); }
    torch::nn::Linear head{nullptr};
  } other;
  parts.model = &other;
  REQUIRE_THROWS_WITH(simmim::load_checkpoint(path, parts),
                      ContainsSubstring("submodule 'head' must be in checkpoint '" + path + "'"));
}

TEST_CASE("a save killed half-way leaves a temporary that the next save of that target removes", "[train]") {
  const auto dir = scratch_dir("stale");
  const std::string path = (dir / "ckpt.pt").string();
  // A pid that cannot be running (above the kernel's pid_max), and one that is (ours: a leftover of this
  // process's own failed write is stale too), and a live other process's (pid 1), which must stay.
  put_bytes(path + ".tmp999999999", "half a checkpoint");
  put_bytes(path + ".tmp1", "another writer's, in progress");
  put_bytes((dir / "other.pt.tmp999999999").string(), "not this target's");
  simmim::write_file_atomically(path, "t", [](const std::string& tmp) { put_bytes(tmp, "whole"); });
  REQUIRE(file_bytes(path) == "whole");
  REQUIRE_FALSE(fs::exists(path + ".tmp999999999"));
  REQUIRE(fs::exists(path + ".tmp1"));
  REQUIRE(fs::exists(dir / "other.pt.tmp999999999"));
}

TEST_CASE("filesystem errors and full disks are errors naming the API and the path", "[train][files]") {
  const auto dir = scratch_dir("fserr");
  // A folder that cannot be created: its parent is a file.
  put_bytes((dir / "file").string(), "x");
  const std::string under_file = (dir / "file" / "sub" / "ckpt.pt").string();
  torch::nn::Linear net(2, 2);
  simmim::CheckpointParts parts;
  parts.model = net.get();
  REQUIRE_THROWS_WITH(simmim::save_checkpoint(under_file, parts, 0),
                      ContainsSubstring("simmim::save_checkpoint: path must be a location whose folder exists or can "
                                        "be created; got '" + under_file + "'"));
  REQUIRE_THROWS_AS(simmim::MetricsLog(under_file), c10::Error);
  if (!fs::exists("/dev/full")) SKIP("no /dev/full");
  // /dev/full takes the open and fails every write: the failure shows at the flush.
  {
    simmim::CheckedFileWriter w("/dev/full", "simmim::test", "/dev/full");
    w.write("abc", 3);
    REQUIRE_THROWS_WITH(w.finish(), ContainsSubstring("simmim::test: path must be a writable file; got '/dev/full'"));
  }
  simmim::MetricsLog log("/dev/full", /*append=*/true);
  REQUIRE_THROWS_WITH(log.write({{"step", 1}}),
                      ContainsSubstring("simmim::MetricsLog::write: the log file must be writable; got '/dev/full'"));
}

TEST_CASE("fuzzer reproducer: an archive whose pickle LibTorch rejects with a non-c10 exception", "[train][checkpoint][fuzz]") {
  // Found by simmim_fuzz_checkpoint: LibTorch's type parser throws a std::exception that is not a c10::Error;
  // it used to escape as such (std::terminate in a program that catches c10::Error).
  const char* source_dir = std::getenv("SIMMIM_SOURCE_DIR");
  if (source_dir == nullptr) SKIP("SIMMIM_SOURCE_DIR is not set (ctest sets it)");
  std::string input = file_bytes(std::string(source_dir) + "/tests/fuzz/corpus/checkpoint/repro-unpickler-std-exception");
  REQUIRE(input.size() > 1);
  std::string bytes = input.substr(1);
  if (input[0] & 1) {
    const auto trailer = simmim::checksum_trailer(bytes.size(), simmim::crc32(bytes.data(), bytes.size()));
    bytes.append(reinterpret_cast<const char*>(trailer.data()), trailer.size());
  }
  const auto dir = scratch_dir("repro");
  const std::string path = (dir / "repro.pt").string();
  put_bytes(path, bytes);
  torch::nn::Linear net(4, 3);
  REQUIRE_THROWS_AS(simmim::load_module_from_checkpoint(path, *net), c10::Error);
}
