// Run-time and type-level choice of a strategy: spec strings, the factory, round trips, clear errors.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "mask_checks.hpp"
#include "simmim/masking/mask_factory.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim::make_generator;
using simmim::make_mask_generator;
using simmim::MaskGeometry;

TEST_CASE("factory: every listed strategy builds from its bare name", "[masking][factory]") {
  const auto names = simmim::mask_strategy_names();
  REQUIRE(names == std::vector<std::string>{"simmim", "mae", "block", "bernoulli", "grid", "multiblock", "region"});
  for (const auto& name : names) {
    INFO(name);
    if (name == "region") continue;  // needs a box
    const auto g = make_mask_generator(name, MaskGeometry({192, 224}, 16));
    REQUIRE(g->name() == name);
    REQUIRE(g->grid() == simmim::Size2d(12, 14));
    simmim_test::check_mask_batch(g->generate(4, make_generator(1)), 4, {12, 14});
  }
  REQUIRE(make_mask_generator("region:box=0:0:2:2")->name() == "region");
}

TEST_CASE("factory: spec() round-trips, same seed same masks", "[masking][factory]") {
  const std::string spec = GENERATE(
      as<std::string>{}, "simmim:ratio=0.6,mask_patch=32", "simmim:ratio=0.55,mask_patch=64", "mae:ratio=0.75",
      "mae:ratio=0.1", "block:ratio=0.4,min=16,min_aspect=0.3",
      "block:count=75,min=4,max=30,min_aspect=0.5,max_aspect=3", "bernoulli:p=0.3", "grid:period=3,random_offset=true",
      "grid:period=2,random_offset=false",
      "multiblock:blocks=2,scale_min=0.1,scale_max=0.3,aspect_min=0.5,aspect_max=2",
      "region:box=1:2:3:4,box=0:0:1:1,units=patches,invert=true", "region:box=8:8:100:50,units=pixels,invert=false");
  const MaskGeometry geometry({256, 192}, 16);
  const auto a = make_mask_generator(spec, geometry);
  INFO(spec << " -> " << a->spec());
  REQUIRE(a->spec() == spec);  // these specs are written in canonical form
  const auto b = make_mask_generator(a->spec(), a->geometry());
  const auto c = a->clone();
  const auto ma = a->generate(8, make_generator(99)), mb = b->generate(8, make_generator(99));
  REQUIRE(torch::equal(ma.mask, mb.mask));
  REQUIRE(torch::equal(ma.mask, c->generate(8, make_generator(99)).mask));
  if (ma.has_ids()) REQUIRE(torch::equal(ma.ids_keep, mb.ids_keep));
}

TEST_CASE("factory: spaces, defaults and odd doubles survive the round trip", "[masking][factory]") {
  const auto g = make_mask_generator("  simmim : ratio = 0.7 ");
  REQUIRE(g->spec() == "simmim:ratio=0.7,mask_patch=32");
  const simmim::MAEMask third(simmim::MAEMaskOptions().ratio(1.0 / 3.0));
  const auto back = make_mask_generator(third.spec());
  REQUIRE(dynamic_cast<const simmim::MAEMask&>(*back).options().ratio() == 1.0 / 3.0);
  REQUIRE(make_mask_generator("mae:")->spec() == "mae:ratio=0.75");
  REQUIRE(make_mask_generator("block")->spec() == "block:ratio=0.4,min=4,min_aspect=0.3");
}

TEST_CASE("factory and types agree: the same seed gives the same masks", "[masking][factory]") {
  const MaskGeometry geometry({192, 256}, 16);
  const simmim::SimMIMMask typed(simmim::SimMIMMaskOptions({192, 256}).ratio(0.5).mask_patch_size(64));
  const auto dynamic = make_mask_generator("simmim:ratio=0.5,mask_patch=64", geometry);
  REQUIRE(torch::equal(typed.generate(4, make_generator(5)).mask, dynamic->generate(4, make_generator(5)).mask));
  const simmim::BlockMask block(simmim::BlockMaskOptions({192, 256}).num_masking_patches(60).min_num_patches(16));
  REQUIRE(torch::equal(block.generate(4, make_generator(6)).mask,
                       make_mask_generator("block:count=60,min=16", geometry)->generate(4, make_generator(6)).mask));
}

