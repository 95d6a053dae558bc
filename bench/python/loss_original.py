#!/usr/bin/python3
"""Times the original SimMIM and MAE reconstruction losses (forward + backward into a fresh pred.grad) on
the shapes of bench/loss, the yardstick of simmim's reference and fused backends (issue 15).

The loss code is re-typed from the two papers' released models, not copied:
- SimMIM: the patch mask (int64 [B, h, w], as the data loader collates it) upsampled by repeat_interleave
  over the patch size on both axes, unsqueezed to [B, 1, H, W]; l1_loss(x, x_rec, reduction='none');
  (loss * mask).sum() / (mask.sum() + 1e-5) / in_chans.
- MAE (forward_loss with norm_pix_loss): per-token mean and unbiased variance of the target over the last
  dimension, target = (target - mean) / (var + 1e-6) ** .5; loss = (pred - target) ** 2, .mean(-1);
  (loss * mask).sum() / mask.sum() with a float mask [B, L].
Prints one line per case: the best and median milliseconds over the repetitions (after a warm-up), and the
process's minor page faults per repetition. One intra-op thread unless --threads says otherwise.

Usage: /usr/bin/python3 loss_original.py [--case simmim_l1/32x3x192x192_p16_f32 ...] [--reps 30] [--threads 1]
"""
import argparse
import resource
import statistics
import time

import torch
import torch.nn.functional as F


def simmim_loss(x, x_rec, mask, patch_size, in_chans):
    mask = mask.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2).unsqueeze(1).contiguous()
    loss_recon = F.l1_loss(x, x_rec, reduction="none")
    return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / in_chans


def mae_loss(target, pred, mask, norm_pix_loss=True):
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = (pred - target) ** 2
    loss = loss.mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def make_case(name):
    kind, rest = name.split("/")
    dims, dtype = rest.rsplit("_", 1)
    dtype = DTYPES[dtype]
    g = torch.Generator().manual_seed(0)
    if kind == "simmim_l1":
        shape, p = dims.split("_p")
        B, C, H, W = (int(v) for v in shape.split("x"))
        p = int(p)
        pred = torch.randn(B, C, H, W, generator=g).to(dtype).requires_grad_(True)
        target = torch.randn(B, C, H, W, generator=g).to(dtype)
        mask = (torch.rand(B, H // p, W // p, generator=g) < 0.6).long()
        return pred, lambda: simmim_loss(target, pred, mask, p, C)
    B, L, D = (int(v) for v in dims.split("x"))
    pred = torch.randn(B, L, D, generator=g).to(dtype).requires_grad_(True)
    target = torch.randn(B, L, D, generator=g).to(dtype)
    mask = (torch.rand(B, L, generator=g) < 0.75).to(dtype)
    return pred, lambda: mae_loss(target, pred, mask)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", action="append")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cases = a.case or ["simmim_l1/32x3x192x192_p16_f32"]
    for name in cases:
        pred, step = make_case(name)
        for _ in range(3):
            pred.grad = None
            step().backward()
        times = []
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(a.reps):
            t0 = time.perf_counter()
            pred.grad = None
            step().backward()
            times.append((time.perf_counter() - t0) * 1e3)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / a.reps
        print(f"original {name} threads={a.threads}: best {min(times):.2f} ms median {statistics.median(times):.2f} ms "
              f"faults/rep {faults:.0f}")


if __name__ == "__main__":
    main()
