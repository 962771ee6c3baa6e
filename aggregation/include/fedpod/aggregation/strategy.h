// Aggregation strategies: how the updates of one round become the next global
// parameters. Pure tensor math: no sockets, no messages, no files.
//
// Updates are folded in one at a time as they arrive, so a strategy keeps state of
// O(parameters), whatever the number of pods. An update is a list of segments of
// the flat parameter buffer (one per parameter tensor, typically pointing straight
// into received frames); together they must cover the buffer exactly once.
//
// Threading: one round at a time, driven by one thread.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::aggregation {

// A contiguous float32 range of the flat buffer: elements [offset, offset + numel).
struct Segment {
  int64_t offset = 0;
  torch::Tensor values;  // float32, contiguous; numel() elements
  // The largest absolute value in `values` when the caller already knows it (it
  // checked them: protocol::largest_magnitude); negative when unknown, and a strategy
  // that needs it takes it itself.
  float max_abs = -1.0f;
};

// A range of the flat buffer: elements [offset, offset + numel).
struct Range {
  int64_t offset = 0;
  int64_t numel = 0;
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string name() const = 0;

  // Ranges whose new value is the elementwise maximum over the round's updates
  // rather than what the strategy computes: a model's integer and bool buffers
  // (num_batches_tracked, index tables), which a weighted mean would turn into
  // fractions (model/flat_parameters.h). Set once, before the first round; the
  // ranges must not overlap. Default: none.
  virtual void set_max_ranges(std::vector<Range> ranges) { max_ranges_ = std::move(ranges); }
  const std::vector<Range>& max_ranges() const { return max_ranges_; }

  // Float ranges that are not trained parameters (batch-norm running statistics):
  // strategies that move parameters by a server optimizer give these the plain
  // weighted mean instead. Set once, before the first round. Default: ignored (FedAvg
  // averages everything anyway).
  virtual void set_average_ranges(std::vector<Range> ranges) { (void)ranges; }

  // Starts a round whose global parameters are `global` (flat float32).
  virtual void begin_round(const torch::Tensor& global) = 0;

  // Folds in one pod's parameters with `weight` (its sample count for FedAvg).
  // Checks everything first: segments that do not tile the buffer, a wrong dtype, or
  // a weight <= 0 give an error and leave the round's state untouched. The segments'
  // values are only read during the call (the caller may reuse their memory for the
  // next update): a strategy that needs them later keeps a copy.
  virtual Status fold(const std::vector<Segment>& update, double weight) = 0;

  // Number of updates folded in this round.
  virtual int folded() const = 0;

  // The new global parameters (a new flat tensor); fails when nothing was folded.
  virtual StatusOr<torch::Tensor> finish() = 0;

  // State a strategy carries from one round to the next (server momentum, adaptive
  // moments): the coordinator saves it in its checkpoint after every round and gives
  // it back with restore() on `--resume`, so a resumed job aggregates as an
  // uninterrupted one would. FedAvg carries none: each round is a fresh average.
  virtual std::vector<torch::Tensor> state() const { return {}; }
  virtual Status restore(std::vector<torch::Tensor> saved) {
    if (saved.empty()) return Status();
    return Status::invalid("strategy " + name() + " carries no state between rounds, but the checkpoint holds " +
                           std::to_string(saved.size()) + " tensors of it");
  }

 protected:
  std::vector<Range> max_ranges_;
};

// Checks that `update` tiles [0, numel) exactly, with float32 contiguous values.
Status check_tiling(const std::vector<Segment>& update, int64_t numel);

}  // namespace fedpod::aggregation
