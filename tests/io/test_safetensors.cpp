// safetensors: every dtype round-trips (non-contiguous inputs too), the bytes are the format's layout to
// the byte, and each kind of malformed file is its own error naming the file.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "../support/scratch_dir.hpp"
#include "simmim/io/safetensors.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::scratch_dir;

namespace {

// The 8-byte little-endian length, the header as given, the data.
std::string file_of(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string parse_error(const std::string& bytes) {
  try {
    simmim::parse_safetensors(bytes, "bad.safetensors");
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "no error";
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips, non-contiguous and empty tensors too", "[io][safetensors]") {
  torch::manual_seed(3);
  const auto base = torch::randn({5, 7}, torch::kDouble) * 100;
  simmim::TensorMap in;
  in["f64"] = base.t();  // transposed: not contiguous
  in["f32"] = base.to(torch::kFloat).slice(1, 0, 7, 2);
  in["f16"] = base.to(torch::kHalf).t();
  in["bf16"] = base.to(torch::kBFloat16).slice(0, 1, 5, 3);
  in["i64"] = base.to(torch::kLong).t();
  in["i32"] = base.to(torch::kInt);
  in["i16"] = base.to(torch::kShort).t();
  in["i8"] = base.clamp(-128, 127).to(torch::kChar);
  in["u8"] = base.abs().clamp(0, 255).to(torch::kByte).t();
  in["bool"] = base.gt(0).t();
  in["scalar"] = torch::tensor(2.5);
  in["empty"] = torch::empty({0, 3});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "ünïcode"}};
  const auto path = (scratch_dir("safetensors_roundtrip") / "all.safetensors").string();
  simmim::save_safetensors(path, in, meta);
  const auto back = simmim::load_safetensors(path);
  REQUIRE(back.metadata == meta);
  REQUIRE(back.tensors.size() == in.size());
  for (const auto& [name, t] : in) {
    INFO(name);
    const auto& b = back.tensors.at(name);
    REQUIRE(b.scalar_type() == t.scalar_type());
    REQUIRE(b.sizes() == t.sizes());
    REQUIRE(b.is_contiguous());
    REQUIRE(torch::equal(b, t));
  }
  // Deterministic: the same tensors give the same bytes (names sorted, whatever the insertion order).
  REQUIRE(simmim::serialize_safetensors(in, meta) == simmim::serialize_safetensors(back.tensors, meta));
  // Atomic: nothing but the file is left in the folder.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
    (void)e;
    ++files;
  }
  REQUIRE(files == 1);
}

TEST_CASE("safetensors: the bytes are the format's layout, to the byte", "[io][safetensors]") {
  simmim::TensorMap in;
  in["b"] = torch::tensor({1, 2}, torch::kShort);        // I16 [2]: 01 00 02 00
  in["a"] = torch::tensor({1.0f}, torch::kFloat);        // F32 [1]: 00 00 80 3f
  in["c"] = torch::tensor({true, false}).reshape({1, 2});  // BOOL [1, 2]: 01 00
  const std::string header =
      R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,4],"dtype":"F32","shape":[1]},)"
      R"("b":{"data_offsets":[4,8],"dtype":"I16","shape":[2]},"c":{"data_offsets":[8,10],"dtype":"BOOL","shape":[1,2]}})";
  std::string padded = header;
  while ((8 + padded.size()) % 8 != 0) padded += ' ';
  const std::string data("\x00\x00\x80\x3f\x01\x00\x02\x00\x01\x00", 10);
  const std::string expected = file_of(padded, data);
  const std::string bytes = simmim::serialize_safetensors(in, {{"k", "v"}});
  REQUIRE(bytes.size() % 8 == 10 % 8);  // header padded: data starts at a multiple of 8
  REQUIRE(bytes == expected);
  // And the hand-built file reads back (with and without the padding).
  const auto back = simmim::parse_safetensors(file_of(header, data), "hand.safetensors");
  REQUIRE(torch::equal(back.tensors.at("b"), in["b"]));
  REQUIRE(back.tensors.at("c").scalar_type() == torch::kBool);
  // Empty: just "{}" padded to 8.
  REQUIRE(simmim::serialize_safetensors({}) == file_of("{}      "));
}

