#!/usr/bin/env bash
# What makes the demo's linear probe beat the raw pixels (issue 15)? The CPU demo's budget (1400 steps of
# 128 Fashion-MNIST images, fp32, seed 0) replayed on a GPU for several recipes, each probed three ways
# (the last block pooled; the four blocks pooled and concatenated; the last block's tokens), next to the
# raw-pixel and random-init probes, all with the demo's protocol (first 20,000 training images, all test
# images). A GPU answers in seconds what the 2-core VM answers in minutes; the recipe it picks is then
# confirmed on the CPU with scripts/demo.sh.
# Runs after scripts/gpu-check.sh on the same machine (it uses that build and the packed deps):
#
#   scripts/gpu-check.sh && scripts/gpu-probe-sweep.sh [STEPS [BATCH]]      (defaults: 1400 steps, 128)
#
# One JSON line per probe goes to build/gpu/logs/sweep/sweep.jsonl (and $OUT/sweep.jsonl when set):
# {"recipe": ..., "probe": ..., "probe_acc": ...}; logs to $OUT/sweep_logs.tar.gz.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps="${1:-1400}"
batch="${2:-128}"
build="${SIMMIM_GPU_BUILD:-$root/build/gpu}"
deps="${SIMMIM_GPU_DEPS:-${TMPDIR:-/tmp}/simmim-gpu-deps-$(id -u)}"   # where gpu-check.sh staged .gpu-deps
[ -d "$deps" ] || deps="$root/.gpu-deps"
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SIMMIM_FASHION_MNIST_DIR="$deps/usr/share/datasets/fashion-mnist"
logs="$build/logs/sweep"
rm -rf "$logs" && mkdir -p "$logs"
ex="$build/examples"
for p in 02_pretrain_simmim 03_pretrain_mae 04_linear_probe; do
  [ -x "$ex/$p/simmim_$p" ] || { echo "gpu-probe-sweep: $ex/$p/simmim_$p is not built (run scripts/gpu-check.sh first)" >&2; exit 1; }
done
save() {
  [ -z "${OUT:-}" ] && return 0
  cp -f "$logs/sweep.jsonl" "$OUT/" 2>/dev/null || true
  tar -czf "$OUT/sweep_logs.tar.gz" -C "$logs" --exclude='*.pt' . 2>/dev/null || true
}
trap save EXIT

probe() {  # probe <recipe> <probe name> <flags...>
  local recipe="$1" name="$2" log="$logs/probe_$1_$2.log" acc
  shift 2
  "$ex/04_linear_probe/simmim_04_linear_probe" --device cuda --seed 0 --limit 20000 --workers 4 "$@" >"$log" 2>&1 || true
  acc=$(tail -n 1 "$log" | sed -n 's/.*"probe_acc":\([0-9.eE+-]*\).*/\1/p')
  printf '{"recipe": "%s", "probe": "%s", "probe_acc": %s}\n' "$recipe" "$name" "${acc:-null}" | tee -a "$logs/sweep.jsonl"
}

pretrain() {  # pretrain <recipe> <program> <steps> <flags...>: pretrains, then probes its encoder three ways
  local recipe="$1" program="$2" n="$3" t0
  shift 3
  t0=$(date +%s)
  "$ex/$program/simmim_$program" --device cuda --seed 0 --steps "$n" --batch-size "$batch" --log-every 200 \
    --workers 4 --out "$logs/$recipe" "$@" >"$logs/pretrain_$recipe.log" 2>&1 || { echo "gpu-probe-sweep: $recipe failed" >&2; return 0; }
  echo "gpu-probe-sweep: $recipe pretrained in $(($(date +%s) - t0)) s"
  local ckpt="$logs/$recipe/checkpoint.pt"
  probe "$recipe" last_pooled --checkpoint "$ckpt"
  probe "$recipe" all_pooled --checkpoint "$ckpt" --layers 1 2 3 4
  probe "$recipe" last_tokens --checkpoint "$ckpt" --features tokens
  save
}

probe raw_pixels raw --raw-pixels
probe random_init last_pooled --random-init --preset mnist
probe random_init last_tokens --random-init --preset mnist --features tokens
pretrain demo 02_pretrain_simmim "$steps"
pretrain ratio40 02_pretrain_simmim "$steps" --mask simmim:ratio=0.4,mask_patch=7
pretrain ratio75 02_pretrain_simmim "$steps" --mask simmim:ratio=0.75,mask_patch=7
pretrain cell14 02_pretrain_simmim "$steps" --mask simmim:ratio=0.6,mask_patch=14
pretrain patch4 02_pretrain_simmim "$steps" --patch-size 4
pretrain mae75 03_pretrain_mae "$steps"
pretrain demo_x3 02_pretrain_simmim $((3 * steps))
save
