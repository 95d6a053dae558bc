// SimMIM, MAE, Bernoulli and Grid masks: exact counts against Python's arithmetic, shapes on odd and
// non-square grids, the index contract, determinism, and statistics over many draws.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <set>

#include "mask_checks.hpp"
#include "simmim/masking/bernoulli_mask.hpp"
#include "simmim/masking/grid_mask.hpp"
#include "simmim/masking/mae_mask.hpp"
#include "simmim/masking/simmim_mask.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim::make_generator;
using simmim::Size2d;

namespace {

// Fraction of masked patches at each grid position over a batch: [h, w] double.
torch::Tensor per_position_rate(const torch::Tensor& mask) { return mask.to(torch::kDouble).mean(0); }

}  // namespace

TEST_CASE("SimMIM: count = ceil(cells * ratio) as Python computes it, output at model-patch resolution",
          "[masking][simmim]") {
  struct Case {
    Size2d input;
    int64_t mask_patch, patch;
    double ratio;
    int64_t expected_count;  // math.ceil(cells * ratio) in Python 3
    Size2d grid;
  };
  const Case c = GENERATE(Case{192, 32, 16, 0.6, 22, {12, 12}},         // official ViT setting: 6x6 cells
                          Case{192, 32, 4, 0.6, 22, {48, 48}},          // official Swin setting
                          Case{224, 32, 32, 0.6, 30, {7, 7}},           // 7x7, scale 1
                          Case{{192, 320}, 32, 16, 0.6, 36, {12, 20}},  // non-square 6x10 cells
                          Case{320, 32, 16, 0.55, 56, {20, 20}},        // 100 * 0.55 = 55.00000000000001
                          Case{304, 16, 16, 0.6, 217, {19, 19}},        // 19x19
                          Case{32, 32, 32, 0.6, 1, {1, 1}},             // a single patch
                          Case{32, 32, 16, 0.0, 0, {2, 2}},             // nothing masked
                          Case{{96, 160}, 32, 8, 1.0, 15, {12, 20}});   // everything masked
  simmim::SimMIMMask gen(
      simmim::SimMIMMaskOptions(c.input).patch_size(c.patch).mask_patch_size(c.mask_patch).ratio(c.ratio));
  REQUIRE(gen.mask_count() == c.expected_count);
  REQUIRE(gen.grid() == c.grid);
  const int64_t scale = c.mask_patch / c.patch;
  REQUIRE(gen.scale() == scale);
  const auto b = gen.generate(5, make_generator(11));
  simmim_test::check_mask_batch(b, 5, c.grid);
  // Every sample masks exactly count cells of scale x scale patches.
  REQUIRE(torch::equal(b.flat_mask().sum(1), torch::full({5}, c.expected_count * scale * scale, torch::kLong)));
  REQUIRE(b.ids_keep.size(1) == gen.len_keep());
  // The mask is constant on each scale x scale cell.
  const auto cells = b.mask.view({5, c.grid.h / scale, scale, c.grid.w / scale, scale});
  REQUIRE(torch::equal(cells, cells.narrow(2, 0, 1).narrow(4, 0, 1).expand_as(cells)));
}

TEST_CASE("SimMIM: masked cells are a uniform random subset", "[masking][simmim]") {
  simmim::SimMIMMask gen(simmim::SimMIMMaskOptions(224).mask_patch_size(32).ratio(0.6));  // 49 cells, 30 masked
  const auto b = gen.generate(4000, make_generator(5));
  // Each cell is masked with probability 30/49; 4000 draws give a standard error of 0.008 per cell.
  const auto rate = per_position_rate(b.mask);
  REQUIRE((rate - 30.0 / 49.0).abs().max().item<double>() < 0.05);
  REQUIRE(b.mask.to(torch::kDouble).mean().item<double>() == 30.0 / 49.0);
}

