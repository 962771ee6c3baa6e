// Splitting one labelled dataset among simulated pods (`fedpod simulate`), the three
// ways federated-learning papers do:
//
//   iid        every row goes to a pod uniformly at random; pods get equal counts
//              (they differ by at most one row);
//   dirichlet  label skew: for each class c, a proportion vector p_c ~ Dir(α·1) over
//              the pods, and class c's rows are dealt out by p_c (Hsu et al., 2019).
//              Small α (0.1) gives each pod few classes; large α (100) approaches iid.
//              Pods may end up with very few rows; `min_rows` redraws until every
//              pod has at least that many (at most 100 draws, then an error);
//   shards     McMahan et al. (2017): sort the rows by label, cut them into
//              pods × shards_per_pod equal shards, and give each pod shards_per_pod
//              of them at random. With 2 shards per pod most pods see two digits.
//
// All three are deterministic for a seed (std::mt19937_64, the same draws on every
// platform since the distributions are written out here, not taken from <random>'s
// implementation-defined ones), and every row lands in exactly one pod.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::data {

struct PartitionSpec {
  std::string method = "iid";  // iid | dirichlet | shards
  double alpha = 0.5;          // dirichlet
  int64_t shards_per_pod = 2;  // shards
  int64_t min_rows = 1;        // dirichlet: every pod gets at least this many rows
  uint64_t seed = 0;
};

// Row indices of `labels` (one class code per row, >= 0) for each of `pods` pods, each
// list in ascending order. Errors name the bad setting: an unknown method, pods < 1
// or more pods than rows, alpha <= 0, shards that do not divide into the rows.
StatusOr<std::vector<std::vector<int64_t>>> partition(const std::vector<int64_t>& labels, int64_t pods,
                                                      const PartitionSpec& spec);

// Per pod, how many rows of each class it holds ([pod][class]); for reports and tests.
std::vector<std::vector<int64_t>> class_counts(const std::vector<int64_t>& labels,
                                               const std::vector<std::vector<int64_t>>& parts,
                                               int64_t num_classes);

}  // namespace fedpod::data
