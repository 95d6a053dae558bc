#pragma once
// What data-parallel training needs of a process group, as a small interface over c10d (LibTorch's own
// distributed engine: Gloo on CPU, NCCL on GPU; see gloo.hpp / nccl.hpp), and the operations a trainer
// builds from it: the launch environment torchrun sets, parameters and buffers broadcast from rank 0, and
// gradients averaged in buckets with a clear error for a parameter that got none.

#include <torch/nn/module.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

// One process per device: where this process is in the job. From torchrun's environment (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), or filled in by hand.
struct DistributedEnv {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  // How long a collective (or the rendezvous) may wait before the process fails, naming the cause: a rank
  // that died or failed makes the others stop within it instead of hanging.
  std::chrono::milliseconds timeout = std::chrono::seconds(120);

  bool distributed() const { return world_size > 1; }

  void check(const char* api) const {
    SIMMIM_CHECK_VALUE(world_size >= 1 && world_size <= 65536, api, "world_size", "in [1, 65536]", world_size);
    SIMMIM_CHECK_VALUE(rank >= 0 && rank < world_size, api, "rank",
                       "in [0, world_size = " + std::to_string(world_size) + ")", rank);
    SIMMIM_CHECK_VALUE(local_rank >= 0, api, "local_rank", "non-negative", local_rank);
    SIMMIM_CHECK_VALUE(master_port > 0 && master_port < 65536, api, "master_port", "in [1, 65535]", master_port);
    SIMMIM_CHECK_VALUE(!master_addr.empty(), api, "master_addr", "a host name or address", "''");
    SIMMIM_CHECK_VALUE(timeout.count() > 0, api, "timeout", "positive", timeout.count());
  }
};

namespace detail {
inline int64_t env_int(const char* name, int64_t fallback, const char* api) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  SIMMIM_CHECK_VALUE(end != nullptr && *end == '\0', api, std::string("$") + name, "an integer",
                     "'" + std::string(v) + "'");
  return static_cast<int64_t>(x);
}
}  // namespace detail

// torchrun's environment; a single process (rank 0 of 1) where it is not set. Errors name the variable.
inline DistributedEnv distributed_env_from_environment() {
  constexpr const char* api = "simmim::distributed_env_from_environment";
  DistributedEnv env;
  env.world_size = detail::env_int("WORLD_SIZE", 1, api);
  env.rank = detail::env_int("RANK", 0, api);
  env.local_rank = detail::env_int("LOCAL_RANK", env.rank, api);
  if (const char* a = std::getenv("MASTER_ADDR")) env.master_addr = a;
  env.master_port = detail::env_int("MASTER_PORT", env.master_port, api);
  const int64_t timeout_s = detail::env_int("SIMMIM_DIST_TIMEOUT", 120, api);
  SIMMIM_CHECK_VALUE(timeout_s > 0, api, "$SIMMIM_DIST_TIMEOUT", "a positive number of seconds", timeout_s);
  env.timeout = std::chrono::seconds(timeout_s);
  env.check(api);
  return env;
}

// The device a rank trains on: CUDA devices are one per process, cuda:LOCAL_RANK under a distributed
// launch; anything else is as requested.
inline c10::Device device_for_rank(const DistributedEnv& env, c10::Device requested) {
  if (env.distributed() && requested.is_cuda()) return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  return requested;
}

// The collectives a data-parallel trainer uses. Implementations: gloo.hpp (CPU tensors), nccl.hpp (CUDA).
class Collective {
 public:
  virtual ~Collective() = default;
  virtual int64_t rank() const = 0;
  virtual int64_t world_size() const = 0;
  virtual std::string backend() const = 0;
  // In place, over every rank, waiting for completion; errors (a dead rank, a timeout) name the operation.
  virtual void all_reduce_sum(std::vector<at::Tensor>& tensors) = 0;
  virtual void broadcast(std::vector<at::Tensor>& tensors, int64_t root) = 0;
  virtual void barrier() = 0;
};

// Rank 0's parameters and buffers to every rank (as DDP does at construction), so all start equal.
inline void broadcast_module(Collective& c, torch::nn::Module& module) {
  std::vector<at::Tensor> tensors;
  for (const auto& p : module.parameters()) tensors.push_back(p.detach());
  for (const auto& b : module.buffers()) tensors.push_back(b.detach());
  if (tensors.empty() || c.world_size() == 1) return;
  at::NoGradGuard no_grad;
  c.broadcast(tensors, 0);
}

// The mean over ranks of a scalar (a loss, for logging).
inline double all_reduce_mean(Collective& c, double value) {
  if (c.world_size() == 1) return value;
  std::vector<at::Tensor> t{at::full({1}, value, at::TensorOptions().dtype(at::kDouble))};
  c.all_reduce_sum(t);
  return t[0].item<double>() / static_cast<double>(c.world_size());
}

// Averages the gradients of `params` over the ranks, in buckets of about `bucket_bytes` (one flat buffer
// per bucket and dtype: few, large collectives). A parameter that requires grad but got none this step is
// an error naming it: the usual cause of DDP failures with MIM (a head or token unused in one branch), and
// silently skipping it would desynchronize the ranks.
inline void average_gradients(Collective& c, const std::vector<std::pair<std::string, at::Tensor>>& named_params,
                              int64_t bucket_bytes = int64_t{25} << 20) {
  constexpr const char* api = "simmim::average_gradients";
  std::vector<at::Tensor> grads;
  for (const auto& np : named_params) {
    if (!np.second.requires_grad()) continue;
    SIMMIM_CHECK(np.second.grad().defined(), api, "parameter '" + np.first + "'",
                 "a gradient after backward on every rank (data parallel averages all of them)",
                 "none on rank " + std::to_string(c.rank()) +
                     ": it took no part in the loss; freeze it (requires_grad false) or use it");
    grads.push_back(np.second.grad());
  }
  if (c.world_size() == 1 || grads.empty()) return;
  at::NoGradGuard no_grad;
  const double inv = 1.0 / static_cast<double>(c.world_size());
  size_t i = 0;
  while (i < grads.size()) {
    // One bucket: consecutive gradients of one dtype and device, up to bucket_bytes.
    std::vector<at::Tensor> bucket{grads[i]};
    int64_t bytes = grads[i].numel() * static_cast<int64_t>(grads[i].element_size());
    size_t j = i + 1;
    while (j < grads.size() && bytes < bucket_bytes && grads[j].scalar_type() == grads[i].scalar_type() &&
           grads[j].device() == grads[i].device()) {
      bytes += grads[j].numel() * static_cast<int64_t>(grads[j].element_size());
      bucket.push_back(grads[j]);
      ++j;
    }
    std::vector<at::Tensor> flat_views;
    for (const auto& g : bucket) flat_views.push_back(g.reshape({-1}));
    std::vector<at::Tensor> flat{at::cat(flat_views)};
    c.all_reduce_sum(flat);
    flat[0].mul_(inv);
    int64_t offset = 0;
    for (auto& g : bucket) {
      g.copy_(flat[0].narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
    i = j;
  }
}

SIMMIM_NAMESPACE_END
