#include "fedpod/data/schema.h"

#include <algorithm>
#include <set>

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
  }
  return features;
}

namespace {

std::string join(const std::vector<std::string>& v, size_t max_items = 8) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max_items; ++i) out += (i ? ", " : "") + v[i];
  if (v.size() > max_items) out += ", ... (" + std::to_string(v.size()) + " in all)";
  return out;
}

}  // namespace

StatusOr<std::map<std::string, std::vector<std::string>>> agree_categories(
    const std::vector<PodSchema>& pods, const Datastructure& ds, const std::vector<std::string>& columns) {
  auto mismatch = [](std::string msg) { return Status(StatusCode::kSchemaMismatch, std::move(msg)); };
  std::map<std::string, std::vector<std::string>> agreed;
  for (const auto& [name, listed] : ds.categories) {
    if (std::find(columns.begin(), columns.end(), name) == columns.end()) {
      return Status::invalid("datastructure.categories: '" + name +
                             "' is neither the target nor a feature of this job");
    }
  }
  for (const auto& name : columns) {
    const auto listed = ds.categories.find(name);
    std::string numeric_pod, named_pod, codes_pod;
    std::set<std::string> union_of;
    for (const auto& p : pods) {
      const int idx = p.schema->find(name);
      if (idx < 0) continue;  // resolve_features reports missing columns
      const Column& col = p.schema->columns[idx];
      if (col.type == ColumnType::kNumeric) {
        if (listed != ds.categories.end()) {
          return mismatch("datastructure.categories lists categories for '" + name + "', but pod " + p.pod +
                          " holds it as numbers; remove the list, or declare the column categorical there");
        }
        if (numeric_pod.empty()) numeric_pod = p.pod;
        continue;
      }
      if (col.categories_withheld) {
        if (listed == ds.categories.end()) {
          return mismatch("column '" + name + "' is categorical on pod " + p.pod +
                          ", which infers its categories from its data and does not publish them; list them in "
                          "the job (datastructure.categories." + name +
                          ": [...]) or have the pod owner declare them (dataset.schema)");
        }
        if (named_pod.empty()) named_pod = p.pod;
        continue;
      }
      if (col.categories.empty()) {
        if (codes_pod.empty()) codes_pod = p.pod;
        continue;
      }
      if (named_pod.empty()) named_pod = p.pod;
      if (listed != ds.categories.end()) {
        std::vector<std::string> outside;
        for (const auto& c : col.categories) {
          if (std::find(listed->second.begin(), listed->second.end(), c) == listed->second.end()) {
            outside.push_back(c);
          }
        }
        if (!outside.empty()) {
          return mismatch("pod " + p.pod + " declares categories of '" + name +
                          "' that datastructure.categories." + name + " does not list: " + join(outside));
        }
      } else {
        union_of.insert(col.categories.begin(), col.categories.end());
      }
    }
    const std::string categorical_pod = !named_pod.empty() ? named_pod : codes_pod;
    if (!numeric_pod.empty() && !categorical_pod.empty()) {
      return mismatch("column '" + name + "' is numeric on pod " + numeric_pod + " but categorical on pod " +
                      categorical_pod + "; declare the same type on every pod (dataset.schema)");
    }
    if (listed != ds.categories.end()) {
      agreed[name] = listed->second;
      continue;
    }
    if (!named_pod.empty() && !codes_pod.empty()) {
      return mismatch("column '" + name + "' has named categories on pod " + named_pod +
                      " but integer codes on pod " + codes_pod +
                      "; list its categories in datastructure.categories." + name + " or declare them on every pod");
    }
    if (!union_of.empty()) agreed[name].assign(union_of.begin(), union_of.end());
  }
  return agreed;
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
