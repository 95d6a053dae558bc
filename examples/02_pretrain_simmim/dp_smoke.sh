#!/usr/bin/env bash
# Two processes of 02_pretrain_simmim over loopback Gloo, launched the way torchrun would (RANK, WORLD_SIZE,
# MASTER_ADDR, MASTER_PORT). MODE=run: both finish. MODE=kill: rank 1 is killed once training runs, and
# rank 0 must fail with a clear message in under 60 s.
# Usage: dp_smoke.sh MODE EXE OUT_DIR PORT
set -u
mode=$1 exe=$2 out=$3 port=$4
rm -rf "$out"
mkdir -p "$out"
args=(--device cpu --threads 1 --limit 256 --batch-size 8 --log-every 1 --workers 0 --out "$out/run")
[ "$mode" = run ] && args+=(--steps 3) || args+=(--steps 2000)
launch() {
  RANK=$1 WORLD_SIZE=2 LOCAL_RANK=$1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port SIMMIM_DIST_TIMEOUT=30 \
    "$exe" "${args[@]}" >"$out/rank$1.log" 2>&1 &
}
launch 0
p0=$!
launch 1
p1=$!
if [ "$mode" = run ]; then
  wait $p0; r0=$?
  wait $p1; r1=$?
  tail -n 3 "$out/rank0.log"
  [ $r0 -eq 0 ] && [ $r1 -eq 0 ] || { echo "dp_smoke: exit codes $r0 $r1"; cat "$out"/rank*.log; exit 1; }
  grep -q '2 ranks (gloo)' "$out/rank0.log" || { echo "dp_smoke: rank 0 did not train on 2 ranks"; exit 1; }
  echo "dp_smoke: 2 ranks trained 3 steps"
  exit 0
fi
for _ in $(seq 1 1200); do
  [ -s "$out/run/metrics.jsonl" ] && break
  sleep 0.1
done
[ -s "$out/run/metrics.jsonl" ] || { echo "dp_smoke: training never started"; cat "$out"/rank*.log; kill $p0 $p1; exit 1; }
kill -9 $p1
start=$(date +%s)
wait $p0
rc=$?
elapsed=$(($(date +%s) - start))
tail -n 2 "$out/rank0.log"
[ $rc -ne 0 ] || { echo "dp_smoke: rank 0 exited 0 after rank 1 was killed"; exit 1; }
grep -q 'another rank died' "$out/rank0.log" || { echo "dp_smoke: rank 0's error does not say a rank died"; exit 1; }
[ $elapsed -lt 60 ] || { echo "dp_smoke: rank 0 took ${elapsed} s to fail"; exit 1; }
echo "dp_smoke: rank 0 failed after ${elapsed} s with a clear message"
