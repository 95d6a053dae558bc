#pragma once
// simmim umbrella header (CPU). Include this, or the one header per concept you need.

#include "simmim/core/check.hpp"
#include "simmim/core/patchify.hpp"
#include "simmim/core/random.hpp"
#include "simmim/core/shape.hpp"
#include "simmim/core/version.hpp"
#include "simmim/masking/mask_factory.hpp"
#include "simmim/loss/masked_loss.hpp"
