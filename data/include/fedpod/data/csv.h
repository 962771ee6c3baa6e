// Reading a pod's CSV file into a numeric table.
//
// Every cell becomes a float64 (categorical cells become their category code). A
// row that cannot be read (wrong number of cells, a cell that is not a number, an
// unknown category) is an error naming the file, the line and the column - or, when
// the pod config says `on_bad_row: skip`, it is skipped, counted, and its reason kept
// (the first `kMaxReportedBadRows`), never dropped silently.
//
// The file is read fully into memory; `max_bytes` bounds it (pod datasets that do
// not fit belong in a different reader).
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fedpod/common/status.h"
#include "fedpod/data/schema.h"

namespace fedpod::data {

enum class BadRowPolicy { kError, kSkip };

struct CsvOptions {
  bool header = true;  // the first line names the columns (else col_0, col_1, ...)
  char delimiter = ',';
  BadRowPolicy on_bad_row = BadRowPolicy::kError;
  // Larger files are refused: reading is all in memory. 2 GiB by default.
  int64_t max_bytes = int64_t{2} << 30;
};

struct Table {
  Schema schema;
  torch::Tensor values;  // float64 [num_rows, num_columns]
  int64_t skipped_rows = 0;
  std::vector<std::string> skipped_reasons;  // "pod.csv:17: expected 65 cells, got 64"
  // Which split each row belongs to, fixed by whoever built the table (RowSplit
  // values, one per row); empty: the job's seeded fractions decide (SplitSpec). Set
  // by programs that hold a dataset with its own test set, as `fedpod simulate` does
  // for MNIST's 10,000 test images; no file format sets it.
  std::vector<uint8_t> row_split;
};

// A row's place in a table with fixed splits (Table::row_split).
enum class RowSplit : uint8_t {
  kTrain = 0,
  kValidation = 1,
  kTest = 2,
  kHeldOut = 3,  // both validation and test: scored every evaluation and at the end
};

inline constexpr int kMaxReportedBadRows = 20;

// Reads `path`. With `declared`, the header (if any) must name the same columns in
// the same order, and categorical columns use the declared categories. Without it,
// the schema is inferred: a column whose every cell is a number is numeric, any other
// is categorical with its distinct values (sorted) as categories.
StatusOr<Table> read_csv(const std::string& path, const CsvOptions& options,
                         const std::optional<Schema>& declared = std::nullopt);

// The same over CSV text already in memory (read_csv reads the file, then calls this).
// `where` names the input in errors, as the path does for read_csv
// ("<where>:17: expected 65 cells, got 64"). Text over `options.max_bytes` is refused.
StatusOr<Table> parse_csv(std::string_view text, const CsvOptions& options,
                          const std::optional<Schema>& declared, const std::string& where);

}  // namespace fedpod::data
