// Block-shaped and given masks: BEiT blocks (bounds, termination), I-JEPA multi-blocks, fixed regions,
// user tensors (validation).
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "mask_checks.hpp"
#include <limits>

#include "simmim/masking/block_mask.hpp"
#include "simmim/masking/mae_mask.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/masking/multi_block_mask.hpp"
#include "simmim/masking/region_mask.hpp"
#include "simmim/masking/tensor_mask.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim::make_generator;
using simmim::MaskRect;
using simmim::Size2d;

namespace {

torch::Tensor union_of(const std::vector<MaskRect>& rects, Size2d grid) {
  auto m = torch::zeros({grid.h, grid.w}, torch::kBool);
  for (const auto& r : rects) m.narrow(0, r.top, r.height).narrow(1, r.left, r.width).fill_(true);
  return m;
}

}  // namespace

TEST_CASE("BEiT blocks: in-bounds rectangles, each within the budget, never above the target", "[masking][block]") {
  using O = simmim::BlockMaskOptions;
  const O opt = GENERATE(O(224).num_masking_patches(75),                      // BEiT's setting
                         O(224).num_masking_patches(75).min_num_patches(16),  // BEiT's scripts
                         O(224).ratio(0.6).max_num_patches(20),               // many small blocks
                         O({112, 304}).ratio(0.5),                            // 7 x 19
                         O(32).num_masking_patches(4).min_num_patches(1),     // 2 x 2: only 1x1 fits
                         O(224).num_masking_patches(196).min_num_patches(1),  // unreachable: all of it
                         O(224).num_masking_patches(0),                       // nothing
                         O(224).num_masking_patches(50).min_aspect(0.05).max_aspect(20.0));
  const simmim::BlockMask gen(opt);
  const Size2d g = gen.grid();
  const int64_t target = gen.target();
  const int64_t max_block = opt.max_num_patches().value_or(target);
  for (uint64_t seed = 0; seed < 60; ++seed) {
    simmim::ScalarRng rng(make_generator(seed));
    auto sample = torch::zeros({g.h, g.w}, torch::kBool);
    const auto blocks = gen.draw_blocks(sample.data_ptr<bool>(), rng);
    auto replay = torch::zeros({g.h, g.w}, torch::kBool);
    int64_t count = 0;
    for (const auto& r : blocks) {
      INFO("seed " << seed << " block " << r);
      REQUIRE(r.inside(g));
      REQUIRE(r.height < g.h);  // BEiT requires h < H and w < W
      REQUIRE(r.width < g.w);
      auto cells = replay.narrow(0, r.top, r.height).narrow(1, r.left, r.width);
      const int64_t added = r.area() - cells.sum().item<int64_t>();
      REQUIRE(added > 0);
      REQUIRE(added <= std::min(target - count, max_block));
      cells.fill_(true);
      count += added;
    }
    REQUIRE(torch::equal(sample, replay));
    REQUIRE(count <= target);
    REQUIRE(sample.sum().item<int64_t>() == count);
  }
  const auto b = gen.generate(32, make_generator(77));
  simmim_test::check_mask_batch(b, 32, g);
  REQUIRE(b.flat_mask().sum(1).max().item<int64_t>() <= target);
}

TEST_CASE("BEiT blocks: a batch is the per-sample algorithm run B times on one stream", "[masking][block]") {
  const simmim::BlockMask gen(simmim::BlockMaskOptions(224).num_masking_patches(75));
  const auto b = gen.generate(6, make_generator(21));
  simmim::ScalarRng rng(make_generator(21));
  for (int64_t i = 0; i < 6; ++i) {
    auto one = torch::zeros({14, 14}, torch::kBool);
    gen.draw_blocks(one.data_ptr<bool>(), rng);
    REQUIRE(torch::equal(one, b.mask[i]));
  }
}

