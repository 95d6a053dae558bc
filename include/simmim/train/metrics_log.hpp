#pragma once
// Training metrics as JSON lines: one object per line, flushed as written, so a plot script (or `tail -f`)
// can read a run while it goes and a killed run loses at most one line.

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

class MetricsLog {
 public:
  // `append`: keep the lines already there (a resumed run continues its log).
  explicit MetricsLog(const std::string& path, bool append = false) : path_(path) {
    const std::filesystem::path p(path);
    if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
    out_.open(path, append ? std::ios::app : std::ios::trunc);
    SIMMIM_CHECK(out_.is_open(), "simmim::MetricsLog", "path", "a writable file", "'" + path + "'");
  }

  void write(const nlohmann::json& record) {
    SIMMIM_CHECK(record.is_object(), "simmim::MetricsLog::write", "record", "a JSON object", record.dump());
    out_ << record.dump() << '\n';
    out_.flush();
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::ofstream out_;
};

SIMMIM_NAMESPACE_END
