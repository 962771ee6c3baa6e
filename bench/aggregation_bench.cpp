// FedAvg of K updates of P float32 values, against memcpy of the same input bytes
// (BM_Memcpy/K/P, memcpy_baseline.h).
//
// Bytes processed = K * P * 4 (the update bytes read), for both. FedAvg's round is
// timed whole: zeroing the accumulator, K fused multiply-adds, the final division.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "fedpod/aggregation/fedavg.h"
#include "memcpy_baseline.h"

namespace {

std::vector<torch::Tensor> make_updates(int64_t k, int64_t p) {
  torch::manual_seed(301);
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < k; ++i) out.push_back(torch::randn({p}));
  return out;
}

void BM_FedAvg(benchmark::State& state) {
  const int64_t k = state.range(0), p = state.range(1);
  auto updates = make_updates(k, p);
  torch::Tensor global = torch::zeros({p});
  fedpod::aggregation::FedAvg fedavg;
  for (auto _ : state) {
    fedavg.begin_round(global);
    for (int64_t i = 0; i < k; ++i) {
      auto st = fedavg.fold({{0, updates[i]}}, static_cast<double>(i + 1));
      if (!st.ok()) state.SkipWithError(st.to_string().c_str());
    }
    auto result = fedavg.finish();
    benchmark::DoNotOptimize(result->data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * k * p * static_cast<int64_t>(sizeof(float)));
}

void Args(benchmark::internal::Benchmark* b) {
  for (int64_t k : {2, 8, 32}) {
    for (int64_t p : {1'000'000, 10'000'000}) {
      b->Args({k, p});
      fedpod::bench::require_memcpy_baseline(k, p);
    }
  }
  b->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_FedAvg)->Apply(Args);
