#pragma once
// Data parallel on CPU: a Collective over c10d's ProcessGroupGloo. Link simmim::gloo (Debian: LibTorch
// 1.13 ships Gloo; its headers come from libgloo-dev, and the target defines USE_C10D_GLOO, which
// TorchConfig does not). Pip torch wheels carry no Gloo headers: use nccl.hpp on GPUs there.

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>
#include <memory>
#include <string>

#include "simmim/distributed/c10d_collective.hpp"

SIMMIM_NAMESPACE_BEGIN

// Meets the other ranks (env.master_addr:port) and builds the Gloo group. The network device: the
// interface $GLOO_SOCKET_IFNAME names, as in PyTorch; else loopback when the master is local; else the
// one the host name resolves to.
inline std::shared_ptr<Collective> make_gloo_collective(const DistributedEnv& env) {
  constexpr const char* api = "simmim::make_gloo_collective";
  env.check(api);
  auto store = detail::connect_store(env, api);
  auto options = c10d::ProcessGroupGloo::Options::create(env.timeout);
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (env.master_addr == "127.0.0.1" || env.master_addr == "localhost") {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
  try {
    pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, static_cast<int>(env.rank),
                                                     static_cast<int>(env.world_size), options);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, api, ": rank ", env.rank, " of ", env.world_size, " could not connect to the others: ",
                e.what());
  }
  return std::make_shared<C10dCollective<c10d::ProcessGroupGloo>>(pg, store, env, "gloo");
}

SIMMIM_NAMESPACE_END