TEST_CASE("SimMIM: options are validated", "[masking][simmim]") {
  using O = simmim::SimMIMMaskOptions;
  REQUIRE_THROWS_WITH(simmim::SimMIMMask(O(192).ratio(1.5)),
                      ContainsSubstring("simmim::SimMIMMask: ratio must be in [0, 1]; got 1.5"));
  REQUIRE_THROWS_WITH(simmim::SimMIMMask(O(192).ratio(std::nan(""))),
                      ContainsSubstring("simmim::SimMIMMask: ratio must be in [0, 1]; got nan"));
  REQUIRE_THROWS_WITH(simmim::SimMIMMask(O(192).mask_patch_size(24)),
                      ContainsSubstring("simmim::SimMIMMask: mask_patch_size must be a positive multiple of "
                                        "patch_size 16; got 24"));
  REQUIRE_THROWS_WITH(simmim::SimMIMMask(O(200)),
                      ContainsSubstring("simmim::SimMIMMask: input_size must be divisible by the patch size"));
  REQUIRE_THROWS_WITH(simmim::SimMIMMask(O({192, 208})),  // divisible by 16, not by the 32-pixel cells
                      ContainsSubstring("simmim::SimMIMMask: input_size must be divisible by the patch size 32; "
                                        "got 192x208"));
  REQUIRE_THROWS_AS(simmim::SimMIMMask(O(192).model_patch_size(0)), c10::ValueError);
  REQUIRE(O().model_patch_size(4).patch_size() == 4);
  REQUIRE_THROWS_WITH(simmim::SimMIMMask().generate(0),
                      ContainsSubstring("simmim::SimMIMMask: batch_size must be positive (an empty batch has no "
                                        "masks); got 0"));
}

TEST_CASE("MAE: len_keep = int(L * (1 - ratio)) as Python computes it", "[masking][mae]") {
  struct Case {
    Size2d input;
    int64_t patch;
    double ratio;
    int64_t expected_keep;  // int(L * (1 - ratio)) in Python 3
  };
  const Case c = GENERATE(Case{224, 16, 0.75, 49},        // ViT-B/16, L = 196
                          Case{{32, 80}, 16, 0.8, 1},     // L = 10: 10 * 0.2 = 1.9999999999999996
                          Case{{144, 160}, 16, 0.3, 62},  // L = 90: 62.99999999999999
                          Case{16, 16, 0.0, 1},           // L = 1
                          Case{{112, 48}, 16, 0.5, 10},   // 7 x 3: 21 * 0.5 = 10.5
                          Case{304, 16, 0.75, 90});       // 19x19
  simmim::MAEMask gen(simmim::MAEMaskOptions(c.input).patch_size(c.patch).ratio(c.ratio));
  const Size2d grid = gen.grid();
  const int64_t L = grid.area();
  const int64_t expected = c.expected_keep;
  REQUIRE(gen.len_keep() == expected);
  const auto b = gen.generate(6, make_generator(3));
  simmim_test::check_mask_batch(b, 6, grid);
  REQUIRE(b.ids_keep.size(1) == expected);
  REQUIRE(b.flat_mask().sum().item<int64_t>() == 6 * (L - expected));
}

TEST_CASE("MAE: same noise, same masks as the official random_masking", "[masking][mae]") {
  // The official code: noise = rand(B, L); ids_shuffle = argsort(noise); ids_restore = argsort(ids_shuffle);
  // ids_keep = ids_shuffle[:, :len_keep]; mask = ones; mask[:, :len_keep] = 0; mask = gather(mask, ids_restore).
  simmim::MAEMask gen(simmim::MAEMaskOptions({96, 128}).ratio(0.75));
  const int64_t B = 8, L = gen.grid().area(), keep = gen.len_keep();
  const auto noise = torch::rand({B, L}, make_generator(42));
  // Stable: float noise has ties now and then, which the official code leaves in an unspecified order.
  const auto ids_shuffle = std::get<1>(torch::sort(noise, /*stable=*/true, /*dim=*/1, /*descending=*/false));
  const auto ids_restore = torch::argsort(ids_shuffle, int64_t{1}, false);
  auto mask = torch::ones({B, L});
  mask.narrow(1, 0, keep).zero_();
  mask = mask.gather(1, ids_restore);
  const auto b = gen.generate(B, make_generator(42));
  REQUIRE(torch::equal(b.ids_keep, ids_shuffle.narrow(1, 0, keep)));
  REQUIRE(torch::equal(b.ids_restore, ids_restore));
  REQUIRE(torch::equal(b.flat_mask(), mask.to(torch::kBool)));
}

