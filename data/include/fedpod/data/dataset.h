// Model-ready tensors: features and labels of one split, and batching over them.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <vector>

#include "fedpod/common/status.h"
#include "fedpod/data/csv.h"
#include "fedpod/data/schema.h"

namespace fedpod::data {

struct Dataset {
  torch::Tensor x;  // float32 [n, *input_shape]
  torch::Tensor y;  // int64 [n]
  int64_t size() const { return y.defined() ? y.size(0) : 0; }
};

struct Splits {
  Dataset train, validation, test;
  std::vector<std::string> features;  // resolved feature order
  std::vector<int64_t> input_shape;   // per sample
};

// Selects features and target from `table` as `ds` says, encodes categorical columns
// with the job's categories (ds.categories: the value categories[c][i] becomes i, on
// every pod alike; a categorical column with named categories the job does not list
// is an error), checks every label is an integer in [0, num_classes) (naming the
// first bad row otherwise), applies `ds.scale` (categorical features are scaled
// too), shapes inputs to the input shape, and splits with `ds.split`.
StatusOr<Splits> make_splits(const Table& table, const Datastructure& ds);

// Concatenates datasets (e.g. several pods' train splits for a centralized baseline).
Dataset concat(const std::vector<Dataset>& parts);

// Iterates over a dataset in batches of `batch_size` (the last may be smaller), in a
// seeded random order when `shuffle`. Batches are views/gathers, not copies of the
// whole dataset. Not thread-safe; one per training loop.
class BatchIterator {
 public:
  BatchIterator(const Dataset& data, int64_t batch_size, bool shuffle, uint64_t seed);
  // Fills x/y with the next batch; returns false at the end of the epoch.
  bool next(torch::Tensor& x, torch::Tensor& y);
  // Starts a new epoch (reshuffles when shuffling).
  void reset();

 private:
  const Dataset& data_;
  int64_t batch_size_;
  bool shuffle_;
  torch::Generator generator_;
  torch::Tensor order_;
  int64_t pos_ = 0;
};

}  // namespace fedpod::data
