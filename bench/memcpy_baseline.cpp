#include "memcpy_baseline.h"

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstring>
#include <set>
#include <utility>
#include <vector>

namespace fedpod::bench {
namespace {

void BM_Memcpy(benchmark::State& state) {
  const int64_t k = state.range(0), p = state.range(1);
  torch::manual_seed(301);
  std::vector<torch::Tensor> src;
  for (int64_t i = 0; i < k; ++i) src.push_back(torch::randn({p}));
  torch::Tensor dst = torch::zeros({p});
  for (auto _ : state) {
    for (int64_t i = 0; i < k; ++i)
      std::memcpy(dst.data_ptr(), src[i].data_ptr(), p * sizeof(float));
    benchmark::DoNotOptimize(dst.data_ptr());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * k * p * static_cast<int64_t>(sizeof(float)));
}

}  // namespace

void require_memcpy_baseline(int64_t k, int64_t p) {
  static std::set<std::pair<int64_t, int64_t>> registered;  // static init runs on one thread
  if (!registered.insert({k, p}).second) return;
  benchmark::RegisterBenchmark("BM_Memcpy", BM_Memcpy)
      ->Args({k, p})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime();
}

}  // namespace fedpod::bench