TEST_CASE("argsort_noise is a stable argsort of [0, 1) noise", "[masking][mae]") {
  const int64_t L = GENERATE(1, 7, 196, 1000);
  const auto noise = torch::rand({33, L}, make_generator(static_cast<uint64_t>(L)));
  const auto stable = [](const torch::Tensor& x) { return std::get<1>(torch::sort(x, true, 1, false)); };
  REQUIRE(torch::equal(simmim::detail::argsort_noise(noise), stable(noise)));
  const auto tied = noise.mul(8).floor().div(8);  // many ties: index order decides
  REQUIRE(torch::equal(simmim::detail::argsort_noise(tied), stable(tied)));
  const auto strided = torch::rand({L, 5}, make_generator(1)).t();
  REQUIRE(torch::equal(simmim::detail::argsort_noise(strided), stable(strided)));
}

TEST_CASE("MAE: every patch equally likely to stay visible", "[masking][mae]") {
  simmim::MAEMask gen(simmim::MAEMaskOptions(224).ratio(0.75));
  const auto rate = per_position_rate(gen.generate(4000, make_generator(9)).mask);
  REQUIRE((rate - 0.75).abs().max().item<double>() < 0.04);  // standard error 0.007
}

TEST_CASE("MAE: options are validated", "[masking][mae]") {
  using O = simmim::MAEMaskOptions;
  REQUIRE_THROWS_WITH(simmim::MAEMask(O().ratio(1.0)),
                      ContainsSubstring("simmim::MAEMask: ratio must be in [0, 1); got 1"));
  REQUIRE_THROWS_WITH(simmim::MAEMask(O().ratio(-0.1)), ContainsSubstring("ratio must be in [0, 1); got -0.1"));
  REQUIRE_THROWS_WITH(simmim::MAEMask(O({16, 80}).ratio(0.8)),
                      ContainsSubstring("simmim::MAEMask: ratio must be small enough to leave a visible patch: "
                                        "int(L * (1 - ratio)) >= 1 with L = 5; got 0.8"));
  REQUIRE_THROWS_WITH(simmim::MAEMask(O(224).patch_size(15)),
                      ContainsSubstring("simmim::MAEMask: input_size must be divisible by the patch size 15"));
  REQUIRE_THROWS_WITH(simmim::MAEMask().generate(-3), ContainsSubstring("batch_size must be positive"));
}

TEST_CASE("SimMIM: the same masks as its first batched draw (argsort of noise, scatter, repeat)", "[masking][simmim]") {
  // The construction simmim shipped before the direct write (issue 15), kept here as the oracle: a seed
  // must give the same masks as it always did.
  struct Case {
    Size2d input;
    int64_t mask_patch, patch;
    double ratio;
  };
  const Case c = GENERATE(Case{192, 32, 4, 0.6}, Case{{192, 320}, 32, 16, 0.6}, Case{224, 32, 32, 0.6},
                          Case{304, 16, 16, 0.6}, Case{{96, 160}, 32, 8, 1.0}, Case{32, 32, 16, 0.0});
  const simmim::SimMIMMask gen(
      simmim::SimMIMMaskOptions(c.input).patch_size(c.patch).mask_patch_size(c.mask_patch).ratio(c.ratio));
  const int64_t B = 7, scale = gen.scale();
  const Size2d cells = gen.cell_grid();
  auto rng = make_generator(5);
  const auto perm = simmim::detail::argsort_noise(torch::rand({B, cells.area()}, rng));
  auto cell_mask = torch::zeros({B, cells.area()}, torch::kBool);
  cell_mask.scatter_(1, perm.narrow(1, 0, gen.mask_count()), true);
  const auto expected = cell_mask.view({B, cells.h, 1, cells.w, 1})
                            .expand({B, cells.h, scale, cells.w, scale})
                            .reshape({B, cells.h * scale, cells.w * scale});
  REQUIRE(torch::equal(gen.generate(B, make_generator(5)).mask, expected));
  REQUIRE(torch::equal(gen.generate(B, make_generator(5), torch::kCPU, simmim::MaskOutputs::kMaskOnly).mask, expected));
}

TEST_CASE("mark_lowest_noise marks the first count of a stable argsort, ties included", "[masking][simmim]") {
  const int64_t L = GENERATE(1, 7, 36, 64, 65, 196);
  auto rng = make_generator(L);
  // Coarse noise (8 levels) makes ties common, so the index tie-break is exercised.
  for (const auto& noise : {torch::rand({4, L}, rng), torch::randint(8, {4, L}, rng).to(torch::kFloat) / 8}) {
    const auto perm = simmim::detail::argsort_noise(noise);
    for (const int64_t count : {int64_t{0}, L / 3, L - 1, L}) {
      for (int64_t b = 0; b < 4; ++b) {
        std::vector<unsigned char> hidden(static_cast<size_t>(L), 7);
        std::vector<uint64_t> keys(static_cast<size_t>(L));
        simmim::detail::mark_lowest_noise(noise[b].data_ptr<float>(), L, count, hidden.data(), keys.data());
        std::vector<unsigned char> expected(static_cast<size_t>(L), 0);
        for (int64_t i = 0; i < count; ++i) expected[static_cast<size_t>(perm[b][i].item<int64_t>())] = 1;
        INFO("L = " << L << ", count = " << count << ", row " << b);
        REQUIRE(hidden == expected);
      }
    }
  }
}

