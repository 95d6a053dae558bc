#pragma once
// Swin Transformer (v1) as SimMIM's encoder: a 4x4 patch embedding (+ LayerNorm), SimMIM's mask token mixed
// in at that stride-4 grid, four stages of (shifted) window attention with relative position bias and
// patch merging between them, and the stride-32 map the SimMIM head reads. Windows, shifts, padding of
// grids that are not whole windows, the shifted-window attention mask and the patch-merging order follow
// timm's SwinTransformer, and so do the parameter names (patch_embed.proj, layers.<i>.downsample.reduction,
// layers.<i>.blocks.<j>.attn.relative_position_bias_table, norm).

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/init.hpp"
#include "simmim/core/linear.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/embed/mask_token.hpp"
#include "simmim/encoder/attention.hpp"
#include "simmim/encoder/drop_path.hpp"
#include "simmim/encoder/encoder_adapter.hpp"
#include "simmim/encoder/transformer_block.hpp"

SIMMIM_NAMESPACE_BEGIN

// x [B, H, W, C] with H, W multiples of the window -> [B * nW, wh, ww, C], windows in (b, row, col) order.
inline at::Tensor window_partition(const at::Tensor& x, Size2d window) {
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  return x.view({B, H / window.h, window.h, W / window.w, window.w, C})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({-1, window.h, window.w, C});
}

// The inverse: [B * nW, wh, ww, C] -> [B, H, W, C].
inline at::Tensor window_reverse(const at::Tensor& windows, Size2d window, int64_t H, int64_t W) {
  const int64_t C = windows.size(3);
  return windows.view({-1, H / window.h, W / window.w, window.h, window.w, C})
      .permute({0, 1, 3, 2, 4, 5})
      .reshape({-1, H, W, C});
}

// The additive mask [nW, N, N] (0 or -100) of shifted-window attention on a grid padded to whole windows:
// after the cyclic shift a window can hold tokens from up to four regions of the grid that were not
// neighbours; they must not attend to each other.
inline at::Tensor shifted_window_mask(Size2d padded, Size2d window, Size2d shift) {
  at::Tensor regions = at::zeros({1, padded.h, padded.w, 1});
  int64_t label = 0;
  const auto bounds = [](int64_t n, int64_t w, int64_t s) {
    return std::vector<std::pair<int64_t, int64_t>>{{0, n - w}, {n - w, n - s}, {n - s, n}};
  };
  for (const auto& [h0, h1] : bounds(padded.h, window.h, shift.h)) {
    for (const auto& [w0, w1] : bounds(padded.w, window.w, shift.w)) {
      if (h1 > h0 && w1 > w0) regions.narrow(1, h0, h1 - h0).narrow(2, w0, w1 - w0).fill_(static_cast<double>(label));
      ++label;
    }
  }
  const at::Tensor flat = window_partition(regions, window).reshape({-1, window.area()});
  const at::Tensor diff = flat.unsqueeze(1) - flat.unsqueeze(2);
  return at::zeros_like(diff).masked_fill(diff != 0, -100.0);
}

// Window attention: "qkv", "proj", "relative_position_bias_table" [(2wh-1)(2ww-1), H], buffer
// "relative_position_index".
class WindowAttentionImpl : public torch::nn::Cloneable<WindowAttentionImpl> {
 public:
  WindowAttentionImpl(int64_t dim, int64_t num_heads, Size2d window, AttentionBackend backend)
      : dim_(dim), heads_(num_heads), window_(window), backend_(backend) {
    reset();
  }
  void reset() override {
    qkv = register_module("qkv", torch::nn::Linear(dim_, 3 * dim_));
    proj = register_module("proj", torch::nn::Linear(dim_, dim_));
    relative_position_bias_table = register_parameter(
        "relative_position_bias_table", at::zeros({relative_position_table_rows(window_, false), heads_}));
    relative_position_index =
        register_buffer("relative_position_index", ::simmim::relative_position_index(window_, false));
  }
  // x [B * nW, N, C]; mask (optional) [nW, N, N].
  at::Tensor forward(const at::Tensor& x, const at::Tensor& mask = {}) {
    const int64_t Bw = x.size(0), N = x.size(1);
    const at::Tensor heads = linear_forward(qkv, x).reshape({Bw, N, 3, heads_, dim_ / heads_}).permute({2, 0, 3, 1, 4});
    at::Tensor bias = relative_position_bias(relative_position_bias_table, relative_position_index).unsqueeze(0);
    if (mask.defined()) {  // windows are in (b, w) order: [nW, H, N, N] repeated over the batch
      bias = (bias + mask.unsqueeze(1)).repeat({Bw / mask.size(0), 1, 1, 1});
    }
    const at::Tensor out = scaled_dot_product(heads[0], heads[1], heads[2], backend_, bias);
    return linear_forward(proj, out.transpose(1, 2).reshape({Bw, N, dim_}));
  }
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  at::Tensor relative_position_bias_table, relative_position_index;

