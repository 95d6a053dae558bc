#!/usr/bin/env bash
# The GPU check: configures, builds and runs simmim's CUDA tests, compute-sanitizer, GPU benchmarks and two
# short GPU pretrainings on a bare H100 / H200 machine, within 8 minutes. `scripts/gpu-check.sh --help`.
set -uo pipefail   # no -e: every step runs, a failed one makes the exit code non-zero

usage() {
  cat <<'EOF'
Usage: scripts/gpu-check.sh [--deps DIR] [--build-dir DIR] [--budget SECONDS] [--jobs N] [--cuda-arch ARCH]
                            [--only STEP,...] [--skip STEP,...] [--list] [-- EXTRA_CMAKE_ARGS...]

Runs, from the repository root of a bare GPU machine (an H100 or H200 with pip torch 2.x+cu13x for python3,
nvcc, CMake, Ninja and compute-sanitizer, no package registry and no network), one step after another:

  env            nvidia-smi, nvcc, CMake, compiler, torch version and CUDA availability -> env.txt
  configure      cmake -G Ninja -DSIMMIM_CUDA=ON -DSIMMIM_CUDA_ARCHITECTURES=90 against python3's torch and DIR
  build          cmake --build with every core (Ninja keeps going past a failed target)
  test_cuda      simmim_test_cuda "[cuda]"
  memcheck       compute-sanitizer --tool memcheck simmim_test_cuda "[sanitize]"
  racecheck      compute-sanitizer --tool racecheck simmim_test_cuda "[sanitize]"
  bench_loss     simmim_bench_loss_cuda --benchmark_filter=cuda (JSON: bench_loss_cuda.json)
  pretrain_bf16  simmim_02_pretrain_simmim --device cuda --precision bf16, 300 steps of 256 Fashion-MNIST images
  pretrain_fp16  the same in fp16 with loss scaling, 100 steps
                 (each pretraining passes when its metrics.jsonl has no NaN / inf / null and the last loss is
                 below the first)
  ctest_unit     ctest -L unit (the CPU unit tests; last, and only when time is left: SKIP otherwise)

Each step is timed, logged to its own file and limited to what is left of the budget; a failed step does not
stop the others, and the exit code is non-zero when any step failed. SKIP does not fail: a benchmark step
whose program was not built or has no CUDA benchmark, and ctest_unit when the budget is spent.

The GPU machine has no Catch2, no Google Benchmark, no CLI11, nlohmann-json, stb, zlib headers or
Fashion-MNIST, and cannot download them. They come from the folder that scripts/pack-gpu-deps.sh makes on
the Debian development machine (default .gpu-deps, ignored by git), shipped with the tree: with the device
tool, name that ignored folder in `carry` (carry: [".gpu-deps"]). The configure step points CMake at it
(Catch2_DIR, benchmark_DIR, CLI11_DIR, nlohmann_json_DIR, ZLIB_*, SIMMIM_STB_*, CMAKE_PREFIX_PATH,
CMAKE_INCLUDE_PATH, CMAKE_LIBRARY_PATH), programs run with DIR/usr/lib/x86_64-linux-gnu on
LD_LIBRARY_PATH, and SIMMIM_FASHION_MNIST_DIR is DIR/usr/share/datasets/fashion-mnist.

Output: every log, benchmark JSON and pretraining folder under BUILD_DIR/logs, and summary.txt there (one
line per step: name, PASS/FAIL/SKIP, seconds, note), printed at the end. When $OUT is set (the device
tool), at most 8 files are also copied to $OUT, refreshed after every step so that a run stopped at its
time limit still returns them: summary.txt, env.txt, logs.tar.gz (all the logs, metrics and reconstruction
PNGs; no checkpoints), bench_loss_cuda.json, pretrain_bf16_metrics.jsonl,
pretrain_fp16_metrics.jsonl, pretrain_bf16_reconstruction.png.

Options:
  --deps DIR        the folder made by scripts/pack-gpu-deps.sh (default: .gpu-deps)
  --build-dir DIR   the build tree (default: build/gpu)
  --budget SECONDS  total time for all steps (default: 465, under 8 minutes)
  --jobs N          build jobs (default: the core count)
  --cuda-arch ARCH  SIMMIM_CUDA_ARCHITECTURES (default: 90)
  --only STEPS      run only these steps (comma-separated names from the list above)
  --skip STEPS      leave these steps out
  --list            print the step names and exit
  -- ARGS           extra arguments for the configure step's cmake (-DSIMMIM_CUDA=AUTO: try the configure
                    step on a machine whose torch has no CUDA)