TEST_CASE("BEiT blocks: the count gets close to the target on average", "[masking][block]") {
  // Not a property of the algorithm's bounds but of its behaviour: with BEiT's options most samples hit
  // 75 exactly; a broken placement (wrong corner range, overshoot rejection of everything) falls far short.
  const simmim::BlockMask gen(simmim::BlockMaskOptions(224).num_masking_patches(75).min_num_patches(16));
  const auto counts = gen.generate(500, make_generator(4)).flat_mask().sum(1).to(torch::kDouble);
  REQUIRE(counts.max().item<double>() == 75.0);
  REQUIRE(counts.mean().item<double>() > 70.0);
  // Blocks, not scattered patches: a masked patch usually has a masked 4-neighbour.
  const auto m = gen.generate(100, make_generator(5)).mask.to(torch::kInt);
  const auto padded = torch::constant_pad_nd(m, {1, 1, 1, 1});
  const auto neighbours = padded.narrow(1, 0, 14).narrow(2, 1, 14) + padded.narrow(1, 2, 14).narrow(2, 1, 14) +
                          padded.narrow(1, 1, 14).narrow(2, 0, 14) + padded.narrow(1, 1, 14).narrow(2, 2, 14);
  const double isolated = (m.eq(1) & neighbours.eq(0)).sum().item<double>() / m.sum().item<double>();
  REQUIRE(isolated < 0.01);
}

TEST_CASE("block strategies reach every position, edges included", "[masking][block][multiblock]") {
  // A corner drawn from a range one short (I-JEPA's exclusive randint) would never touch the last row.
  const simmim::BlockMask beit(simmim::BlockMaskOptions({160, 224}).num_masking_patches(40));
  const simmim::MultiBlockMask jepa(simmim::MultiBlockMaskOptions({160, 224}));
  for (const simmim::MaskGenerator* g : std::vector<const simmim::MaskGenerator*>{&beit, &jepa}) {
    INFO(g->spec());
    const auto rate = g->generate(2000, make_generator(8)).mask.to(torch::kDouble).mean(0);
    REQUIRE(rate.min().item<double>() > 0.02);
  }
}

TEST_CASE("BEiT blocks: unsatisfiable options are errors", "[masking][block]") {
  using O = simmim::BlockMaskOptions;
  REQUIRE_THROWS_WITH(simmim::BlockMask(O({16, 224})),
                      ContainsSubstring("simmim::BlockMask: the patch grid must be at least 2x2 (BEiT blocks are "
                                        "strictly smaller than the grid on both axes); got 1x14"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O().num_masking_patches(10).min_num_patches(16)),
                      ContainsSubstring("simmim::BlockMask: min_num_patches must be at most the target count 10 "
                                        "(no block could be placed); got 16"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O(64).num_masking_patches(12).min_num_patches(10)),
                      ContainsSubstring("simmim::BlockMask: min_num_patches must be at most the largest block that "
                                        "fits, (h-1)*(w-1) = 9 for a 4x4 grid; got 10"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O().min_num_patches(0)),
                      ContainsSubstring("min_num_patches must be at least 1; got 0"));
  REQUIRE_THROWS_WITH(
      simmim::BlockMask(O().max_num_patches(2)),
      ContainsSubstring("simmim::BlockMask: max_num_patches must be at least min_num_patches 4; got 2"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O().num_masking_patches(197)),
                      ContainsSubstring("simmim::BlockMask: num_masking_patches must be in [0, 196] for a 14x14 "
                                        "grid; got 197"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O().ratio(-0.5)), ContainsSubstring("ratio must be in [0, 1]; got -0.5"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O().min_aspect(0.0)),
                      ContainsSubstring("simmim::BlockMask: min_aspect must be a positive number; got 0"));
  REQUIRE_THROWS_WITH(simmim::BlockMask(O().min_aspect(0.5).max_aspect(0.25)),
                      ContainsSubstring("max_aspect must be a finite number >= min_aspect 0.5; got 0.25"));
  REQUIRE_THROWS_WITH(simmim::BlockMask().generate(0), ContainsSubstring("simmim::BlockMask: batch_size"));
}