 private:
  int64_t dim_, heads_;
  Size2d window_;
  AttentionBackend backend_;
};
TORCH_MODULE(WindowAttention);

// One Swin block on a grid of `resolution`: "norm1", "attn", "norm2", "mlp"; buffer "attn_mask" when shifted.
// As in timm, a grid side not larger than the window is one window on that side and is not shifted.
class SwinBlockImpl : public torch::nn::Cloneable<SwinBlockImpl> {
 public:
  SwinBlockImpl(int64_t dim, int64_t num_heads, Size2d resolution, int64_t window, bool shifted, double mlp_ratio,
                double drop_path, AttentionBackend backend)
      : dim_(dim), heads_(num_heads), res_(resolution), window_req_(window), shifted_(shifted), mlp_ratio_(mlp_ratio),
        drop_path_(drop_path), backend_(backend) {
    reset();
  }
  void reset() override {
    window = Size2d(std::min(res_.h, window_req_), std::min(res_.w, window_req_));
    shift = shifted_ ? Size2d(res_.h <= window_req_ ? 0 : window_req_ / 2, res_.w <= window_req_ ? 0 : window_req_ / 2)
                     : Size2d(0, 0);
    const auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim_}).eps(1e-5)); };
    norm1 = register_module("norm1", ln());
    attn = register_module("attn", WindowAttention(dim_, heads_, window, backend_));
    norm2 = register_module("norm2", ln());
    mlp = register_module("mlp", Mlp(MlpOptions(dim_, static_cast<int64_t>(static_cast<double>(dim_) * mlp_ratio_))));
    drop_path = register_module("drop_path", DropPath(DropPathOptions(drop_path_)));
    attn_mask = at::Tensor();
    if (shift.h > 0 || shift.w > 0) {
      const Size2d padded((res_.h + window.h - 1) / window.h * window.h, (res_.w + window.w - 1) / window.w * window.w);
      attn_mask = register_buffer("attn_mask", shifted_window_mask(padded, window, shift));
    }
  }
  // x [B, H, W, C] on the block's grid.
  at::Tensor forward(const at::Tensor& x) {
    const int64_t H = x.size(1), W = x.size(2), C = x.size(3);
    at::Tensor y = norm1(x);
    const bool has_shift = shift.h > 0 || shift.w > 0;
    if (has_shift) y = at::roll(y, {-shift.h, -shift.w}, {1, 2});
    const int64_t pad_h = (window.h - H % window.h) % window.h, pad_w = (window.w - W % window.w) % window.w;
    if (pad_h > 0 || pad_w > 0) y = at::constant_pad_nd(y, {0, 0, 0, pad_w, 0, pad_h}, 0.0);
    const int64_t Hp = H + pad_h, Wp = W + pad_w;
    at::Tensor windows = window_partition(y, window).reshape({-1, window.area(), C});
    windows = attn->forward(windows, attn_mask);
    y = window_reverse(windows.view({-1, window.h, window.w, C}), window, Hp, Wp);
    if (pad_h > 0 || pad_w > 0) y = y.narrow(1, 0, H).narrow(2, 0, W);
    if (has_shift) y = at::roll(y, {shift.h, shift.w}, {1, 2});
    at::Tensor out = x + drop_path(y);
    return out + drop_path(mlp(norm2(out)));
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  WindowAttention attn{nullptr};
  Mlp mlp{nullptr};
  DropPath drop_path{nullptr};
  at::Tensor attn_mask;
  Size2d window, shift;

 private:
  int64_t dim_, heads_;
  Size2d res_;
  int64_t window_req_;
  bool shifted_;
  double mlp_ratio_, drop_path_;
  AttentionBackend backend_;
};
TORCH_MODULE(SwinBlock);