EOF
}

t_begin="$(date +%s)"   # the budget counts from here (torch's import and the deps copy included)
all_steps=(env configure build test_cuda memcheck racecheck bench_loss pretrain_bf16
           pretrain_fp16 ctest_unit)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 2
deps=.gpu-deps
build_dir=build/gpu
budget=465
jobs="$(nproc)"
cuda_arch=90
only=""
skip=""
extra_cmake=()
need_arg() { [ $# -ge 2 ] || { echo "gpu-check: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --list) printf '%s\n' "${all_steps[@]}"; exit 0 ;;
    --deps) need_arg "$@"; deps="$2"; shift ;;
    --deps=*) deps="${1#*=}" ;;
    --build-dir) need_arg "$@"; build_dir="$2"; shift ;;
    --build-dir=*) build_dir="${1#*=}" ;;
    --budget) need_arg "$@"; budget="$2"; shift ;;
    --budget=*) budget="${1#*=}" ;;
    --jobs) need_arg "$@"; jobs="$2"; shift ;;
    --jobs=*) jobs="${1#*=}" ;;
    --cuda-arch) need_arg "$@"; cuda_arch="$2"; shift ;;
    --cuda-arch=*) cuda_arch="${1#*=}" ;;
    --only) need_arg "$@"; only="$2"; shift ;;
    --only=*) only="${1#*=}" ;;
    --skip) need_arg "$@"; skip="$2"; shift ;;
    --skip=*) skip="${1#*=}" ;;
    --) shift; extra_cmake=("$@"); break ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$budget$jobs" in *[!0-9]*) echo "gpu-check: --budget and --jobs take whole numbers" >&2; exit 2 ;; esac
for s in ${only//,/ } ${skip//,/ }; do
  case " ${all_steps[*]} " in *" $s "*) ;; *) echo "gpu-check: no step '$s' (--list)" >&2; exit 2 ;; esac
