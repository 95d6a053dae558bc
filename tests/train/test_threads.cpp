#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/torch.h>

#include <sched.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "simmim/train/threads.hpp"

using Catch::Matchers::ContainsSubstring;

TEST_CASE("available_cpus is the affinity mask, which taskset or a cpuset narrows", "[train][threads]") {
  cpu_set_t set;
  CPU_ZERO(&set);
  REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
  REQUIRE(simmim::available_cpus() == CPU_COUNT(&set));
  REQUIRE(simmim::available_cpus() >= 1);

  // Pinned to one CPU (in a thread of its own, so this one keeps its mask): one CPU, so "all" is 1.
  int first = 0;
  while (!CPU_ISSET(first, &set)) ++first;
  int seen = -1, resolved = -1;
  std::thread pinned([&] {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (sched_setaffinity(0, sizeof(one), &one) != 0) return;
    seen = simmim::available_cpus();
    resolved = simmim::resolve_cpu_threads(0);
  });
  pinned.join();
  REQUIRE(seen == 1);
  REQUIRE(resolved == 1);
}

TEST_CASE("resolve_cpu_threads: 0 is every CPU, shared between the processes of a host", "[train][threads]") {
  const int n = simmim::available_cpus();
  REQUIRE(simmim::resolve_cpu_threads(0) == n);
  REQUIRE(simmim::resolve_cpu_threads(3) == 3);       // a count is taken as given, even above the CPUs
  REQUIRE(simmim::resolve_cpu_threads(5, 4) == 5);
  REQUIRE(simmim::resolve_cpu_threads(0, 2) == std::max(1, n / 2));
  REQUIRE(simmim::resolve_cpu_threads(0, n + 1) == 1);  // never 0 threads
  REQUIRE_THROWS_WITH(simmim::resolve_cpu_threads(-1),
                      ContainsSubstring("simmim::resolve_cpu_threads: requested must be 0 (all CPUs) or a positive "
                                        "thread count; got -1"));
  REQUIRE_THROWS_WITH(simmim::resolve_cpu_threads(0, 0), ContainsSubstring("processes_per_host must be at least 1"));
}

TEST_CASE("set_cpu_threads sets torch's intra-op threads", "[train][threads]") {
  const int before = at::get_num_threads();
  REQUIRE(simmim::set_cpu_threads(1) == 1);
  REQUIRE(at::get_num_threads() == 1);
  REQUIRE(simmim::set_cpu_threads(0) == simmim::available_cpus());
  REQUIRE(at::get_num_threads() == simmim::available_cpus());
  at::set_num_threads(before);
}

TEST_CASE("processes_per_host_from_environment reads torchrun's LOCAL_WORLD_SIZE", "[train][threads]") {
  const char* old = std::getenv("LOCAL_WORLD_SIZE");
  const std::string saved = old != nullptr ? old : "";
  ::unsetenv("LOCAL_WORLD_SIZE");
  REQUIRE(simmim::processes_per_host_from_environment() == 1);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  REQUIRE(simmim::processes_per_host_from_environment() == 2);
  for (const char* bad : {"0", "-3", "two", "2x", ""}) {
    ::setenv("LOCAL_WORLD_SIZE", bad, 1);
    REQUIRE(simmim::processes_per_host_from_environment() == 1);
  }
  if (old != nullptr) ::setenv("LOCAL_WORLD_SIZE", saved.c_str(), 1);
  else ::unsetenv("LOCAL_WORLD_SIZE");
}
