#pragma once
// Training metrics as JSON lines: one object per line, flushed as written, so a plot script (or `tail -f`)
// can read a run while it goes and a killed run loses at most one line.

#include <nlohmann/json.hpp>

#include <cerrno>
#include <filesystem>
#include <system_error>
#include <fstream>
#include <string>

#include "simmim/core/check.hpp"
#include "simmim/train/atomic_file.hpp"

SIMMIM_NAMESPACE_BEGIN

class MetricsLog {
 public:
  // `append`: keep the lines already there (a resumed run continues its log).
  explicit MetricsLog(const std::string& path, bool append = false) : path_(path) {
    detail::create_parent_directories(path, "simmim::MetricsLog");
    out_.open(path, append ? std::ios::app : std::ios::trunc);
    SIMMIM_CHECK(out_.is_open(), "simmim::MetricsLog", "path", "a writable file", "'" + path + "'");
  }

  // Writes one line and flushes it; a failed write (a full disk shows at the flush) is an error naming the
  // path, never a silent success.
  void write(const nlohmann::json& record) {
    constexpr const char* api = "simmim::MetricsLog::write";
    SIMMIM_CHECK(record.is_object(), api, "record", "a JSON object", record.dump());
    out_ << record.dump() << '\n';
    out_.flush();
    SIMMIM_CHECK(!out_.fail(), api, "the log file", "writable", "'" + path_ + "' (write failed: " +
                                                                   std::generic_category().message(errno) + ")");
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

SIMMIM_NAMESPACE_END
