// Secure aggregation's per-pod cost (protocol/secagg.h), beside memcpy of the same
// bytes (BM_Memcpy in codec_bench.cpp):
//
//   BM_SecAggPrg/P         one ChaCha20 mask added to a ring vector of P int32s
//   BM_SecAggMask/P/k      a pod's whole step C: encode P float32 values in fixed
//                          point, add the self mask and k pairwise masks
//   BM_SecAggUnmask/P/K    the coordinator's end of a round of K pods that all
//                          stayed: rebuild K self-mask seeds, take K masks off, decode
#include <benchmark/benchmark.h>

#include <memory>
#include <random>

#include "fedpod/protocol/secagg.h"

namespace {

namespace sa = fedpod::protocol::secagg;

sa::Settings settings(size_t pods) {
  sa::Settings s;
  s.neighbours = static_cast<uint32_t>(pods - 1);
  s.threshold = sa::default_threshold(s.neighbours);
  s.clip = 10;
  s.modulus_bits = 32;
  s.fraction_bits = sa::fraction_bits(32, s.clip, pods);
  s.weight_scale = 100;
  return s;
}

// K clients through steps A and B with a complete graph; ready to mask.
struct Round {
  std::unique_ptr<sa::Server> server;
  std::vector<std::unique_ptr<sa::Client>> clients;
};

Round ready_round(size_t pods) {
  Round r;
  const sa::Settings s = settings(pods);
  std::vector<uint32_t> ids;
  for (uint32_t id = 1; id <= pods; ++id) ids.push_back(id);
  r.server = std::make_unique<sa::Server>(s, sa::Context{"bench", 1}, ids, 1);
  for (uint32_t id : ids) {
    r.clients.push_back(std::make_unique<sa::Client>(s, sa::Context{"bench", 1}, id));
    (void)r.server->add_keys(id, r.clients.back()->keys());
  }
  (void)r.server->close_advertise();
  for (uint32_t id : ids) (void)r.server->add_shares(id, *r.clients[id - 1]->share(r.server->neighbours_of(id)));
  (void)r.server->close_share();
  for (uint32_t id : ids) (void)r.clients[id - 1]->receive(r.server->shares_for(id));
  return r;
}

std::vector<float> update(int64_t p) {
  std::vector<float> u(static_cast<size_t>(p));
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0, 0.01f);
  for (auto& x : u) x = d(rng);
  return u;
}

void BM_SecAggPrg(benchmark::State& state) {
  sa::RingVector v;
  v.bytes.assign(static_cast<size_t>(state.range(0)) * 4, 0);
  uint8_t key[32] = {7};
  for (auto _ : state) {
    sa::add_prg(v, key, +1);
    benchmark::DoNotOptimize(v.bytes.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_SecAggMask(benchmark::State& state) {
  const auto u = update(state.range(0));
  const size_t pods = static_cast<size_t>(state.range(1)) + 1;
  for (auto _ : state) {
    state.PauseTiming();
    Round r = ready_round(pods);
    state.ResumeTiming();
    auto v = r.clients[0]->mask(u.data(), u.size(), 50);
    if (!v.ok()) state.SkipWithError(v.status().message().c_str());
    benchmark::DoNotOptimize(v->bytes.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

void BM_SecAggUnmask(benchmark::State& state) {
  const auto u = update(state.range(0));
  const size_t pods = static_cast<size_t>(state.range(1));
  for (auto _ : state) {
    state.PauseTiming();
    Round r = ready_round(pods);
    for (uint32_t id = 1; id <= pods; ++id) {
      auto v = r.clients[id - 1]->mask(u.data(), u.size(), 50);
      (void)r.server->add_masked(id, v->bytes.data(), v->bytes.size());
    }
    (void)r.server->close_mask();
    for (uint32_t id = 1; id <= pods; ++id) {
      (void)r.server->add_reveal(id, *r.clients[id - 1]->unmask(r.server->survivors(), r.server->dropped()));
    }
    state.ResumeTiming();
    auto sum = r.server->finish();
    if (!sum.ok()) state.SkipWithError(sum.status().message().c_str());
    benchmark::DoNotOptimize(sum->data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0) * 4);
}

}  // namespace

BENCHMARK(BM_SecAggPrg)->Arg(1'000'000)->Arg(10'000'000)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_SecAggMask)
    ->ArgNames({"P", "k"})
    ->Args({1'000'000, 6})
    ->Args({10'000'000, 6})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_SecAggUnmask)
    ->ArgNames({"P", "K"})
    ->Args({1'000'000, 8})
    ->Args({10'000'000, 8})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
