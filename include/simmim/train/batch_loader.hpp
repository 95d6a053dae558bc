#pragma once
// Background batch loading with a deterministic order: batch s of a run is the same whatever the number of
// worker threads, their timing, or a restart at step s (epoch e shuffles with a generator seeded by
// (seed, e); batch s's augmentation draws from a seed derived from (seed, s)). Workers build batches ahead
// so the model is not starved; next() hands them out in step order.

#include <ATen/ATen.h>
#include <torch/arg.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "simmim/core/check.hpp"
#include "simmim/core/random.hpp"

SIMMIM_NAMESPACE_BEGIN

struct Batch {
  at::Tensor images;  // [B, C, H, W]
  at::Tensor labels;  // [B] int64 (may be undefined for unlabeled data)
  int64_t step = 0;   // global batch index since the start of the run
  int64_t epoch = 0;
};

// Builds the batch of dataset `indices`; `seed` is unique to the batch: draw augmentations from it
// (make_generator(seed)) and the batch is reproducible.
using BatchFn = std::function<Batch(const std::vector<int64_t>& indices, uint64_t seed)>;

struct BatchLoaderOptions {
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(bool, drop_last) = true;  // an epoch has floor(N / B) batches; false: ceil, the last one short
  TORCH_ARG(uint64_t, seed) = 0;
  TORCH_ARG(int64_t, workers) = 1;   // background threads; 0 builds each batch in next()
  TORCH_ARG(int64_t, prefetch) = 4;  // batches built ahead of the consumer at most
  // Page-lock each batch in the worker, so .to(cuda, non_blocking=true) overlaps the copy with compute.
  // Needs CUDA at run time (an error otherwise); set it when training on a GPU.
  TORCH_ARG(bool, pin_memory) = false;
  // Data parallel: step s's global batch is the batch of batch_size x num_shards that one loader would
  // build; this loader takes the shard-th slice of batch_size. So N shards of batch b see together exactly
  // what one loader of batch N x b sees (augmentation draws are per shard).
  TORCH_ARG(int64_t, num_shards) = 1;
  TORCH_ARG(int64_t, shard) = 0;
};

