#!/usr/bin/env bash
# The demo: installs what is missing, configures, builds the mask example and renders every mask strategy
# to out/masks.png (one row per strategy). Extra arguments go to the example (try --help).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/install-deps.sh"
source "$here/common.sh"
configure
cmake --build "$build_dir" --target simmim_01_masks -j "$jobs"
mkdir -p "$root/out"
"$build_dir/examples/01_masks/simmim_01_masks" --out "$root/out/masks.png" "$@"
echo "demo: the masks are in $root/out/masks.png"