TEST_CASE("multi-block: the union of in-bounds blocks of the asked scale", "[masking][multiblock]") {
  using O = simmim::MultiBlockMaskOptions;
  const O opt = GENERATE(O(224), O({64, 1024}).num_blocks(2), O(1024).num_blocks(1).scale_min(0.05),
                         O(16).num_blocks(3), O(224).scale_min(1.0).scale_max(1.0));
  const simmim::MultiBlockMask gen(opt);
  const Size2d g = gen.grid();
  for (uint64_t seed = 0; seed < 40; ++seed) {
    simmim::ScalarRng rng(make_generator(seed));
    const auto blocks = gen.draw_blocks(rng);
    REQUIRE(static_cast<int64_t>(blocks.size()) == opt.num_blocks());
    for (const auto& r : blocks) {
      INFO("seed " << seed << " block " << r);
      REQUIRE(r.inside(g));
      // Rounding each side moves the area by at most about half the other side, clamping only shrinks it.
      REQUIRE(static_cast<double>(r.area()) <= opt.scale_max() * g.area() + (r.height + r.width) / 2.0 + 1.0);
      if (r.height < g.h && r.width < g.w)
        REQUIRE(static_cast<double>(r.area()) >= opt.scale_min() * g.area() - (r.height + r.width) / 2.0 - 1.0);
    }
  }
  // A batch is draw_blocks per sample on one stream, filled.
  const auto b = gen.generate(5, make_generator(12));
  simmim_test::check_mask_batch(b, 5, g);
  REQUIRE_FALSE(b.has_ids());
  simmim::ScalarRng rng(make_generator(12));
  for (int64_t i = 0; i < 5; ++i) REQUIRE(torch::equal(b.mask[i], union_of(gen.draw_blocks(rng), g)));
}

TEST_CASE("multi-block: I-JEPA defaults mask about 4 blocks of 15-20%", "[masking][multiblock]") {
  const simmim::MultiBlockMask gen;  // 14 x 14, 4 blocks
  const double frac = gen.generate(1000, make_generator(3)).mask.to(torch::kDouble).mean().item<double>();
  // Four independent blocks of 17.5% on average overlap: union between one block and four.
  REQUIRE(frac > 0.3);
  REQUIRE(frac < 0.7);
}

TEST_CASE("multi-block: options are validated", "[masking][multiblock]") {
  using O = simmim::MultiBlockMaskOptions;
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(O().num_blocks(0)),
                      ContainsSubstring("simmim::MultiBlockMask: num_blocks must be in [1, 196] (the patches of the "
                                        "14x14 grid, or 16 on smaller grids); got 0"));
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(O(32).num_blocks(17)),
                      ContainsSubstring("num_blocks must be in [1, 16] (the patches of the 2x2 grid, or 16 on "
                                        "smaller grids); got 17"));
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(O().scale_min(0.0)),
                      ContainsSubstring("scale_min must be in (0, 1]; got 0"));
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(O().scale_min(0.3).scale_max(0.2)),
                      ContainsSubstring("scale_max must be in [scale_min, 1] = [0.3, 1]; got 0.2"));
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(O().aspect_min(-1)),
                      ContainsSubstring("aspect_min must be a positive number; got -1"));
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(O().aspect_max(0.5)),
                      ContainsSubstring("aspect_max must be a finite number >= aspect_min 0.75; got 0.5"));
}

