#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>

#include "../support/scratch_dir.hpp"
#include "simmim/train/image_folder.hpp"
#include "simmim/train/plots.hpp"

using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using simmim_test::scratch_dir;

namespace {

// Sets $SIMMIM_GNUPLOT for one scope and puts back what was there.
class GnuplotEnv {
 public:
  explicit GnuplotEnv(const std::string& value) {
    if (const char* v = std::getenv("SIMMIM_GNUPLOT")) old_ = v;
    ::setenv("SIMMIM_GNUPLOT", value.c_str(), 1);
  }
  ~GnuplotEnv() {
    if (old_) ::setenv("SIMMIM_GNUPLOT", old_->c_str(), 1);
    else ::unsetenv("SIMMIM_GNUPLOT");
  }

 private:
  std::optional<std::string> old_;
};

std::string write_metrics(const fs::path& dir) {
  const std::string path = (dir / "metrics.jsonl").string();
  std::ofstream out(path);
  out << R"({"step": 10, "loss": 0.9, "loss_ema": 1.0})" << "\n"
      << R"({"step": 20, "loss": 0.7, "loss_ema": 0.9, "test_acc": 0.5})" << "\n"
      << R"({"step": 20, "loss": 0.6, "loss_ema": 0.8, "test_acc": 0.6})" << "\n"  // a resumed run's step again
      << R"({"step": 30, "loss": 0.5, "loss_ema": 0.7})" << "\n"
      << R"({"step": 40, "lo)";  // a killed run's half line
  return path;
}

// A grid of 3 rows of 20 x 12 tiles, 2 px apart: [3, 68, 30].
torch::Tensor three_rows() {
  const auto rows = torch::rand({3, 2, 3, 20, 12}, simmim::make_generator(3));
  return simmim::make_image_grid({rows[0], rows[1], rows[2]}, /*padding=*/2, /*pad_value=*/1.0);
}

}  // namespace

TEST_CASE("gnuplot strings are quoted", "[train][plots]") {
  REQUIRE(simmim::gnuplot_quote("out/it's.png") == "'out/it''s.png'");
  REQUIRE(simmim::gnuplot_quote("a\"b") == "'a\"b'");
}

TEST_CASE("without gnuplot: one line saying so, no error, the grid still written", "[train][plots]") {
  const auto dir = scratch_dir("plots_none");
  const std::string metrics = write_metrics(dir);
  {
    GnuplotEnv env("/nonexistent/gnuplot");
    REQUIRE(simmim::gnuplot_program().empty());
    const simmim::PlotResult r = simmim::plot_loss_curve(metrics, (dir / "loss.png").string());
    REQUIRE_FALSE(r.written);
    REQUIRE_THAT(r.message, ContainsSubstring("no loss curve"));
    REQUIRE_THAT(r.message, ContainsSubstring("$SIMMIM_GNUPLOT is '/nonexistent/gnuplot'"));
    REQUIRE(r.message.find('\n') == std::string::npos);
    REQUIRE_FALSE(fs::exists(dir / "loss.png"));

    const auto grid = three_rows();
    const auto labeled = simmim::write_png_with_row_labels((dir / "grid.png").string(), grid, {"a", "b", "c"}, 20, 2);
    REQUIRE_FALSE(labeled.written);
    REQUIRE(torch::equal(simmim::read_image((dir / "grid.png").string(), 3),
                         grid.mul(255).round().to(torch::kByte)));
  }
  {
    GnuplotEnv env("none");  // the documented way to turn the pictures off
    REQUIRE(simmim::gnuplot_program().empty());
  }
  {
    GnuplotEnv env("/bin/false");  // a gnuplot that fails: its exit status in the message
    const auto r = simmim::plot_loss_curve(metrics, (dir / "loss.png").string());
    REQUIRE_FALSE(r.written);
    REQUIRE_THAT(r.message, ContainsSubstring("gnuplot failed (exit 1)"));
    REQUIRE_FALSE(fs::exists(dir / "loss.png"));
    REQUIRE_FALSE(fs::exists(dir / "loss.png.plot.png"));
  }
  // No metrics file, or no usable lines: said, not thrown.
  REQUIRE_THAT(simmim::plot_loss_curve((dir / "missing.jsonl").string(), (dir / "x.png").string()).message,
               ContainsSubstring("cannot read"));
  std::ofstream(dir / "empty.jsonl") << "not json\n";
  REQUIRE_THAT(simmim::plot_loss_curve((dir / "empty.jsonl").string(), (dir / "x.png").string()).message,
               ContainsSubstring("no {\"step\", \"loss\"} lines"));
}

TEST_CASE("with gnuplot: the loss curve and the labeled grid", "[train][plots]") {
  if (simmim::gnuplot_program().empty()) SKIP("gnuplot is not installed (Debian: gnuplot-nox)");
  const auto dir = scratch_dir("plots");
  const auto r = simmim::plot_loss_curve(write_metrics(dir), (dir / "loss.png").string(),
                                         simmim::LossCurveOptions().width(640).height(400));
  INFO(r.message);
  REQUIRE(r.written);
  const auto curve = simmim::read_image((dir / "loss.png").string(), 3);
  REQUIRE(curve.sizes() == torch::IntArrayRef({3, 400, 640}));
  REQUIRE(curve.to(torch::kInt).sum().item<int64_t>() < int64_t{255} * 3 * 400 * 640);  // not blank

  // The picture is shown pixel for pixel to the right of a label column; each label's ink lies in its row.
  const auto grid = three_rows();
  const auto labeled = simmim::write_png_with_row_labels((dir / "grid.png").string(), grid,
                                                         {"simmim:ratio=0.6", "", "block"}, 20, 2);
  INFO(labeled.message);
  REQUIRE(labeled.written);
  const auto img = simmim::read_image((dir / "grid.png").string(), 3);
  const int64_t H = grid.size(1), W = grid.size(2), label_w = img.size(2) - W - 1;
  REQUIRE(img.size(1) == H + 1);  // gnuplot's one-pixel edge, white
  REQUIRE(label_w > 16 * 6);  // 16 characters at 8 pt
  REQUIRE(torch::equal(img.slice(1, 0, H).slice(2, label_w, label_w + W), grid.mul(255).round().to(torch::kByte)));
  REQUIRE(img.slice(1, H).eq(255).all().item<bool>());
  REQUIRE(img.slice(2, label_w + W).eq(255).all().item<bool>());
  const auto ink = img.slice(2, 0, label_w).lt(128).any(0).any(1);  // [H]: rows of pixels with dark text
  auto inked = [&](int64_t r) { return ink.slice(0, 2 + r * 22, 2 + r * 22 + 20).any().item<bool>(); };
  REQUIRE(inked(0));
  REQUIRE_FALSE(inked(1));
  REQUIRE(inked(2));
  REQUIRE_FALSE(fs::exists(dir / "grid.png.labeled.png"));
}