done

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$root/$1" ;; esac; }
deps="$(abspath "$deps")"
build_dir="$(abspath "$build_dir")"
logs="$build_dir/logs"
out="${OUT:-}"
# CMake refuses to export (install) a target whose include folder lies in the source tree, and simmim::train
# carries stb's include folder: a deps folder inside the repo is used through a copy outside it.
deps_shipped="$deps"
case "$deps/" in
  "$root"/*)
    if [ -d "$deps" ]; then
      staged="${TMPDIR:-/tmp}/simmim-gpu-deps-$(id -u)"
      rm -rf "$staged" && mkdir -p "$staged" && cp -a "$deps/." "$staged/" && deps="$staged" ||
        echo "gpu-check: warning: could not copy '$deps' to '$staged'; configuring against it in place"
    fi ;;
esac
libdir="$deps/usr/lib/x86_64-linux-gnu"
fmnist="$deps/usr/share/datasets/fashion-mnist"

rm -rf "$logs"
mkdir -p "$logs" || exit 2
[ -z "$out" ] || mkdir -p "$out" || exit 2

# Tools: CUDA's bin folder may not be on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
nvcc_bin="$(command -v nvcc || true)"
sanitizer="$(command -v compute-sanitizer || true)"
for s in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -n "$sanitizer" ] || { [ -x "$s" ] && sanitizer="$s"; }
done
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)

# The torch to build against: Torch_DIR when set, else python3's (pip) torch, else whatever CMake finds
# (Debian's libtorch-dev on the development machine).
torch_prefix=""
if [ -z "${Torch_DIR:-}" ]; then
  torch_prefix="$(timeout 120 python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null || true)"
fi

# Programs find the packed libraries through LD_LIBRARY_PATH; the packed zlib runtime only where the machine
# has none (a newer system zlib must win for everything else).
run_ld="$libdir"
if ! { ldconfig -p 2>/dev/null | grep 'libz\.so\.1 ' >/dev/null; } && [ -d "$deps/lib/x86_64-linux-gnu" ]; then
  run_ld="$run_ld:$deps/lib/x86_64-linux-gnu"
fi
run_ld="$run_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Read by examples/common/train_examples.cmake at configure time and by the programs at run time.
export SIMMIM_FASHION_MNIST_DIR="$fmnist"
export SIMMIM_CACHE_DIR="$build_dir/cache"

# ------------------------------------------------------------------------------------------ step runner
deadline=$((t_begin + budget))
names=() statuses=() secs=() notes=()
failed=0
step_end=0
step_limit=0
step_note=""

selected() {
  local s="$1"
  if [ -n "$only" ]; then case ",$only," in *",$s,"*) ;; *) return 1 ;; esac; fi
  case ",$skip," in *",$s,"*) return 1 ;; esac
  return 0
}

write_summary() {  # rewrites summary.txt (and $OUT's copies); "$@": a line for the step now running
  local i
  {
    for i in "${!names[@]}"; do
      printf '%-14s %-4s %7.1f' "${names[$i]}" "${statuses[$i]}" "${secs[$i]}"
      [ -z "${notes[$i]}" ] || printf '  # %s' "${notes[$i]}"
      printf '\n'
    done
    [ $# -eq 0 ] || printf '%s\n' "$@"
  } >"$logs/summary.txt"
  [ -n "$out" ] || return 0
  cp -f "$logs/summary.txt" "$out/summary.txt"
  [ ! -f "$logs/env.txt" ] || cp -f "$logs/env.txt" "$out/env.txt"
  tar -czf "$out/logs.tar.gz" -C "$logs" --exclude='*.pt' . 2>/dev/null || true
}

record() {  # record NAME STATUS SECONDS NOTE
  names+=("$1"); statuses+=("$2"); secs+=("$3"); notes+=("$4")
  [ "$2" != FAIL ] || failed=1
  write_summary
}

# tmo CMD...: runs CMD within what is left of the current step's limit.
tmo() {
  local left=$((step_end - $(date +%s))) rc
  [ $left -gt 0 ] || left=1
  timeout -k 10 "$left" "$@"
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    step_note="timed out (step limit ${step_limit} s)"
    echo "gpu-check: timed out: $*"
  fi
  return $rc
}
# run_prog CMD...: tmo with the packed libraries on LD_LIBRARY_PATH.
run_prog() { tmo env LD_LIBRARY_PATH="$run_ld" "$@"; }

# step NAME CAP FUNCTION [optional]: runs FUNCTION (0 PASS, 77 SKIP, else FAIL) with its output in
# NAME.log (env: env.txt), for at most CAP seconds and what is left of the budget.
step() {
  local name="$1" cap="$2" fn="$3" optional="${4:-}"
  selected "$name" || return 0
  local log="$logs/$name.log"
  [ "$name" != env ] || log="$logs/env.txt"
  local now left
  now="$(date +%s)"
  left=$((deadline - now))
  if [ $left -lt 15 ]; then
    local st=FAIL
    [ -z "$optional" ] || st=SKIP
    echo "gpu-check: $name: $st, no time left in the ${budget} s budget"
    record "$name" "$st" 0 "no time left in the ${budget} s budget"
    return 0
  fi
  step_limit=$((cap < left ? cap : left))
  step_end=$((now + step_limit))
  step_note=""
  echo "gpu-check: $name (limit ${step_limit} s, log ${log#"$root"/})"
  write_summary "$(printf '%-14s %-4s %7.1f  # %s' "$name" FAIL 0 "did not finish: running when the script stopped")"
  local t0 t1 rc st
  t0="$(date +%s%N)"
  "$fn" >"$log" 2>&1
  rc=$?
  t1="$(date +%s%N)"
  case $rc in 0) st=PASS ;; 77) st=SKIP ;; *) st=FAIL ;; esac
  [ $st != FAIL ] || [ -n "$step_note" ] || step_note="exit code $rc"
  local s
  s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
  echo "gpu-check: $name: $st in $s s${step_note:+ ($step_note)}"
  if [ $st = FAIL ]; then
    echo "---- last lines of ${log#"$root"/}"
    tail -n 30 "$log"
    echo "----"
  fi
  record "$name" "$st" "$s" "$step_note"
}

# find_prog NAME: the built program NAME anywhere under the build tree (tests/, tests/<module>/, ...).
find_prog() {
  local sub="$1" name="$2" p
  for p in "$build_dir/$sub/$name" "$build_dir/$sub"/*/"$name"; do
    [ -x "$p" ] && [ -f "$p" ] && { printf '%s\n' "$p"; return 0; }
  done
  p="$(find "$build_dir/$sub" -name "$name" -type f -perm -u+x 2>/dev/null | head -n 1)"
  [ -n "$p" ] && printf '%s\n' "$p"
}