// Patch merging (timm's order): 2 x 2 neighbours concatenated (a grid side of odd length padded by one),
// "norm" LayerNorm(4C), "reduction" Linear(4C, out, no bias).
class PatchMergingImpl : public torch::nn::Cloneable<PatchMergingImpl> {
 public:
  PatchMergingImpl(int64_t dim, int64_t out_dim) : dim_(dim), out_(out_dim) { reset(); }
  void reset() override {
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({4 * dim_}).eps(1e-5)));
    reduction =
        register_module("reduction", torch::nn::Linear(torch::nn::LinearOptions(4 * dim_, out_).bias(false)));
  }
  // x [B, H, W, C] -> [B, ceil(H / 2), ceil(W / 2), out].
  at::Tensor forward(at::Tensor x) {
    const int64_t B = x.size(0), C = x.size(3);
    if (x.size(1) % 2 != 0 || x.size(2) % 2 != 0) x = at::constant_pad_nd(x, {0, 0, 0, x.size(2) % 2, 0, x.size(1) % 2}, 0.0);
    const int64_t H = x.size(1), W = x.size(2);
    x = x.reshape({B, H / 2, 2, W / 2, 2, C}).permute({0, 1, 3, 4, 2, 5}).flatten(3);
    return linear_forward(reduction, norm(x));
  }
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear reduction{nullptr};

 private:
  int64_t dim_, out_;
};
TORCH_MODULE(PatchMerging);

struct SwinOptions {
  SwinOptions(Size2d img_size = Size2d(224), int64_t window_size = 7, int64_t embed_dim = 96,
              std::vector<int64_t> depths = {2, 2, 6, 2}, std::vector<int64_t> num_heads = {3, 6, 12, 24})
      : img_size_(img_size), window_size_(window_size), embed_dim_(embed_dim), depths_(std::move(depths)),
        num_heads_(std::move(num_heads)) {}

  // Swin-T/S/B (window 7 at 224 px; SimMIM pretrains at 192 px with window 6), and a small one for 32 x 32
  // images (8 x 8 patches, window 4, width 48).
  static SwinOptions tiny(Size2d img = Size2d(224), int64_t window = 7) { return SwinOptions(img, window, 96, {2, 2, 6, 2}, {3, 6, 12, 24}); }
  static SwinOptions small(Size2d img = Size2d(224), int64_t window = 7) {
    return SwinOptions(img, window, 96, {2, 2, 18, 2}, {3, 6, 12, 24});
  }
  static SwinOptions base(Size2d img = Size2d(224), int64_t window = 7) {
    return SwinOptions(img, window, 128, {2, 2, 18, 2}, {4, 8, 16, 32});
  }
  static SwinOptions micro(Size2d img = Size2d(32), int64_t window = 4) {
    return SwinOptions(img, window, 48, {2, 2, 2, 2}, {3, 6, 12, 24});
  }

  // Image size (H, W), multiples of 32 (the stride of the last stage); non-square is fine.
  TORCH_ARG(Size2d, img_size);
  // Window side (attention runs inside windows of window x window tokens).
  TORCH_ARG(int64_t, window_size);
  // Width of stage 1; stage i has embed_dim * 2^i.
  TORCH_ARG(int64_t, embed_dim);
  // Blocks and attention heads per stage (4 stages).
  TORCH_ARG(std::vector<int64_t>, depths);
  TORCH_ARG(std::vector<int64_t>, num_heads);
  // Image channels.
  TORCH_ARG(int64_t, in_chans) = 3;
  TORCH_ARG(double, mlp_ratio) = 4.0;
  // Stochastic depth, rising linearly over all blocks from 0 to this (SimMIM's Swin-B: 0.1).
  TORCH_ARG(double, drop_path_rate) = 0.0;
  // The learnable mask token of SimMIM mode ("mask_mixer.mask_token", [1, 1, embed_dim]).
  TORCH_ARG(bool, mask_token) = true;
  // Attention kernel.
  TORCH_ARG(AttentionBackend, attention) = AttentionBackend::kAuto;
};

