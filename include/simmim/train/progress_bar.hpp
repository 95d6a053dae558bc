#pragma once
// A training progress line: step/total, loss, lr, images/s and ETA. Redrawn in place (\r) on a terminal;
// on a pipe or a log file one line every N steps, so logs stay readable.

#include <torch/arg.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include "simmim/core/check.hpp"

#ifndef _WIN32
#include <unistd.h>
#endif

SIMMIM_NAMESPACE_BEGIN

struct ProgressBarOptions {
  TORCH_ARG(int64_t, log_every) = 50;  // not a terminal: one line every log_every steps, and the last
  TORCH_ARG(int, tty) = -1;            // -1: detect (only when writing to std::cout); 0 / 1: force
  TORCH_ARG(std::string, label) = "";  // printed first, e.g. "pretrain"
  TORCH_ARG(int64_t, bar_width) = 20;  // terminal only; 0 hides the bar
};

// "1h02m", "3m07s", "12s".
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  else if (s >= 60)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  return buf;
}

class ProgressBar {
 public:
  ProgressBar(int64_t total_steps, std::ostream& os = std::cout, ProgressBarOptions options = {})
      : total_(total_steps), os_(os), options_(std::move(options)), start_(std::chrono::steady_clock::now()) {
    constexpr const char* api = "simmim::ProgressBar";
    SIMMIM_CHECK_VALUE(total_steps > 0, api, "total_steps", "positive", total_steps);
    SIMMIM_CHECK_VALUE(options_.log_every() > 0, api, "options.log_every", "positive", options_.log_every());
    if (options_.tty() >= 0) {
      tty_ = options_.tty() == 1;
    } else {
#ifndef _WIN32
      tty_ = &os_ == &std::cout && ::isatty(::fileno(stdout)) == 1;
#endif
    }
  }
  ~ProgressBar() {
    if (tty_ && drawn_) os_ << "\n" << std::flush;
  }
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Call after step `step` (1-based, so step == total at the end) finished; `images` went through it.
  // Rates count from construction and from the first step seen, so a resumed run reports its own speed.
  void update(int64_t step, double loss, double lr, int64_t images) {
    const auto now = std::chrono::steady_clock::now();
    if (first_step_ < 0) first_step_ = step - 1;
    images_ += images;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const int64_t done = step - first_step_;
    const double ips = elapsed > 0 ? static_cast<double>(images_) / elapsed : 0.0;
    const double eta = done > 0 && elapsed > 0 ? elapsed / static_cast<double>(done) * (total_ - step) : NAN;
    const bool last = step >= total_;
    if (tty_) {
      os_ << "\r" << line(step, loss, lr, ips, eta) << "\x1b[K" << std::flush;
      drawn_ = true;
      if (last) {
        os_ << "\n" << std::flush;
        drawn_ = false;
      }
    } else if (step % options_.log_every() == 0 || last) {
      os_ << line(step, loss, lr, ips, eta) << "\n" << std::flush;
    }
  }

  // The text of one progress line (no \r or \n).
  std::string line(int64_t step, double loss, double lr, double images_per_s, double eta_s) const {
    std::ostringstream s;
    if (!options_.label().empty()) s << options_.label() << " ";
    if (tty_ && options_.bar_width() > 0) {
      const int64_t w = options_.bar_width();
      const int64_t filled = std::min<int64_t>(w, w * step / total_);
      s << "[" << std::string(static_cast<size_t>(filled), '#') << std::string(static_cast<size_t>(w - filled), '.')
        << "] ";
    }
    char buf[160];
    std::snprintf(buf, sizeof(buf), "step %lld/%lld  loss %.4f  lr %.3e  %.1f img/s  eta %s",
                  static_cast<long long>(step), static_cast<long long>(total_), loss, lr, images_per_s,
                  format_duration(eta_s).c_str());
    s << buf;
    return s.str();
  }

  bool is_tty() const { return tty_; }

 private:
  int64_t total_;
  std::ostream& os_;
  ProgressBarOptions options_;
  bool tty_ = false;
  bool drawn_ = false;
  int64_t first_step_ = -1;
  int64_t images_ = 0;
  std::chrono::steady_clock::time_point start_;
};

SIMMIM_NAMESPACE_END
