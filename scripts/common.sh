# Sourced by the scripts: finds the torch to build against and configures the build tree.
# SIMMIM_BUILD_DIR (default build/release) and SIMMIM_JOBS (default: the core count) can be set.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${SIMMIM_BUILD_DIR:-$root/build/release}"
jobs="${SIMMIM_JOBS:-$(nproc)}"

torch_args=()
if [ -n "${Torch_DIR:-}" ]; then
  torch_args=(-DTorch_DIR="$Torch_DIR")
elif [ ! -f /usr/lib/x86_64-linux-gnu/cmake/Torch/TorchConfig.cmake ] && command -v python3 >/dev/null 2>&1; then
  # A pip torch (the GPU machine): its CMake prefix.
  if prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null); then
    torch_args=(-DCMAKE_PREFIX_PATH="$prefix")
  fi
fi

configure() {
  local gen=()
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  cmake -S "$root" -B "$build_dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "${torch_args[@]}" "$@"
}
