#pragma once
// Data parallel on GPUs: a Collective over c10d's ProcessGroupNCCL (LibTorch 2.x built with CUDA; pip
// torch defines USE_C10D_NCCL for its consumers). One process per GPU: rank r uses cuda:LOCAL_RANK.

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <memory>

#include "simmim/distributed/c10d_collective.hpp"

SIMMIM_NAMESPACE_BEGIN

inline std::shared_ptr<Collective> make_nccl_collective(const DistributedEnv& env) {
  constexpr const char* api = "simmim::make_nccl_collective";
  env.check(api);
  auto store = detail::connect_store(env, api);
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = env.timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, static_cast<int>(env.rank),
                                                        static_cast<int>(env.world_size), options);
  return std::make_shared<C10dCollective<c10d::ProcessGroupNCCL>>(pg, store, env, "nccl");
}

SIMMIM_NAMESPACE_END
