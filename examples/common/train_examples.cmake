# Shared by the training examples 02..05: they need simmim::train (stb, zlib, json) and CLI11, and their
# smoke runs need Fashion-MNIST (Debian dataset-fashion-mnist, or $SIMMIM_FASHION_MNIST_DIR at configure time).
find_package(CLI11 CONFIG QUIET)
set(SIMMIM_TRAIN_EXAMPLES_OK OFF)
if(SIMMIM_HAS_TRAIN AND CLI11_FOUND)
  set(SIMMIM_TRAIN_EXAMPLES_OK ON)
endif()
set(_fmnist_dir /usr/share/datasets/fashion-mnist)
if(DEFINED ENV{SIMMIM_FASHION_MNIST_DIR})
  set(_fmnist_dir $ENV{SIMMIM_FASHION_MNIST_DIR})
endif()
set(SIMMIM_SMOKE_DATA_OK OFF)
if(EXISTS ${_fmnist_dir}/train-images-idx3-ubyte.gz AND EXISTS ${_fmnist_dir}/t10k-images-idx3-ubyte.gz)
  set(SIMMIM_SMOKE_DATA_OK ON)
endif()
# Smoke runs share one scratch folder; the unpacked dataset is cached inside the build tree.
set(SIMMIM_SMOKE_DIR ${CMAKE_BINARY_DIR}/examples/smoke)
set(SIMMIM_SMOKE_ENV SIMMIM_CACHE_DIR=${CMAKE_BINARY_DIR}/examples/cache SIMMIM_FASHION_MNIST_DIR=${_fmnist_dir})

# simmim_add_train_example(<name>): the program simmim_<name> from main.cpp, and a ctest that its --help works.
function(simmim_add_train_example name)
  simmim_add_example(${name} main.cpp)
  target_link_libraries(simmim_${name} PRIVATE simmim::train CLI11::CLI11)
  add_test(NAME example_${name}_help COMMAND simmim_${name} --help)
  set_tests_properties(example_${name}_help PROPERTIES LABELS example)
endfunction()

# simmim_add_smoke_test(<test name> <target> args...): a few steps on a few images, seconds.
function(simmim_add_smoke_test test target)
  if(NOT SIMMIM_SMOKE_DATA_OK)
    return()
  endif()
  add_test(NAME ${test} COMMAND ${target} --threads 1 ${ARGN})
  set_tests_properties(${test} PROPERTIES LABELS example ENVIRONMENT "${SIMMIM_SMOKE_ENV}" TIMEOUT 300)
endfunction()
