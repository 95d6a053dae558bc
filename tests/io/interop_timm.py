"""simmim <-> timm through safetensors, both ways (issue 14), run by ctest as `interop_timm`.

A simmim ViT exported with timm's names loads into timm's VisionTransformer with strict=True and gives the
same tokens on the same images within 1e-5; a timm ViT's weights saved by Python load into simmim
(strictly) and give timm's tokens; every safetensors dtype written by Python reads and writes back through
simmim; and simmim's resample_pos_embed matches timm's resample_abs_pos_embed (bicubic, no antialias). And simmim's ResNet
(basic and bottleneck blocks), ConvNeXt and Swin load into timm's ResNet / ConvNeXt / SwinTransformer with
strict=True under their own names and give the same features (issue 12). And the official SimMIM / BEiT
flavour of the ViT loads into timm's Beit under NameMap::beit's names and back, same tokens; and
resize_rel_pos_bias_table matches timm's (issue 14).

usage: interop_timm.py HELPER WORKDIR   (HELPER: the interop_helper program)
Exits 77 (ctest's skip) when torch, timm or safetensors cannot be imported.
"""
import os
import shutil
import subprocess
import sys

SKIP = 77
TOL = 1e-5

try:
    import torch
    import timm
    from safetensors.torch import load_file, save_file
    from timm.layers import resample_abs_pos_embed
    from timm.models.vision_transformer import VisionTransformer
except Exception as e:  # ImportError, or a broken install
    print(f"interop_timm: SKIP: needs torch, timm and safetensors in {sys.executable} ({e}); "
          "pip install timm safetensors, or configure with -DSIMMIM_PYTHON=<a python that has them>")
    sys.exit(SKIP)

# (H, W, patch, dim, depth, heads, in_chans, cls_token, layer_scale, qkv_bias): a non-square RGB ViT with a
# CLS token and LayerScale, and a 1-channel one without CLS token, LayerScale or qkv bias.
CONFIGS = [
    (32, 48, 8, 64, 2, 4, 3, 1, 0.1, 1),
    (28, 28, 7, 32, 1, 2, 1, 0, 0.0, 0),
]


def timm_vit(cfg):
    h, w, p, d, depth, heads, c, cls, ls, qkv_bias = cfg
    return VisionTransformer(img_size=(h, w), patch_size=p, in_chans=c, num_classes=0, embed_dim=d, depth=depth,
                             num_heads=heads, mlp_ratio=4.0, qkv_bias=bool(qkv_bias), class_token=bool(cls),
                             global_pool="token" if cls else "avg", fc_norm=False,
                             init_values=ls if ls > 0 else None).eval()


def run(helper, *args):
    r = subprocess.run([helper, *map(str, args)], capture_output=True, text=True)
    sys.stdout.write(r.stdout)
    if r.returncode != 0:
        sys.exit(f"interop_timm: {helper} {' '.join(map(str, args))} failed ({r.returncode}): {r.stderr}")


def check_close(what, a, b):
    diff = (a - b).abs().max().item()
    print(f"interop_timm: {what}: max |diff| = {diff:.3g}")
    if a.shape != b.shape or not diff <= TOL:
        sys.exit(f"interop_timm: FAIL: {what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}, max |diff| {diff} > {TOL}")


