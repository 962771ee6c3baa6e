// The strategies beyond plain FedAvg, chosen by name in the job (`strategy:`), with
// numeric options:
//
//   strategy: fedadam                                   # defaults below
//   strategy: {name: fedyogi, server_lr: 0.01, tau: 0.001}
//
// Server optimizers (Reddi et al., "Adaptive Federated Optimization", ICLR 2021,
// Algorithm 2; Hsu et al., 2019, for momentum). Each round the pods' weighted mean x̄
// is formed as FedAvg forms it, streaming, and Δ = x̄ − x is the pseudo-gradient:
//
//   fedavgm    v ← β·v + Δ                                x ← x + η·v
//   fedadagrad m ← β1·m + (1−β1)·Δ   v ← v + Δ²            x ← x + η·m / (√v + τ)
//   fedadam    m ← β1·m + (1−β1)·Δ   v ← β2·v + (1−β2)·Δ²  x ← x + η·m / (√v + τ)
//   fedyogi    m ← β1·m + (1−β1)·Δ   v ← v − (1−β2)·Δ²·sign(v − Δ²)
//                                                          x ← x + η·m / (√v + τ)
//
// with m starting at 0 and v at τ² (the paper's v₋₁ ≥ τ²; momentum's v at 0). Options
// and defaults: server_lr η (fedavgm 1.0, the adaptive ones 0.01), momentum β (0.9),
// beta1 (0.9), beta2 (0.99), tau τ (0.001). With η = 1 and β = 0 fedavgm is FedAvg.
// m and v are the strategy's state(): saved in every checkpoint, restored on
// `--resume`. Only trained parameters move by the optimizer; buffers (batch-norm
// statistics; set_average_ranges) take the plain weighted mean, and integer buffers
// the maximum, as under FedAvg. Memory: the mean's accumulator plus m and v, three
// (fedavgm two) models' worth, whatever the number of pods.
//
// FedProx (Li et al., MLSys 2020) changes the pods' side, not the server's: each pod
// minimises its loss plus μ/2·‖w − w_global‖², the distance to the round's global
// parameters, which keeps pods with skewed data from drifting apart. `fedprox` is
// FedAvg's aggregation with that term at the pods (option mu, default 0.01); any other
// strategy takes it as the option proximal_mu (e.g. {name: fedadam, proximal_mu: 0.01}).
// The pods add μ·(w − w_global) to every trained parameter's gradient after backward,
// so it holds for built-in, TorchScript and plugin models alike (worker/trainer.h).
//
// Robust aggregates hold every update of the round at once, K × P × 4 bytes for K
// updates of P parameters, refused beyond `max_memory_mb` (default 4096): that is
// their price, and why they cannot run with secure aggregation, which reveals only
// the sum. Sample counts do not weigh them, except in multi-Krum's final average:
//
//   median       the coordinate-wise median (the mean of the two middle values for
//                an even count)
//   trimmed_mean the coordinate-wise mean after dropping the ⌊beta·K⌋ smallest and
//                largest values of each coordinate (beta 0.1, below 0.5)
//   krum         Blanchard et al., NeurIPS 2017: each update's score is the sum of
//                its squared distances to its K − f − 2 nearest others (f =
//                `byzantine`, default ⌊(K − 3) / 2⌋, K > 2f + 2 required); the update
//                with the lowest score is the result. With `select: m` (multi-Krum)
//                the m lowest-scoring updates are averaged, weighted by samples.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "fedpod/aggregation/fedavg.h"
#include "fedpod/aggregation/strategy.h"

namespace fedpod::aggregation {

using StrategyOptions = std::map<std::string, double>;

// Every strategy name make_strategy() knows, in the order docs list them.
const std::vector<std::string>& strategy_names();

// The proximal term's μ that pods add to their local objective: fedprox's mu (default
// 0.01), any other strategy's proximal_mu (default 0). Call after make_strategy
// accepted the options.
double proximal_mu(const std::string& name, const StrategyOptions& options);

// Whether `name` needs all of a round's updates at once (robust aggregates).
bool holds_all_updates(const std::string& name);

// `name` with `options`; an unknown name, an unknown option or a value out of range
// is an error naming it and what is allowed.
StatusOr<std::unique_ptr<Strategy>> make_strategy(const std::string& name, const StrategyOptions& options);

// Server optimizers: FedAvg's streaming mean, then the update rules above.
class ServerOptimizer : public Strategy {
 public:
  enum class Rule { kMomentum, kAdagrad, kAdam, kYogi };
  struct Options {
    double server_lr = 0.01;
    double momentum = 0.9;
    double beta1 = 0.9;
    double beta2 = 0.99;
    double tau = 1e-3;
  };
  ServerOptimizer(Rule rule, Options options);

  std::string name() const override;
  void set_max_ranges(std::vector<Range> ranges) override;
  void set_average_ranges(std::vector<Range> ranges) override { average_ranges_ = std::move(ranges); }
  void begin_round(const torch::Tensor& global) override;
  Status fold(const std::vector<Segment>& update, double weight) override;
  int folded() const override { return mean_.folded(); }
  StatusOr<torch::Tensor> finish() override;
  std::vector<torch::Tensor> state() const override;
  Status restore(std::vector<torch::Tensor> saved) override;

 private:
  Rule rule_;
  Options o_;
  FedAvg mean_;
  torch::Tensor global_;
  torch::Tensor m_, v_;  // undefined until the first round ends (or restore())
  std::vector<Range> average_ranges_;
};

// Robust aggregates: every update kept until finish().
class RobustAggregate : public Strategy {
 public:
  enum class Rule { kMedian, kTrimmedMean, kKrum };
  struct Options {
    double trim = 0.1;       // trimmed_mean: the fraction dropped at each end
    int byzantine = -1;      // krum: f; -1 = ⌊(K − 3) / 2⌋
    int select = 1;          // krum: how many lowest scores are averaged
    double max_memory_mb = 4096;
  };
  RobustAggregate(Rule rule, Options options);

  std::string name() const override;
  void begin_round(const torch::Tensor& global) override;
  Status fold(const std::vector<Segment>& update, double weight) override;
  int folded() const override { return static_cast<int>(updates_.size()); }
  StatusOr<torch::Tensor> finish() override;

  // Krum's choice in the last round: the indexes (in fold order) averaged.
  const std::vector<int>& selected() const { return selected_; }

 private:
  StatusOr<torch::Tensor> krum();
  Rule rule_;
  Options o_;
  int64_t numel_ = 0;
  std::vector<torch::Tensor> updates_;  // flat float32 copies, in fold order
  std::vector<double> weights_;
  std::vector<int> selected_;
};

}  // namespace fedpod::aggregation
