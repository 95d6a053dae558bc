#!/usr/bin/env bash
# Builds the unit-test executables with AddressSanitizer + UndefinedBehaviorSanitizer (CMake preset "asan",
# build/asan) and runs them (ctest label "unit": core, masking, loss, model, train, io; the examples and the
# consumer builds are not part of it).
#   SIMMIM_JOBS  build and test jobs (default: the core count)
# Debian's LibTorch is not instrumented. On its 1.13 the unit tests run clean with ASan's defaults (leak
# and container-overflow detection on), so nothing is suppressed; memory errors inside LibTorch's own code
# are not seen (false negatives, not false positives). Should a LibTorch bring false container-overflow
# or leak reports from its uninstrumented code, run with ASAN_OPTIONS=detect_container_overflow=0 or
# detect_leaks=0 and say so. UBSan halts on the first report (-fno-sanitize-recover=undefined).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIMMIM_BUILD_DIR="$here/../build/asan"
source "$here/common.sh"
cd "$root"
cmake --preset asan "${torch_args[@]}" >/dev/null
cmake --build build/asan -j "$jobs" --target simmim_test_core simmim_test_masking simmim_test_loss \
  simmim_test_model simmim_test_train simmim_test_io
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
cd build/asan
ctest -L unit --output-on-failure -j "$jobs" "$@"