def main(helper, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)
    for n, cfg in enumerate(CONFIGS):
        d = os.path.join(work, f"config{n}")
        os.makedirs(d)
        text = ",".join(map(str, cfg))
        # simmim -> timm
        run(helper, "export", d, text)
        model = timm_vit(cfg)
        model.load_state_dict(load_file(os.path.join(d, "simmim_vit.safetensors")), strict=True)
        ref = load_file(os.path.join(d, "simmim_features.safetensors"))
        with torch.no_grad():
            check_close(f"config {n}: simmim -> timm", model.forward_features(ref["images"]), ref["tokens"])
        # timm -> simmim, every parameter moved off its init (zero biases, unit norms would hide a bad map)
        model = timm_vit(cfg)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "timm_vit.safetensors"))
        images = torch.randn(3, cfg[6], cfg[0], cfg[1])
        save_file({"images": images}, os.path.join(d, "timm_features.safetensors"))
        run(helper, "import", d, text)
        with torch.no_grad():
            check_close(f"config {n}: timm -> simmim", load_file(os.path.join(d, "simmim_from_timm.safetensors"))["tokens"],
                        model.forward_features(images))

    # Every dtype, written by Python, read and written back by simmim.
    base = torch.randn(4, 5) * 50
    tensors = {"f64": base.double(), "f32": base, "f16": base.half(), "bf16": base.bfloat16(),
               "i64": base.long(), "i32": base.int(), "i16": base.short(), "i8": base.clamp(-128, 127).to(torch.int8),
               "u8": base.abs().clamp(0, 255).to(torch.uint8), "bool": base > 0, "empty": torch.zeros(0, 2)}
    src, dst = os.path.join(work, "dtypes.safetensors"), os.path.join(work, "dtypes_back.safetensors")
    save_file(tensors, src, metadata={"from": "python"})
    run(helper, "copy", src, dst)
    back = load_file(dst)
    for k, v in tensors.items():
        if k not in back or back[k].dtype != v.dtype or not torch.equal(back[k], v):
            sys.exit(f"interop_timm: FAIL: dtype round trip of '{k}'")
    print(f"interop_timm: {len(tensors)} dtypes round-trip through simmim")

    # Position-table resampling against timm's, to a larger non-square and a smaller grid.
    for (sh, sw), (dh, dw), prefix in [((3, 4), (5, 7), 1), ((6, 6), (4, 3), 0), ((2, 5), (9, 2), 2)]:
        pos = torch.randn(1, prefix + sh * sw, 16)
        src, dst = os.path.join(work, "pos.safetensors"), os.path.join(work, "pos_back.safetensors")
        save_file({"pos_embed": pos}, src)
        run(helper, "resample", src, dst, sh, sw, dh, dw, prefix)
        want = resample_abs_pos_embed(pos, new_size=[dh, dw], old_size=[sh, sw], num_prefix_tokens=prefix,
                                      interpolation="bicubic", antialias=False)
        check_close(f"resample {sh}x{sw} -> {dh}x{dw} (prefix {prefix})", load_file(dst)["pos_embed"], want)
    # simmim's CNN and Swin encoders are timm's architectures: same names, same features.
    from timm.models.convnext import ConvNeXt
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet
    from timm.models.swin_transformer import SwinTransformer
    timm_encoders = {
        "resnet_basic": lambda: ResNet(BasicBlock, [1, 2, 1, 1], num_classes=0),
        "resnet_bottleneck": lambda: ResNet(Bottleneck, [1, 2, 1, 1], num_classes=0),
        "convnext": lambda: ConvNeXt(in_chans=4, depths=(1, 2, 1, 1), dims=(16, 24, 32, 40), num_classes=0),
        "swin": lambda: SwinTransformer(img_size=(64, 96), patch_size=4, window_size=7, embed_dim=16,
                                        depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 4), num_classes=0),
    }
    for kind, make in timm_encoders.items():
        run(helper, "encoder", kind, work)
        model = make().eval()
        state = load_file(os.path.join(work, f"{kind}.safetensors"))
        if kind == "convnext":  # timm's head LayerNorm is part of its head (forward_head), not of the encoder
            state.update({k: v for k, v in model.state_dict().items() if k.startswith("head.norm.")})
        model.load_state_dict(state, strict=True)
        ref = load_file(os.path.join(work, f"{kind}_features.safetensors"))
        with torch.no_grad():
            got = model.forward_features(ref["images"])
        if kind == "swin":
            got = got.permute(0, 3, 1, 2)  # timm's Swin answers channels-last
        check_close(f"{kind}: simmim weights in timm", got, ref["features"])
    # The official SimMIM / BEiT flavour of the ViT (q/v biases, relative position bias per block or shared,
    # LayerScale) under NameMap::beit's names, which timm's Beit shares: both ways, same tokens.
    from timm.models.beit import Beit
    for variant in ("block", "shared"):
        d = os.path.join(work, f"beit_{variant}")
        os.makedirs(d)

        def make_beit():
            return Beit(img_size=(32, 48), patch_size=8, in_chans=3, num_classes=0, global_pool="token", embed_dim=64,
                        depth=2, num_heads=4, qkv_bias=True, init_values=0.1, use_abs_pos_emb=variant == "block",
                        use_rel_pos_bias=variant == "block", use_shared_rel_pos_bias=variant == "shared").eval()

        run(helper, "beit", d, variant)
        model = make_beit()
        model.load_state_dict(load_file(os.path.join(d, "simmim_beit.safetensors")), strict=True)
        ref = load_file(os.path.join(d, "simmim_beit_features.safetensors"))
        with torch.no_grad():
            check_close(f"beit {variant}: simmim -> timm Beit", model.forward_features(ref["images"]), ref["tokens"])
        model = make_beit()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "timm_beit.safetensors"))
        images = torch.randn(3, 3, 32, 48)
        save_file({"images": images}, os.path.join(d, "timm_features.safetensors"))
        run(helper, "beit_import", d, variant)
        with torch.no_grad():
            check_close(f"beit {variant}: timm Beit -> simmim",
                        load_file(os.path.join(d, "simmim_from_beit.safetensors"))["tokens"], model.forward_features(images))
    # Relative position bias tables resized against timm's (square sources: timm infers the source side).
    from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple
    for src, (dh, dw), extra in [(4, (6, 3), 3), (5, (3, 3), 0), (3, (7, 5), 3)]:
        table = torch.randn((2 * src - 1) ** 2 + extra, 4)
        rows = (2 * dh - 1) * (2 * dw - 1) + extra
        a, b = os.path.join(work, "rpb.safetensors"), os.path.join(work, "rpb_back.safetensors")
        save_file({"table": table}, a)
        run(helper, "rpb", a, b, src, src, dh, dw)
        want = resize_rel_pos_bias_table_simple(table, new_window_size=(dh, dw), new_bias_shape=(rows, 4))
        check_close(f"relative position table {src}x{src} -> {dh}x{dw} (extra {extra})", load_file(b)["table"], want)
    print(f"interop_timm: OK (torch {torch.__version__}, timm {timm.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
