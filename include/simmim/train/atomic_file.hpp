#pragma once
// Files that appear whole or not at all: the content goes to a temporary file beside the target, then a
// rename puts it in place. A run killed mid-write keeps the previous checkpoint / picture / cache file, and
// two processes unpacking the same cache never read each other's half-written file. A temporary left by a
// killed writer is removed by the next write of the same target. Also the checked byte I/O every simmim
// file goes through: a failed or short write (a full disk) or read is an error naming the API and the path,
// never a silent success, and std::filesystem errors come back the same way.

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "simmim/core/check.hpp"

#ifndef _WIN32
#include <signal.h>
#include <unistd.h>
#endif

SIMMIM_NAMESPACE_BEGIN

namespace detail {

// create_directories for the folder `path` goes in, with the API and the path in the message.
inline void create_parent_directories(const std::string& path, const char* api) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (!target.has_parent_path()) return;
  std::error_code ec;
  fs::create_directories(target.parent_path(), ec);
  SIMMIM_CHECK(!ec, api, "path", "a location whose folder exists or can be created",
               "'" + path + "' (" + ec.message() + " creating '" + target.parent_path().string() + "')");
}

// Removes `<path>.tmp<pid>` files whose writer process is gone (killed half-way through a write). A live
// writer's temporary is left alone.
inline void remove_stale_temporaries(const std::string& path) {
#ifndef _WIN32
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string prefix = target.filename().string() + ".tmp";
  std::error_code ec;
  fs::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9) continue;
    const long pid = std::strtol(digits.c_str(), nullptr, 10);
    if (pid <= 0) continue;
    if (pid != static_cast<long>(::getpid()) && ::kill(static_cast<pid_t>(pid), 0) == 0) continue;  // alive
    if (pid != static_cast<long>(::getpid()) && errno != ESRCH) continue;  // exists, not ours to signal
    std::error_code ignored;
    fs::remove(it->path(), ignored);
  }
#else
  (void)path;
#endif
}

}  // namespace detail

// A binary file written through checked calls: every failure (cannot open, short write, a full disk seen at
// flush or close) is an error "<api>: path must be a writable file; got '<shown>' (...)".
class CheckedFileWriter {
 public:
  // `file` is opened; `shown` is the path messages name (the final target, not the temporary).
  CheckedFileWriter(const std::string& file, const char* api, std::string shown = "")
      : api_(api), shown_(shown.empty() ? file : std::move(shown)) {
    out_.open(file, std::ios::binary | std::ios::trunc);
    SIMMIM_CHECK(out_.is_open(), api_, "path", "a writable file", "'" + shown_ + "' (cannot open: " +
                                                                      std::generic_category().message(errno) + ")");
  }
  void write(const void* data, size_t n) {
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
    check("write failed");
  }
  // Flushes and closes; only then is a full disk certain to show.
  void finish() {
    out_.flush();
    check("flush failed");
    out_.close();
    check("close failed");
  }

 private:
  void check(const char* what) {
    SIMMIM_CHECK(!out_.fail(), api_, "path", "a writable file",
                 "'" + shown_ + "' (" + what + ": " + std::generic_category().message(errno) + ")");
  }
  const char* api_;
  std::string shown_;
  std::ofstream out_;
};

// The whole content of a file, or an error naming the API and the path.
inline std::string read_file_bytes(const std::string& path, const char* api, const char* arg = "path") {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  const std::string why = st.type() == fs::file_type::not_found ? "no such file"
                          : ec                                    ? ec.message()
                                                                  : "not a regular file";
  SIMMIM_CHECK(st.type() == fs::file_type::regular, api, arg, "an existing readable file", "'" + path + "' (" + why + ")");
  std::ifstream in(path, std::ios::binary);
  SIMMIM_CHECK(in.is_open(), api, arg, "a readable file", "'" + path + "' (cannot open)");
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0, std::ios::beg);
  SIMMIM_CHECK(size >= 0 && in.good(), api, arg, "a readable file", "'" + path + "' (cannot tell its size)");
  std::string bytes(static_cast<size_t>(size), '\0');
  if (size > 0) in.read(&bytes[0], size);
  SIMMIM_CHECK(in.gcount() == size, api, arg, "a readable file", "'" + path + "' (read failed)");
  return bytes;
}

// Calls write(tmp) with a temporary path next to `path` (parent folders are created), then renames tmp to
// `path`. `write` reports failure by throwing; the temporary is removed then, and the exception goes on.
template <class WriteFn>
inline void write_file_atomically(const std::string& path, const char* api, WriteFn&& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  detail::create_parent_directories(path, api);
  detail::remove_stale_temporaries(path);
#ifndef _WIN32
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());  // per process: concurrent writers
#else
  const std::string tmp = path + ".tmp";
#endif
  try {
    write(tmp);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
  }
  SIMMIM_CHECK(!ec, api, "path", "a writable location", "'" + path + "' (" + ec.message() + ")");
}

SIMMIM_NAMESPACE_END