copy_out() {  # copy_out FILE NAME: a result file into $OUT (at most 8 files live there)
  [ -n "$out" ] && [ -f "$1" ] && cp -f "$1" "$out/$2"
  return 0
}

# ----------------------------------------------------------------------------------------------- steps
step_env() {
  local ok=0
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -a)"
  echo "os: $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"')"
  echo "cores: $(nproc)"
  free -g 2>/dev/null | head -n 2
  echo "--- nvidia-smi"
  tmo nvidia-smi || ok=1
  echo "--- nvcc: ${nvcc_bin:-not found}"
  if [ -n "$nvcc_bin" ]; then tmo nvcc --version || ok=1; else ok=1; fi
  echo "--- compute-sanitizer: ${sanitizer:-not found}"
  [ -z "$sanitizer" ] || tmo "$sanitizer" --version | tail -n 2
  echo "--- cmake: $(cmake --version | head -n 1); ninja: $(ninja --version 2>/dev/null || echo none)"
  echo "--- c++: $(c++ --version 2>/dev/null | head -n 1)"
  echo "--- torch (python3: $(command -v python3 || echo none))"
  tmo python3 - <<'PY' || ok=1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cmake_prefix_path", torch.utils.cmake_prefix_path)
ok = torch.cuda.is_available()
print("cuda available:", ok)
if ok:
    p = torch.cuda.get_device_properties(0)
    print("device:", torch.cuda.get_device_name(0), "sm_%d%d" % (p.major, p.minor), p.multi_processor_count, "SMs",
          round(p.total_memory / 2**30, 1), "GiB")
raise SystemExit(0 if ok else 1)
PY
  echo "--- deps: $deps_shipped (used as $deps)"
  if [ -f "$deps/.simmim-gpu-deps" ]; then cat "$deps/.simmim-gpu-deps"; else echo "missing (scripts/pack-gpu-deps.sh)"; fi
  echo "torch prefix: ${torch_prefix:-none (Torch_DIR=${Torch_DIR:-unset})}"
  echo "LD_LIBRARY_PATH for programs: $run_ld"
  echo "SIMMIM_FASHION_MNIST_DIR=$SIMMIM_FASHION_MNIST_DIR"
  return $ok
}

