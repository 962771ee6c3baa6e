// A pod's dataset schema and a job's datastructure.
//
// The schema describes the columns of a pod's table; pods advertise it in
// HelloReply so the coordinator can check a job against it before round 1. It is
// either declared in pod.yaml or inferred from the CSV. The datastructure is the
// job's view: which column is the target, which are features, how to split.
//
// All types here are plain values; safe to copy between threads.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::data {

enum class ColumnType { kNumeric, kCategorical };
const char* to_string(ColumnType t);

struct Column {
  std::string name;
  ColumnType type = ColumnType::kNumeric;
  // For categorical columns: the category labels in code order. A value equal to
  // categories[i] is encoded as i. Empty means the values are already integer codes >= 0.
  std::vector<std::string> categories;
  // In a schema a pod advertises: true when the pod knows this column's categories
  // (inferred from its data) but does not publish them. Such a column's codes are
  // local to the pod until the job gives the categories (Datastructure::categories).
  bool categories_withheld = false;
};

struct Schema {
  std::vector<Column> columns;
  int64_t num_rows = 0;  // rows accepted when the table was read (0 if unknown)

  // Index of the column named `name`, or -1.
  int find(const std::string& name) const;
};

// Fractions of rows held out for validation and test; the rest trains. The split is
// a seeded shuffle, so the same seed and table always give the same rows.
struct SplitSpec {
  double validation = 0.1;
  double test = 0.2;
  uint64_t seed = 0;
};

struct Datastructure {
  std::string target;
  // Features in the order the model sees them. Empty means "every column except the
  // target and `ignore`, in table order".
  std::vector<std::string> features;
  std::vector<std::string> ignore;
  // Per-sample input shape for the model, e.g. {1, 8, 8} for an image; empty means
  // {number of features}. Its product must equal the number of features.
  std::vector<int64_t> input_shape;
  int64_t num_classes = 0;  // classification classes; labels must be in [0, num_classes)
  double scale = 1.0;       // every feature is multiplied by this (e.g. 1/16 for 0..16 pixels)
  SplitSpec split;
  // The agreed categories of categorical columns (target and features), by column:
  // the value categories[c][i] is encoded as i on every pod, so a class one pod lacks
  // does not shift the codes there. Given in job.yaml, or agreed by the coordinator
  // before round 1 (agree_categories) and sent to every pod in startJob.
  std::map<std::string, std::vector<std::string>> categories;
};

// Checks that `schema` has what `ds` needs and returns the resolved feature list
// (ds.features, or all columns but the target and ignored ones). Errors name the
// missing or unusable column: "no column 'label'". Categorical features are allowed;
// they reach the model as their agreed category code.
StatusOr<std::vector<std::string>> resolve_features(const Schema& schema, const Datastructure& ds);

// One pod's advertised schema, for agree_categories.
struct PodSchema {
  std::string pod;
  const Schema* schema = nullptr;
};

// The categories every pod will use for each categorical column among `columns` (the
// target and the resolved features), before round 1:
//   - a column listed in ds.categories keeps that list, in its order; a pod that
//     declares a category outside it, or holds the column as numbers, is an error;
//   - otherwise the sorted union of the categories the pods declare;
//   - a column that is integer codes on every pod (declared categorical without
//     categories) needs no list and gets none.
// Errors name the column, the pod and the fix: a pod that withholds its categories
// (inferred from its data) when the job lists none, a column numeric on one pod and
// categorical on another, or named categories on one pod and codes on another.
StatusOr<std::map<std::string, std::vector<std::string>>> agree_categories(
    const std::vector<PodSchema>& pods, const Datastructure& ds, const std::vector<std::string>& columns);

// Per-sample input shape: ds.input_shape, or {num_features}. Fails when the product
// does not match.
StatusOr<std::vector<int64_t>> resolve_input_shape(const Datastructure& ds, int64_t num_features);

}  // namespace fedpod::data
