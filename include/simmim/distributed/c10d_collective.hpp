#pragma once
// Collective over a c10d process group (ProcessGroupGloo on LibTorch 1.13, a c10d Backend on 2.x: the
// calls used here are the same in both) and the TCP rendezvous torchrun's MASTER_ADDR / MASTER_PORT
// name. Included by gloo.hpp and nccl.hpp, which build the process group.

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "simmim/distributed/collective.hpp"

SIMMIM_NAMESPACE_BEGIN
namespace detail {

// Rank 0 serves the store; every rank connects (waiting up to env.timeout for the others).
inline c10::intrusive_ptr<c10d::Store> connect_store(const DistributedEnv& env, const char* api) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(env.master_port);
  o.isServer = env.rank == 0;
  o.numWorkers = static_cast<std::size_t>(env.world_size);
  o.waitWorkers = true;
  o.timeout = env.timeout;
  try {
    return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, api, ": rank ", env.rank, " of ", env.world_size, " could not meet the others at ",
                env.master_addr, ":", env.master_port, " within ", env.timeout.count() / 1000,
                " s (MASTER_ADDR / MASTER_PORT; is every rank started, and the port free?): ", e.what());
  }
}

}  // namespace detail

template <typename ProcessGroup>
class C10dCollective final : public Collective {
 public:
  C10dCollective(c10::intrusive_ptr<ProcessGroup> pg, c10::intrusive_ptr<c10d::Store> store, DistributedEnv env,
                 std::string backend)
      : pg_(std::move(pg)), store_(std::move(store)), env_(std::move(env)), backend_(std::move(backend)) {}

  int64_t rank() const override { return env_.rank; }
  int64_t world_size() const override { return env_.world_size; }
  std::string backend() const override { return backend_; }

  void all_reduce_sum(std::vector<at::Tensor>& tensors) override {
    run("all_reduce", [&] {
      c10d::AllreduceOptions o;
      o.reduceOp = c10d::ReduceOp::SUM;
      pg_->allreduce(tensors, o)->wait();
    });
  }
  void broadcast(std::vector<at::Tensor>& tensors, int64_t root) override {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      run("broadcast", [&] {
        c10d::BroadcastOptions o;
        o.rootRank = root;
        pg_->broadcast(one, o)->wait();
      });
    }
  }
  void barrier() override {
    run("barrier", [&] {
      std::vector<at::Tensor> t{at::zeros({1})};
      if (backend_ == "nccl") t[0] = t[0].to(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(env_.local_rank)));
      c10d::AllreduceOptions o;
      pg_->allreduce(t, o)->wait();
    });
  }

 private:
  template <typename F>
  void run(const char* op, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      TORCH_CHECK(false, "simmim::", backend_, " ", op, " on rank ", env_.rank, " of ", env_.world_size,
                  " failed: another rank died, failed or stopped answering within ", env_.timeout.count() / 1000,
                  " s (its own error says why): ", e.what());
    }
  }

  c10::intrusive_ptr<ProcessGroup> pg_;
  c10::intrusive_ptr<c10d::Store> store_;
  DistributedEnv env_;
  std::string backend_;
};

SIMMIM_NAMESPACE_END
