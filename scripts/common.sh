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

# pip_torch_args PYTHON: the CMake arguments for the pip torch of PYTHON. TorchConfig looks its libtorch and
# libc10 up in the system paths before its own folder, so on a machine that also has Debian's LibTorch it
# would mix the two: pin both to the wheel's.
pip_torch_args() {
  local py="$1" prefix lib
  prefix=$("$py" -c 'import torch;print(torch.utils.cmake_prefix_path)') || return 1
  lib="$(dirname "$(dirname "$prefix")")/lib"
  printf '%s\n' "-DCMAKE_PREFIX_PATH=$prefix" "-DTORCH_LIBRARY=$lib/libtorch.so" "-Dc10_LIBRARY=$lib/libc10.so"
}

configure() {
  local gen=()
  command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
  cmake -S "$root" -B "$build_dir" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release "${torch_args[@]}" "$@"
}
