#!/usr/bin/env bash
# The demo's recipe, longer, on a GPU: pretrain SimMIM on Fashion-MNIST in bf16, then fine-tune the
# pretrained encoder and a random-init one (same architecture, same steps) and print both test accuracies.
# Runs after scripts/gpu-check.sh on the same machine (it uses that build and the packed deps):
#
#   scripts/gpu-check.sh && scripts/gpu-finetune.sh [STEPS [EPOCHS]]      (defaults: 3000 steps, 10 epochs)
#
# Logs and metrics go to build/gpu/logs/finetune (and $OUT when set); the last line is JSON:
# {"pretrain_steps": ..., "finetune_epochs": ..., "finetune_acc_pretrained": ..., "finetune_acc_random": ...}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps="${1:-3000}"
epochs="${2:-10}"
build="${SIMMIM_GPU_BUILD:-$root/build/gpu}"
deps="${SIMMIM_GPU_DEPS:-${TMPDIR:-/tmp}/simmim-gpu-deps-$(id -u)}"   # where gpu-check.sh staged .gpu-deps
[ -d "$deps" ] || deps="$root/.gpu-deps"
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SIMMIM_FASHION_MNIST_DIR="$deps/usr/share/datasets/fashion-mnist"
logs="$build/logs/finetune"
rm -rf "$logs" && mkdir -p "$logs"
pretrain="$build/examples/02_pretrain_simmim/simmim_02_pretrain_simmim"
finetune="$build/examples/05_finetune/simmim_05_finetune"
for p in "$pretrain" "$finetune"; do
  [ -x "$p" ] || { echo "gpu-finetune: $p is not built (run scripts/gpu-check.sh first)" >&2; exit 1; }
done
# $OUT (the device tool) takes 8 files; gpu-check.sh leaves at most 6 there: a tarball and the JSON line here.
save() { [ -z "${OUT:-}" ] || tar -czf "$OUT/finetune_logs.tar.gz" -C "$logs" --exclude='*.pt' . 2>/dev/null || true; }
acc_of() { tail -n 1 "$1" | sed -n 's/.*"finetune_acc":\([0-9.eE+-]*\).*/\1/p'; }

trap save EXIT   # the logs come back also when a run fails
t0=$(date +%s)
"$pretrain" --device cuda --precision bf16 --steps "$steps" --batch-size 256 --log-every 250 --seed 0 \
  --workers 4 --out "$logs/pretrain" 2>&1 | tee "$logs/finetune_pretrain.log"
t1=$(date +%s)
common=(--device cuda --precision bf16 --epochs "$epochs" --batch-size 256 --seed 0 --workers 4)
"$finetune" --checkpoint "$logs/pretrain/checkpoint.pt" "${common[@]}" 2>&1 | tee "$logs/finetune_pretrained.log"
t2=$(date +%s)
"$finetune" --random-init --preset mnist "${common[@]}" 2>&1 | tee "$logs/finetune_random.log"
t3=$(date +%s)
save
a_pre="$(acc_of "$logs/finetune_pretrained.log")"
a_rand="$(acc_of "$logs/finetune_random.log")"
[ -n "$a_pre" ] && [ -n "$a_rand" ] || { echo "gpu-finetune: no accuracy in a fine-tuning log" >&2; exit 1; }
echo "gpu-finetune: pretrain $((t1 - t0)) s, fine-tune pretrained $((t2 - t1)) s, random $((t3 - t2)) s"
printf '{"pretrain_steps": %s, "finetune_epochs": %s, "finetune_acc_pretrained": %s, "finetune_acc_random": %s}\n' \
  "$steps" "$epochs" "$a_pre" "$a_rand" | tee "$logs/finetune.json"
[ -z "${OUT:-}" ] || cp -f "$logs/finetune.json" "$OUT/"
