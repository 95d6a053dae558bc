#pragma once
// Pictures drawn by gnuplot (Debian's gnuplot-nox), an optional program: the loss curve of a metrics.jsonl
// and text labels beside the rows of an image grid. simmim draws no text or curves itself; where gnuplot is
// missing or fails, these functions return a result saying so in one line (a program prints it and goes
// on), never an error: the pictures are optional output. $SIMMIM_GNUPLOT names another gnuplot program
// ("none" turns the pictures off).

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#if !defined(_WIN32)
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/train/atomic_file.hpp"
#include "simmim/train/image_grid.hpp"

SIMMIM_NAMESPACE_BEGIN

// Whether a picture was written, and if not, why (one line, for the program to print).
struct PlotResult {
  bool written = false;
  std::string message;  // "wrote <path>" or the reason there is no picture
  explicit operator bool() const { return written; }
};

namespace detail {

inline bool is_executable_file(const std::string& path) {
#if !defined(_WIN32)
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
#else
  std::error_code ec;
  return std::filesystem::is_regular_file(path, ec);
#endif
}

// A POSIX shell word: '...' with each ' written as '\''.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

inline std::string first_line_of_file(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.find_first_not_of(" \t\r^") != std::string::npos) return line;
  return "";
}

}  // namespace detail

// The gnuplot program to run: $SIMMIM_GNUPLOT when set ("" when it is "none" or not an executable file),
// else the first executable `gnuplot` on $PATH, else "".
inline std::string gnuplot_program() {
  if (const char* env = std::getenv("SIMMIM_GNUPLOT")) {
    const std::string p = env;
    return p != "none" && detail::is_executable_file(p) ? p : "";
  }
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/gnuplot";
    if (detail::is_executable_file(candidate)) return candidate;
  }
  return "";
}

// A gnuplot string literal: single quotes, in which gnuplot reads '' as one quote and nothing else specially.
inline std::string gnuplot_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Runs gnuplot on `script`, which writes `output` (a path the script names). The script goes through a
// temporary file (a pipe would kill this process with SIGPIPE if gnuplot stopped reading); gnuplot's
// error output is kept for the message. `what` names the picture in messages ("loss curve").
inline PlotResult run_gnuplot(const std::string& script, const std::string& output, const std::string& what) {
  namespace fs = std::filesystem;
  const std::string program = gnuplot_program();
  if (program.empty()) {
    const char* env = std::getenv("SIMMIM_GNUPLOT");
    const std::string why = env == nullptr               ? "gnuplot not found (Debian: apt install gnuplot-nox)"
                            : std::string(env) == "none" ? "turned off ($SIMMIM_GNUPLOT=none)"
                                                         : "$SIMMIM_GNUPLOT is '" + std::string(env) +
                                                               "', not an executable file";
    return {false, "no " + what + " (" + output + "): " + why};
  }
#if defined(_WIN32)
  return {false, "no " + what + " (" + output + "): running gnuplot is implemented for POSIX systems only"};
#else
  static std::atomic<int> counter{0};  // several pictures per process (any thread); the pid separates processes
  const fs::path base = fs::temp_directory_path() / ("simmim_gnuplot_" + std::to_string(::getpid()) + "_" +
                                                     std::to_string(counter++));
  const std::string script_path = base.string() + ".gp", err_path = base.string() + ".err";
  std::error_code ignored;
  {
    std::ofstream s(script_path, std::ios::trunc);
    s << script;
    s.flush();
    if (!s) {
      fs::remove(script_path, ignored);
      return {false, "no " + what + " (" + output + "): cannot write the gnuplot script " + script_path};
    }
  }
  const std::string command = detail::shell_quote(program) + " " + detail::shell_quote(script_path) +
                              " </dev/null >/dev/null 2>" + detail::shell_quote(err_path);
  const int status = std::system(command.c_str());
  const std::string err = detail::first_line_of_file(err_path);
  fs::remove(script_path, ignored);
  fs::remove(err_path, ignored);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string code = status == -1          ? "could not start"
                             : WIFEXITED(status)   ? "exit " + std::to_string(WEXITSTATUS(status))
                                                   : "killed";
    return {false, "no " + what + " (" + output + "): gnuplot failed (" + code + (err.empty() ? "" : ": " + err) + ")"};
  }
  return {true, "wrote " + output};
