// The tiny consumer program every consumption test builds: includes the umbrella header, uses the library.
#include <simmim/simmim.hpp>

#include <iostream>

int main() {
  const auto grid = simmim::patch_grid({192, 224}, 32, "consumer");
  std::cout << "simmim " << simmim::kVersionString << " grid " << grid << " fused CUDA "
            << (simmim::fused_cuda_available() ? "available" : "not linked") << "\n";
#ifdef SIMMIM_CONSUMER_EXPECTS_CUDA
  // Linking simmim::cuda is all it takes: the library registers its kernels when it is loaded.
  if (!simmim::fused_cuda_available()) return 2;
#else
  if (simmim::fused_cuda_available()) return 3;
#endif
  return grid == simmim::Size2d(6, 7) ? 0 : 1;
}
