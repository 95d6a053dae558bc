#pragma once
// Fitting pretrained weights to a model of another geometry before loading them: an absolute position table
// resampled to another patch grid (non-square too; bicubic, align_corners false, no antialiasing, from an
// explicit source grid, prefix tokens kept: timm's resample_abs_pos_embed with those settings), and a
// patch embedding made for S input channels (RGB) inflated to C.

#include <ATen/ATen.h>

#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"

SIMMIM_NAMESPACE_BEGIN

// pos_embed [1, P + src.h * src.w, D] (P prefix rows: CLS and the like, kept as they are; the patch rows in
// row-major grid order) -> [1, P + dst.h * dst.w, D], the patch rows resampled bicubically in float32 and
// returned in the input's dtype. The same grid returns the table unchanged.
inline at::Tensor resample_pos_embed(const at::Tensor& pos_embed, Size2d src, Size2d dst,
                                     int64_t num_prefix_tokens = 1) {
  constexpr const char* api = "simmim::resample_pos_embed";
  SIMMIM_CHECK_VALUE(src.h > 0 && src.w > 0, api, "src", "a positive grid", src);
  SIMMIM_CHECK_VALUE(dst.h > 0 && dst.w > 0, api, "dst", "a positive grid", dst);
  SIMMIM_CHECK_VALUE(num_prefix_tokens >= 0, api, "num_prefix_tokens", ">= 0", num_prefix_tokens);
  SIMMIM_CHECK(pos_embed.defined() && pos_embed.dim() == 3 && pos_embed.size(0) == 1 &&
                   pos_embed.size(1) == num_prefix_tokens + src.area() && at::isFloatingType(pos_embed.scalar_type()),
               api, "pos_embed",
               "a floating [1, P + h*w, D] table with P = " + std::to_string(num_prefix_tokens) + " and src grid " +
                   c10::str(src) + " (" + std::to_string(num_prefix_tokens + src.area()) + " rows)",
               describe(pos_embed));
  if (src == dst) return pos_embed;
  const int64_t D = pos_embed.size(2);
  const at::Tensor prefix = pos_embed.narrow(1, 0, num_prefix_tokens);
  const at::Tensor grid = pos_embed.narrow(1, num_prefix_tokens, src.area())
                              .to(at::kFloat)
                              .reshape({1, src.h, src.w, D})
                              .permute({0, 3, 1, 2});
  const at::Tensor resized = at::upsample_bicubic2d(grid, {dst.h, dst.w}, /*align_corners=*/false)
                                 .permute({0, 2, 3, 1})
                                 .reshape({1, dst.area(), D})
                                 .to(pos_embed.scalar_type());
  return at::cat({prefix, resized}, 1);
}

// A patch projection weight [D, S, p, p] made for S input channels -> [D, C, p, p]: every new channel gets the
// mean over the S old ones times S / C, so an image whose channels are all equal gives the same response
// (C = 1 is the sum over RGB, as timm's adapt_input_conv does). The same C returns the weight unchanged.
inline at::Tensor inflate_patch_embed(const at::Tensor& weight, int64_t in_chans) {
  constexpr const char* api = "simmim::inflate_patch_embed";
  SIMMIM_CHECK_VALUE(in_chans > 0, api, "in_chans", "positive", in_chans);
  SIMMIM_CHECK(weight.defined() && weight.dim() == 4 && weight.size(1) > 0 && at::isFloatingType(weight.scalar_type()),
               api, "weight", "a floating patch projection weight [D, S, p, p]", describe(weight));
  const int64_t S = weight.size(1);
  if (S == in_chans) return weight;
  const at::Tensor mean = weight.to(at::kFloat).mean(1, /*keepdim=*/true) *
                          (static_cast<double>(S) / static_cast<double>(in_chans));
  return mean.expand({weight.size(0), in_chans, weight.size(2), weight.size(3)})
      .contiguous()
      .to(weight.scalar_type());
}

SIMMIM_NAMESPACE_END
