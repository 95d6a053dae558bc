#pragma once
// A fresh, empty scratch folder per test and process, under the system temp dir, for tests that write
// files (checkpoints, PNGs, caches). Per process so parallel ctest runs never share one.

#include <filesystem>
#include <string>

#include <unistd.h>

namespace simmim_test {

inline std::filesystem::path scratch_dir(const std::string& name) {
  namespace fs = std::filesystem;
  auto d = fs::temp_directory_path() / ("simmim_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace simmim_test
