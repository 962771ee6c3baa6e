// DP-SGD's cost per step (privacy/dp_sgd.h through worker/trainer.h's train_local):
// the digits-sized mlp (64 features, hidden [64], 10 classes) trained for 20 steps
// per iteration, without DP (BM_TrainSteps), with DP on the fast path
// (BM_DpFastSteps: per-example norms from layer inputs and output gradients) and on
// the generic path every other model takes (BM_DpGenericSteps: one backward per
// example). Same data, batch size and optimizer; micro_main prints each DP row's time
// per step as a multiple of BM_TrainSteps' with the same arguments.
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "fedpod/model/zoo.h"
#include "fedpod/worker/trainer.h"

namespace {

constexpr int64_t kSteps = 20;

void run(benchmark::State& state, bool dp, bool fast) {
  const int64_t batch = state.range(0);
  torch::manual_seed(1);
  fedpod::data::Dataset data{torch::rand({1797, 64}), torch::randint(0, 10, {1797}, torch::kInt64)};
  auto m = fedpod::model::make_builtin("mlp");
  m->create_model({64}, 10, fedpod::Hyperparameters(nlohmann::json{{"hidden", {64}}}));
  fedpod::worker::TrainOptions o;
  o.steps = kSteps;
  o.batch_size = batch;
  o.dp.on = dp;
  o.dp.noise_multiplier = 1.0;
  o.dp.max_grad_norm = 1.0;
  o.dp.allow_fast = fast;
  const fedpod::Hyperparameters hp(nlohmann::json{{"lr", 0.05}});
  for (auto _ : state) {
    auto stats = fedpod::worker::train_local(*m, data, o, hp);
    if (!stats.ok()) {
      state.SkipWithError(stats.status().message().c_str());
      return;
    }
    benchmark::DoNotOptimize(stats->loss);
  }
  state.SetItemsProcessed(state.iterations() * kSteps);
  state.counters["step_us"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kSteps), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_TrainSteps(benchmark::State& state) { run(state, false, true); }
void BM_DpFastSteps(benchmark::State& state) { run(state, true, true); }
void BM_DpGenericSteps(benchmark::State& state) { run(state, true, false); }

BENCHMARK(BM_TrainSteps)->Arg(32)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DpFastSteps)->Arg(32)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_DpGenericSteps)->Arg(32)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
