# simmim::gloo: data parallel on CPU through c10d's ProcessGroupGloo (include/simmim/distributed/gloo.hpp).
# Debian's LibTorch 1.13 ships the Gloo process group; its Gloo headers come from libgloo-dev, and the
# USE_C10D_GLOO define that makes ProcessGroupGloo.hpp declare anything is ours to set (TorchConfig does
# not). Pip torch 2.x wheels carry no Gloo headers (and a Debian libgloo-dev beside them would not match
# the Gloo built into the wheel), so there the GPU path is NCCL (distributed/nccl.hpp, CUDA LibTorch).
set(SIMMIM_HAS_GLOO OFF)
find_path(SIMMIM_GLOO_INCLUDE_DIR gloo/config.h)
find_file(SIMMIM_C10D_GLOO_HEADER torch/csrc/distributed/c10d/ProcessGroupGloo.hpp PATHS ${TORCH_INCLUDE_DIRS}
          NO_DEFAULT_PATH)
if(SIMMIM_GLOO_INCLUDE_DIR AND SIMMIM_C10D_GLOO_HEADER AND Torch_VERSION VERSION_LESS 2.0)
  set(SIMMIM_HAS_GLOO ON)
  add_library(simmim_gloo INTERFACE)
  add_library(simmim::gloo ALIAS simmim_gloo)
  set_target_properties(simmim_gloo PROPERTIES EXPORT_NAME gloo)
  target_link_libraries(simmim_gloo INTERFACE simmim)
  target_compile_definitions(simmim_gloo INTERFACE USE_C10D_GLOO)
  if(NOT SIMMIM_GLOO_INCLUDE_DIR IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    target_include_directories(simmim_gloo SYSTEM INTERFACE ${SIMMIM_GLOO_INCLUDE_DIR})
  endif()
  if(SIMMIM_INSTALL)
    install(TARGETS simmim_gloo EXPORT simmimTargets)
  endif()
else()
  message(STATUS "simmim: no simmim::gloo (needs LibTorch 1.x with ProcessGroupGloo.hpp and libgloo-dev; "
                 "Torch ${Torch_VERSION}, gloo headers '${SIMMIM_GLOO_INCLUDE_DIR}')")
endif()
