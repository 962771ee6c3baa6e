// Federated averaging (McMahan et al., 2017): the new global parameters are the
// average of the pods' parameters weighted by their sample counts,
//
//   w_global = sum_k n_k * w_k / sum_k n_k.
//
// Streaming: one float32 accumulator of the model's size holds sum_k n_k * w_k; each
// update is folded in with one fused multiply-add pass (read accumulator, read update,
// write accumulator) as soon as it arrives; the first update is written, not added.
// Memory is one model, not one per pod.
//
// Ranges set with set_max_ranges (integer buffers) take the elementwise maximum of
// the updates instead, in a small accumulator of their own.
#pragma once

#include "fedpod/aggregation/strategy.h"

namespace fedpod::aggregation {

class FedAvg : public Strategy {
 public:
  std::string name() const override { return "fedavg"; }
  void begin_round(const torch::Tensor& global) override;
  Status fold(const std::vector<Segment>& update, double weight) override;
  int folded() const override { return folded_; }
  StatusOr<torch::Tensor> finish() override;

  double total_weight() const { return total_weight_; }
  // The accumulator (for tests: it is the only per-round buffer the strategy holds).
  const torch::Tensor& accumulator() const { return acc_; }

 private:
  torch::Tensor acc_;
  torch::Tensor max_acc_;  // the max ranges, back to back
  // The last result, kept so its buffer can become the next accumulator once the
  // caller drops it (two buffers alternate; nothing else is retained).
  torch::Tensor last_out_;
  double total_weight_ = 0;
  // Sum over the folded updates of weight x largest |value|: a bound on every element
  // of the weighted sum, kept below float32's range (fold()).
  double magnitude_bound_ = 0;
  int folded_ = 0;
};

std::unique_ptr<Strategy> make_strategy(const std::string& name);  // "fedavg"; nullptr otherwise

}  // namespace fedpod::aggregation