TEST_CASE("region: boxes in patches or pixels, optionally inverted, same for every sample", "[masking][region]") {
  using O = simmim::RegionMaskOptions;
  SECTION("patches") {
    const simmim::RegionMask gen(O({64, 96}).boxes({{1, 2, 2, 3}, {0, 0, 1, 1}}));  // 4 x 6 grid
    const auto b = gen.generate(3, make_generator(1));
    simmim_test::check_mask_batch(b, 3, {4, 6});
    auto expected = torch::zeros({4, 6}, torch::kBool);
    expected.narrow(0, 1, 2).narrow(1, 2, 3).fill_(true);
    expected[0][0] = true;
    for (int64_t i = 0; i < 3; ++i) REQUIRE(torch::equal(b.mask[i], expected));
    REQUIRE(b.ids_keep.size(1) == 24 - 7);
    REQUIRE(torch::equal(gen.generate(3, make_generator(2)).mask, b.mask));
  }
  SECTION("pixels: every patch the box touches") {
    // Rows 10..14 lie in patch row 0; columns 20..59 touch patch columns 1..3.
    const simmim::RegionMask gen(O({64, 96}).boxes({{10, 20, 5, 40}}).units(simmim::RegionUnits::kPixels));
    REQUIRE(gen.to_patches({10, 20, 5, 40}) == MaskRect{0, 1, 1, 3});
    REQUIRE(gen.to_patches({16, 16, 16, 16}) == MaskRect{1, 1, 1, 1});  // aligned: exactly one patch
    REQUIRE(gen.to_patches({15, 16, 2, 80}) == MaskRect{0, 1, 2, 5});
    auto expected = torch::zeros({1, 4, 6}, torch::kBool);
    expected.narrow(2, 1, 3).select(1, 0).fill_(true);
    REQUIRE(torch::equal(gen.generate(1).mask, expected));
  }
  SECTION("invert: only the boxes stay visible") {
    const simmim::RegionMask gen(O(224).boxes({{3, 3, 8, 8}}).invert(true));
    const auto b = gen.generate(2);
    simmim_test::check_mask_batch(b, 2, {14, 14});
    REQUIRE(b.ids_keep.size(1) == 64);
    REQUIRE_FALSE(b.mask[0].narrow(0, 3, 8).narrow(1, 3, 8).any().item<bool>());
  }
  REQUIRE_THROWS_WITH(simmim::RegionMask(O(224)),
                      ContainsSubstring("simmim::RegionMask: boxes must be at least one rectangle; got none"));
  REQUIRE_THROWS_WITH(simmim::RegionMask(O(224).boxes({{10, 10, 5, 5}})),
                      ContainsSubstring("simmim::RegionMask: each box must be a non-empty rectangle inside the 14x14 "
                                        "patches; got (top 10, left 10, 5x5)"));
  REQUIRE_THROWS_WITH(simmim::RegionMask(O(224).boxes({{0, 0, 0, 5}}).units(simmim::RegionUnits::kPixels)),
                      ContainsSubstring("inside the 224x224 pixels; got (top 0, left 0, 0x5)"));
}

TEST_CASE("tensor masks: validated, broadcast, served on the asked device", "[masking][tensor]") {
  using O = simmim::TensorMaskOptions;
  const auto user = torch::rand({12, 14}, make_generator(0)).lt(0.5);
  SECTION("[h, w] bool serves every sample") {
    const simmim::TensorMask gen(O(user, {192, 224}, 16));
    const auto b = gen.generate(4);
    simmim_test::check_mask_batch(b, 4, {12, 14});
    REQUIRE(b.has_ids());
    REQUIRE(torch::equal(b.mask, user.expand({4, 12, 14})));
    // The batch does not alias the stored mask.
    b.mask.fill_(true);
    REQUIRE(torch::equal(gen.generate(1).mask[0], user));
  }
  SECTION("[N, h, w] uint8 / float with 0 and 1; ids only when counts agree") {
    auto stack = torch::stack({user, user.logical_not(), user}).to(torch::kUInt8);
    const simmim::TensorMask u8(O(stack, {192, 224}, 16));
    const auto b = u8.generate(3);
    simmim_test::check_mask_batch(b, 3, {12, 14});
    REQUIRE(torch::equal(b.mask, stack.to(torch::kBool)));
    REQUIRE(b.has_ids() == (user.sum().item<int64_t>() * 2 == 12 * 14));
    const simmim::TensorMask f(O(stack.to(torch::kFloat).transpose(1, 2).contiguous().transpose(1, 2), {192, 224}, 16));
    REQUIRE(torch::equal(f.generate(3).mask, b.mask));  // non-contiguous input
    REQUIRE_THROWS_WITH(u8.generate(2),
                        ContainsSubstring("simmim::TensorMask: batch_size must be the mask's batch 3 (or give one "
                                          "mask for every sample); got 2"));
  }
  REQUIRE_THROWS_WITH(simmim::TensorMask(O(user, 224, 16)),
                      ContainsSubstring("simmim::TensorMask: mask must be [h, w] or [N, h, w] with h x w = the 14x14 "
                                        "patch grid; got Bool tensor [12, 14] on cpu"));
  REQUIRE_THROWS_WITH(simmim::TensorMask(O(user.view({1, 1, 12, 14}), {192, 224}, 16)),
                      ContainsSubstring("mask must be [h, w] or [N, h, w]"));
  REQUIRE_THROWS_WITH(simmim::TensorMask(O(torch::Tensor(), {192, 224}, 16)),
                      ContainsSubstring("got an undefined tensor"));
  REQUIRE_THROWS_WITH(simmim::TensorMask(O(torch::full({12, 14}, 0.5), {192, 224}, 16)),
                      ContainsSubstring("simmim::TensorMask: mask must be 0 or 1 everywhere (true = masked); got "
                                        "values in [0.5, 0.5]"));
  REQUIRE_THROWS_WITH(simmim::TensorMask(O(torch::full({12, 14}, 2, torch::kInt), {192, 224}, 16)),
                      ContainsSubstring("mask must be 0 or 1 everywhere"));
  REQUIRE_THROWS_WITH(simmim::TensorMask(O(torch::zeros({12, 14}, torch::kComplexFloat), {192, 224}, 16)),
                      ContainsSubstring("simmim::TensorMask: mask must be bool, integer or floating point; got "
                                        "ComplexFloat tensor [12, 14] on cpu"));
  REQUIRE(simmim::TensorMask(O(user, {192, 224}, 16)).spec() == "tensor");
}