TEST_CASE("MaskOutputs::kMaskOnly: the same mask without ids, and the generator moves on the same way", "[masking]") {
  const simmim::SimMIMMask a(simmim::SimMIMMaskOptions({192, 256}));
  const simmim::MAEMask b(simmim::MAEMaskOptions({192, 256}));
  const simmim::BernoulliMask c(simmim::BernoulliMaskOptions({192, 256}));
  const simmim::GridMask d(simmim::GridMaskOptions({192, 256}));
  for (const simmim::MaskGenerator* g : std::vector<const simmim::MaskGenerator*>{&a, &b, &c, &d}) {
    INFO(g->spec());
    auto full_rng = make_generator(99), mask_rng = make_generator(99);
    const auto full = g->generate(9, full_rng);
    const auto only = g->generate(9, mask_rng, torch::kCPU, simmim::MaskOutputs::kMaskOnly);
    REQUIRE(torch::equal(full.mask, only.mask));
    REQUIRE_FALSE(only.has_ids());
    REQUIRE_FALSE(only.ids_restore.defined());
    REQUIRE(torch::equal(g->generate(3, full_rng).mask, g->generate(3, mask_rng).mask));
  }
  REQUIRE_THROWS_WITH(a.generate(2, c10::nullopt, torch::kCPU, static_cast<simmim::MaskOutputs>(7)),
                      ContainsSubstring("simmim::SimMIMMask: outputs must be MaskOutputs::kMaskAndIds or kMaskOnly; "
                                        "got MaskOutputs(7)"));
  REQUIRE(std::string(simmim::to_string(simmim::MaskOutputs::kMaskOnly)) == "mask_only");
}

TEST_CASE("random strategies: same seed same masks, another seed other masks", "[masking]") {
  const simmim::SimMIMMask a(simmim::SimMIMMaskOptions({192, 256}));
  const simmim::MAEMask b(simmim::MAEMaskOptions({192, 256}));
  const simmim::BernoulliMask c(simmim::BernoulliMaskOptions({192, 256}));
  const simmim::GridMask d(simmim::GridMaskOptions({192, 256}).random_offset(true));
  for (const simmim::MaskGenerator* g : std::vector<const simmim::MaskGenerator*>{&a, &b, &c, &d}) {
    INFO(g->spec());
    const auto x = g->generate(16, make_generator(1234));
    const auto y = g->generate(16, make_generator(1234));
    const auto z = g->generate(16, make_generator(4321));
    REQUIRE(torch::equal(x.mask, y.mask));
    REQUIRE_FALSE(torch::equal(x.mask, z.mask));
    if (x.has_ids()) REQUIRE(torch::equal(x.ids_restore, y.ids_restore));
    // One generator drawn twice moves on.
    auto gen = make_generator(1234);
    const auto first = g->generate(16, gen);
    REQUIRE(torch::equal(first.mask, x.mask));
    REQUIRE_FALSE(torch::equal(g->generate(16, gen).mask, x.mask));
  }
  // Without a generator the global default is used (and advances).
  REQUIRE(a.generate(2).mask.sizes() == torch::IntArrayRef({2, 12, 16}));
}

TEST_CASE("Bernoulli: each patch masked with probability p", "[masking][bernoulli]") {
  const double p = GENERATE(0.0, 0.3, 0.5, 1.0);
  simmim::BernoulliMask gen(simmim::BernoulliMaskOptions({208, 224}).p(p));
  const auto b = gen.generate(2000, make_generator(17));
  simmim_test::check_mask_batch(b, 2000, {13, 14});
  REQUIRE_FALSE(b.has_ids());
  // 2000 x 182 draws: the mean has a standard error below 0.0012.
  REQUIRE(std::abs(b.mask.to(torch::kDouble).mean().item<double>() - p) < 0.006);
  // Counts vary between samples unless p is 0 or 1.
  const auto counts = b.flat_mask().sum(1);
  REQUIRE((counts.max().item<int64_t>() > counts.min().item<int64_t>()) == (p > 0.0 && p < 1.0));
  REQUIRE_THROWS_WITH(simmim::BernoulliMask(simmim::BernoulliMaskOptions().p(1.01)),
                      ContainsSubstring("simmim::BernoulliMask: p must be in [0, 1]; got 1.01"));
}

