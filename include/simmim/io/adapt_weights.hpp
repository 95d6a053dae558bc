#pragma once
// Fitting pretrained weights to a model of another geometry before loading them: an absolute position table
// resampled to another patch grid (non-square too; bicubic, align_corners false, no antialiasing, from an
// explicit source grid, prefix tokens kept: timm's resample_abs_pos_embed with those settings), and a
// patch embedding made for S input channels (RGB) inflated to C, a relative position bias table resized to
// another grid (bicubic over the offsets, the CLS rows kept: timm's resize_rel_pos_bias_table without
// scipy), and a whole model's tensors fitted to a model of another image size (adapt_to_grid).

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <string>

#include "simmim/core/check.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/io/safetensors.hpp"

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

// A relative position bias table [(2h - 1)(2w - 1) + E, heads] of grid src (E = 3 extra rows with a CLS
// token, 0 without; see relative_position_table_rows) -> the table of grid dst: the offset rows, as a
// (2h - 1) x (2w - 1) picture per head, resampled bicubically (align_corners false) in float32, the extra rows
// kept; returned in the input's dtype. The same grid returns the table unchanged.
inline at::Tensor resize_rel_pos_bias_table(const at::Tensor& table, Size2d src, Size2d dst) {
  constexpr const char* api = "simmim::resize_rel_pos_bias_table";
  SIMMIM_CHECK_VALUE(src.h > 0 && src.w > 0, api, "src", "a positive grid", src);
  SIMMIM_CHECK_VALUE(dst.h > 0 && dst.w > 0, api, "dst", "a positive grid", dst);
  const int64_t sh = 2 * src.h - 1, sw = 2 * src.w - 1, dh = 2 * dst.h - 1, dw = 2 * dst.w - 1;
  const int64_t extra = table.defined() && table.dim() == 2 ? table.size(0) - sh * sw : -1;
  SIMMIM_CHECK(table.defined() && table.dim() == 2 && (extra == 0 || extra == 3) && at::isFloatingType(table.scalar_type()),
               api, "table",
               "a floating [(2h-1)(2w-1) + E, heads] table with E = 0 or 3 for the src grid " + c10::str(src) + " (" +
                   std::to_string(sh * sw) + " or " + std::to_string(sh * sw + 3) + " rows)",
               describe(table));
  if (src == dst) return table;
  const int64_t heads = table.size(1);
  const at::Tensor offsets = table.narrow(0, 0, sh * sw).to(at::kFloat).t().reshape({1, heads, sh, sw});
  const at::Tensor resized = at::upsample_bicubic2d(offsets, {dh, dw}, /*align_corners=*/false)
                                 .reshape({heads, dh * dw})
                                 .t()
                                 .to(table.scalar_type());
  return at::cat({resized, table.narrow(0, sh * sw, extra)}, 0);
}

// Fits a model's tensors (simmim's names, as module_tensors gives them) saved for patch grid `src` to
// `module`, the same model built for grid `dst` (another image size): learned absolute position tables are
// resampled (resample_pos_embed, prefix rows kept), relative position bias tables resized
// (resize_rel_pos_bias_table), and what the geometry fixes (sin-cos position buffers, relative position
// indices) taken from `module` itself. Entries of equal shape pass unchanged (a Swin's window tables), so
// the result loads into `module` with load_module_tensors, strictly.
inline TensorMap adapt_to_grid(TensorMap tensors, const torch::nn::Module& module, Size2d src, Size2d dst) {
  constexpr const char* api = "simmim::adapt_to_grid";
  SIMMIM_CHECK_VALUE(src.h > 0 && src.w > 0, api, "src", "a positive grid", src);
  SIMMIM_CHECK_VALUE(dst.h > 0 && dst.w > 0, api, "dst", "a positive grid", dst);
  const auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (const auto& b : module.named_buffers(/*recurse=*/true)) {
    auto it = tensors.find(b.key());
    if (it == tensors.end() || !b.value().defined() || it->second.sizes() == b.value().sizes()) continue;
    if (ends_with(b.key(), "relative_position_index") || ends_with(b.key(), "pos_embed")) it->second = b.value().detach();
  }
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    auto it = tensors.find(p.key());
    if (it == tensors.end() || it->second.sizes() == p.value().sizes()) continue;
    if (ends_with(p.key(), "pos_embed")) {
      const int64_t prefix = it->second.dim() == 3 ? it->second.size(1) - src.area() : -1;
      SIMMIM_CHECK(prefix >= 0 && p.value().dim() == 3 && p.value().size(1) == prefix + dst.area(), api, p.key(),
                   "a position table of " + std::to_string(src.area()) + " grid rows (plus prefix rows) for src " +
                       c10::str(src) + ", to fit the module's " + shape_str(p.value()) + " for dst " + c10::str(dst),
                   describe(it->second));
      it->second = resample_pos_embed(it->second, src, dst, prefix);
    } else if (ends_with(p.key(), "relative_position_bias_table")) {
      it->second = resize_rel_pos_bias_table(it->second, src, dst);
    }
  }
  return tensors;
}

SIMMIM_NAMESPACE_END
