#pragma once
// Files that appear whole or not at all: the content goes to a temporary file beside the target, then a
// rename puts it in place. A run killed mid-write keeps the previous checkpoint / picture / cache file, and
// two processes unpacking the same cache never read each other's half-written file.

#include <filesystem>
#include <string>
#include <system_error>

#include "simmim/core/check.hpp"

#ifndef _WIN32
#include <unistd.h>
#endif

SIMMIM_NAMESPACE_BEGIN

// Calls write(tmp) with a temporary path next to `path` (parent folders are created), then renames tmp to
// `path`. `write` reports failure by throwing; the temporary is removed then, and the exception goes on.
template <class WriteFn>
inline void write_file_atomically(const std::string& path, const char* api, WriteFn&& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
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