namespace {

// The type-level path: an experiment templated on the strategy.
template <class M>
double masked_fraction(typename M::Options options, uint64_t seed) {
  const M gen(options);
  return gen.generate(64, make_generator(seed)).mask.to(torch::kDouble).mean().template item<double>();
}

}  // namespace

TEST_CASE("strategies swap by type", "[masking][factory]") {
  REQUIRE(masked_fraction<simmim::SimMIMMask>(simmim::SimMIMMaskOptions(192).ratio(0.5), 1) == 18.0 / 36.0);
  REQUIRE(masked_fraction<simmim::MAEMask>(simmim::MAEMaskOptions(224).ratio(0.75), 1) == 147.0 / 196.0);
  REQUIRE(masked_fraction<simmim::GridMask>(simmim::GridMaskOptions(224).period(2), 1) == 0.75);
  STATIC_REQUIRE(std::is_base_of<simmim::MaskGenerator, simmim::BlockMask>::value);
}

TEST_CASE("factory: bad specs name what is accepted", "[masking][factory]") {
  const char* api = "simmim::make_mask_generator: ";
  REQUIRE_THROWS_WITH(make_mask_generator("jigsaw:ratio=0.5"),
                      ContainsSubstring(std::string(api) + "strategy must be one of simmim, mae, block, bernoulli, "
                                                           "grid, multiblock, region; got 'jigsaw'"));
  REQUIRE_THROWS_WITH(make_mask_generator("mae:ratio=0.5,mask_patch=32"),
                      ContainsSubstring(std::string(api) + "the keys of spec \"mae:ratio=0.5,mask_patch=32\" must be "
                                                           "among those strategy 'mae' accepts (ratio); got unknown "
                                                           "key 'mask_patch'"));
  REQUIRE_THROWS_WITH(make_mask_generator("simmim:ratio=abc"),
                      ContainsSubstring(std::string(api) + "key 'ratio' of spec \"simmim:ratio=abc\" must be a "
                                                           "number; got 'abc'"));
  REQUIRE_THROWS_WITH(
      make_mask_generator("simmim:mask_patch=3.5"),
      ContainsSubstring("key 'mask_patch' of spec \"simmim:mask_patch=3.5\" must be an integer; got '3.5'"));
  REQUIRE_THROWS_WITH(make_mask_generator("grid:random_offset=maybe"),
                      ContainsSubstring("key 'random_offset' of spec \"grid:random_offset=maybe\" must be a flag"));
  REQUIRE_THROWS_WITH(make_mask_generator("mae:ratio"),
                      ContainsSubstring(std::string(api) + "each argument of spec \"mae:ratio\" must be key=value; "
                                                           "got 'ratio'"));
  REQUIRE_THROWS_WITH(make_mask_generator("mae:ratio=0.5,ratio=0.6"),
                      ContainsSubstring("key 'ratio' of spec \"mae:ratio=0.5,ratio=0.6\" must be given once"));
  REQUIRE_THROWS_WITH(make_mask_generator(""), ContainsSubstring(std::string(api) + "spec must be"));
  REQUIRE_THROWS_WITH(make_mask_generator("tensor"),
                      ContainsSubstring(std::string(api) + "strategy must be one a spec string can describe; a user "
                                                           "mask is data: construct simmim::TensorMask"));
  REQUIRE_THROWS_WITH(make_mask_generator("block:ratio=0.4,count=50"),
                      ContainsSubstring("simmim::BlockMask: spec must be ratio or count, not both"));
  REQUIRE_THROWS_WITH(make_mask_generator("region:box=1:2:3"),
                      ContainsSubstring("simmim::RegionMask: key 'box' of spec \"region:box=1:2:3\" must be "
                                        "top:left:height:width (four integers); got '1:2:3'"));
  REQUIRE_THROWS_WITH(make_mask_generator("region:box=0:0:1:1,units=inches"),
                      ContainsSubstring("key 'units' of spec \"region:box=0:0:1:1,units=inches\" must be patches or "
                                        "pixels; got 'inches'"));
  // Valid keys with bad values reach the strategy's own checks.
  REQUIRE_THROWS_WITH(make_mask_generator("simmim:ratio=1.5"),
                      ContainsSubstring("simmim::SimMIMMask: ratio must be in [0, 1]; got 1.5"));
  REQUIRE_THROWS_WITH(
      make_mask_generator("mae", MaskGeometry(100, 16)),
      ContainsSubstring("simmim::MAEMask: input_size must be divisible by the patch size 16; got 100x100"));
  REQUIRE_THROWS_AS(make_mask_generator("bernoulli:p=2"), c10::ValueError);
}