namespace detail {

// SplitMix64's finalizer: decorrelates nearby seeds (seed, seed + 1) into unrelated streams.
inline uint64_t mix_seed(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace detail

// An endless stream of batches over a dataset of `dataset_size` items, epoch after epoch.
class BatchLoader {
 public:
  BatchLoader(int64_t dataset_size, BatchFn fn, BatchLoaderOptions options = {}, int64_t start_step = 0)
      : size_(dataset_size), fn_(std::move(fn)), options_(options), consumed_(start_step), produced_(start_step) {
    constexpr const char* api = "simmim::BatchLoader";
    SIMMIM_CHECK_VALUE(dataset_size > 0, api, "dataset_size", "positive", dataset_size);
    SIMMIM_CHECK_VALUE(options_.batch_size() > 0, api, "options.batch_size", "positive", options_.batch_size());
    SIMMIM_CHECK_VALUE(options_.num_shards() > 0, api, "options.num_shards", "positive", options_.num_shards());
    SIMMIM_CHECK_VALUE(options_.shard() >= 0 && options_.shard() < options_.num_shards(), api, "options.shard",
                       "in [0, num_shards = " + std::to_string(options_.num_shards()) + ")", options_.shard());
    SIMMIM_CHECK_VALUE(!options_.drop_last() || global_batch() <= dataset_size, api,
                       "options.batch_size x num_shards",
                       "at most the dataset size " + std::to_string(dataset_size) + " with drop_last", global_batch());
    SIMMIM_CHECK_VALUE(options_.workers() >= 0, api, "options.workers", "non-negative", options_.workers());
    SIMMIM_CHECK_VALUE(options_.prefetch() > 0, api, "options.prefetch", "positive", options_.prefetch());
    SIMMIM_CHECK_VALUE(start_step >= 0, api, "start_step", "non-negative", start_step);
    SIMMIM_CHECK(static_cast<bool>(fn_), api, "fn", "a callable", "an empty std::function");
    for (int64_t i = 0; i < options_.workers(); ++i) threads_.emplace_back([this] { work(); });
  }

  ~BatchLoader() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  int64_t batches_per_epoch() const {
    const int64_t B = global_batch();
    return options_.drop_last() ? size_ / B : (size_ + B - 1) / B;
  }

  // The step the next call to next() returns.
  int64_t next_step() const {
    std::lock_guard<std::mutex> lock(mu_);
    return consumed_;
  }

  // The dataset indices of batch `step` (this shard's slice of it).
  std::vector<int64_t> indices_for(int64_t step) const {
    const int64_t per = batches_per_epoch();
    const int64_t epoch = step / per, b = step % per;
    const int64_t G = global_batch(), B = options_.batch_size();
    const int64_t global_end = std::min(size_, b * G + G);
    const int64_t begin = std::min(global_end, b * G + options_.shard() * B);
    const int64_t end = std::min(global_end, begin + B);
    std::vector<int64_t> out;
    out.reserve(static_cast<size_t>(end - begin));
    if (!options_.shuffle()) {
      for (int64_t i = begin; i < end; ++i) out.push_back(i);
      return out;
    }
    const at::Tensor perm = permutation(epoch);
    const int64_t* p = perm.data_ptr<int64_t>();
    out.assign(p + begin, p + end);
    return out;
  }

  // The next batch in step order; rethrows what the batch function threw for it.
  Batch next() {
    if (threads_.empty()) {
      const int64_t s = consumed_++;
      return make(s);
    }
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return ready_.count(consumed_) > 0; });
    auto node = ready_.extract(consumed_);
    ++consumed_;
    lock.unlock();
    cv_.notify_all();
    if (node.mapped().error) std::rethrow_exception(node.mapped().error);
    return std::move(node.mapped().batch);
  }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };

  at::Tensor permutation(int64_t epoch) const {
    std::lock_guard<std::mutex> lock(perm_mu_);
    auto it = perms_.find(epoch);
    if (it != perms_.end()) return it->second;
    auto gen = make_generator(detail::mix_seed(options_.seed() ^ detail::mix_seed(static_cast<uint64_t>(epoch))));
    at::Tensor perm = at::randperm(size_, gen, at::TensorOptions().dtype(at::kLong));
    // Workers straddle at most an epoch boundary: two permutations cover them.
    if (perms_.size() >= 2) perms_.erase(perms_.begin());
    perms_.emplace(epoch, perm);
    return perm;
  }

  Batch make(int64_t step) const {
    uint64_t seed = detail::mix_seed(options_.seed() + 0x5851F42D4C957F2Dull * static_cast<uint64_t>(step + 1));
    if (options_.shard() > 0) seed = detail::mix_seed(seed ^ static_cast<uint64_t>(options_.shard()));
    Batch b = fn_(indices_for(step), seed);
    if (options_.pin_memory()) {
      b.images = b.images.pin_memory();
      if (b.labels.defined()) b.labels = b.labels.pin_memory();
    }
    b.step = step;
    b.epoch = step / batches_per_epoch();
    return b;
  }

  void work() {
    for (;;) {
      int64_t step;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || produced_ < consumed_ + options_.prefetch(); });
        if (stop_) return;
        step = produced_++;
      }
      Slot slot;
      try {
        slot.batch = make(step);
      } catch (...) {
        slot.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        ready_.emplace(step, std::move(slot));
      }
      cv_.notify_all();
    }
  }

  int64_t global_batch() const { return options_.batch_size() * options_.num_shards(); }

  int64_t size_;
  BatchFn fn_;
  BatchLoaderOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t consumed_;
  int64_t produced_;
  bool stop_ = false;
  std::map<int64_t, Slot> ready_;
  std::vector<std::thread> threads_;
  mutable std::mutex perm_mu_;
  mutable std::map<int64_t, at::Tensor> perms_;
};

SIMMIM_NAMESPACE_END
