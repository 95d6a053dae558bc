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

add_library(simmim_pch OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
target_link_libraries(simmim_pch PUBLIC simmim_dev_flags)
target_precompile_headers(simmim_pch PRIVATE <torch/torch.h>)

# simmim_dev_target(<target>): flags + the shared precompiled header.
function(simmim_dev_target target)
  target_link_libraries(${target} PRIVATE simmim_dev_flags)
  target_precompile_headers(${target} REUSE_FROM simmim_pch)
endfunction()