#endif
}

struct LossCurveOptions {
  // Picture size in pixels.
  TORCH_ARG(int64_t, width) = 800;
  TORCH_ARG(int64_t, height) = 480;
  // Title above the plot ("" : the metrics file's name).
  TORCH_ARG(std::string, title) = "";
};

// The loss curve of a metrics.jsonl (MetricsLog: one JSON object per line with "step" and "loss", and where
// present "loss_ema" (drawn as the running average) and "test_acc" (on a right-hand axis)) as a PNG, by
// gnuplot. Lines that are not such objects (a killed run's half line) are skipped; a step logged twice (a
// resumed run) counts once, the later line. Written whole (a temporary, then a rename) or not at all.
inline PlotResult plot_loss_curve(const std::string& metrics_jsonl, const std::string& png,
                                  const LossCurveOptions& options = {}) {
  constexpr const char* api = "simmim::plot_loss_curve";
  SIMMIM_CHECK_VALUE(options.width() >= 64 && options.width() <= 16384 && options.height() >= 64 &&
                         options.height() <= 16384,
                     api, "options.width / height", "in [64, 16384] pixels",
                     std::to_string(options.width()) + " x " + std::to_string(options.height()));
  std::ifstream in(metrics_jsonl);
  if (!in) return {false, "no loss curve (" + png + "): cannot read '" + metrics_jsonl + "'"};
  struct Row {
    double loss = 0, ema = 0, acc = 0;
    bool has_ema = false, has_acc = false;
  };
  std::map<int64_t, Row> rows;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number() || !j.contains("loss") ||
        !j["loss"].is_number())
      continue;
    Row r;
    r.loss = j["loss"].get<double>();
    if (j.contains("loss_ema") && j["loss_ema"].is_number()) {
      r.ema = j["loss_ema"].get<double>();
      r.has_ema = true;
    }
    if (j.contains("test_acc") && j["test_acc"].is_number()) {
      r.acc = j["test_acc"].get<double>();
      r.has_acc = true;
    }
    rows[j["step"].get<int64_t>()] = r;
  }
  if (rows.empty()) return {false, "no loss curve (" + png + "): no {\"step\", \"loss\"} lines in '" + metrics_jsonl + "'"};

  bool any_ema = false, any_acc = false;
  std::ostringstream loss_data, acc_data;
  loss_data.precision(9);
  acc_data.precision(9);
  for (const auto& [step, r] : rows) {
    loss_data << step << ' ' << r.loss << ' ' << (r.has_ema ? r.ema : r.loss) << '\n';
    any_ema = any_ema || r.has_ema;
    if (r.has_acc) acc_data << step << ' ' << 100.0 * r.acc << '\n';
    any_acc = any_acc || r.has_acc;
  }
  const std::string title =
      options.title().empty() ? std::filesystem::path(metrics_jsonl).filename().string() : options.title();
  detail::create_parent_directories(png, api);
  const std::string tmp = png + ".plot.png";  // renamed into place only when gnuplot succeeded
  std::ostringstream s;
  s << "set terminal pngcairo size " << options.width() << "," << options.height()
    << " font ',10' noenhanced background '#ffffff'\n"
    << "set output " << gnuplot_quote(tmp) << "\n"
    << "set title " << gnuplot_quote(title) << "\n"
    << "set xlabel 'step'\nset ylabel 'loss'\nset grid\nset key top right\n"
    << "$loss << EOD\n" << loss_data.str() << "EOD\n";
  if (any_acc) {
    s << "$acc << EOD\n" << acc_data.str() << "EOD\n"
      << "set y2label 'test accuracy (%)'\nset y2tics\nset ytics nomirror\n";
  }
  s << "plot $loss using 1:2 with lines lc rgb '#9ecae1' title 'loss (batch)'";
  if (any_ema) s << ", $loss using 1:3 with lines lw 2 lc rgb '#08519c' title 'loss (running average)'";
  if (any_acc) s << ", $acc using 1:2 axes x1y2 with linespoints pt 7 lc rgb '#d95f0e' title 'test accuracy'";
  s << "\nset output\n";
  PlotResult result = run_gnuplot(s.str(), png, "loss curve");
  std::error_code ec;
  if (result) {
    std::filesystem::rename(tmp, png, ec);
    if (ec) result = {false, "no loss curve (" + png + "): " + ec.message()};
  }
  std::filesystem::remove(tmp, ec);
  return result;
}

