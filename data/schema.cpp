#include "fedpod/data/schema.h"

#include <algorithm>

namespace fedpod::data {

const char* to_string(ColumnType t) {
  return t == ColumnType::kNumeric ? "numeric" : "categorical";
}

int Schema::find(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

StatusOr<std::vector<std::string>> resolve_features(const Schema& schema, const Datastructure& ds) {
  auto mismatch = [](std::string msg) { return Status(StatusCode::kSchemaMismatch, std::move(msg)); };
  if (ds.target.empty()) return Status::invalid("datastructure has no target column");
  if (schema.find(ds.target) < 0) return mismatch("no column '" + ds.target + "' (the target)");
  for (const auto& name : ds.ignore) {
    if (schema.find(name) < 0) return mismatch("no column '" + name + "' (listed in ignore)");
  }
  std::vector<std::string> features;
  if (!ds.features.empty()) {
    features = ds.features;
  } else {
    for (const auto& c : schema.columns) {
      if (c.name == ds.target) continue;
      if (std::find(ds.ignore.begin(), ds.ignore.end(), c.name) != ds.ignore.end()) continue;
      features.push_back(c.name);
    }
  }
  if (features.empty()) return mismatch("no feature columns left after target and ignore");
  for (const auto& name : features) {
    int idx = schema.find(name);
    if (idx < 0) return mismatch("no column '" + name + "' (a feature)");
    if (name == ds.target) return Status::invalid("column '" + name + "' is both target and feature");
    if (schema.columns[idx].type != ColumnType::kNumeric) {
      return mismatch("feature '" + name + "' is categorical; only numeric features are supported");
    }
  }
  return features;
}

StatusOr<std::vector<int64_t>> resolve_input_shape(const Datastructure& ds, int64_t num_features) {
  if (ds.input_shape.empty()) return std::vector<int64_t>{num_features};
  int64_t product = 1;
  for (int64_t d : ds.input_shape) {
    if (d <= 0) return Status::invalid("input_shape dimensions must be positive");
    // Checked: the shape comes from job.yaml and from startJob, and dimensions whose
    // product overflows int64 were undefined behaviour (found by tests/fuzz).
    if (__builtin_mul_overflow(product, d, &product)) {
      std::string shape;
      for (int64_t e : ds.input_shape) shape += (shape.empty() ? "" : ", ") + std::to_string(e);
      return Status::invalid("input_shape [" + shape +
                             "] has more elements than an int64 can count, but there are " +
                             std::to_string(num_features) + " features");
    }
  }
  if (product != num_features) {
    return Status::invalid("input_shape has " + std::to_string(product) + " elements but there are " +
                           std::to_string(num_features) + " features");
  }
  return ds.input_shape;
}

}  // namespace fedpod::data