TEST_CASE("Grid: one visible patch per period x period tile", "[masking][grid]") {
  SECTION("fixed offset: visible exactly where i % k == 0 and j % k == 0") {
    const int64_t k = GENERATE(1, 2, 3, 4);
    simmim::GridMask gen(simmim::GridMaskOptions({224, 192}).period(k));  // 14 x 12
    const auto b = gen.generate(3, make_generator(0));
    simmim_test::check_mask_batch(b, 3, {14, 12});
    REQUIRE(b.has_ids());
    const auto rows = torch::arange(14).remainder(k).eq(0).view({14, 1});
    const auto cols = torch::arange(12).remainder(k).eq(0).view({1, 12});
    const auto expected = rows.logical_and(cols).logical_not().expand({3, 14, 12});
    REQUIRE(torch::equal(b.mask, expected));
    // Randomness plays no part.
    REQUIRE(torch::equal(gen.generate(3, make_generator(99)).mask, b.mask));
  }
  SECTION("random offset: each sample is the pattern shifted, all offsets occur") {
    simmim::GridMask gen(simmim::GridMaskOptions(224).period(2).random_offset(true));  // 14 x 14
    REQUIRE(gen.fixed_count());
    const auto b = gen.generate(200, make_generator(6));
    simmim_test::check_mask_batch(b, 200, {14, 14});
    std::set<int64_t> offsets;
    for (int64_t i = 0; i < 200; ++i) {
      const auto visible = b.mask[i].logical_not().nonzero();  // [49, 2]
      REQUIRE(visible.size(0) == 49);
      const int64_t dy = visible[0][0].item<int64_t>(), dx = visible[0][1].item<int64_t>();
      REQUIRE(dy < 2);
      REQUIRE(dx < 2);
      REQUIRE(torch::equal(visible.select(1, 0).remainder(2), torch::full({49}, dy, torch::kLong)));
      REQUIRE(torch::equal(visible.select(1, 1).remainder(2), torch::full({49}, dx, torch::kLong)));
      offsets.insert(dy * 2 + dx);
    }
    REQUIRE(offsets.size() == 4);
  }
  SECTION("random offset on a grid the period does not divide: counts vary, no ids") {
    simmim::GridMask gen(simmim::GridMaskOptions(112).period(2).random_offset(true));  // 7 x 7
    REQUIRE_FALSE(gen.fixed_count());
    const auto b = gen.generate(64, make_generator(2));
    simmim_test::check_mask_batch(b, 64, {7, 7});
    REQUIRE_FALSE(b.has_ids());
    const auto visible = b.flat_mask().logical_not().sum(1);
    REQUIRE(visible.min().item<int64_t>() == 9);   // offset 1 on both axes: 3 x 3
    REQUIRE(visible.max().item<int64_t>() == 16);  // offset 0 on both axes: 4 x 4
  }
  REQUIRE_THROWS_WITH(simmim::GridMask(simmim::GridMaskOptions({32, 224}).period(3)),
                      ContainsSubstring("simmim::GridMask: period must be in [1, 2] (every sample keeps a patch) "
                                        "for a 2x14 grid; got 3"));
  REQUIRE_THROWS_AS(simmim::GridMask(simmim::GridMaskOptions().period(0)), c10::ValueError);
}

TEST_CASE("masks come back on the device asked for", "[masking][cuda]") {
  if (!torch::cuda::is_available()) SKIP("no CUDA device");
  const simmim::MAEMask gen;
  const auto cpu = gen.generate(4, make_generator(8));
  const auto gpu = gen.generate(4, make_generator(8), torch::Device(torch::kCUDA, 0));
  REQUIRE(gpu.mask.is_cuda());
  REQUIRE(gpu.ids_keep.is_cuda());
  REQUIRE(gpu.ids_restore.is_cuda());
  REQUIRE(torch::equal(gpu.mask.cpu(), cpu.mask));
  REQUIRE(torch::equal(gpu.ids_restore.cpu(), cpu.ids_restore));
}
