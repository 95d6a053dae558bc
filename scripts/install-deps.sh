#!/usr/bin/env bash
# Installs what simmim's build, tests, benchmarks and examples need, and only what is missing.
# On a machine that already has a torch with CMake files (a GPU box with pip torch, no package registry)
# it uses that torch and installs nothing.
set -euo pipefail

have_cmake_torch() {
  # Debian's libtorch-dev, or a pip torch that exposes its CMake prefix.
  [ -f /usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake ] && return 0
  [ -n "${Torch_DIR:-}" ] && [ -f "${Torch_DIR}/TorchConfig.cmake" ] && return 0
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import torch,os,sys; p=torch.utils.cmake_prefix_path; sys.exit(0 if os.path.isdir(p) else 1)' 2>/dev/null
}

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
  have_cmake_torch || { echo "install-deps: no apt-get and no torch with CMake files found" >&2; exit 1; }
  echo "install-deps: not a Debian system; using the torch already installed"
  exit 0
fi

# A pip torch with CMake files and no Debian libtorch: a GPU machine. Install nothing (it may be offline).
if ! dpkg-query -W -f='${Status}' libtorch-dev 2>/dev/null | grep -q 'ok installed' && have_cmake_torch; then
  echo "install-deps: using the pip torch at $(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# libopenblas0-openmp: Debian's libtorch calls BLAS through the libblas.so.3 alternative, which is netlib's
# reference BLAS unless an optimized one is installed; OpenBLAS (the OpenMP build, matching torch's libgomp)
# makes matrix products ~13x faster here (3.5 -> 46 GFLOP/s, 1024^2 fp32 matmul, one thread).
# gnuplot-nox: the examples' pictures with text and curves (mask-gallery labels, loss.png); optional at run
# time (without it they say so and write the rest).
base_pkgs=(cmake ninja-build g++ pkg-config libtorch-dev libgloo-dev libbenchmark-dev libopenblas0-openmp
           dataset-fashion-mnist libstb-dev zlib1g-dev nlohmann-json3-dev libcli11-dev gnuplot-nox)
missing=()
for p in "${base_pkgs[@]}"; do
  [ "$p" = gnuplot-nox ] && command -v gnuplot >/dev/null 2>&1 && continue  # any gnuplot build will do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done

# Catch2 3.x lives in bookworm-backports; bookworm itself only has 2.13.
catch2_ok=0
if dpkg-query -W -f='${Version}' catch2 2>/dev/null | grep -qE '^3\.'; then catch2_ok=1; fi

if [ ${#missing[@]} -eq 0 ] && [ $catch2_ok -eq 1 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if [ $catch2_ok -eq 0 ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "deb http://deb.debian.org/debian bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/simmim-backports.list >/dev/null
fi
$SUDO apt-get update -qq
[ ${#missing[@]} -eq 0 ] || $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ $catch2_ok -eq 1 ] || $SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports catch2
echo "install-deps: done"
