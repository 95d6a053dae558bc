#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include "simmim/simmim.hpp"

using Catch::Matchers::ContainsSubstring;

TEST_CASE("version macros agree with the constants", "[core]") {
  STATIC_REQUIRE(SIMMIM_VERSION == simmim::kVersionMajor * 10000 + simmim::kVersionMinor * 100 +
                                       simmim::kVersionPatch);
  REQUIRE(std::string(simmim::kVersionString) ==
          std::to_string(SIMMIM_VERSION_MAJOR) + "." + std::to_string(SIMMIM_VERSION_MINOR) + "." +
              std::to_string(SIMMIM_VERSION_PATCH));
  REQUIRE(SIMMIM_TORCH_VERSION >= 113);
}

TEST_CASE("error helpers name the api, the argument, expected and got", "[core]") {
  auto t = torch::zeros({8, 12, 12});
  try {
    SIMMIM_CHECK_DIM(t, 4, "simmim::demo", "pred", "[B, C, H, W]");
    FAIL("no error raised");
  } catch (const c10::Error& e) {
    const std::string msg = e.what();
    REQUIRE_THAT(msg, ContainsSubstring("simmim::demo: pred must be a 4-D tensor [B, C, H, W]"));
    REQUIRE_THAT(msg, ContainsSubstring("got Float tensor [8, 12, 12] on cpu"));
  }
  REQUIRE_THROWS_AS([] { SIMMIM_CHECK_VALUE(false, "simmim::demo", "ratio", "in [0, 1]", 1.5); }(),
                    c10::ValueError);
  REQUIRE(simmim::describe(torch::Tensor()) == "an undefined tensor");
}

TEST_CASE("patch_grid divides or explains", "[core]") {
  REQUIRE(simmim::patch_grid({192, 224}, 16, "t") == simmim::Size2d(12, 14));
  REQUIRE(simmim::patch_grid(28, 7, "t") == simmim::Size2d(4));
  REQUIRE_THROWS_WITH(simmim::patch_grid({192, 225}, 16, "simmim::t"),
                      ContainsSubstring("simmim::t: image size must be divisible by the patch size 16; got 192x225"));
  REQUIRE_THROWS_AS(simmim::patch_grid(32, 0, "t"), c10::ValueError);
}

TEST_CASE("generators: same seed, same draws; CPU only", "[core]") {
  auto a = simmim::make_generator(7);
  auto b = simmim::make_generator(7);
  REQUIRE(torch::equal(torch::rand({64}, a), torch::rand({64}, b)));
  {
    simmim::ScalarRng ra(simmim::make_generator(3)), rb(simmim::make_generator(3));
    for (int i = 0; i < 100; ++i) {
      const double u = ra.uniform();
      REQUIRE(u == rb.uniform());
      REQUIRE(u >= 0.0);
      REQUIRE(u < 1.0);
      const auto k = ra.randint(-2, 5);
      REQUIRE(k == rb.randint(-2, 5));
      REQUIRE(k >= -2);
      REQUIRE(k <= 5);
    }
  }
  // A default generator is used when none is given.
  REQUIRE(simmim::resolve_generator(c10::nullopt, "t").defined());
}

TEST_CASE("patchify matches MAE's layout and round-trips non-square images", "[core]") {
  auto x = torch::arange(2 * 3 * 8 * 12, torch::kFloat).reshape({2, 3, 8, 12});
  auto t = simmim::patchify(x, 4);
  REQUIRE(t.sizes() == torch::IntArrayRef({2, 6, 48}));
  // token 4 = patch row 1, col 1; element (i=2, j=3, c=1) sits at (2*4 + 3)*3 + 1.
  REQUIRE(t[1][4][(2 * 4 + 3) * 3 + 1].item<float>() == x[1][1][4 + 2][4 + 3].item<float>());
  REQUIRE(torch::equal(simmim::unpatchify(t, 4, {2, 3}), x));
  REQUIRE_THROWS_WITH(simmim::patchify(x, 5), ContainsSubstring("simmim::patchify: image size"));
  REQUIRE_THROWS_WITH(simmim::unpatchify(t, 4, {3, 3}), ContainsSubstring("L = 9"));
}

TEST_CASE("value checks: always on CPU tensors, elsewhere behind the debug switch", "[core][values]") {
  const bool before = simmim::value_checks();
  const auto cpu = torch::zeros({2});
  const auto meta = torch::empty({2}, torch::TensorOptions().device(torch::kMeta));
  simmim::set_value_checks(false);
  REQUIRE_FALSE(simmim::value_checks());
  REQUIRE(simmim::check_values_of(cpu));
  REQUIRE_FALSE(simmim::check_values_of(meta));  // no values to read, switch or not
  simmim::set_value_checks(true);
  REQUIRE(simmim::value_checks());
  REQUIRE(simmim::check_values_of(cpu));
  REQUIRE_FALSE(simmim::check_values_of(meta));
  REQUIRE_FALSE(simmim::check_values_of(torch::Tensor()));
  simmim::set_value_checks(before);
}

TEST_CASE("out-of-range enum values are clear errors, not internal assertions", "[core][enum]") {
  enum class Three { kA, kB, kC };
  STATIC_REQUIRE(simmim::enum_in_range(Three::kC, 3));
  STATIC_REQUIRE_FALSE(simmim::enum_in_range(static_cast<Three>(3), 3));
  STATIC_REQUIRE_FALSE(simmim::enum_in_range(static_cast<Three>(-1), 3));
  REQUIRE_THROWS_AS(simmim::AutocastGuard(c10::DeviceType::CPU, static_cast<simmim::Precision>(7)), c10::ValueError);
  REQUIRE_THROWS_WITH(simmim::AutocastGuard(c10::DeviceType::CPU, static_cast<simmim::Precision>(7)),
                      ContainsSubstring("simmim::AutocastGuard: precision must be Precision::kFloat32, kBFloat16 or "
                                        "kFloat16; got Precision(7)"));
  REQUIRE_THROWS_WITH(
      simmim::RegionMask(simmim::RegionMaskOptions(224).boxes({{0, 0, 1, 1}}).units(static_cast<simmim::RegionUnits>(2))),
      ContainsSubstring("simmim::RegionMask: units must be RegionUnits::kPatches or kPixels; got RegionUnits(2)"));
  // The CPU pass's ISA switch is a process-wide value a user sets.
  auto& isa = simmim::kernels::cpu::cpu_isa_override();
  const auto saved = isa;
  isa = static_cast<simmim::kernels::cpu::CpuIsa>(5);
  const auto x = torch::randn({1, 1, 4, 4});
  REQUIRE_THROWS_WITH(simmim::masked_reconstruction_loss(x, x, torch::ones({1, 2, 2}), simmim::MaskedLossOptions::simmim(2)),
                      ContainsSubstring("cpu_isa_override() must be CpuIsa::kAuto, kBaseline or kAVX2; got CpuIsa(5)"));
  isa = saved;
}
