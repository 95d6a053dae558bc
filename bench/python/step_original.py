#!/usr/bin/python3
"""Times one whole pretraining step of the original SimMIM and MAE code (the mask draw of the data pipeline,
forward, backward, gradient clipping where the recipe clips, AdamW), the yardstick of simmim's
simmim_bench_model --benchmark_filter=train_step (issue 15).

The models are re-typed from the papers' released code, not copied, at the sizes simmim's bench uses:
- the ViT (timm's VisionTransformer as both repositories build it): a patch-embedding convolution, a CLS
  token and a learned position table, blocks of LayerNorm (eps 1e-6) -> attention (one qkv Linear with
  bias, logits q k^T * d^-0.5 by matmul, softmax, matmul with v, projection) and LayerNorm -> MLP (fc, GELU,
  fc), each with a residual; a final LayerNorm.
- SimMIM (models/simmim.py): the patch tokens mixed with a mask token, w = mask.flatten(1).unsqueeze(-1),
  x * (1 - w) + mask_token * w, before the CLS token and the positions; the patch tokens of the last norm
  back to a [B, D, h, w] map; the linear decoder (a 1x1 convolution to stride^2 * 3 channels and a
  PixelShuffle); the L1 loss of bench/python/loss_original.py. The mask comes from the data pipeline's
  per-sample numpy draw (bench/python/simmim_mask_loop.py), stacked as the default collate does.
- MAE (models_mae.py): the positions added to the patch tokens, random_masking (uniform noise, argsort,
  keep the first len_keep, the binary mask unshuffled with ids_restore), the CLS token, the blocks; the
  decoder: a Linear to its width, mask tokens appended and unshuffled with gather, its positions, blocks,
  norm and a Linear to p^2 * 3; the loss on the patchified image (no norm-pix, simmim's default).
- The optimizer: AdamW over two groups (weight decay 0.05 except 1-D parameters, biases and the tokens and
  position tables), betas (0.9, 0.999) and clipping at 5 for SimMIM, betas (0.9, 0.95) and no clipping
  for MAE; optimizer.zero_grad() before backward, as both training loops do.

Prints one line per case: images/s and the median milliseconds of the step (wall and process CPU time: on
a loaded machine, at one thread, the CPU time is the fairer figure, as Google Benchmark's "CPU" column) and
of each phase over the repetitions (after two warm-up steps). Threads: torch's default (OMP_NUM_THREADS), or --threads.

Usage: /usr/bin/python3 step_original.py [--case simmim/vit_tiny/B8_224 ...] [--reps 10] [--threads N]
"""
import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads):
        super().__init__()
        self.patch = patch
        self.grid = img // patch
        self.proj = nn.Conv2d(chans, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def embed(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class SimMIM(nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads):
        super().__init__()
        self.encoder = ViT(img, patch, chans, dim, depth, heads)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.decoder = nn.Sequential(nn.Conv2d(dim, patch * patch * chans, kernel_size=1), nn.PixelShuffle(patch))
        self.patch, self.chans = patch, chans

    def forward(self, x, mask):
        e = self.encoder
        z = e.embed(x)
        b, l, _ = z.shape
        w = mask.flatten(1).unsqueeze(-1).type_as(self.mask_token)
        z = z * (1 - w) + self.mask_token.expand(b, l, -1) * w
        z = torch.cat((e.cls_token.expand(b, -1, -1), z), dim=1) + e.pos_embed
        for blk in e.blocks:
            z = blk(z)
        z = e.norm(z)[:, 1:]
        c = z.shape[-1]
        z = z.transpose(1, 2).reshape(b, c, e.grid, e.grid)
        x_rec = self.decoder(z)
        m = mask.repeat_interleave(self.patch, 1).repeat_interleave(self.patch, 2).unsqueeze(1).contiguous()
        loss = F.l1_loss(x, x_rec, reduction="none")
        return (loss * m).sum() / (m.sum() + 1e-5) / self.chans


class MAE(nn.Module):
    def __init__(self, img, patch, chans, dim, depth, heads, ddim, ddepth, dheads, ratio):
        super().__init__()
        self.encoder = ViT(img, patch, chans, dim, depth, heads)
        self.ratio, self.patch, self.chans = ratio, patch, chans
        n = self.encoder.grid ** 2
        self.decoder_embed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n + 1, ddim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([Block(ddim, dheads) for _ in range(ddepth)])
        self.decoder_norm = nn.LayerNorm(ddim, eps=1e-6)
        self.decoder_pred = nn.Linear(ddim, patch * patch * chans)

    def patchify(self, imgs):
        p, h = self.patch, imgs.shape[2] // self.patch
        x = imgs.reshape(imgs.shape[0], self.chans, h, p, h, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * h, p * p * self.chans)

    def random_masking(self, x):
        n, l, d = x.shape
        keep = int(l * (1 - self.ratio))
        noise = torch.rand(n, l, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, d))
        mask = torch.ones([n, l], device=x.device)
        mask[:, :keep] = 0
        return x_masked, torch.gather(mask, dim=1, index=ids_restore), ids_restore

    def forward(self, imgs):
        e = self.encoder
        x = e.embed(imgs) + e.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x)
        cls = (e.cls_token + e.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        for blk in e.blocks:
            x = blk(x)
        x = self.decoder_embed(e.norm(x))
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:, :]
        loss = ((pred - self.patchify(imgs)) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


def param_groups(model, weight_decay=0.05):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in ("pos_embed", "token"))
        (no_decay if skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def simmim_mask_draw(img, mask_patch, model_patch, ratio):
    side, scale = img // mask_patch, mask_patch // model_patch
    cells = side * side
    hidden = int(math.ceil(cells * ratio))

    def draw():
        mask = np.zeros(cells, dtype=int)
        mask[np.random.permutation(cells)[:hidden]] = 1
        return mask.reshape((side, side)).repeat(scale, axis=0).repeat(scale, axis=1)

    return draw


# name: (kind, batch, image, patch, chans, width, depth, heads, extra)
CASES = {
    "simmim/vit_tiny/B8_224": ("simmim", 8, 224, 16, 3, 192, 12, 3, {"mask_patch": 32}),
    "mae/vit_tiny/B8_224/ratio:0.75": ("mae", 8, 224, 16, 3, 192, 12, 3, {"decoder": (128, 4, 4)}),
    "simmim/mnist/B128_28": ("simmim", 128, 28, 7, 1, 128, 4, 4, {"mask_patch": 7}),
}


def run(name, reps):
    kind, batch, img, patch, chans, dim, depth, heads, extra = CASES[name]
    torch.manual_seed(0)
    np.random.seed(0)
    images = torch.randn(batch, chans, img, img)
    if kind == "simmim":
        model = SimMIM(img, patch, chans, dim, depth, heads)
        draw = simmim_mask_draw(img, extra["mask_patch"], patch, 0.6)
        betas, clip = (0.9, 0.999), 5.0
    else:
        ddim, ddepth, dheads = extra["decoder"]
        model = MAE(img, patch, chans, dim, depth, heads, ddim, ddepth, dheads, 0.75)
        draw, betas, clip = None, (0.9, 0.95), 0.0
    model.train()
    opt = torch.optim.AdamW(param_groups(model), lr=1.5e-4, betas=betas)
    phases = {"step": [], "cpu": [], "mask": [], "fwd": [], "bwd": [], "optim": []}
    for rep in range(reps + 2):
        c0 = time.process_time()
        t0 = time.perf_counter()
        mask = torch.stack([torch.from_numpy(draw()) for _ in range(batch)]) if draw else None
        t1 = time.perf_counter()
        loss = model(images, mask) if draw else model(images)
        t2 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        t4 = time.perf_counter()
        c4 = time.process_time()
        if rep >= 2:
            phases["cpu"].append((c4 - c0) * 1e3)
            for key, a, b in (("step", t0, t4), ("mask", t0, t1), ("fwd", t1, t2), ("bwd", t2, t3), ("optim", t3, t4)):
                phases[key].append((b - a) * 1e3)
    med = {k: statistics.median(v) for k, v in phases.items()}
    print(f"{name}: {batch * 1e3 / med['step']:.1f} images/s  step {med['step']:.2f} ms, CPU {med['cpu']:.2f} ms  (mask {med['mask']:.2f}, "
          f"fwd {med['fwd']:.2f}, bwd {med['bwd']:.2f}, optim {med['optim']:.2f})  threads {torch.get_num_threads()}",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for name in args.case or list(CASES):
        run(name, args.reps)


if __name__ == "__main__":
    main()
