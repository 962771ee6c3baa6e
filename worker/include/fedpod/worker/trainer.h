// The local training loop: what a pod does with the global parameters each round.
//
// Pure computation on one model and one dataset; no sockets. The worker runs it on
// its executor thread; the demo's centralized baseline runs the same code on pooled
// data, so both sides of that comparison train identically.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "fedpod/common/config_util.h"
#include "fedpod/common/status.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/model.h"
#include "fedpod/privacy/dp_sgd.h"

namespace fedpod::worker {

struct TrainOptions {
  int64_t epochs = 1;      // full passes over the data; used when steps == 0
  int64_t steps = 0;       // optimizer steps; takes precedence when > 0
  int64_t batch_size = 32;
  uint64_t seed = 0;       // batch order
  // DP-SGD (privacy/dp_sgd.h) when dp.enabled(): each step samples every record with
  // probability batch_size / n (Poisson), clips per-example gradients to
  // dp.max_grad_norm, adds N(0, (σ·C)²) noise to their sum and divides by the
  // expected batch size. The sampling and the noise come from the operating system's
  // entropy, not from `seed`: a modeller who chose the seed could otherwise subtract
  // the noise. An epoch is ceil(n / batch_size) steps (privacy::steps_per_round).
  privacy::DpSgdOptions dp;
  // FedProx (aggregation/strategies.h): μ of the proximal term μ/2·‖w − w₀‖², w₀ the
  // parameters training started from (the round's global ones). Added as μ·(w − w₀) to
  // each trained parameter's gradient after backward (after the noise, with DP-SGD: it
  // depends on no record), so it holds for any model whatever its training_step. The
  // reported loss is the model's, without the term. 0: off.
  double proximal_mu = 0;
};

struct TrainStats {
  int64_t steps = 0;
  int64_t samples_seen = 0;  // with repeats across epochs
  double loss = 0;           // mean training loss over the samples seen
  double accuracy = 0;       // on the batches as trained
  const char* dp_path = "";  // DP-SGD: "fast" or "generic" per-example gradients; "" without DP
};

struct EvalStats {
  int64_t samples = 0;
  double loss = 0;
  double accuracy = 0;
};

// FedProx's term for one round of training: built before the first step (it keeps a
// copy of the trained parameters as w₀), then add_to_gradients() after each backward
// (and any gradient averaging) adds μ·(w − w₀) to every trained parameter's gradient.
// Does nothing when μ is 0.
class ProximalTerm {
 public:
  ProximalTerm(model::Model& model, double mu);
  void add_to_gradients();

 private:
  double mu_;
  std::vector<torch::Tensor> params_, start_;
};

// Trains `model` in place with the optimizer from `model.configure_optimizers(hp)`,
// on the device its parameters are on (batches are moved there; the CPU normally).
// Stops early (returning kFailedPrecondition "cancelled") when `cancel` becomes true;
// checked between steps. Errors in the model (c10::Error) become kInternal.
StatusOr<TrainStats> train_local(model::Model& model, const data::Dataset& data,
                                 const TrainOptions& options, const Hyperparameters& hp,
                                 const std::atomic<bool>* cancel = nullptr);

// Scores `model` on `data` with validation_step (or test_step when `test`), no grad.
StatusOr<EvalStats> evaluate(model::Model& model, const data::Dataset& data, int64_t batch_size,
                             bool test);

}  // namespace fedpod::worker
