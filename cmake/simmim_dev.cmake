# Build helpers for simmim's own tests, benchmarks and examples (not installed, not seen by consumers).
#
# Every TU here includes torch/torch.h, which costs ~20 s on a 2-core machine. One object library owns
# the precompiled header and every other target reuses it (REUSE_FROM needs identical flags, so all
# dev targets get them through simmim_dev_flags).
add_library(simmim_dev_flags INTERFACE)
target_link_libraries(simmim_dev_flags INTERFACE simmim::simmim)
target_compile_options(simmim_dev_flags INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wno-unused-parameter -Winvalid-pch>)

# Every dev target sees the same c10d backends (the precompiled header needs identical flags): the
# examples and tests use Gloo where simmim::gloo exists and NCCL where simmim::cuda does.
if(TARGET simmim_gloo)
  target_link_libraries(simmim_dev_flags INTERFACE simmim_gloo)
  target_compile_definitions(simmim_dev_flags INTERFACE SIMMIM_DEV_HAVE_GLOO=1)
endif()
if(SIMMIM_HAS_CUDA)
  target_compile_definitions(simmim_dev_flags INTERFACE SIMMIM_DEV_HAVE_NCCL=1)
endif()

# Two precompiled headers: the examples and benchmarks build at the configuration's optimization level
# (Release: -O3, what a user runs and what the figures are measured with); the tests and the programs the
# tests run build at SIMMIM_TEST_OPTIMIZE (default -O1). A test checks results, not speed: at -O1 a test TU
# compiles in about a third of the -O3 time here (test_core.cpp: 22 s vs 60 s of CPU), which is most of
# CI's time on 2 cores, and the tests run about as fast (their time is LibTorch's ops and our kernels at small
# sizes). IEEE semantics do not depend on -O (no -ffast-math anywhere), so the kernels compute the same
# values at both levels; the examples' smoke tests run the -O3 build of the same headers.
set(SIMMIM_TEST_OPTIMIZE "-O1" CACHE STRING
    "Optimization flag for simmim's test executables (empty: the build type's own flags)")
add_library(simmim_pch OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(simmim_pch PUBLIC simmim_dev_flags)
target_precompile_headers(simmim_pch PRIVATE <torch/torch.h>)

set(simmim_test_opt "")
if(SIMMIM_TEST_OPTIMIZE AND NOT CMAKE_BUILD_TYPE STREQUAL "Debug" AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  set(simmim_test_opt ${SIMMIM_TEST_OPTIMIZE})
endif()
add_library(simmim_pch_test OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(simmim_pch_test PUBLIC simmim_dev_flags)
# After the build type's flags on the command line, so it is the level that counts.
target_compile_options(simmim_pch_test PUBLIC ${simmim_test_opt})
target_precompile_headers(simmim_pch_test PRIVATE <torch/torch.h>)

# simmim_dev_target(<target> [TEST]): flags + the shared precompiled header; TEST: the tests' level.
function(simmim_dev_target target)
  target_link_libraries(${target} PRIVATE simmim_dev_flags)
  if("TEST" IN_LIST ARGN)
    target_compile_options(${target} PRIVATE ${simmim_test_opt})
    target_precompile_headers(${target} REUSE_FROM simmim_pch_test)
  else()
    target_precompile_headers(${target} REUSE_FROM simmim_pch)
  endif()
endfunction()
