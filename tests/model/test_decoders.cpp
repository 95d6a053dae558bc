// Decoders: SimMIM's linear head, the conv head, and the MAE decoder's un-shuffle checked token by token.
#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include "model_test_utils.hpp"
#include "simmim/decoder/conv_head.hpp"
#include "simmim/decoder/mae_decoder.hpp"
#include "simmim/decoder/simmim_head.hpp"
#include "simmim/masking/mask_batch.hpp"

using Catch::Matchers::ContainsSubstring;
using simmim_test::close;

TEST_CASE("SimMIMHead: 1x1 conv then PixelShuffle, any stride", "[decoder]") {
  torch::manual_seed(20);
  simmim::SimMIMHead head(simmim::SimMIMHeadOptions(8, 7, 2));
  auto feats = torch::randn({2, 8, 3, 4});
  auto out = head(feats);
  REQUIRE(out.sizes() == torch::IntArrayRef({2, 2, 21, 28}));
  // Pixel (c, i*s + a, j*s + b) is output channel c*s*s + a*s + b of the 1x1 conv at cell (i, j).
  auto w = head->conv->weight.view({2 * 49, 8});
  auto cell = torch::mv(w, feats.select(3, 3).select(2, 1)[1]) + head->conv->bias;  // sample 1, cell (1, 3)
  REQUIRE(close(out[1][1][1 * 7 + 5][3 * 7 + 6], cell[1 * 49 + 5 * 7 + 6], 1e-5, 1e-6));
  REQUIRE_THROWS_WITH(
      head(torch::randn({2, 6, 3, 4})),
      ContainsSubstring("simmim::SimMIMHead::forward: features must be a feature map [B, C, h, w] with C = 8"));

  simmim::ConvHead conv(simmim::ConvHeadOptions(8, 4, 3).hidden_channels(16).num_layers(2));
  REQUIRE(conv(feats).sizes() == torch::IntArrayRef({2, 3, 12, 16}));
  REQUIRE(conv->named_parameters().contains("body.2.weight"));
  REQUIRE_THROWS_AS(simmim::ConvHead(simmim::ConvHeadOptions(8, 4, 3).num_layers(0)), c10::ValueError);
}

TEST_CASE("MAEDecoder: mask tokens fill the dropped slots, ids_restore un-shuffles", "[decoder]") {
  torch::manual_seed(21);
  const simmim::Size2d grid{2, 3};
  // Depth 0 keeps tokens independent, so each output row can be computed by hand.
  simmim::MAEDecoder dec(simmim::MAEDecoderOptions(12, grid, 2).in_chans(3).embed_dim(8).depth(0).num_heads(2));
  REQUIRE(dec->named_buffers().contains("pos_embed"));
  REQUIRE(dec->named_parameters().contains("mask_token"));
  auto mask = torch::tensor({0, 1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 1}, torch::kBool).reshape({2, 2, 3});
  const auto ids = simmim::mask_batch_from_mask(mask);
  auto tokens = torch::randn({2, 1 + 3, 12});  // CLS + 3 kept
  auto out = dec(tokens, ids.ids_restore);
  REQUIRE(out.sizes() == torch::IntArrayRef({2, 6, 12}));
  auto pos = dec->pos_embed.squeeze(0);  // [1 + L, 8], CLS row first
  auto flat = mask.reshape({2, 6});
  for (int64_t b = 0; b < 2; ++b) {
    int64_t kept = 0;
    for (int64_t l = 0; l < 6; ++l) {
      at::Tensor in;
      if (flat[b][l].item<bool>()) {
        in = dec->mask_token.view({8});
      } else {
        in = dec->embed(tokens[b][1 + kept++]);
      }
      auto expected = dec->pred(dec->norm(in + pos[1 + l]));
      REQUIRE(close(out[b][l], expected, 1e-5, 1e-5));
    }
  }
  simmim::MAEDecoder deep(simmim::MAEDecoderOptions(12, grid, 2).embed_dim(8).depth(2).num_heads(2).cls_token(false));
  REQUIRE(deep(tokens.narrow(1, 1, 3), ids.ids_restore).sizes() == torch::IntArrayRef({2, 6, 12}));
  REQUIRE_THROWS_WITH(dec(torch::randn({2, 4, 10}), ids.ids_restore),
                      ContainsSubstring("simmim::MAEDecoder::forward: tokens must be [B, 1 + len_keep, 12]"));
  REQUIRE_THROWS_WITH(dec(tokens, ids.ids_restore.narrow(1, 0, 5)),
                      ContainsSubstring("ids_restore must be an int64 tensor [B, L] = [2, 6]"));
}