step_configure() {
  local f missing=0
  for f in "$deps/usr/lib/cmake/Catch2/Catch2Config.cmake" "$libdir/cmake/benchmark/benchmarkConfig.cmake" \
           "$deps/usr/share/cmake/CLI11/CLI11Config.cmake" "$deps/usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" \
           "$deps/usr/include/stb/stb_image_write.h" "$libdir/libstb.so" "$deps/usr/include/zlib.h" "$libdir/libz.so" \
           "$fmnist/train-images-idx3-ubyte.gz"; do
    [ -e "$f" ] || { echo "gpu-check: missing $f"; missing=1; }
  done
  if [ $missing -ne 0 ]; then
    echo "gpu-check: '$deps' is not a complete deps folder: run scripts/pack-gpu-deps.sh on the Debian machine"
    echo "and ship the folder with the tree (device tool: carry it)."
    return 1
  fi
  local prefix="$deps/usr"
  [ -z "$torch_prefix" ] || prefix="$torch_prefix;$prefix"
  local args=(-S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DSIMMIM_CUDA=ON
              "-DSIMMIM_CUDA_ARCHITECTURES=$cuda_arch" "-DCMAKE_PREFIX_PATH=$prefix"
              "-DCMAKE_INCLUDE_PATH=$deps/usr/include" "-DCMAKE_LIBRARY_PATH=$libdir"
              "-DCatch2_DIR=$deps/usr/lib/cmake/Catch2" "-Dbenchmark_DIR=$libdir/cmake/benchmark"
              "-DCLI11_DIR=$deps/usr/share/cmake/CLI11" "-Dnlohmann_json_DIR=$deps/usr/share/cmake/nlohmann_json"
              "-DZLIB_INCLUDE_DIR=$deps/usr/include" "-DZLIB_LIBRARY=$libdir/libz.so"
              "-DSIMMIM_STB_INCLUDE_DIR=$deps/usr/include" "-DSIMMIM_STB_LIBRARY=$libdir/libstb.so")
  [ -z "${Torch_DIR:-}" ] || args+=("-DTorch_DIR=$Torch_DIR")
  [ -z "$nvcc_bin" ] || args+=("-DCMAKE_CUDA_COMPILER=$nvcc_bin")
  echo "+ cmake ${args[*]} ${extra_cmake[*]}"
  tmo cmake "${args[@]}" "${extra_cmake[@]}" || return 1
  echo "--- where the dependencies were found (CMakeCache.txt)"
  grep -E '^(Torch_DIR|Catch2_DIR|benchmark_DIR|CLI11_DIR|nlohmann_json_DIR|ZLIB_INCLUDE_DIR|ZLIB_LIBRARY[A-Z_]*|SIMMIM_STB_[A-Z_]*|CMAKE_CUDA_COMPILER|SIMMIM_CUDA_ARCHITECTURES|SIMMIM_CUDA)[:=]' \
    "$build_dir/CMakeCache.txt"
}

step_build() {
  local keep_going=()
  [ ${#generator[@]} -eq 0 ] || keep_going=(-- -k 0)
  tmo cmake --build "$build_dir" -j "$jobs" "${keep_going[@]}"
}

cuda_test=""
find_cuda_test() {  # sets cuda_test to the built simmim_test_cuda, or fails with a note
  cuda_test="$(find_prog tests simmim_test_cuda)"
  [ -n "$cuda_test" ] && return 0
  step_note="simmim_test_cuda not built"
  echo "gpu-check: simmim_test_cuda was not built under $build_dir/tests"
  return 1
}

step_test_cuda() {
  find_cuda_test || return 1
  echo "+ $cuda_test [cuda]"
  run_prog "$cuda_test" "[cuda]" --durations yes
}

sanitize() {  # sanitize TOOL
  find_cuda_test || return 1
  [ -n "$sanitizer" ] || { step_note="no compute-sanitizer"; echo "gpu-check: compute-sanitizer not found"; return 1; }
  echo "+ $sanitizer --tool $1 --error-exitcode 1 $cuda_test [sanitize]"
  # No caching allocator: every tensor is its own allocation, so memcheck sees its bounds.
  run_prog env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool "$1" --error-exitcode 1 "$cuda_test" "[sanitize]"
}
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck; }

bench() {  # bench MODULE: the CUDA benchmarks of simmim_bench_MODULE_cuda
  local p json="$logs/bench_$1_cuda.json" n
  p="$(find_prog bench "simmim_bench_$1_cuda")"
  if [ -z "$p" ]; then
    step_note="simmim_bench_$1_cuda not built"
    echo "gpu-check: $step_note"
    return 77
  fi
  echo "+ $p --benchmark_filter=cuda"
  run_prog "$p" --benchmark_filter=cuda "--benchmark_out=$json" --benchmark_out_format=json || return 1
  n="$(python3 - "$json" <<'PY'
import json, sys
b = json.load(open(sys.argv[1])).get("benchmarks", [])
bad = [x["name"] for x in b if x.get("error_occurred")]
print(len(b), "benchmarks;", "errors in " + ", ".join(bad) if bad else "no errors")
raise SystemExit(1 if bad else 0)
PY
)" || { step_note="$n"; return 1; }
  copy_out "$json" "bench_$1_cuda.json"
  case "$n" in
    0\ *) step_note="no benchmark matches 'cuda'"; return 77 ;;
    *) step_note="$n" ;;
  esac
}
step_bench_loss() { bench loss; }

