#!/usr/bin/python3
"""Times SimMIM's official per-sample mask draw (its data pipeline's MaskGenerator) for one batch, the
yardstick of simmim's batched draw (bench/masking, issue 15).

The algorithm is re-typed from the paper's released data pipeline, not copied: per sample, a random
permutation of the cells, the first ceil(cells * ratio) of them set to 1, the cell grid reshaped and
repeated by mask_patch / model_patch on both axes. A DataLoader calls it once per image; collation stacks
the masks. Prints one line: the best and median milliseconds per batch over the repetitions, for the
per-sample loop alone and with the stack.

Usage: /usr/bin/python3 simmim_mask_loop.py [--batch 128] [--input 192] [--mask-patch 32] [--model-patch 4]
       [--ratio 0.6] [--reps 200]
"""
import argparse
import math
import time

import numpy as np


def make_official_mask_generator(input_size, mask_patch, model_patch, ratio):
    side = input_size // mask_patch
    scale = mask_patch // model_patch
    cells = side * side
    hidden = int(math.ceil(cells * ratio))

    def draw():
        chosen = np.random.permutation(cells)[:hidden]
        mask = np.zeros(cells, dtype=int)
        mask[chosen] = 1
        return mask.reshape((side, side)).repeat(scale, axis=0).repeat(scale, axis=1)

    return draw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--input", type=int, default=192)
    ap.add_argument("--mask-patch", type=int, default=32)
    ap.add_argument("--model-patch", type=int, default=4)
    ap.add_argument("--ratio", type=float, default=0.6)
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    draw = make_official_mask_generator(a.input, a.mask_patch, a.model_patch, a.ratio)
    np.random.seed(0)
    loop, stacked = [], []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        masks = [draw() for _ in range(a.batch)]
        t1 = time.perf_counter()
        batch = np.stack(masks)
        t2 = time.perf_counter()
        loop.append((t1 - t0) * 1e3)
        stacked.append((t2 - t0) * 1e3)
    assert batch.shape == (a.batch, a.input // a.model_patch, a.input // a.model_patch)
    print(f"official_loop B={a.batch} {a.input}px cells {a.mask_patch} patch {a.model_patch}: "
          f"loop best {min(loop):.3f} ms median {np.median(loop):.3f} ms; "
          f"loop+stack best {min(stacked):.3f} ms median {np.median(stacked):.3f} ms")


if __name__ == "__main__":
    main()
