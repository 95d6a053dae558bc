#!/usr/bin/env bash
# The second CI configuration: the whole project, simmim::cuda included, against pip torch 2.11 (a CUDA
# build, which installs and links without a GPU) in a virtual environment kept outside the clone, so that
# repeated runs do not download it again; then the CPU tests on torch 2.x. CUDA tests skip without a GPU
# (scripts/gpu-check.sh runs them on one). timm and safetensors go into the same venv for the interop_timm
# test (simmim's safetensors against timm's VisionTransformer, both ways).
#   SIMMIM_TORCH_VENV   the virtual environment (default ~/.cache/simmim/venv-torch-2.11)
#   SIMMIM_TORCH2_BUILD_DIR   the build tree (default build/torch2)
#   SIMMIM_JOBS         build and test jobs (default: the core count)
#   SIMMIM_TORCH2_CXX_FLAGS   the Release flags of this build (default -O1 -DNDEBUG)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/common.sh"
venv="${SIMMIM_TORCH_VENV:-$HOME/.cache/simmim/venv-torch-2.11}"
build2="${SIMMIM_TORCH2_BUILD_DIR:-$root/build/torch2}"
want=2.11.0

if ! "$venv/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.startswith('$want') else 1)" 2>/dev/null; then
  echo "test-torch2: installing torch==$want into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$want"
fi
if ! "$venv/bin/python" -c "import timm, safetensors" 2>/dev/null; then
  echo "test-torch2: installing timm and safetensors into $venv"
  # torch pinned in the same command: timm's newest torchvision would otherwise upgrade torch.
  "$venv/bin/pip" install --quiet --disable-pip-version-check "torch==$want" timm safetensors
fi
mapfile -t targs < <(pip_torch_args "$venv/bin/python")

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
# nvcc: CI machines carry it at /usr/local/cuda; without it simmim::cuda cannot be built (AUTO says so).
cuda=AUTO
[ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1 && cuda=ON
# -O1 for everything here: this configuration checks that the project compiles, links and passes against
# torch 2.x; speed is measured in -O3 builds (the Debian stage's, scripts/gpu-check.sh's). At -O1 a TU
# compiles in about a third of the -O3 time (cmake/simmim_dev.cmake), most of this stage's time on 2 cores.
cmake -S "$root" -B "$build2" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=${SIMMIM_TORCH2_CXX_FLAGS:--O1 -DNDEBUG}" \
  -DSIMMIM_CUDA="$cuda" \
  -DSIMMIM_PYTHON="$venv/bin/python" "${targs[@]}" "$@"
cmake --build "$build2" -j "$jobs"
cd "$build2"
# The add_subdirectory / FetchContent consumers are the Debian stage's (they rebuild simmim's headers only);
# here the installed package, with and without simmim::cuda.
ctest --output-on-failure -j "$jobs" -E 'consume_(add_subdirectory|fetchcontent)'

