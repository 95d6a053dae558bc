#pragma once
// What the training examples (02..05) share: the data flags (Fashion-MNIST or an image folder), the model
// description stored in checkpoints (so a probe can rebuild the pretrained encoder from the file alone),
// and small helpers. Only the examples include this; it is not part of the library.

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "simmim/encoder/vision_transformer.hpp"
#include "simmim/model/mae_model.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/device.hpp"
#include "simmim/train/fashion_mnist.hpp"
#include "simmim/train/image_folder.hpp"
#include "simmim/train/image_transform.hpp"
#include "simmim/train/labeled_images.hpp"

namespace examples {

// ---------------------------------------------------------------------------------------------- data

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
        ->check(CLI::NonNegativeNumber);
    app.add_option("--limit", limit, "use only the first N training images (-1: all)")->capture_default_str();
    if (needs_test) app.add_option("--test-limit", test_limit, "use only the first N test images (-1: all)");
    app.add_option("--workers", workers, "background batch-loading threads (0: load on the training thread)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--augment,!--no-augment", augment, "random resized crop and horizontal flip on training images")
        ->capture_default_str();
    app.add_option("--crop-min", crop_min, "smallest area fraction of the random resized crop")
        ->capture_default_str()
        ->check(CLI::Range(0.05, 1.0));
  }

  bool is_fashion_mnist() const { return data == "fashion-mnist"; }
};

// A train or eval split ready for a BatchLoader, with what a model needs to know about its images.
struct Split {
  int64_t size = 0;
  simmim::BatchFn batches;
  int64_t channels = 1;
  simmim::Size2d image_size;
  std::vector<double> mean, stddev;
  int64_t num_classes = 0;
  // A few fixed images (normalized, [8, C, H, W]) for reconstruction grids.
  at::Tensor preview;
};

inline Split fashion_mnist_split(bool train, const DataFlags& f) {
  auto data = simmim::take_first(simmim::load_fashion_mnist(train), train ? f.limit : f.test_limit);
  Split s;
  s.size = data.size();
  s.channels = 1;
  s.image_size = simmim::Size2d(28);
  s.mean = {simmim::kFashionMnistMean};
  s.stddev = {simmim::kFashionMnistStd};
  s.num_classes = 10;
  auto opts = simmim::ImageTransformOptions().size(28).mean(s.mean).stddev(s.stddev);
  if (train && f.augment) {
    opts.scale_min(f.crop_min);
  } else {
    opts = simmim::ImageTransformOptions::eval(28, s.mean, s.stddev);
  }
  auto transform = std::make_shared<const simmim::ImageTransform>(opts);
  s.preview = simmim::normalize_image(data.images.slice(0, 0, std::min<int64_t>(8, s.size)), s.mean, s.stddev);
  s.batches = simmim::make_batch_fn(std::move(data), transform);
  return s;
}

inline Split folder_split(const std::string& root, bool train, const DataFlags& f, int64_t default_size) {
  auto folder = std::make_shared<simmim::ImageFolder>(root, 3);
  const int64_t side = f.image_size > 0 ? f.image_size : default_size;
  Split s;
  s.size = (train ? f.limit : f.test_limit) >= 0 ? std::min(folder->size(), train ? f.limit : f.test_limit) : folder->size();
  s.channels = 3;
  s.image_size = simmim::Size2d(side);
  s.mean = simmim::imagenet_mean();
  s.stddev = simmim::imagenet_std();
  s.num_classes = static_cast<int64_t>(folder->classes().size());
  auto opts = train && f.augment ? simmim::ImageTransformOptions().size(side).scale_min(f.crop_min)
                                 : simmim::ImageTransformOptions::eval(side);
  auto transform = std::make_shared<const simmim::ImageTransform>(opts);
  const auto eval = simmim::ImageTransform(simmim::ImageTransformOptions::eval(side));
  std::vector<at::Tensor> preview;
  for (int64_t i = 0; i < std::min<int64_t>(8, s.size); ++i) preview.push_back(eval(folder->load(i)));
  s.preview = at::stack(preview);
  s.batches = simmim::make_batch_fn(std::shared_ptr<const simmim::ImageFolder>(folder), transform);
  return s;
}

