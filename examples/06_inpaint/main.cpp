// 06_inpaint: fills a region of images with what a pretrained SimMIM (or MAE without norm-pix) model
// predicts there; every other pixel is kept as it was. The region: rectangles in pixels (--box, repeatable),
// a mask image whose non-zero pixels are to be filled (--mask, the images' size), or a mask strategy
// (--strategy, drawn per image with --seed). Images of any size: they are padded to the model's patch and
// cropped back, and a size other than the training size gets the model rebuilt for it with its position
// table resampled.
//
//   simmim_06_inpaint --checkpoint out/pretrain_simmim/checkpoint.pt --fashion-mnist 8 --box 8,8,12,12
//   simmim_06_inpaint --checkpoint ckpt.pt --input photos/ --mask hole.png --out out/inpaint --device cuda
//
// Writes <out>/<name>_inpainted.png and <name>_region.png (white: filled) per image, and a before/after
// picture: <out>/grid.png (rows: original | region blanked | inpainted) when the images share one size,
// else <out>/<name>_grid.png each. The last line is JSON with the filled region's mean squared error against
// the original pixels, next to filling it with the mean of the visible pixels.

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "../common/example_common.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/model/inpaint.hpp"
#include "simmim/train/fashion_mnist.hpp"
#include "simmim/train/image_grid.hpp"
#include "simmim/train/model_spec.hpp"

namespace fs = std::filesystem;

namespace {

simmim::PixelBox parse_box(const std::string& text) {
  std::vector<int64_t> v;
  std::stringstream ss(text);
  std::string part;
  while (std::getline(ss, part, ',')) {
    size_t used = 0;
    long long n = 0;
    try {
      n = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != part.size()) throw CLI::ValidationError("--box", "'" + text + "' is not x,y,w,h in integer pixels");
    v.push_back(n);
  }
  if (v.size() != 4) throw CLI::ValidationError("--box", "'" + text + "' is not x,y,w,h (4 integers)");
  return {v[0], v[1], v[2], v[3]};
}

// The image files of `input`: the file itself, or the PNG / JPEG / BMP files directly in the folder, sorted.
std::vector<fs::path> input_files(const std::string& input) {
  if (!fs::is_directory(input)) {
    if (!fs::is_regular_file(input)) throw CLI::ValidationError("--input", "'" + input + "' is neither an image file nor a folder");
    return {fs::path(input)};
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(input)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
    if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp")) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) throw CLI::ValidationError("--input", "folder '" + input + "' has no .png, .jpg, .jpeg or .bmp file");
  return files;
}

}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main("simmim_06_inpaint", [&] {
    CLI::App app{"Inpainting with a pretrained SimMIM / MAE model: the region is predicted, the rest kept."};
    std::string checkpoint, input, mask_path, strategy, out = "out/inpaint", device_spec = "auto";
    std::vector<std::string> boxes;
    int64_t fashion = 0;
    uint64_t seed = 0;
    int threads = 0;
    int64_t grid_scale = 0;
    app.add_option("--checkpoint", checkpoint, "pretraining checkpoint (02_pretrain_simmim / 03_pretrain_mae)")->required();
    auto* in = app.add_option("--input", input, "an image file (PNG, JPEG, BMP) or a folder of them");
    auto* fm = app.add_option("--fashion-mnist", fashion,
                              "instead of --input: the first N Fashion-MNIST test images (written to <out>/inputs)")
                   ->check(CLI::Range(int64_t{1}, int64_t{10000}));
    in->excludes(fm);
    auto* b = app.add_option("--box", boxes, "a rectangle to fill, x,y,w,h in pixels (repeatable)");
    auto* m = app.add_option("--mask", mask_path, "a mask image of the images' size: non-zero pixels are filled");
    auto* s = app.add_option("--strategy", strategy, "a mask strategy spec (e.g. simmim:ratio=0.6,mask_patch=7)");
    b->excludes(m)->excludes(s);
    m->excludes(s);
    app.add_option("--seed", seed, "seed of --strategy's draws")->capture_default_str();
    app.add_option("--out", out, "output folder")->capture_default_str();
    app.add_option("--grid-scale", grid_scale, "grid pictures: pixels per image pixel (0: tiles at least 96 px high)")
        ->capture_default_str()
        ->check(CLI::Range(int64_t{0}, int64_t{64}));
    app.add_option("--device", device_spec, "auto, cpu, cuda, cuda:N")->capture_default_str();
    examples::add_threads_flag(app, threads);
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      return app.exit(e);
    }
    if (input.empty() && fashion == 0) throw CLI::ValidationError("--input", "give --input or --fashion-mnist");
    if (boxes.empty() && mask_path.empty() && strategy.empty())
      throw CLI::ValidationError("--box", "give the region: --box, --mask or --strategy");
    examples::apply_threads_flag(threads);
    const c10::Device device = simmim::resolve_device(device_spec);

    const simmim::ModelSpec spec = simmim::checkpoint_model_spec(checkpoint);
    const auto [mean, stddev] = simmim::checkpoint_normalization(checkpoint);
    if (spec.in_chans != 1 && spec.in_chans != 3)
      throw CLI::ValidationError("--checkpoint", "its model takes " + std::to_string(spec.in_chans) +
                                                     " channels; image files give 1 (gray) or 3 (RGB)");
    fs::create_directories(out);
    if (fashion > 0) {
      const auto test = simmim::load_fashion_mnist(/*train=*/false);
      input = out + "/inputs";
      fs::create_directories(input);
      for (int64_t i = 0; i < fashion; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "/fmnist_%04lld.png", static_cast<long long>(i));
        simmim::write_png(input + name, test.images[i]);
      }
    }
    std::vector<simmim::PixelBox> box_list;
    for (const auto& text : boxes) box_list.push_back(parse_box(text));
    at::Tensor mask_image;
    if (!mask_path.empty()) mask_image = simmim::read_image(mask_path, 1);

