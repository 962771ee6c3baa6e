// The CPU all-reduce of a pod's data-parallel replicas (worker/collective.h): K
// replica threads average P float32 values, against memcpy of the same bytes
// (BM_Memcpy/K/P, memcpy_baseline.h).
//
// Bytes processed = K * P * 4 (every replica's buffer), for both: the all-reduce
// reads each replica's P values once and writes the mean back into each, the same
// traffic as K memcpys of P values, spread over K threads. The calling thread is
// rank 0; ranks 1..K-1 are threads started before the timed loop that run the same
// number of rounds, so the time is rank 0's wall time per all-reduce, rendezvous
// included.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <thread>
#include <vector>

#include "fedpod/worker/collective.h"
#include "memcpy_baseline.h"

namespace {

void BM_CpuAllReduce(benchmark::State& state) {
  const int k = static_cast<int>(state.range(0));
  const int64_t p = state.range(1);
  torch::manual_seed(301);
  std::vector<torch::Tensor> replicas;
  for (int r = 0; r < k; ++r) replicas.push_back(torch::randn({p}));
  auto collective = fedpod::worker::make_cpu_collective(k);
  const auto rounds = state.max_iterations;
  std::vector<std::thread> others;
  for (int r = 1; r < k; ++r) {
    others.emplace_back([&, r] {
      try {
        for (benchmark::IterationCount i = 0; i < rounds; ++i)
          collective->all_reduce_mean(r, replicas[r]);
      } catch (const fedpod::worker::CollectiveAborted&) {
        // rank 0 failed and aborted: it reports the error
      }
    });
  }
  try {
    for (auto _ : state) collective->all_reduce_mean(0, replicas[0]);
  } catch (const std::exception& e) {
    collective->abort(e.what());
    state.SkipWithError(e.what());
  }
  for (auto& t : others) t.join();
  state.SetBytesProcessed(state.iterations() * k * p * static_cast<int64_t>(sizeof(float)));
}

void Args(benchmark::internal::Benchmark* b) {
  for (int64_t k : {2, 4}) {
    for (int64_t p : {1'000'000, 10'000'000}) {
      b->Args({k, p});
      fedpod::bench::require_memcpy_baseline(k, p);
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_CpuAllReduce)->Apply(Args);