inline Split load_split(const DataFlags& f, bool train, int64_t default_size) {
  if (f.is_fashion_mnist()) return fashion_mnist_split(train, f);
  if (train) return folder_split(f.data, true, f, default_size);
  if (f.test_data.empty())
    throw CLI::ValidationError("--test-data", "an evaluation folder is required when --data is a folder");
  return folder_split(f.test_data, false, f, default_size);
}

// ------------------------------------------------------------------------------------------- models

// What a checkpoint's metadata says about its model, enough to rebuild the encoder.
struct ModelSpec {
  std::string kind = "simmim";  // simmim | mae: the encoder flavour (positions, init, mask token)
  std::string preset = "mnist";  // mnist | tiny | small | base
  int64_t image_size = 28;
  int64_t patch_size = 0;  // 0: the preset's
  int64_t in_chans = 1;

  nlohmann::json to_json() const {
    return {{"kind", kind}, {"preset", preset}, {"image_size", image_size}, {"patch_size", patch_size},
            {"in_chans", in_chans}};
  }
  static ModelSpec from_json(const nlohmann::json& j) {
    ModelSpec s;
    s.kind = j.at("kind").get<std::string>();
    s.preset = j.at("preset").get<std::string>();
    s.image_size = j.at("image_size").get<int64_t>();
    s.patch_size = j.at("patch_size").get<int64_t>();
    s.in_chans = j.at("in_chans").get<int64_t>();
    return s;
  }

  // The preset's defaults where the data does not decide: mnist is 28 px / patch 7, the ViTs 224 / 16.
  void fill_defaults(const Split& data) {
    in_chans = data.channels;
    image_size = data.image_size.h;
    if (patch_size <= 0) patch_size = preset == "mnist" ? 7 : 16;
  }

  simmim::VisionTransformerOptions vit_options() const {
    simmim::VisionTransformerOptions o;
    const simmim::Size2d img(image_size);
    if (preset == "mnist") {
      o = simmim::VisionTransformerOptions::mnist();
      o.img_size(img).patch_size(patch_size);
    } else if (preset == "tiny") {
      o = simmim::VisionTransformerOptions::tiny(img, patch_size);
    } else if (preset == "small") {
      o = simmim::VisionTransformerOptions::small(img, patch_size);
    } else if (preset == "base") {
      o = simmim::VisionTransformerOptions::base(img, patch_size);
    } else {
      throw CLI::ValidationError("--preset", "one of mnist, tiny, small, base; got '" + preset + "'");
    }
    return o.in_chans(in_chans);
  }

  simmim::SimMIMOptions simmim_options() const {
    auto o = simmim::SimMIMOptions(vit_options());
    if (preset == "base") o = simmim::SimMIMOptions::vit_base(simmim::Size2d(image_size), patch_size);
    o.encoder().in_chans(in_chans);
    return o;
  }

  simmim::MAEOptions mae_options() const {
    simmim::MAEOptions o;
    const simmim::Size2d img(image_size);
    if (preset == "mnist") {
      o = simmim::MAEOptions::mnist();
      o.encoder().img_size(img).patch_size(patch_size);
    } else if (preset == "tiny") {
      o = simmim::MAEOptions::vit_tiny(img, patch_size);
    } else if (preset == "small") {
      o = simmim::MAEOptions::vit_small(img, patch_size);
    } else {
      o = simmim::MAEOptions::vit_base(img, patch_size);
    }
    o.encoder().in_chans(in_chans);
    return o;
  }

  // The encoder alone, as the pretraining model of `kind` builds it (MAE's has no mask token).
  simmim::VisionTransformerOptions encoder_options() const {
    if (kind == "mae") return simmim::VisionTransformerOptions(mae_options().encoder()).mask_token(false);
    if (kind == "simmim") return simmim_options().encoder();
    throw CLI::ValidationError("--kind", "simmim or mae; got '" + kind + "'");
  }
};

// ------------------------------------------------------------------------------------------ helpers

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs `body`; turns the library's and CLI11's errors into a message and exit code 1 / 2.
template <typename F>
int guarded_main(const char* program, F&& body) {
  try {
    return body();
  } catch (const c10::Error& e) {
    std::cerr << program << ": " << e.what_without_backtrace() << "\n";
  } catch (const CLI::Error& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
  }
  return 1;
}

}  // namespace examples