TEST_CASE("user-given sizes and counts are bounded by the geometry, before anything is allocated",
          "[masking][bounds]") {
  // Tens of millions of blocks used to run for tens of seconds (and absurd counts to end in bad_alloc).
  REQUIRE_THROWS_WITH(simmim::MultiBlockMask(simmim::MultiBlockMaskOptions().num_blocks(40000000)),
                      ContainsSubstring("num_blocks must be in [1, 196]"));
  REQUIRE_THROWS_WITH(simmim::make_mask_generator("multiblock:blocks=40000000"),
                      ContainsSubstring("num_blocks must be in [1, 196]"));
  std::vector<MaskRect> many(197, MaskRect{0, 0, 1, 1});
  REQUIRE_THROWS_WITH(simmim::RegionMask(simmim::RegionMaskOptions(224).boxes(many)),
                      ContainsSubstring("simmim::RegionMask: boxes must be at most 196 rectangles"));
  // A batch whose masks alone would not fit in memory.
  REQUIRE_THROWS_WITH(simmim::BlockMask().generate(int64_t{1} << 40),
                      ContainsSubstring("simmim::BlockMask: batch_size must be at most 5478274 for a 14x14 grid"));
  REQUIRE_THROWS_WITH(simmim::MAEMask(simmim::MAEMaskOptions(Size2d{int64_t{1} << 40, 224})),
                      ContainsSubstring("simmim::MAEMask: input_size must be at most 65536 pixels per side"));
  REQUIRE_THROWS_WITH(simmim::make_mask_generator("region:box=0:0:99999999999999999999:1"),
                      ContainsSubstring("top:left:height:width (four integers)"));
}

TEST_CASE("rectangle bounds checks do not wrap", "[masking][bounds]") {
  const Size2d grid{14, 14};
  const int64_t huge = std::numeric_limits<int64_t>::max();
  // top + height wraps to a negative number, which passed "<= grid.h" and then masked 0 patches.
  REQUIRE_FALSE(MaskRect{1, 0, huge, 1}.inside(grid));
  REQUIRE_FALSE(MaskRect{0, 1, 1, huge}.inside(grid));
  REQUIRE_FALSE(MaskRect{huge, 0, 1, 1}.inside(grid));
  REQUIRE(MaskRect{13, 13, 1, 1}.inside(grid));
  REQUIRE_FALSE(MaskRect{13, 13, 2, 1}.inside(grid));
  REQUIRE_THROWS_WITH(simmim::RegionMask(simmim::RegionMaskOptions(224).boxes({{1, 0, huge, 1}})),
                      ContainsSubstring("each box must be a non-empty rectangle inside the 14x14 patches"));
  REQUIRE_THROWS_WITH(simmim::make_mask_generator("region:box=1:0:9223372036854775807:1"),
                      ContainsSubstring("each box must be a non-empty rectangle inside the 14x14 patches"));
  REQUIRE_THROWS_WITH(simmim::RegionMask(simmim::RegionMaskOptions(224)
                                             .boxes({{16, 0, huge - 8, 16}})
                                             .units(simmim::RegionUnits::kPixels)),
                      ContainsSubstring("inside the 224x224 pixels"));
}