TEST_CASE("safetensors: each malformed file is its own error naming the file", "[io][safetensors]") {
  const auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape,
                        const std::string& offsets) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
  };
  const std::string eight(8, '\x11');
  struct Case {
    const char* what;
    std::string bytes;
    const char* message;
  };
  const Case cases[] = {
      {"too short", std::string("\x02\x00\x00", 3), "only 3 bytes"},
      {"length past the end", file_of("{}").substr(0, 9), "exceeds the 1 bytes"},
      {"not JSON", file_of("{\"a\":"), "not valid JSON"},
      {"not an object", file_of("[1, 2]"), "does not start with '{'"},
      {"a tensor entry that is not an object", file_of("{\"a\":3}"), "tensor 'a' is not an object"},
      {"unknown dtype", file_of("{" + entry("a", "F8", "[1]", "[0,1]") + "}", "x"), "dtype \"F8\""},
      {"negative shape", file_of("{" + entry("a", "U8", "[-1]", "[0,1]") + "}", "x"), "not a non-negative integer"},
      {"fractional shape", file_of("{" + entry("a", "U8", "[1.5]", "[0,1]") + "}", "x"), "not a non-negative integer"},
      {"overflowing shape",
       file_of("{" + entry("a", "F64", "[4294967296,4294967296]", "[0,8]") + "}", eight), "overflows 64 bits"},
      {"overflowing shape behind a zero",
       file_of("{" + entry("a", "F64", "[0,4294967296,4294967296]", "[0,0]") + "}"), "overflows 64 bits"},
      {"offsets past the data", file_of("{" + entry("a", "U8", "[9]", "[0,9]") + "}", eight), "past the end"},
      {"offsets reversed", file_of("{" + entry("a", "U8", "[0]", "[8,0]") + "}", eight), "end before they begin"},
      {"one offset", file_of("{" + entry("a", "U8", "[8]", "[8]") + "}", eight), "not two non-negative integers"},
      {"byte count", file_of("{" + entry("a", "F32", "[3]", "[0,8]") + "}", eight), "8 bytes of data for 12"},
      {"overlap",
       file_of("{" + entry("a", "U8", "[8]", "[0,8]") + "," + entry("b", "U8", "[4]", "[4,8]") + "}", eight),
       "overlap"},
      {"gap", file_of("{" + entry("a", "U8", "[4]", "[4,8]") + "}", eight), "(gap)"},
      {"trailing data", file_of("{" + entry("a", "U8", "[4]", "[0,4]") + "}", eight), "cover 4 of the 8 bytes"},
      {"duplicate names",
       file_of("{" + entry("a", "U8", "[4]", "[0,4]") + "," + entry("a", "U8", "[4]", "[4,8]") + "}", eight),
       "names 'a' twice"},
      {"duplicate fields", file_of("{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\"}}"), "names 'dtype' twice"},
      {"missing field", file_of("{\"a\":{\"dtype\":\"U8\",\"shape\":[0]}}"), "lacks one of"},
      {"unknown field", file_of("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":1}}"),
       "unknown field 'x'"},
      {"nested too deep", file_of("{\"a\":{\"shape\":[[[[[0]]]]]}}"), "nests deeper"},
      {"metadata of numbers", file_of("{\"__metadata__\":{\"k\":1}}"), "is not a string"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const std::string message = parse_error(c.bytes);
    CHECK_THAT(message, ContainsSubstring("simmim::parse_safetensors: file must be a valid safetensors file; got "
                                          "'bad.safetensors'"));
    CHECK_THAT(message, ContainsSubstring(c.message));
  }
  std::string dims = "[";
  for (int i = 0; i < 65; ++i) dims += i ? ",1" : "1";
  REQUIRE_THAT(parse_error(file_of("{" + entry("a", "U8", dims + "]", "[0,1]") + "}", "x")),
               ContainsSubstring("65 dimensions; at most 64"));
  // A BOOL byte other than 0 / 1 reads as true, never as an invalid bool.
  const auto b = simmim::parse_safetensors(file_of("{" + entry("a", "BOOL", "[2]", "[0,2]") + "}", std::string("\x07\x00", 2)), "f");
  REQUIRE(torch::equal(b.tensors.at("a"), torch::tensor({true, false})));
  // Reading names the path; writing refuses what the format cannot hold.
  REQUIRE_THROWS_WITH(simmim::load_safetensors("/nonexistent/x.safetensors"),
                      ContainsSubstring("'/nonexistent/x.safetensors' (no such file)"));
  REQUIRE_THROWS_WITH(simmim::serialize_safetensors({{"z", torch::zeros({2}, torch::kComplexFloat)}}),
                      ContainsSubstring("tensors['z'] must be of a dtype safetensors stores"));
  REQUIRE_THROWS_WITH(simmim::serialize_safetensors({{"bad\xff", torch::zeros({2})}}),
                      ContainsSubstring("named in valid UTF-8"));
  REQUIRE_THROWS_WITH(simmim::serialize_safetensors({{"sparse", torch::eye(2).to_sparse()}}),
                      ContainsSubstring("a dense (strided) tensor"));
  REQUIRE_THROWS_WITH(simmim::serialize_safetensors({{"__metadata__", torch::zeros({2})}}),
                      ContainsSubstring("other than \"__metadata__\""));
}

