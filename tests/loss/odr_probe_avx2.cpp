// The AVX2 translation unit of the ODR test (compiled with -mavx2, see CMakeLists.txt).
#include "odr_probe.hpp"

odr_probe::Report odr_probe_avx2_tu() { return odr_probe::forced_baseline_pass(); }