// Submodules "patch_embed" ("proj" 4x4 stride-4 conv, "norm"), "mask_mixer", "layers" (stage i: "downsample"
// for i > 0, "blocks"), "norm".
class SwinTransformerImpl : public torch::nn::Cloneable<SwinTransformerImpl>, public EncoderAdapter {
 public:
  explicit SwinTransformerImpl(SwinOptions options_ = {}) : options(std::move(options_)) { reset(); }

  void reset() override {
    constexpr const char* api = "simmim::SwinTransformer";
    const auto& o = options;
    SIMMIM_CHECK_VALUE(o.depths().size() == 4 && o.num_heads().size() == 4, api, "depths / num_heads",
                       "4 stages each", o.depths().size(), " / ", o.num_heads().size());
    SIMMIM_CHECK_VALUE(o.img_size().h > 0 && o.img_size().w > 0 && o.img_size().h % 32 == 0 && o.img_size().w % 32 == 0,
                       api, "img_size", "positive multiples of 32 (the last stage's stride)", o.img_size());
    SIMMIM_CHECK_VALUE(o.window_size() > 0, api, "window_size", "positive", o.window_size());
    SIMMIM_CHECK_VALUE(o.in_chans() > 0, api, "in_chans", "positive", o.in_chans());
    SIMMIM_CHECK_ENUM(o.attention(), 2, "AttentionBackend", api, "attention", "AttentionBackend::kAuto or kMath");
    SIMMIM_CHECK_VALUE(o.drop_path_rate() >= 0.0 && o.drop_path_rate() < 1.0, api, "drop_path_rate", "in [0, 1)",
                       o.drop_path_rate());
    int64_t total = 0;
    for (size_t s = 0; s < 4; ++s) {
      const int64_t dim = o.embed_dim() << s;
      SIMMIM_CHECK_VALUE(o.depths()[s] >= 1, api, "depths", "at least 1 block per stage", o.depths()[s]);
      SIMMIM_CHECK_VALUE(o.num_heads()[s] > 0 && dim % o.num_heads()[s] == 0, api, "num_heads",
                         "divisors of the stage widths (embed_dim * 2^i)", "stage ", s, ": ", o.num_heads()[s],
                         " heads for width ", dim);
      total += o.depths()[s];
    }
    patch_embed = register_module("patch_embed", torch::nn::ModuleDict());
    proj = torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_chans(), o.embed_dim(), 4).stride(4));
    embed_norm = torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.embed_dim()}).eps(1e-5));
    patch_embed->update({{"proj", proj.ptr()}, {"norm", embed_norm.ptr()}});
    mask_mixer =
        o.mask_token() ? register_module("mask_mixer", MaskTokenMixer(MaskTokenMixerOptions(o.embed_dim()))) : nullptr;
    layers = register_module("layers", torch::nn::ModuleList());
    Size2d res(o.img_size().h / 4, o.img_size().w / 4);
    int64_t seen = 0;
    for (size_t s = 0; s < 4; ++s) {
      const int64_t dim = o.embed_dim() << s;
      auto stage = torch::nn::ModuleDict();
      if (s > 0) {
        stage->update({{"downsample", PatchMerging(dim / 2, dim).ptr()}});
        res = Size2d((res.h + 1) / 2, (res.w + 1) / 2);
      }
      auto blocks = torch::nn::ModuleList();
      for (int64_t j = 0; j < o.depths()[s]; ++j, ++seen) {
        const double dpr =
            total > 1 ? o.drop_path_rate() * static_cast<double>(seen) / static_cast<double>(total - 1) : 0.0;
        blocks->push_back(
            SwinBlock(dim, o.num_heads()[s], res, o.window_size(), j % 2 == 1, o.mlp_ratio(), dpr, o.attention()));
      }
      stage->update({{"blocks", blocks.ptr()}});
      layers->push_back(stage);
    }
    norm = register_module("norm",
                           torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.embed_dim() << 3}).eps(1e-5)));
    // timm's and SimMIM's Swin init: Linear weights trunc-normal 0.02, biases 0, LayerNorms (1, 0), the relative
    // position tables trunc-normal 0.02; the patch conv keeps LibTorch's default.
    torch::NoGradGuard no_grad;
    init_transformer_weights(*this, WeightInit::kTimm);
    for (auto& p : named_parameters()) {
      if (p.key().find("relative_position_bias_table") != std::string::npos) trunc_normal_(p.value(), 0.0, 0.02);
    }
  }

  void pretty_print(std::ostream& os) const override {
    os << "simmim::SwinTransformer(img_size=" << options.img_size() << ", window_size=" << options.window_size()
       << ", embed_dim=" << options.embed_dim() << ", depths=[" << options.depths()[0] << ", " << options.depths()[1]
       << ", " << options.depths()[2] << ", " << options.depths()[3] << "])";
  }

  // The four stage outputs [B, C_i, H / 4 / 2^i, W / 4 / 2^i] (the last after the final norm, as
  // forward_features returns it) for dense tasks and fusion; mask as forward_features.
  std::vector<at::Tensor> forward_stages(const at::Tensor& images, const at::Tensor& mask = {}) {
    constexpr const char* api = "simmim::SwinTransformer::forward_stages";
    const Size2d img = options.img_size();
    SIMMIM_CHECK(images.defined() && images.dim() == 4 && images.size(0) > 0 && images.size(1) == options.in_chans() &&
                     images.size(2) == img.h && images.size(3) == img.w,
                 api, "images",
                 "a non-empty batch [B, " + std::to_string(options.in_chans()) + ", " + std::to_string(img.h) + ", " +
                     std::to_string(img.w) + "] (in_chans, img_size)",
                 describe(images));
    SIMMIM_CHECK_HAS_DATA(images, api, "images");
    // The patch embedding (conv + LayerNorm over channels), the mask token mixed in, then channels last.
    const at::Tensor stem = embed_norm(proj(images).permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
    at::Tensor x = mix_stem_mask(mask_mixer, stem, mask, api).permute({0, 2, 3, 1});
    std::vector<at::Tensor> out;
    for (size_t s = 0; s < layers->size(); ++s) {
      auto* stage = (*layers)[s]->as<torch::nn::ModuleDictImpl>();
      if (stage->contains("downsample")) x = (*stage)["downsample"]->as<PatchMergingImpl>()->forward(x);
      for (const auto& block : *(*stage)["blocks"]->as<torch::nn::ModuleListImpl>()) {
        x = block->as<SwinBlockImpl>()->forward(x);
      }
      out.push_back((s + 1 == layers->size() ? norm(x) : x).permute({0, 3, 1, 2}));
    }
    return out;
  }

  // EncoderAdapter: the stride-32 map [B, 8 * embed_dim, H / 32, W / 32]; mask [B, H / 4, W / 4].
  at::Tensor forward_features(const at::Tensor& images, const at::Tensor& mask) override {
    return forward_stages(images, mask).back();
  }
  at::Tensor forward(const at::Tensor& images, const at::Tensor& mask = {}) { return forward_features(images, mask); }
  int64_t in_channels() const override { return options.in_chans(); }
  int64_t patch_size() const override { return 4; }
  int64_t stride() const override { return 32; }
  int64_t out_channels() const override { return options.embed_dim() << 3; }
  std::vector<int64_t> stage_channels() const {
    const int64_t c = options.embed_dim();
    return {c, 2 * c, 4 * c, 8 * c};
  }

  SwinOptions options;
  torch::nn::ModuleDict patch_embed{nullptr};
  torch::nn::Conv2d proj{nullptr};
  torch::nn::LayerNorm embed_norm{nullptr};
  MaskTokenMixer mask_mixer{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm norm{nullptr};

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(at::Tensor())})
};
TORCH_MODULE(SwinTransformer);

SIMMIM_NAMESPACE_END
