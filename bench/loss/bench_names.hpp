#pragma once
// The pieces of the loss benchmarks' names (<op>/<backend>/<shape>_<dtype>), shared by the CPU and CUDA
// programs so both name the same case the same way.

#include <torch/torch.h>

#include <string>
#include <vector>

namespace bench_names {

inline const char* dtype_name(torch::ScalarType t) { return t == torch::kBFloat16 ? "bf16" : "f32"; }

inline std::string dims(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

}  // namespace bench_names
