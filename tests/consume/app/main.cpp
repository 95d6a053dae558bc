// The tiny consumer program every consumption test builds: includes the umbrella header, uses the library.
#include <simmim/simmim.hpp>

#include <iostream>

int main() {
  const auto grid = simmim::patch_grid({192, 224}, 32, "consumer");
  std::cout << "simmim " << simmim::kVersionString << " grid " << grid << "\n";
  return grid == simmim::Size2d(6, 7) ? 0 : 1;
}
