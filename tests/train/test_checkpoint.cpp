#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

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
                      ContainsSubstring("path must be an existing checkpoint file"));
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
