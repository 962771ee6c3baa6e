#include "fedpod/data/dataset.h"

#include <cmath>
#include <map>

namespace fedpod::data {

namespace {

// Column `c` of `table` in the job's codes (float64, one value a row). A categorical
// column with named categories is mapped from this pod's codes (its own category
// order) to the job's (ds.categories); one that holds integer codes is checked against
// the job's list. Errors name the column and the first data row, not its value: the
// message goes to the coordinator, and inferred categories are the pod's data.
StatusOr<torch::Tensor> job_codes(const Table& table, int c, const Datastructure& ds) {
  const Column& col = table.schema.columns[c];
  torch::Tensor values = table.values.select(1, c);
  const auto agreed = ds.categories.find(col.name);
  if (col.type == ColumnType::kNumeric) {
    if (agreed != ds.categories.end()) {
      return Status(StatusCode::kSchemaMismatch, "column '" + col.name +
                                                     "' is numeric on this pod, but the job gives categories for it");
    }
    return values;
  }
  if (col.categories.empty()) {
    if (agreed == ds.categories.end()) return values;  // integer codes, the same on every pod
    const auto k = static_cast<double>(agreed->second.size());
    torch::Tensor bad = values >= k;
    if (bad.any().item<bool>()) {
      const int64_t row = bad.nonzero()[0][0].item<int64_t>();
      return Status::invalid("column '" + col.name + "' in data row " + std::to_string(row + 1) +
                             " holds a category code beyond the job's " + std::to_string(agreed->second.size()) +
                             " categories (datastructure.categories." + col.name + ")");
    }
    return values;
  }
  if (agreed == ds.categories.end()) {
    return Status(StatusCode::kSchemaMismatch,
                  "column '" + col.name + "' is categorical: the job must give its categories (datastructure." +
                      "categories." + col.name + ") so that every pod encodes it alike");
  }
  std::map<std::string, int64_t> global;
  for (size_t i = 0; i < agreed->second.size(); ++i) global.emplace(agreed->second[i], static_cast<int64_t>(i));
  std::vector<int64_t> lut(col.categories.size(), -1);
  for (size_t k = 0; k < col.categories.size(); ++k) {
    auto it = global.find(col.categories[k]);
    if (it != global.end()) lut[k] = it->second;
  }
  torch::Tensor mapped = torch::tensor(lut, torch::kInt64).index_select(0, values.to(torch::kInt64));
  torch::Tensor bad = mapped < 0;
  if (bad.any().item<bool>()) {
    const int64_t row = bad.nonzero()[0][0].item<int64_t>();
    const int64_t count = bad.sum().item<int64_t>();
    return Status(StatusCode::kSchemaMismatch,
                  "column '" + col.name + "': " + std::to_string(count) + " row(s), the first data row " +
                      std::to_string(row + 1) + ", hold a category that the job's list (datastructure.categories." +
                      col.name + ", " + std::to_string(agreed->second.size()) + " categories) does not have");
  }
  return mapped.to(torch::kFloat64);
}

}  // namespace

StatusOr<Splits> make_splits(const Table& table, const Datastructure& ds) {
  auto features = resolve_features(table.schema, ds);
  if (!features.ok()) return features.status();
  auto shape = resolve_input_shape(ds, static_cast<int64_t>(features->size()));
  if (!shape.ok()) return shape.status();
  if (ds.num_classes < 2) return Status::invalid("num_classes must be at least 2");
  const auto& sp = ds.split;
  if (!(sp.validation >= 0 && sp.test >= 0 && sp.validation + sp.test < 1)) {
    return Status::invalid("split fractions must be >= 0 and leave rows to train (validation " +
                           std::to_string(sp.validation) + ", test " + std::to_string(sp.test) + ")");
  }

  std::vector<int64_t> idx;
  bool any_categorical = false;
  for (const auto& f : *features) {
    idx.push_back(table.schema.find(f));
    any_categorical |= table.schema.columns[idx.back()].type == ColumnType::kCategorical || ds.categories.count(f) > 0;
  }
  const int target = table.schema.find(ds.target);
  auto target_codes = job_codes(table, target, ds);
  if (!target_codes.ok()) return target_codes.status();
  torch::Tensor y64 = *target_codes;
  // Labels must be exact integers in [0, num_classes): report the first row that is not.
  auto bad = (y64 < 0) | (y64 >= static_cast<double>(ds.num_classes)) | (y64 != y64.floor());
  if (bad.any().item<bool>()) {
    int64_t row = bad.nonzero()[0][0].item<int64_t>();
    return Status::invalid("target '" + ds.target + "' in data row " + std::to_string(row + 1) +
                           " is " + std::to_string(y64[row].item<double>()) +
                           ", not a class in [0, " + std::to_string(ds.num_classes) + ")");
  }
  torch::Tensor x;
  if (!any_categorical) {
    x = table.values.index_select(1, torch::tensor(idx, torch::kInt64)).to(torch::kFloat32);
  } else {
    std::vector<torch::Tensor> cols;
    for (int64_t c : idx) {
      auto col = job_codes(table, static_cast<int>(c), ds);
      if (!col.ok()) return col.status();
      cols.push_back(*col);
    }
    x = torch::stack(cols, 1).to(torch::kFloat32);
  }
  if (ds.scale != 1.0) x.mul_(ds.scale);
  torch::Tensor y = y64.to(torch::kInt64);

  const int64_t n = y.size(0);
  std::vector<int64_t> sample_shape = {-1};
  sample_shape.insert(sample_shape.end(), shape->begin(), shape->end());
  Splits out;
  if (!table.row_split.empty()) {
    // Splits fixed by the table's builder: the rows of each split, in table order.
    if (static_cast<int64_t>(table.row_split.size()) != n) {
      return Status::invalid("the table fixes the split of " + std::to_string(table.row_split.size()) +
                             " rows but has " + std::to_string(n));
    }
    std::vector<int64_t> train, validation, test;
    for (int64_t i = 0; i < n; ++i) {
      switch (static_cast<RowSplit>(table.row_split[static_cast<size_t>(i)])) {
        case RowSplit::kTrain: train.push_back(i); break;
        case RowSplit::kValidation: validation.push_back(i); break;
        case RowSplit::kTest: test.push_back(i); break;
        case RowSplit::kHeldOut:
          validation.push_back(i);
          test.push_back(i);
          break;
        default:
          return Status::invalid("row " + std::to_string(i) + " has no valid split (" +
                                 std::to_string(table.row_split[static_cast<size_t>(i)]) + ")");
      }
    }
    if (train.empty()) return Status::invalid("no rows to train: the table's fixed split has none");
    auto take = [&](const std::vector<int64_t>& rows) {
      torch::Tensor r = torch::from_blob(const_cast<int64_t*>(rows.data()), {static_cast<int64_t>(rows.size())}, torch::kInt64).clone();
      return Dataset{x.index_select(0, r).reshape(sample_shape), y.index_select(0, r)};
    };
    out.train = take(train);
    out.validation = take(validation);
    out.test = take(test);
  } else {
    auto gen = at::detail::createCPUGenerator(ds.split.seed);
    torch::Tensor perm = torch::randperm(n, gen, torch::kInt64);
    const int64_t n_test = static_cast<int64_t>(std::floor(sp.test * n));
    const int64_t n_val = static_cast<int64_t>(std::floor(sp.validation * n));
    const int64_t n_train = n - n_test - n_val;
    if (n_train <= 0) return Status::invalid("no rows left to train after the split");
    auto take = [&](int64_t from, int64_t count) {
      torch::Tensor rows = perm.narrow(0, from, count);
      return Dataset{x.index_select(0, rows).reshape(sample_shape), y.index_select(0, rows)};
    };
    out.train = take(0, n_train);
    out.validation = take(n_train, n_val);
    out.test = take(n_train + n_val, n_test);
  }
  out.features = std::move(*features);
  out.input_shape = std::move(*shape);
  return out;
}

Dataset concat(const std::vector<Dataset>& parts) {
  std::vector<torch::Tensor> xs, ys;
  for (const auto& p : parts) {
    if (p.size() == 0) continue;
    xs.push_back(p.x);
    ys.push_back(p.y);
  }
  if (xs.empty()) return {};
  return {torch::cat(xs), torch::cat(ys)};
}

BatchIterator::BatchIterator(const Dataset& data, int64_t batch_size, bool shuffle, uint64_t seed)
    : data_(data),
      batch_size_(batch_size > 0 ? batch_size : 1),
      shuffle_(shuffle),
      generator_(at::detail::createCPUGenerator(seed)) {
  reset();
}

void BatchIterator::reset() {
  pos_ = 0;
  if (shuffle_) order_ = torch::randperm(data_.size(), generator_, torch::kInt64);
}

bool BatchIterator::next(torch::Tensor& x, torch::Tensor& y) {
  const int64_t n = data_.size();
  if (pos_ >= n) return false;
  const int64_t count = std::min(batch_size_, n - pos_);
  if (shuffle_) {
    torch::Tensor rows = order_.narrow(0, pos_, count);
    x = data_.x.index_select(0, rows);
    y = data_.y.index_select(0, rows);
  } else {
    x = data_.x.narrow(0, pos_, count);
    y = data_.y.narrow(0, pos_, count);
  }
  pos_ += count;
  return true;
}

}  // namespace fedpod::data