TEST_CASE("spec parsing and writing", "[masking][factory]") {
  const auto s = simmim::parse_mask_spec("region: box=1:2:3:4 , box=5:6:7:8,invert=1");
  REQUIRE(s.name == "region");
  REQUIRE(s.args.size() == 3);
  REQUIRE(s.args[1] == std::make_pair(std::string("box"), std::string("5:6:7:8")));
  REQUIRE(simmim::MaskSpecWriter("x").number("a", 0.1).integer("b", -3).flag("c", true).str() == "x:a=0.1,b=-3,c=true");
  REQUIRE(simmim::detail::format_double(0.6) == "0.6");
  REQUIRE(simmim::detail::format_double(1.0 / 3.0) == "0.3333333333333333");
}

TEST_CASE("MaskBatch helpers: indices from a mask or a shuffle", "[masking]") {
  // Sample 0 hides patches 1 and 2, sample 1 hides 0 and 3 (a 2x2 grid).
  const auto mask = torch::tensor({0, 1, 1, 0, 1, 0, 0, 1}, torch::kBool).view({2, 2, 2});
  const auto b = simmim::mask_batch_from_mask(mask);
  simmim_test::check_mask_batch(b, 2, {2, 2});
  REQUIRE(torch::equal(b.ids_keep, torch::tensor({0, 3, 1, 2}, torch::kLong).view({2, 2})));
  REQUIRE(torch::equal(b.ids_restore, torch::tensor({0, 2, 3, 1, 2, 0, 1, 3}, torch::kLong).view({2, 4})));
  const auto s = simmim::mask_batch_from_shuffle(torch::tensor({3, 1, 0, 2}, torch::kLong).view({1, 4}), 1, {2, 2});
  REQUIRE(torch::equal(s.ids_restore, torch::tensor({2, 1, 3, 0}, torch::kLong).view({1, 4})));
  REQUIRE(torch::equal(s.flat_mask(), torch::tensor({true, true, true, false}).view({1, 4})));
  REQUIRE_THROWS_WITH(simmim::mask_batch_from_mask(torch::tensor({0, 1, 1, 0, 1, 1, 0, 1}, torch::kBool).view({2, 2, 2})),
                      ContainsSubstring("simmim::mask_batch_from_mask: mask must be the same number of masked patches "
                                        "in every sample; got 2 in sample 0 and 3 in sample 1"));
  REQUIRE_THROWS_WITH(simmim::mask_batch_from_mask(torch::zeros({2, 2, 2})),
                      ContainsSubstring("mask must be a bool tensor; got Float tensor [2, 2, 2] on cpu"));
  REQUIRE_THROWS_WITH(simmim::mask_batch_from_shuffle(torch::zeros({1, 5}, torch::kLong), 1, {2, 2}),
                      ContainsSubstring("simmim::mask_batch_from_shuffle: ids_shuffle must be an int64 [B, L] tensor "
                                        "with L = 4; got Long tensor [1, 5] on cpu"));
  REQUIRE_THROWS_WITH(simmim::mask_batch_from_shuffle(torch::zeros({1, 4}, torch::kLong), 5, {2, 2}),
                      ContainsSubstring("len_keep must be in [0, 4]; got 5"));
}