pretrain() {  # pretrain PRECISION STEPS LOG_EVERY
  local p dir="$logs/pretrain_$1" note
  p="$(find_prog examples simmim_02_pretrain_simmim)"
  [ -n "$p" ] || { step_note="simmim_02_pretrain_simmim not built"; echo "gpu-check: $step_note"; return 1; }
  rm -rf "$dir"
  local args=(--device cuda --precision "$1" --steps "$2" --batch-size 256 --log-every "$3" --seed 0
              --workers 4 --out "$dir")
  echo "+ $p ${args[*]}"
  run_prog "$p" "${args[@]}" || return 1
  copy_out "$dir/metrics.jsonl" "pretrain_$1_metrics.jsonl"
  [ "$1" != bf16 ] || copy_out "$dir/reconstruction.png" "pretrain_$1_reconstruction.png"
  echo "--- $dir/metrics.jsonl"
  note="$(python3 - "$dir/metrics.jsonl" "$2" <<'PY'
import json, math, re, sys
path, steps = sys.argv[1], int(sys.argv[2])
rows, bad = [], []
for n, line in enumerate(open(path), 1):
    line = line.strip()
    if not line:
        continue
    if re.search(r"(?<![a-z_])(nan|inf|infinity)(?![a-z_])", line.lower()):
        bad.append("line %d has NaN/inf: %s" % (n, line))
    try:
        row = json.loads(line)
    except ValueError as e:
        bad.append("line %d is not JSON (%s): %s" % (n, e, line))
        continue
    if not isinstance(row.get("loss"), (int, float)):
        bad.append("line %d has no numeric loss: %s" % (n, line))
    for k, v in row.items():
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            bad.append("line %d: %s is %s" % (n, k, v))
    rows.append(row)
if len(rows) < 2:
    bad.append("%d metrics lines, want at least 2" % len(rows))
elif rows[-1].get("step") != steps:
    bad.append("last line is step %s, want %d" % (rows[-1].get("step"), steps))
elif not bad and not rows[-1]["loss"] < rows[0]["loss"]:
    bad.append("loss did not drop: step %s %.4f -> step %s %.4f" % (rows[0]["step"], rows[0]["loss"],
                                                                    rows[-1]["step"], rows[-1]["loss"]))
for b in bad:
    print(b, file=sys.stderr)
if rows and not bad:
    print("loss %.4f -> %.4f, %.0f images/s" % (rows[0]["loss"], rows[-1]["loss"], rows[-1].get("images_per_s", 0)))
else:
    print("metrics check failed")
raise SystemExit(1 if bad else 0)
PY
)"
  local rc=$?
  cat "$dir/metrics.jsonl"
  echo "gpu-check: $note"
  step_note="$note"
  return $rc
}
step_pretrain_bf16() { pretrain bf16 300 50; }
step_pretrain_fp16() { pretrain fp16 100 20; }

step_ctest_unit() {
  tmo env LD_LIBRARY_PATH="$run_ld" ctest --test-dir "$build_dir" -L unit -j "$jobs" --output-on-failure --no-tests=error
}

# ------------------------------------------------------------------------------------------------ main
echo "gpu-check: $(date -u +%H:%M:%S) budget ${budget} s, deps ${deps_shipped#"$root"/} (as $deps), build ${build_dir#"$root"/}, logs ${logs#"$root"/}${out:+, results to $out}"
[ -d "$deps" ] || echo "gpu-check: warning: no deps folder '$deps_shipped' (scripts/pack-gpu-deps.sh makes it; carry it)"
step env            60 step_env
step configure     150 step_configure
step build         360 step_build
step test_cuda     120 step_test_cuda
step memcheck      120 step_memcheck
step racecheck     120 step_racecheck
step bench_loss     75 step_bench_loss
step pretrain_bf16 150 step_pretrain_bf16
step pretrain_fp16  90 step_pretrain_fp16
step ctest_unit    300 step_ctest_unit optional
write_summary

echo "gpu-check: summary ($(($(date +%s) - t_begin)) s in all; ${logs#"$root"/}/summary.txt)"
cat "$logs/summary.txt"
if [ $failed -ne 0 ]; then
  echo "gpu-check: FAILED"
  exit 1
fi
echo "gpu-check: all steps passed"