    std::map<std::pair<int64_t, int64_t>, simmim::PretrainModel> models;  // one per padded size
    std::unique_ptr<simmim::MaskGenerator> strategy_gen;
    at::Generator gen = simmim::make_generator(seed);
    std::vector<at::Tensor> originals, blanked, filled;
    std::vector<std::string> stems;
    double se = 0, se_mean = 0;
    int64_t pixels = 0;
    for (const fs::path& file : input_files(input)) {
      const at::Tensor image = simmim::read_image(file.string(), static_cast<int>(spec.in_chans)).unsqueeze(0);
      const simmim::Size2d size(image.size(2), image.size(3));
      const simmim::Size2d padded = simmim::padded_size(size, spec.patch_size);
      auto it = models.find({padded.h, padded.w});
      if (it == models.end()) it = models.emplace(std::make_pair(padded.h, padded.w),
                                                  simmim::load_pretrain_model(checkpoint, padded, device)).first;
      simmim::InpaintRegion region = simmim::InpaintRegion::boxes(box_list);
      if (mask_image.defined()) {
        if (mask_image.size(1) != size.h || mask_image.size(2) != size.w)
          throw CLI::ValidationError("--mask", "'" + mask_path + "' is " + std::to_string(mask_image.size(2)) + "x" +
                                                   std::to_string(mask_image.size(1)) + " (W x H); '" + file.string() +
                                                   "' is " + std::to_string(size.w) + "x" + std::to_string(size.h));
        region = simmim::InpaintRegion::pixels(mask_image);
      } else if (!strategy.empty()) {
        strategy_gen = simmim::make_mask_generator(strategy, simmim::MaskGeometry(padded, spec.patch_size));
        region = simmim::InpaintRegion::patches(strategy_gen->generate(1, gen).mask);
      }
      const simmim::InpaintResult r = simmim::inpaint(it->second.inpaint_model(), image, region,
                                                      simmim::InpaintOptions().mean(mean).stddev(stddev));
      const std::string stem = file.stem().string();
      simmim::write_png(out + "/" + stem + "_inpainted.png", r.images[0]);
      simmim::write_png(out + "/" + stem + "_region.png", r.filled[0].to(at::kByte) * 255);

      // Scores against the original pixels: the model, and the mean of the visible pixels.
      const at::Tensor x = image.to(at::kFloat) / 255.0, y = r.images.to(at::kFloat) / 255.0;
      const at::Tensor inside = r.filled.expand_as(x);
      const int64_t n = inside.sum().item<int64_t>();
      if (n > 0) {
        // Per channel: the mean of the channel's visible pixels (all pixels' mean when none is visible).
        const at::Tensor seen = (~inside).to(at::kFloat);
        const at::Tensor count = seen.sum({0, 2, 3}, /*keepdim=*/true);
        const at::Tensor visible =
            at::where(count > 0, (x * seen).sum({0, 2, 3}, true) / count.clamp_min(1), x.mean({0, 2, 3}, true));
        se += (y - x).pow(2).masked_select(inside).sum().item<double>();
        se_mean += (visible.expand_as(x) - x).pow(2).masked_select(inside).sum().item<double>();
        pixels += n;
      }
      const at::Tensor shown = x.where(~inside, at::full_like(x, 0.5));
      originals.push_back(x);
      blanked.push_back(shown);
      filled.push_back(y);
      stems.push_back(stem);
    }
    bool same_size = true;
    for (const auto& o : originals) same_size = same_size && o.sizes() == originals[0].sizes();
    // Small images are shown enlarged (nearest neighbour), so that a 28 px picture can be read.
    const auto grid = [&](std::vector<at::Tensor> rows) {
      const int64_t k = grid_scale > 0 ? grid_scale : std::max<int64_t>(1, (96 + rows[0].size(2) - 1) / rows[0].size(2));
      for (auto& r : rows) r = r.repeat_interleave(k, 2).repeat_interleave(k, 3);
      return simmim::make_image_grid(rows);
    };
    if (same_size) {
      simmim::write_png(out + "/grid.png", grid({at::cat(originals), at::cat(blanked), at::cat(filled)}));
    } else {
      for (size_t i = 0; i < originals.size(); ++i)
        simmim::write_png(out + "/" + stems[i] + "_grid.png", grid({originals[i], blanked[i], filled[i]}));
    }
    const double denom = static_cast<double>(std::max<int64_t>(1, pixels));
    nlohmann::json result{{"images", originals.size()},
                          {"filled_pixels", pixels},
                          {"region_mse", se / denom},
                          {"mean_fill_mse", se_mean / denom},
                          {"out", out}};
    std::cout << "06_inpaint: wrote " << originals.size() << " inpainted images and "
              << (same_size ? out + "/grid.png" : std::string("one grid per image")) << " (rows: original | region | "
              << "inpainted)\n"
              << result.dump() << "\n";
    return 0;
  });
}
