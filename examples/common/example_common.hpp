#pragma once
// What the training examples (02..05) share: the data flags (Fashion-MNIST or an image folder, built into
// a simmim::DataSplit by the library) and the guard every main runs in. Only the examples include this.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <string>

#include "simmim/train/data_split.hpp"
#include "simmim/train/model_spec.hpp"
#include "simmim/train/device.hpp"
#include "simmim/train/threads.hpp"

namespace examples {

using Split = simmim::DataSplit;

struct DataFlags {
  std::string data = "fashion-mnist";  // or an image folder
  std::string test_data;               // folder data: the evaluation folder
  int64_t image_size = 0;              // folder data: square side the images are cropped / resized to
  int64_t limit = -1;                  // first N training items only (smoke runs)
  int64_t test_limit = -1;
  int64_t workers = 1;
  bool augment = false;                // random resized crop + flip on the training set
  double crop_min = 0.67;

  void add_to(CLI::App& app, bool needs_test) {
    app.add_option("--data", data, "'fashion-mnist' (Debian dataset-fashion-mnist) or an image folder (one subfolder "
                                    "per class, or images directly)")
        ->capture_default_str();
    if (needs_test)
      app.add_option("--test-data", test_data, "image folder to evaluate on (required with folder --data)");
    app.add_option("--image-size", image_size, "folder data: crop / resize images to this square size (default: the "
                                               "preset's)")
        ->check(CLI::Range(int64_t{0}, int64_t{8192}));
    app.add_option("--limit", limit, "use only the first N training images (-1: all)")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));
    if (needs_test) {
      app.add_option("--test-limit", test_limit, "use only the first N test images (-1: all)")
          ->check(CLI::Range(int64_t{-1}, int64_t{1} << 40));
    }
    app.add_option("--workers", workers, "background batch-loading threads (0: load on the training thread)")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{0}, int64_t{256}));
    app.add_flag("--augment,!--no-augment", augment, "random resized crop and horizontal flip on training images")
        ->capture_default_str();
    app.add_option("--crop-min", crop_min, "smallest area fraction of the random resized crop")
        ->capture_default_str()
        ->check(CLI::Range(0.05, 1.0));
  }

  bool is_fashion_mnist() const { return data == "fashion-mnist"; }

  // The training (or evaluation) split; folder images at --image-size, else `default_size`.
  Split load(bool train, int64_t default_size) const {
    auto o = simmim::SplitOptions()
                 .limit(train ? limit : test_limit)
                 .augment(train && augment)
                 .crop_min(crop_min)
                 .image_size(image_size > 0 ? image_size : default_size);
    if (is_fashion_mnist()) return simmim::fashion_mnist_split(train, o);
    if (train) return simmim::image_folder_split(data, o);
    if (test_data.empty())
      throw CLI::ValidationError("--test-data", "an evaluation folder is required when --data is a folder");
    return simmim::image_folder_split(test_data, o);
  }
};

// --threads, the same in every example: torch's intra-op threads, 0 (the default) meaning every CPU this
// process may use (its affinity mask), shared between the processes torchrun starts on one host.
inline void add_threads_flag(CLI::App& app, int& threads) {
  app.add_option("--threads", threads,
                 "CPU threads for torch (0: every CPU this process may use, divided among the processes of a "
                 "torchrun job on this host)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
}

// --embed-dim, --depth, --num-heads: a preset's encoder made narrower or shallower (a distilled student, and
// the same architecture pretrained on pixels or from random init to compare it with). 0: the preset's.
inline void add_size_flags(CLI::App& app, simmim::ModelSpec& model, const std::string& prefix = "") {
  app.add_option("--embed-dim", model.embed_dim, prefix + "encoder width (0: the preset's; 128 for mnist)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 16));
  app.add_option("--depth", model.depth, prefix + "encoder blocks (0: the preset's; 4 for mnist)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1024}));
  app.add_option("--num-heads", model.num_heads, prefix + "attention heads, dividing the width (0: the preset's)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1024}));
}

// Applies --threads; returns the thread count torch now uses.
inline int apply_threads_flag(int threads) {
  return simmim::set_cpu_threads(threads, simmim::processes_per_host_from_environment());
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `body`; any exception becomes one line on stderr and a non-zero exit (2 for a bad command line),
// never std::terminate.
template <typename F>
int guarded_main(const char* program, F&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    std::cerr << program << ": " << e.what_without_backtrace() << "\n";
  } catch (const CLI::Error& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    std::cerr << program << ": " << e.what() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << program << ": out of memory (a size or count too large for this machine?)\n";
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
  } catch (...) {
    std::cerr << program << ": an unknown error\n";
  }
  return 1;
}

}  // namespace examples
