#include <catch2/catch_approx.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "../support/scratch_dir.hpp"
#include "simmim/simmim_train.hpp"  // the umbrella compiles on its own
#include "simmim/train/batch_loader.hpp"
#include "simmim/train/fashion_mnist.hpp"
#include "simmim/train/image_folder.hpp"
#include "simmim/train/image_grid.hpp"
#include "simmim/train/image_transform.hpp"
#include "simmim/train/labeled_images.hpp"

using Catch::Approx;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;
using simmim_test::scratch_dir;

namespace {

torch::Tensor random_u8(std::vector<int64_t> shape, uint64_t seed) {
  return torch::randint(0, 256, shape, simmim::make_generator(seed), torch::kLong).to(torch::kByte);
}

}  // namespace

TEST_CASE("gunzip_file unpacks, and explains a bad file", "[train][data]") {
  const auto dir = scratch_dir("gz");
  const std::string gz = (dir / "x.gz").string();
  std::string payload;
  for (int i = 0; i < 200000; ++i) payload.push_back(static_cast<char>((i * 7919) % 251));
  gzFile f = gzopen(gz.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, payload.data(), static_cast<unsigned>(payload.size())) == static_cast<int>(payload.size()));
  gzclose(f);
  simmim::gunzip_file(gz, (dir / "x").string());
  std::ifstream in(dir / "x", std::ios::binary);
  std::string back((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(back == payload);

  // A truncated gzip stream is an error, and leaves no output behind.
  std::string bytes;
  {
    std::ifstream g(gz, std::ios::binary);
    bytes.assign((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  }
  std::ofstream((dir / "cut.gz"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  REQUIRE_THROWS_WITH(simmim::gunzip_file((dir / "cut.gz").string(), (dir / "cut").string()),
                      ContainsSubstring("gz must be a valid gzip file"));
  REQUIRE_FALSE(fs::exists(dir / "cut"));
  REQUIRE_THROWS_WITH(simmim::gunzip_file((dir / "nope.gz").string(), (dir / "n").string()),
                      ContainsSubstring("gz must be a readable gzip file"));
}

TEST_CASE("Fashion-MNIST from the Debian package, unpacked once", "[train][data]") {
  const auto dir = scratch_dir("fmnist");
  REQUIRE_THROWS_WITH(simmim::prepare_fashion_mnist(simmim::FashionMnistOptions()
                                                        .source_dir((dir / "none").string())
                                                        .cache_dir((dir / "empty").string())),
                      ContainsSubstring("apt install dataset-fashion-mnist"));
  simmim::FashionMnistOptions opts;
  if (!fs::exists(fs::path(opts.source_dir()) / "t10k-images-idx3-ubyte.gz"))
    SKIP("dataset-fashion-mnist is not installed");
  opts.cache_dir((dir / "cache").string());
  auto test = simmim::load_fashion_mnist(/*train=*/false, opts);
  REQUIRE(test.images.sizes() == torch::IntArrayRef({10000, 1, 28, 28}));
  REQUIRE(test.labels.scalar_type() == torch::kLong);
  REQUIRE(test.images.min().item<float>() >= 0.0f);
  REQUIRE(test.images.max().item<float>() <= 1.0f);
  // The test split is balanced: 1000 images per class.
  REQUIRE(torch::equal(torch::bincount(test.labels), torch::full({10}, 1000, torch::kLong)));
  const auto stamp = fs::last_write_time(dir / "cache" / "t10k-images-idx3-ubyte");
  simmim::prepare_fashion_mnist(opts);
  REQUIRE(fs::last_write_time(dir / "cache" / "t10k-images-idx3-ubyte") == stamp);
  REQUIRE(simmim::take_first(test, 5).size() == 5);
}

namespace {

// IDX bytes: magic 00 00 08 ndim, big-endian sizes, data.
std::string idx_bytes(const std::vector<int64_t>& dims, uint8_t fill) {
  std::string b = {0, 0, 8, static_cast<char>(dims.size())};
  int64_t n = 1;
  for (int64_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<char>((d >> s) & 0xFF));
    n *= d;
  }
  for (int64_t i = 0; i < n; ++i) b.push_back(static_cast<char>((fill + i) % 10));
  return b;
}

void write_gz(const fs::path& path, const std::string& bytes) {
  gzFile f = gzopen(path.string().c_str(), "wb1");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  gzclose(f);
}

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("IDX reader: exact lengths, no zero tail", "[train][data][integrity]") {
  const std::string ok = idx_bytes({3, 2, 2}, 1);
  const auto a = simmim::parse_idx(ok.data(), ok.size(), "x.idx");
  REQUIRE(a.dims == std::vector<int64_t>{3, 2, 2});
  REQUIRE(a.data.sizes() == torch::IntArrayRef({3, 2, 2}));
  REQUIRE(a.data.flatten()[11].item<uint8_t>() == (1 + 11) % 10);
  REQUIRE_THROWS_WITH(simmim::parse_idx(ok.data(), ok.size() - 1, "x.idx"),
                      ContainsSubstring("simmim::parse_idx: file must be an IDX file whose data is as long as its "
                                        "sizes say (12 bytes); got 'x.idx' (27 bytes) with 11 bytes of data"));
  REQUIRE_THROWS_WITH(simmim::parse_idx("hello world", 11, "t.gz"),
                      ContainsSubstring("an IDX file of unsigned bytes (magic 00 00 08 <1..4>); got 't.gz'"));
  // Sizes whose product overflows 64 bits must not pass.
  std::string huge = {0, 0, 8, 4};
  for (int i = 0; i < 4; ++i) huge += std::string{0x7F, char(0xFF), char(0xFF), char(0xFF)};
  REQUIRE_THROWS_WITH(simmim::parse_idx(huge.data(), huge.size(), "h"), ContainsSubstring("as long as its sizes say"));
  // Sizes above int32 (found by the fuzzer: with a zero size the product passed and the dims were absurd).
  const std::string wide = {0, 0, 8, 2, char(0xFF), char(0xFF), char(0xFF), char(0xFF), 0, 0, 0, 0};
  REQUIRE_THROWS_WITH(simmim::parse_idx(wide.data(), wide.size(), "w"),
                      ContainsSubstring("an IDX file with sizes below 2^31; got 'w' (12 bytes) with size 4294967295"));
}

TEST_CASE("Fashion-MNIST cache: validated before caching, checksummed, rebuilt when damaged", "[train][data][integrity]") {
  const auto dir = scratch_dir("fmnist_cache");
  const fs::path src = dir / "src", cache = dir / "cache";
  fs::create_directories(src);
  write_gz(src / "t10k-images-idx3-ubyte.gz", idx_bytes({10000, 28, 28}, 0));
  write_gz(src / "t10k-labels-idx1-ubyte.gz", idx_bytes({10000}, 3));
  const auto opts = simmim::FashionMnistOptions().source_dir(src.string()).cache_dir(cache.string());
  auto data = simmim::load_fashion_mnist(false, opts);
  REQUIRE(data.images.sizes() == torch::IntArrayRef({10000, 1, 28, 28}));
  REQUIRE(data.labels[9999].item<int64_t>() == (3 + 9999) % 10);
  const fs::path cached = cache / "t10k-images-idx3-ubyte";
  std::string bytes = slurp(cached);
  REQUIRE(simmim::verify_checksum_trailer(bytes.data(), bytes.size()) == simmim::ChecksumStatus::kOk);

  // A truncated cache is never read as 10000 images with a zero tail: it is rebuilt from the source.
  std::ofstream(cached, std::ios::binary | std::ios::trunc).write(bytes.data(), 5000);
  auto again = simmim::load_fashion_mnist(false, opts);
  REQUIRE(torch::equal(again.images, data.images));
  REQUIRE(slurp(cached) == bytes);
  // One flipped byte in the cache: rebuilt too.
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 1);
  std::ofstream(cached, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(torch::equal(simmim::load_fashion_mnist(false, opts).images, data.images));

  // A plain-text file named .gz: an error naming it, and nothing cached, so restoring the file fixes it.
  fs::remove_all(cache);
  { std::ofstream(src / "t10k-labels-idx1-ubyte.gz") << "404 Not Found\n"; }
  REQUIRE_THROWS_WITH(simmim::load_fashion_mnist(false, opts),
                      ContainsSubstring("simmim::load_fashion_mnist: gz must be a valid gzip file; got '" +
                                        (src / "t10k-labels-idx1-ubyte.gz").string() + "' (not gzip-compressed)"));
  REQUIRE_FALSE(fs::exists(cache / "t10k-labels-idx1-ubyte"));
  // A real gzip holding the wrong thing (a truncated IDX): also refused before caching.
  const std::string short_labels = idx_bytes({10000}, 3).substr(0, 4000);
  write_gz(src / "t10k-labels-idx1-ubyte.gz", short_labels);
  REQUIRE_THROWS_WITH(simmim::load_fashion_mnist(false, opts),
                      ContainsSubstring("whose data is as long as its sizes say"));
  REQUIRE_FALSE(fs::exists(cache / "t10k-labels-idx1-ubyte"));
  write_gz(src / "t10k-labels-idx1-ubyte.gz", idx_bytes({10000}, 3));
  REQUIRE(torch::equal(simmim::load_fashion_mnist(false, opts).labels, data.labels));
  // Labels outside 0..9 and shapes that are not Fashion-MNIST's.
  write_gz(src / "t10k-labels-idx1-ubyte.gz", idx_bytes({9999}, 3));
  fs::remove_all(cache);
  REQUIRE_THROWS_WITH(simmim::load_fashion_mnist(false, opts),
                      ContainsSubstring("file must be Fashion-MNIST's t10k-labels-idx1-ubyte [10000]"));
}

TEST_CASE("image decoding: absurd sizes and garbage are clear errors", "[train][image]") {
  // A BMP header claiming 100000 x 100000 pixels.
  std::string bmp(54, '\0');
  bmp[0] = 'B';
  bmp[1] = 'M';
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) bmp[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
  };
  put32(2, 54);
  put32(10, 54);
  put32(14, 40);
  put32(18, 100000);
  put32(22, 100000);
  bmp[26] = 1;
  bmp[28] = 24;
  REQUIRE_THROWS_WITH(simmim::decode_image(bmp.data(), bmp.size(), 3, "huge.bmp"),
                      ContainsSubstring("simmim::decode_image: path must be an image of at most 268435456 pixels; "
                                        "got 'huge.bmp' claiming 100000x100000"));
  // Found by simmim_fuzz_image: Debian's stb crashed (SEGV) on this 16-bit PNM; PNM, PSD, HDR and PIC are
  // refused before stb sees them.
  const std::string pnm = std::string("P5\n33\n25\n3352") + char(0x10) + "3\n233" + char(0xFF);
  REQUIRE_THROWS_WITH(simmim::decode_image(pnm.data(), pnm.size(), 1, "x.pgm"),
                      ContainsSubstring("path must be a PNG, JPEG, BMP, TGA or GIF image (PSD, PNM, HDR and PIC are "
                                        "not read); got 'x.pgm'"));
  REQUIRE_THROWS_WITH(simmim::decode_image("not an image", 12, 3, "x.png"),
                      ContainsSubstring("path must be an image stb_image can decode"));
  const auto dir = scratch_dir("badimg");
  { std::ofstream(dir / "x.png") << "not an image"; }
  REQUIRE_THROWS_WITH(simmim::read_image((dir / "x.png").string()),
                      ContainsSubstring("simmim::read_image: path must be an image stb_image can decode"));
  REQUIRE_THROWS_WITH(simmim::read_image((dir / "none.png").string()),
                      ContainsSubstring("simmim::read_image: path must be an existing readable file"));
}

TEST_CASE("PNG write and image read round-trip", "[train][image]") {
  const auto dir = scratch_dir("png");
  auto rgb = random_u8({3, 5, 7}, 1);
  simmim::write_png((dir / "rgb.png").string(), rgb);
  REQUIRE(torch::equal(simmim::read_image((dir / "rgb.png").string(), 3), rgb));
  auto gray = random_u8({1, 4, 9}, 2);
  simmim::write_png((dir / "gray.png").string(), gray);
  REQUIRE(torch::equal(simmim::read_image((dir / "gray.png").string(), 1), gray));
  // Gray files read as RGB repeat the channel.
  REQUIRE(torch::equal(simmim::read_image((dir / "gray.png").string(), 3), gray.expand({3, 4, 9})));
  // Floats in [0, 1] map to 0..255, clamped.
  simmim::write_png((dir / "f.png").string(), torch::tensor({-1.0f, 0.0f, 0.5f, 2.0f}).reshape({2, 2}));
  REQUIRE(torch::equal(simmim::read_image((dir / "f.png").string(), 1).flatten(),
                       torch::tensor({0, 0, 128, 255}, torch::kByte)));
  REQUIRE_THROWS_WITH(simmim::write_png((dir / "x.png").string(), torch::zeros({2, 4, 4})),
                      ContainsSubstring("1, 3 or 4 channels"));
  std::ofstream(dir / "bad.png") << "not a png";
  REQUIRE_THROWS_WITH(simmim::read_image((dir / "bad.png").string()), ContainsSubstring("an image stb_image can decode"));
}

TEST_CASE("image grids: layout, and the original | masked | reconstruction rows", "[train][image]") {
  auto a = torch::full({2, 1, 4, 4}, 0.25);
  auto b = torch::full({3, 3, 4, 4}, 0.75);
  auto g = simmim::make_image_grid({a, b}, /*padding=*/1, /*pad_value=*/0.0);
  REQUIRE(g.sizes() == torch::IntArrayRef({3, 2 * 5 + 1, 3 * 5 + 1}));
  REQUIRE(g[0][1][1].item<float>() == 0.25f);   // row 0, tile 0
  REQUIRE(g[2][6][11].item<float>() == 0.75f);  // row 1, tile 2, gray broadcast to 3 channels above
  REQUIRE(g[1][1][11].item<float>() == 0.0f);   // row 0 has 2 tiles: padding
  REQUIRE(g[0][0][0].item<float>() == 0.0f);
  REQUIRE_THROWS_WITH(simmim::make_image_grid({a, torch::zeros({1, 1, 5, 4})}), ContainsSubstring("first row's size"));

  // mask cells of 2x2 pixels on a 4x6 image.
  auto mask = torch::zeros({1, 2, 3}, torch::kBool);
  mask[0][1][2] = true;
  auto px = simmim::mask_to_pixels(mask, {4, 6});
  REQUIRE(px.sizes() == torch::IntArrayRef({1, 1, 4, 6}));
  REQUIRE(px.sum().item<float>() == 4.0f);
  REQUIRE(px[0][0][3][5].item<float>() == 1.0f);
  REQUIRE_THROWS_WITH(simmim::mask_to_pixels(mask, {5, 6}), ContainsSubstring("a grid that divides the image"));

  // Normalized images come back denormalized; masked cells are gray; the reconstruction keeps visible pixels.
  const double mean = 0.5, stdv = 0.25;
  auto img = (torch::full({1, 1, 4, 6}, 0.9) - mean) / stdv;
  auto rec = (torch::full({1, 1, 4, 6}, 0.1) - mean) / stdv;
  auto grid = simmim::make_reconstruction_grid(
      img, mask, rec, simmim::ReconstructionGridOptions().mean({mean}).stddev({stdv}).padding(0).masked_value(0.5));
  REQUIRE(grid.sizes() == torch::IntArrayRef({1, 12, 6}));
  REQUIRE(grid[0][0][0].item<float>() == Approx(0.9));   // original
  REQUIRE(grid[0][4][0].item<float>() == Approx(0.9));   // masked row, visible
  REQUIRE(grid[0][7][5].item<float>() == Approx(0.5));   // masked row, masked cell
  REQUIRE(grid[0][8][0].item<float>() == Approx(0.9));   // reconstruction row, visible pasted
  REQUIRE(grid[0][11][5].item<float>() == Approx(0.1));  // reconstruction row, predicted
  const auto dir = scratch_dir("grid");
  simmim::write_reconstruction_grid((dir / "g.png").string(), img, mask, rec,
                                    simmim::ReconstructionGridOptions().mean({mean}).stddev({stdv}));
  REQUIRE(simmim::read_image((dir / "g.png").string(), 1).sizes() == torch::IntArrayRef({1, 3 * 6 + 2, 6 + 4}));
  auto big = simmim::make_reconstruction_grid(img, mask, rec, simmim::ReconstructionGridOptions().padding(0).scale(3));
  REQUIRE(big.sizes() == torch::IntArrayRef({1, 36, 18}));
  REQUIRE(big[0][21][17].item<float>() == Approx(0.5));  // masked cell (row 1, y 7 -> 21, x 5 -> 17)
  REQUIRE(big[0][12][0].item<float>() == big[0][14][2].item<float>());
}

TEST_CASE("image folder: classes from subfolders, or one unlabeled class", "[train][image]") {
  const auto dir = scratch_dir("folder");
  fs::create_directories(dir / "b_cat" / "nested");
  fs::create_directories(dir / "a_dog");
  fs::create_directories(dir / "empty");
  simmim::write_png((dir / "b_cat" / "1.png").string(), random_u8({3, 8, 10}, 3));
  simmim::write_png((dir / "b_cat" / "nested" / "2.PNG").string(), random_u8({1, 12, 6}, 4));
  simmim::write_png((dir / "a_dog" / "x.png").string(), random_u8({3, 9, 9}, 5));
  std::ofstream(dir / "a_dog" / "notes.txt") << "skip me";
  simmim::ImageFolder folder(dir.string());
  REQUIRE(folder.classes() == std::vector<std::string>{"a_dog", "b_cat"});
  REQUIRE(folder.size() == 3);
  REQUIRE(folder.label(0) == 0);
  REQUIRE(folder.label(2) == 1);
  REQUIRE(folder.load(2).sizes() == torch::IntArrayRef({3, 12, 6}));  // gray converted to RGB
  REQUIRE_THROWS_WITH(folder.load(3), ContainsSubstring("index must be in [0, 3)"));

  auto batches = simmim::make_batch_fn(std::make_shared<const simmim::ImageFolder>(folder),
                                       std::make_shared<const simmim::ImageTransform>(
                                           simmim::ImageTransformOptions().size({8, 12})));
  auto b = batches({0, 1, 2}, 11);
  REQUIRE(b.images.sizes() == torch::IntArrayRef({3, 3, 8, 12}));
  REQUIRE(torch::equal(b.labels, torch::tensor({0, 1, 1}, torch::kLong)));
  REQUIRE(torch::equal(batches({0, 1, 2}, 11).images, b.images));  // same seed, same augmentation

  const auto flat = scratch_dir("flat");
  simmim::write_png((flat / "a.png").string(), random_u8({3, 4, 4}, 6));
  simmim::ImageFolder one(flat.string());
  REQUIRE(one.classes() == std::vector<std::string>{"."});
  REQUIRE(one.size() == 1);
  REQUIRE_THROWS_WITH(simmim::ImageFolder((dir / "empty").string()), ContainsSubstring("a folder with images"));
  REQUIRE_THROWS_WITH(simmim::ImageFolder((dir / "missing").string()), ContainsSubstring("root must be a directory"));
}

TEST_CASE("image transform: crop bounds, flip, normalization, seeded", "[train][image]") {
  auto gen = simmim::make_generator(3);
  {
    simmim::ScalarRng rng(gen);
    for (int i = 0; i < 500; ++i) {
      const auto b = simmim::sample_resized_crop({20, 31}, rng, {0.08, 1.0}, {0.75, 4.0 / 3.0});
      REQUIRE(b.height > 0);
      REQUIRE(b.width > 0);
      REQUIRE(b.top + b.height <= 20);
      REQUIRE(b.left + b.width <= 31);
    }
  }
  auto img = torch::rand({3, 16, 16}, simmim::make_generator(1));
  // Flip always, no crop, no normalization: exactly the mirror image.
  simmim::ImageTransform flip(
      simmim::ImageTransformOptions().size(16).random_crop(false).hflip(1.0).mean({}).stddev({}));
  REQUIRE(torch::equal(flip(img), img.flip({2})));
  // Eval: resize + normalize, no randomness.
  simmim::ImageTransform eval(simmim::ImageTransformOptions::eval(16, {0.5}, {0.5}));
  REQUIRE(torch::allclose(eval(img), (img - 0.5) / 0.5));
  REQUIRE(eval(img).sizes() == img.sizes());
  // uint8 input is scaled to [0, 1] first.
  auto u8 = random_u8({1, 6, 6}, 9);
  simmim::ImageTransform plain(simmim::ImageTransformOptions::eval(6, {}, {}));
  REQUIRE(torch::allclose(plain(u8), u8.to(torch::kFloat) / 255.0));
  // Training transform: seeded, and different seeds differ.
  simmim::ImageTransform train(simmim::ImageTransformOptions().size({8, 10}));
  auto a = train(img, simmim::make_generator(5));
  REQUIRE(a.sizes() == torch::IntArrayRef({3, 8, 10}));
  REQUIRE(torch::equal(a, train(img, simmim::make_generator(5))));
  REQUIRE_FALSE(torch::equal(a, train(img, simmim::make_generator(6))));
  REQUIRE_THROWS_AS(simmim::ImageTransform(simmim::ImageTransformOptions().scale_min(0.0)), c10::ValueError);
  REQUIRE_THROWS_WITH(simmim::normalize_image(img, {0.1, 0.2}, {1.0, 1.0}), ContainsSubstring("one value per channel"));
}

TEST_CASE("batch loader: same batches whatever the workers, resumable, every item once per epoch",
          "[train][loader]") {
  const int64_t N = 50;
  simmim::LabeledImages data{torch::arange(N, torch::kFloat).reshape({N, 1, 1, 1}).expand({N, 1, 2, 2}).contiguous(),
                             torch::arange(N, torch::kLong)};
  auto augment = std::make_shared<const simmim::ImageTransform>(
      simmim::ImageTransformOptions().size(2).random_crop(false).hflip(0.5).mean({}).stddev({}));
  auto fn = simmim::make_batch_fn(data, augment);
  auto opts = simmim::BatchLoaderOptions().batch_size(8).seed(17);

  auto collect = [&](int64_t workers, int64_t start, int64_t count) {
    simmim::BatchLoader loader(N, fn, simmim::BatchLoaderOptions(opts).workers(workers), start);
    std::vector<simmim::Batch> out;
    for (int64_t i = 0; i < count; ++i) out.push_back(loader.next());
    return out;
  };
  const auto ref = collect(0, 0, 20);
  for (int64_t w : {1, 3}) {
    const auto got = collect(w, 0, 20);
    for (size_t i = 0; i < ref.size(); ++i) {
      REQUIRE(got[i].step == static_cast<int64_t>(i));
      REQUIRE(torch::equal(got[i].labels, ref[i].labels));
      REQUIRE(torch::equal(got[i].images, ref[i].images));
    }
  }
  const auto resumed = collect(2, 13, 7);
  for (size_t i = 0; i < resumed.size(); ++i) REQUIRE(torch::equal(resumed[i].images, ref[13 + i].images));

  // 6 batches per epoch (drop_last); each epoch a permutation, epochs shuffled differently.
  simmim::BatchLoader loader(N, fn, opts);
  REQUIRE(loader.batches_per_epoch() == 6);
  std::set<int64_t> seen;
  for (int64_t s = 0; s < 6; ++s)
    for (int64_t i : loader.indices_for(s)) REQUIRE(seen.insert(i).second);
  REQUIRE(seen.size() == 48);
  REQUIRE(loader.indices_for(0) != loader.indices_for(6));
  REQUIRE(ref[6].epoch == 1);
  REQUIRE(simmim::BatchLoader(N, fn, simmim::BatchLoaderOptions(opts).drop_last(false).shuffle(false))
              .indices_for(6) == std::vector<int64_t>{48, 49});

  // A throwing batch function surfaces in next(), in order.
  simmim::BatchLoader bad(
      N,
      [](const std::vector<int64_t>& idx, uint64_t) -> simmim::Batch {
        TORCH_CHECK(idx.front() != 8, "broken item");
        return {torch::zeros({1}), torch::Tensor()};
      },
      simmim::BatchLoaderOptions().batch_size(8).shuffle(false).workers(2));
  REQUIRE_NOTHROW(bad.next());
  REQUIRE_THROWS_WITH(bad.next(), ContainsSubstring("broken item"));
  REQUIRE_THROWS_AS(simmim::BatchLoader(N, fn, simmim::BatchLoaderOptions().batch_size(0)), c10::ValueError);
}

TEST_CASE("a CUDA device on a CPU-only LibTorch is a clear error", "[train][device]") {
  REQUIRE(simmim::resolve_device("cpu") == c10::Device(c10::kCPU));
  REQUIRE_THROWS_WITH(simmim::resolve_device("tpu"), ContainsSubstring("device must be auto, cpu, cuda or cuda:<index>"));
  if (at::hasCUDA()) SKIP("this LibTorch has CUDA");
  REQUIRE_THROWS_WITH(simmim::resolve_device("cuda:0"),
                      ContainsSubstring("simmim::resolve_device: device must be auto or cpu: this LibTorch is a "
                                        "CPU-only build"));
  REQUIRE(simmim::resolve_device("auto") == c10::Device(c10::kCPU));
  REQUIRE_THROWS_WITH(simmim::SimMIMMask().generate(2, c10::nullopt, c10::Device(c10::kCUDA, 0)),
                      ContainsSubstring("simmim::SimMIMMask: device must be a device this LibTorch can use (it is a "
                                        "CPU-only build: use cpu); got cuda:0"));
}

TEST_CASE("absurd image sizes in transforms are clear errors", "[train][image][bounds]") {
  REQUIRE_THROWS_WITH(simmim::ImageTransform(simmim::ImageTransformOptions().size(simmim::Size2d{int64_t{1} << 40, 8})),
                      ContainsSubstring("simmim::ImageTransform: options.size must be positive and at most 65536 per side"));
  REQUIRE_THROWS_WITH(simmim::resize_image(torch::zeros({1, 4, 4}), simmim::Size2d{100000, 2}),
                      ContainsSubstring("simmim::resize_image: size must be positive and at most 65536 per side; got "
                                        "100000x2"));
}

TEST_CASE("channel statistics: per channel over all pixels; a constant channel gets std 1", "[train][data][channels]") {
  auto images = torch::rand({5, 3, 4, 6}, torch::kDouble);
  images.select(1, 2).fill_(0.25);
  const auto [mean, stddev] = simmim::channel_stats(images);
  REQUIRE(mean.size() == 3);
  for (int64_t c = 0; c < 2; ++c) {
    const auto ch = images.select(1, c);
    CHECK(mean[c] == Catch::Approx(ch.mean().item<double>()).epsilon(1e-12));
    CHECK(stddev[c] == Catch::Approx(ch.std(/*unbiased=*/false).item<double>()).epsilon(1e-12));
  }
  CHECK(mean[2] == Catch::Approx(0.25));
  CHECK(stddev[2] == 1.0);
  // uint8 reads as / 255.
  const auto bytes = torch::full({1, 1, 2, 2}, 51, torch::kByte);
  CHECK(simmim::channel_stats(bytes).first[0] == Catch::Approx(0.2));
}

TEST_CASE("tensor_split: 13 channels, non-square, statistics from the data, resized on request",
          "[train][data][channels]") {
  torch::manual_seed(3);
  simmim::LabeledImages data{torch::randint(0, 256, {20, 13, 40, 24}, torch::kLong).to(torch::kByte),
                             torch::arange(20, torch::kLong) % 4};
  const auto s = simmim::tensor_split(data, simmim::SplitOptions().image_size(simmim::Size2d(0)).stats_images(10));
  CHECK(s.size == 20);
  CHECK(s.channels == 13);
  CHECK(s.image_size == simmim::Size2d(40, 24));
  CHECK(s.num_classes == 4);
  const auto [mean, stddev] = simmim::channel_stats(data.images.slice(0, 0, 10));
  REQUIRE(s.mean.size() == 13);
  for (size_t c = 0; c < 13; ++c) {  // the split reads the images as float first
    CHECK(s.mean[c] == Catch::Approx(mean[c]).epsilon(1e-6));
    CHECK(s.stddev[c] == Catch::Approx(stddev[c]).epsilon(1e-6));
  }
  CHECK(s.preview.sizes() == torch::IntArrayRef({8, 13, 40, 24}));
  const auto b = s.batches({0, 5, 7}, 1);
  REQUIRE(b.images.sizes() == torch::IntArrayRef({3, 13, 40, 24}));
  CHECK(torch::allclose(b.images[1], simmim::normalize_image(data.images[5].to(torch::kFloat) / 255.0, mean, stddev),
                        1e-5, 1e-5));
  CHECK(torch::equal(b.labels, torch::tensor({0, 1, 3}, torch::kLong)));
  // Resized to a non-square size of the caller's, augmented batches keep it.
  const auto r = simmim::tensor_split(data, simmim::SplitOptions().image_size({32, 48}).augment(true));
  CHECK(r.image_size == simmim::Size2d(32, 48));
  CHECK(r.batches({1, 2}, 9).images.sizes() == torch::IntArrayRef({2, 13, 32, 48}));
  // ImageNet's statistics are for RGB only.
  REQUIRE_THROWS_WITH(
      simmim::tensor_split(data, simmim::SplitOptions().normalization(simmim::NormalizationStats::kImageNet)),
      ContainsSubstring("simmim::tensor_split: options.normalization must be kAuto or kFromData for images of 13 "
                        "channels (ImageNet's statistics are for RGB); got kImageNet"));
  REQUIRE_THROWS_WITH(simmim::tensor_split({torch::zeros({2, 3, 4}), {}}),
                      ContainsSubstring("data.images must be a non-empty uint8 or floating [N, C, H, W] tensor"));
}

TEST_CASE("image folders of 1, 3 and 4 channels at a non-square size; grids of any channel count",
          "[train][data][channels]") {
  const auto dir = scratch_dir("channels");
  torch::manual_seed(4);
  for (int i = 0; i < 3; ++i) {
    simmim::write_png((dir / ("img" + std::to_string(i) + ".png")).string(), torch::rand({4, 20, 30}));  // RGBA
  }
  for (int64_t c : {1, 3, 4}) {
    INFO(c << " channels");
    const auto s = simmim::image_folder_split(dir.string(), simmim::SplitOptions().channels(c).image_size({16, 24}));
    CHECK(s.channels == c);
    CHECK(s.image_size == simmim::Size2d(16, 24));
    CHECK(s.mean.size() == static_cast<size_t>(c));
    if (c == 3) CHECK(s.mean == simmim::imagenet_mean());  // kAuto: RGB gets ImageNet's
    CHECK(s.batches({0, 2}, 0).images.sizes() == torch::IntArrayRef({2, c, 16, 24}));
  }
  REQUIRE_THROWS_WITH(simmim::image_folder_split(dir.string(), simmim::SplitOptions().channels(2)),
                      ContainsSubstring("channels must be 1 (gray), 3 (RGB) or 4 (RGBA); got 2"));
  // A 13-channel reconstruction grid: every channel a gray tile, or three chosen ones as colour.
  const auto images = torch::rand({2, 13, 8, 12});
  const auto mask = torch::rand({2, 2, 3}) < 0.5;
  const auto tiles = simmim::make_reconstruction_grid(images, mask, images, simmim::ReconstructionGridOptions().padding(1));
  CHECK(tiles.sizes() == torch::IntArrayRef({1, 3 * (8 + 1) + 1, 26 * (12 + 1) + 1}));
  const auto rgb = simmim::make_reconstruction_grid(
      images, mask, images, simmim::ReconstructionGridOptions().padding(1).display_channels({3, 2, 1}));
  CHECK(rgb.sizes() == torch::IntArrayRef({3, 3 * (8 + 1) + 1, 2 * (12 + 1) + 1}));
  CHECK(torch::allclose(rgb.slice(1, 1, 9).slice(2, 1, 13), images[0].index_select(0, torch::tensor({3, 2, 1}))));
  REQUIRE_THROWS_WITH(simmim::make_reconstruction_grid(images, mask, images,
                                                       simmim::ReconstructionGridOptions().display_channels({0, 13, 1})),
                      ContainsSubstring("options.display_channels must be indices in [0, 13); got 13"));
}
