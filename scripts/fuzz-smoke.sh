#!/usr/bin/env bash
# Builds simmim's libFuzzer targets with clang (SIMMIM_FUZZ=ON, build/fuzz) and runs each for a short while
# on its seed corpus (tests/fuzz/corpus/<target>/, copied: the seeds in the tree stay as they are).
#   SIMMIM_FUZZ_SECONDS  seconds per target (default 20)
#   SIMMIM_FUZZ_TARGETS  which targets (default: mask_spec checkpoint idx image safetensors)
#   SIMMIM_JOBS          build jobs (default: the core count)
# A finding stops the script with libFuzzer's report and leaves the reproducer in build/fuzz/findings/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIMMIM_BUILD_DIR="${SIMMIM_BUILD_DIR:-$here/../build/fuzz}"
source "$here/common.sh"
seconds="${SIMMIM_FUZZ_SECONDS:-20}"
targets="${SIMMIM_FUZZ_TARGETS:-mask_spec checkpoint idx image safetensors}"

command -v clang++ >/dev/null || { echo "fuzz-smoke: needs clang (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
CC=clang CXX=clang++ cmake -S "$root" -B "$build_dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -DNDEBUG" \
  -DSIMMIM_FUZZ=ON -DSIMMIM_BUILD_TESTS=OFF -DSIMMIM_BUILD_BENCH=OFF -DSIMMIM_BUILD_EXAMPLES=OFF \
  -DSIMMIM_INSTALL=OFF "${torch_args[@]}" >/dev/null
build_targets=()
for t in $targets; do build_targets+=("simmim_fuzz_$t"); done
cmake --build "$build_dir" -j "$jobs" --target "${build_targets[@]}"

# LibTorch is not instrumented: its lazily built registries (operators, allocators, thread pools) live
# until exit and would count as leaks of the first input, and its std::vector resizes carry no container
# annotations; both checks are off for the fuzzers as a precaution (the unit tests run clean with them on).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_container_overflow=0:detect_leaks=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
findings="$build_dir/findings"
mkdir -p "$findings"
for t in $targets; do
  work="$build_dir/corpus/$t"
  mkdir -p "$work"
  cp -n "$root/tests/fuzz/corpus/$t/"* "$work/" 2>/dev/null || true
  echo "== fuzz $t: ${seconds}s"
  "$build_dir/tests/fuzz/simmim_fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
    -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$findings/$t-" "$work" 2>&1 |
    grep -E "^#[0-9]+ +DONE|stat::number_of_executed_units|ERROR|SUMMARY|Test unit written|deadly signal" || true
  if ls "$findings/$t-"* >/dev/null 2>&1; then
    echo "fuzz-smoke: $t found a failing input: $(ls "$findings/$t-"*)" >&2
    exit 1
  fi
done
echo "fuzz-smoke: no findings"
