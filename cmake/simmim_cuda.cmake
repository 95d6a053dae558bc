# simmim::cuda: the compiled CUDA half of simmim (src/cuda): nvcc-compiled, torch-free kernels
# (include/simmim/kernels/cuda) and their ATen glue, in one shared library that registers its entry points
# in the header-only dispatch's runtime table when it is loaded. The core library stays header-only.
#
# SIMMIM_CUDA=AUTO (default): built when the CUDA language and a CUDA-enabled Torch are found; ON: required
# (configure fails saying what is missing); OFF: never. Architectures: SIMMIM_CUDA_ARCHITECTURES (default
# 80;90: A100, H100/H200), set on simmim's CUDA targets: a CUDA-enabled Torch overrides the global
# CMAKE_CUDA_ARCHITECTURES while it is found, so simmim does not rely on it.
#
# Whatever Torch is found, simmim_cuda_kernels compiles the torch-free kernels with nvcc alone when nvcc
# exists (every CI configuration, Debian's CPU-only LibTorch included), so GPU code always compiles.
set(SIMMIM_CUDA AUTO CACHE STRING "Build the simmim::cuda library: AUTO, ON or OFF")
set_property(CACHE SIMMIM_CUDA PROPERTY STRINGS AUTO ON OFF)
set(SIMMIM_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures of simmim's kernels (e.g. 90 for H100 only)")
if(NOT SIMMIM_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "simmim: SIMMIM_CUDA must be AUTO, ON or OFF; got '${SIMMIM_CUDA}'")
endif()

# The CUDA kernels must stay torch-free (nvcc alone compiles them, anywhere): a torch, ATen or c10 include in
# include/simmim/kernels/cuda or in the kernels' translation unit fails the configure step.
if(SIMMIM_TOP_LEVEL)
  file(GLOB _simmim_torch_free ${PROJECT_SOURCE_DIR}/include/simmim/kernels/cuda/*
                               ${PROJECT_SOURCE_DIR}/src/cuda/masked_loss_kernels.cu
                               ${PROJECT_SOURCE_DIR}/src/cuda/token_loss_kernels.cu)
  foreach(_f IN LISTS _simmim_torch_free)
    file(STRINGS ${_f} _bad REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"](torch|ATen|c10)/")
    if(_bad)
      message(FATAL_ERROR "simmim: ${_f} must not include torch, ATen or c10 headers (kernels/cuda is torch-free); "
                          "found: ${_bad}")
    endif()
  endforeach()
endif()

set(SIMMIM_HAS_CUDA OFF)
set(SIMMIM_HAS_NVCC OFF)
if(NOT SIMMIM_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "CUDA compiler")
  endif()
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    set(SIMMIM_HAS_NVCC ON)
  endif()
  set(_simmim_cuda_missing "")
  if(NOT SIMMIM_HAS_NVCC)
    list(APPEND _simmim_cuda_missing "no CUDA compiler (nvcc) found")
  endif()
  if(NOT CAFFE2_USE_CUDA)
    list(APPEND _simmim_cuda_missing "the Torch found (${Torch_DIR}) is not CUDA-enabled")
  endif()
  if(_simmim_cuda_missing STREQUAL "")
    set(SIMMIM_HAS_CUDA ON)
  elseif(SIMMIM_CUDA STREQUAL "ON")
    message(FATAL_ERROR "simmim: SIMMIM_CUDA=ON, but ${_simmim_cuda_missing}")
  else()
    message(STATUS "simmim: no simmim::cuda (${_simmim_cuda_missing})")
  endif()
endif()

# A CUDA-enabled Torch appends its own -gencode list to CMAKE_CUDA_FLAGS when it is found (sm_50 among
# them, which nvcc 13 rejects): simmim's CUDA targets take their architectures from
# SIMMIM_CUDA_ARCHITECTURES alone.
if(SIMMIM_HAS_NVCC)
  string(REGEX REPLACE "-gencode[ =]+arch=[^ ]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
endif()

if(SIMMIM_HAS_NVCC AND (SIMMIM_TOP_LEVEL OR SIMMIM_HAS_CUDA))
  # The kernels alone, compiled by nvcc with no torch include path or flag: proof that they are torch-free,
  # in every configuration where nvcc exists (Debian's CPU-only LibTorch included), and the device half of
  # simmim::cuda. Kept away from Torch's targets on purpose: a CUDA Torch's interface flags carry its own
  # architecture list (sm_50 among them, which nvcc 13 no longer knows).
  add_library(simmim_cuda_kernels OBJECT ${PROJECT_SOURCE_DIR}/src/cuda/masked_loss_kernels.cu
                                         ${PROJECT_SOURCE_DIR}/src/cuda/token_loss_kernels.cu)
  target_include_directories(simmim_cuda_kernels PRIVATE ${PROJECT_SOURCE_DIR}/include)
  target_compile_features(simmim_cuda_kernels PRIVATE cuda_std_17)
  set_target_properties(simmim_cuda_kernels PROPERTIES CUDA_ARCHITECTURES "${SIMMIM_CUDA_ARCHITECTURES}"
                        POSITION_INDEPENDENT_CODE ON)
endif()

if(SIMMIM_HAS_CUDA)
  set(_simmim_archs "")
  foreach(_a IN LISTS SIMMIM_CUDA_ARCHITECTURES)
    string(APPEND _simmim_archs " sm_${_a}")
  endforeach()
  add_library(simmim_cuda SHARED src/cuda/masked_loss_cuda.cpp $<TARGET_OBJECTS:simmim_cuda_kernels>)
  add_library(simmim::cuda ALIAS simmim_cuda)
  # INSTALL_RPATH_USE_LINK_PATH: the installed library still finds LibTorch's and the CUDA runtime's.
  set_target_properties(simmim_cuda PROPERTIES EXPORT_NAME cuda INSTALL_RPATH_USE_LINK_PATH TRUE)
  target_compile_definitions(simmim_cuda PRIVATE
    "SIMMIM_CUDA_BUILT_FOR=\"CUDA ${CMAKE_CUDA_COMPILER_VERSION},${_simmim_archs}\"")
  target_link_libraries(simmim_cuda PUBLIC simmim)
  # The kernels' launches need the CUDA runtime (Torch's CUDA libraries use the shared one too).
  if(NOT TARGET CUDA::cudart)
    find_package(CUDAToolkit REQUIRED)
  endif()
  target_link_libraries(simmim_cuda PRIVATE CUDA::cudart)
  # The library registers itself when loaded and consumers reference none of its symbols: keep it on their
  # link line even where the linker drops unreferenced libraries (--as-needed).
  target_link_options(simmim_cuda INTERFACE
    "$<$<AND:$<PLATFORM_ID:Linux>,$<LINK_LANG_AND_ID:CXX,GNU,Clang>>:LINKER:--no-as-needed>")
  if(SIMMIM_INSTALL)
    install(TARGETS simmim_cuda EXPORT simmimTargets
            LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  endif()
endif()