// Writes `picture` ([C, H, W] in [0, 1], as make_image_grid makes it) to `path` as a PNG, then has gnuplot
// put `labels[r]` to the left of row r: rows of `tile_height` pixels, `padding` pixels apart and from the
// top (make_image_grid's layout). The result is (label column + W + 1) x (H + 1) pixels, the picture unchanged
// at the top right. Where gnuplot is missing or fails, `path` holds the picture without the
// labels and the result says why; the picture is always written (errors writing it are thrown).
inline PlotResult write_png_with_row_labels(const std::string& path, const at::Tensor& picture,
                                            const std::vector<std::string>& labels, int64_t tile_height,
                                            int64_t padding) {
  constexpr const char* api = "simmim::write_png_with_row_labels";
  SIMMIM_CHECK(picture.defined() && picture.dim() == 3, api, "picture", "[C, H, W]", describe(picture));
  SIMMIM_CHECK_VALUE(tile_height > 0 && padding >= 0, api, "tile_height / padding", "positive / non-negative",
                     tile_height, " / ", padding);
  const int64_t H = picture.size(1), W = picture.size(2), R = static_cast<int64_t>(labels.size());
  SIMMIM_CHECK(padding + R * (tile_height + padding) <= H, api, "labels",
               "at most one per row of the picture (" + std::to_string((H - padding) / (tile_height + padding)) +
                   " rows of " + std::to_string(tile_height) + " px)",
               R, " labels");
  write_png(path, picture);
  size_t longest = 0;
  for (const auto& l : labels) longest = std::max(longest, l.size());
  // Text in proportion to the rows (8 to 16 pt); gd's DejaVu Sans at 10 pt is about 7 px per character, so
  // 0.8 px per point and character leaves room, plus a margin either side.
  const int64_t font_pt = std::clamp<int64_t>(tile_height / 16, 8, 16);
  const int64_t label_w = static_cast<int64_t>(longest) * font_pt * 8 / 10 + 24, total_w = label_w + W;
  // A pixel column as a screen fraction, left for gnuplot to divide (a rounded decimal can land a pixel short).
  const auto screen_x = [&](int64_t px) { return std::to_string(px) + ".0/" + std::to_string(total_w); };
  // gnuplot's pixel coordinates run from 0 to size - 1, so a plot area of exactly W x H pixels needs a
  // terminal one pixel larger: the picture is copied pixel for pixel, with a white edge of one pixel right and
  // below.
  std::ostringstream s;
  s << "set terminal png truecolor size " << total_w + 1 << "," << H + 1
    << " font '," << font_pt << "' noenhanced background '#ffffff'\n"
    << "set output " << gnuplot_quote(path + ".labeled.png") << "\n"
    << "set lmargin at screen " << screen_x(label_w) << "\nset rmargin at screen 1\n"
    << "set tmargin at screen 1\nset bmargin at screen 0\nunset border\nunset tics\nunset key\n"
    << "set xrange [-0.5:" << W - 0.5 << "]\nset yrange [-0.5:" << H - 0.5 << "]\n";
  for (int64_t r = 0; r < R; ++r) {
    // gnuplot shows the PNG upright with y growing upwards: row r's middle, counted from the bottom.
    const double y_mid = static_cast<double>(H - 1) -
                         (static_cast<double>(padding + r * (tile_height + padding)) + 0.5 * static_cast<double>(tile_height));
    s << "set label " << r + 1 << " " << gnuplot_quote(labels[static_cast<size_t>(r)]) << " at screen "
      << screen_x(label_w - 8) << ", first " << y_mid << " right front\n";
  }
  s << "plot " << gnuplot_quote(path) << " binary filetype=png with rgbimage notitle\nset output\n";
  const std::string labeled = path + ".labeled.png";
  PlotResult result = run_gnuplot(s.str(), path, "row labels");
  std::error_code ec;
  if (result) {
    std::filesystem::rename(labeled, path, ec);
    if (ec) result = {false, "no row labels (" + path + "): " + ec.message()};
  }
  std::filesystem::remove(labeled, ec);
  return result;
}

SIMMIM_NAMESPACE_END
