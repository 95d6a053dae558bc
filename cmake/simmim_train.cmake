# simmim::train: include/simmim/train/ needs more than LibTorch — stb (PNG writing, image decoding), zlib
# (Fashion-MNIST's .gz files) and nlohmann-json (metrics, io/'s safetensors). The core library stays
# LibTorch-only; this INTERFACE target adds those, and exists only when all three are found (Debian:
# libstb-dev zlib1g-dev nlohmann-json3-dev). SIMMIM_HAS_TRAIN tells the tests and examples whether it is there.
find_package(ZLIB QUIET)
find_package(nlohmann_json 3 QUIET)
find_path(SIMMIM_STB_INCLUDE_DIR stb/stb_image_write.h)
# Debian's libstb holds the compiled stb_image / stb_image_write; headers alone would need an
# *_IMPLEMENTATION TU, which a header-only library cannot own.
find_library(SIMMIM_STB_LIBRARY NAMES stb)

if(ZLIB_FOUND AND nlohmann_json_FOUND AND SIMMIM_STB_INCLUDE_DIR AND SIMMIM_STB_LIBRARY)
  set(SIMMIM_HAS_TRAIN ON)
  add_library(simmim_train INTERFACE)
  add_library(simmim::train ALIAS simmim_train)
  set_target_properties(simmim_train PROPERTIES EXPORT_NAME train)
  # Headers say <stb/stb_image_write.h>: the folder above stb/ is needed, unless it is the compiler's own.
  if(NOT SIMMIM_STB_INCLUDE_DIR IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
    target_include_directories(simmim_train SYSTEM INTERFACE ${SIMMIM_STB_INCLUDE_DIR})
  endif()
  target_link_libraries(simmim_train INTERFACE simmim ZLIB::ZLIB nlohmann_json::nlohmann_json
                        ${SIMMIM_STB_LIBRARY})
  if(SIMMIM_INSTALL)
    install(TARGETS simmim_train EXPORT simmimTargets)
  endif()
else()
  set(SIMMIM_HAS_TRAIN OFF)
  message(STATUS "simmim: no simmim::train (needs stb, zlib and nlohmann-json; found stb library "
                 "'${SIMMIM_STB_LIBRARY}', zlib ${ZLIB_FOUND}, nlohmann_json ${nlohmann_json_FOUND})")
endif()
