// libFuzzer target: a pod's dataset file (data/csv.h) with schema inference or a
// declared schema, then the job's view of it (data/schema.h resolve_features and
// data/dataset.h make_splits), as a pod does at startJob.
//
// Input: one options byte, then the CSV text.
//   bit 0: no header line (header: false)      bits 1-2: delimiter , ; \t |
//   bit 3: on_bad_row: skip (else error)        bit 4: the declared schema below
// So 0x00 is the default pod.yaml (header, ",", error, inferred schema).
//
// Expected outcomes are a Status (returned, ignored here). Any exception, crash or
// sanitizer report is a finding: read_csv promises errors as values.
#include <torch/torch.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "fedpod/data/csv.h"
#include "fedpod/data/dataset.h"
#include "fedpod/data/schema.h"

namespace {

// As a pod.yaml would declare it: "a,b,c,label"; b's categories are labels, c's
// values are already codes (no categories).
fedpod::data::Schema declared_schema() {
  using fedpod::data::ColumnType;
  fedpod::data::Schema s;
  s.columns.push_back({"a", ColumnType::kNumeric, {}});
  s.columns.push_back({"b", ColumnType::kCategorical, {"x", "y", "z"}});
  s.columns.push_back({"c", ColumnType::kCategorical, {}});
  s.columns.push_back({"label", ColumnType::kNumeric, {}});
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  at::set_num_threads(1);  // deterministic, and no pool threads
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedpod::data;
  if (size < 1) return 0;
  const uint8_t flags = data[0];
  CsvOptions options;
  options.header = !(flags & 1);
  options.delimiter = ",;\t|"[(flags >> 1) & 3];
  options.on_bad_row = (flags & 8) ? BadRowPolicy::kSkip : BadRowPolicy::kError;
  std::optional<Schema> declared;
  if (flags & 16) declared = declared_schema();
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  auto table = parse_csv(text, options, declared, "fuzz.csv");
  if (!table.ok()) return 0;
  // The table's promises: one value per cell, one row per accepted line.
  const auto& t = *table;
  if (t.values.dim() != 2 || t.values.size(0) != t.schema.num_rows ||
      t.values.size(1) != static_cast<int64_t>(t.schema.columns.size())) {
    std::fprintf(stderr, "parse_csv: %lld rows x %zu columns in the schema, values are %s\n",
                 static_cast<long long>(t.schema.num_rows), t.schema.columns.size(),
                 c10::str(t.values.sizes()).c_str());
    std::abort();  // a finding, like a crash
  }
  // The job's view: the last column as the target, every other as a feature.
  Datastructure ds;
  ds.target = t.schema.columns.back().name;
  ds.num_classes = 3;
  ds.split = {0.2, 0.2, 1};
  auto splits = make_splits(t, ds);
  if (splits.ok()) (void)splits->train.size();
  return 0;
}
