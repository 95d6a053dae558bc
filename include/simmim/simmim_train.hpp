#pragma once
// simmim umbrella header with the training utilities that need more than LibTorch: PNG grids and image
// folders (stb), Fashion-MNIST (zlib), metrics and safetensors (nlohmann-json). Link simmim::train when
// including it.

#include "simmim/simmim.hpp"
#include "simmim/train/classification_report.hpp"
#include "simmim/io/adapt_weights.hpp"
#include "simmim/io/module_weights.hpp"
#include "simmim/io/name_map.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/train/fashion_mnist.hpp"
#include "simmim/train/image_folder.hpp"
#include "simmim/train/image_grid.hpp"
#include "simmim/train/metrics_log.hpp"
#include "simmim/train/data_split.hpp"
#include "simmim/train/model_spec.hpp"
#include "simmim/train/plots.hpp"
#include "simmim/train/pretrain.hpp"
