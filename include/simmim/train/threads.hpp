#pragma once
// How many CPU threads a training program gives torch. Debian's LibTorch starts with one intra-op thread on
// a small VM, so a program that keeps torch's default trains on one core; these helpers make "every core
// this process may run on" the default (the CPU affinity mask, which taskset, cgroups cpusets and
// containers narrow, not the machine's core count), shared fairly between the processes of a data-parallel
// job on one host.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

#include "simmim/core/check.hpp"

SIMMIM_NAMESPACE_BEGIN

// CPUs this process may run on: the size of its affinity mask on Linux, else std::thread's hint; at least 1.
inline int available_cpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

// The intra-op thread count for a `--threads` value: `requested` > 0 is taken as given; 0 means all the
// CPUs this process may use, divided between the `processes_per_host` processes of a job on this machine
// (torchrun's LOCAL_WORLD_SIZE), at least 1 each.
inline int resolve_cpu_threads(int requested, int processes_per_host = 1) {
  constexpr const char* api = "simmim::resolve_cpu_threads";
  SIMMIM_CHECK_VALUE(requested >= 0, api, "requested", "0 (all CPUs) or a positive thread count", requested);
  SIMMIM_CHECK_VALUE(processes_per_host >= 1, api, "processes_per_host", "at least 1", processes_per_host);
  if (requested > 0) return requested;
  return std::max(1, available_cpus() / processes_per_host);
}

// How many processes of this job run on this host: torchrun's $LOCAL_WORLD_SIZE, else 1 (a value that is
// not a positive integer counts as 1: the thread count is a tuning choice, not worth stopping a run for).
inline int processes_per_host_from_environment() {
  const char* v = std::getenv("LOCAL_WORLD_SIZE");
  if (v == nullptr || *v == '\0') return 1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return end != nullptr && *end == '\0' && n >= 1 && n <= 1 << 20 ? static_cast<int>(n) : 1;
}

// Sets torch's intra-op threads to resolve_cpu_threads(requested, processes_per_host) and returns the count.
inline int set_cpu_threads(int requested, int processes_per_host = 1) {
  const int n = resolve_cpu_threads(requested, processes_per_host);
  at::set_num_threads(n);
  return n;
}

SIMMIM_NAMESPACE_END