TEST_CASE("safetensors: files written by Python's safetensors read, and write back to what they hold",
          "[io][safetensors]") {
  // The fuzz seeds (tests/fuzz/corpus/safetensors/) were written by Python's safetensors 0.8; the test finds
  // them through the environment ctest sets.
  const char* src = std::getenv("SIMMIM_SOURCE_DIR");
  if (src == nullptr) SKIP("SIMMIM_SOURCE_DIR is not set (ctest sets it)");
  const auto dir = std::filesystem::path(src) / "tests" / "fuzz" / "corpus" / "safetensors";
  const auto all = simmim::load_safetensors((dir / "all_dtypes").string());
  REQUIRE(all.tensors.size() == 10);
  const auto& f32 = all.tensors.at("f32");
  REQUIRE(f32.sizes() == torch::IntArrayRef({2, 3}));
  REQUIRE(torch::equal(all.tensors.at("f64").to(torch::kFloat), f32));
  REQUIRE(torch::equal(all.tensors.at("bf16"), f32.to(torch::kBFloat16)));
  REQUIRE(torch::equal(all.tensors.at("f16"), f32.to(torch::kHalf)));
  REQUIRE(torch::equal(all.tensors.at("bool"), f32.gt(0)));
  REQUIRE(torch::equal(all.tensors.at("i64"), (f32 * 10).to(torch::kLong)));
  const auto meta = simmim::load_safetensors((dir / "metadata").string());
  REQUIRE(meta.metadata.at("note") == "seed");
  REQUIRE(meta.tensors.at("empty").sizes() == torch::IntArrayRef({0, 3}));
  REQUIRE(simmim::load_safetensors((dir / "scalar").string()).tensors.at("scalar").dim() == 0);
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    INFO(e.path().string());
    const auto bytes = simmim::read_file_bytes(e.path().string(), "test");
    try {
      const auto c = simmim::parse_safetensors(bytes, e.path().string());
      const auto again = simmim::parse_safetensors(simmim::serialize_safetensors(c.tensors, c.metadata), "again");
      REQUIRE(again.tensors.size() == c.tensors.size());
    } catch (const c10::Error&) {
      // a reproducer of a finding: an error is the right outcome
    }
  }
}
