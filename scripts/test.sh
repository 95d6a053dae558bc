#!/usr/bin/env bash
# The test command: installs what is missing, configures, builds, runs every ctest, prints the summary.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/install-deps.sh"
source "$here/common.sh"
configure
cmake --build "$build_dir" -j "$jobs"
cd "$build_dir"
ctest --output-on-failure -j "$jobs" "$@"
