#include "fedpod/data/csv.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <system_error>

namespace fedpod::data {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Splits one line into cells (RFC 4180 quoting within the line: "a,b" and "" escapes).
// Returns false for an unterminated quote.
bool split_cells(std::string_view line, char delim, std::vector<std::string>& cells) {
  cells.clear();
  std::string cell;
  bool quoted = false, in_quotes = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (in_quotes) {
      if (c == '"') {
        if (i + 1 < line.size() && line[i + 1] == '"') {
          cell += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        cell += c;
      }
    } else if (c == '"' && trim(cell).empty()) {
      in_quotes = quoted = true;
      cell.clear();
    } else if (c == delim) {
      cells.emplace_back(quoted ? cell : std::string(trim(cell)));
      cell.clear();
      quoted = false;
    } else {
      cell += c;
    }
  }
  if (in_quotes) return false;
  cells.emplace_back(quoted ? cell : std::string(trim(cell)));
  return true;
}

bool parse_number(const std::string& s, double& out) {
  if (s.empty()) return false;
  const char* b = s.data();
  const char* e = b + s.size();
  if (*b == '+') ++b;
  auto [ptr, ec] = std::from_chars(b, e, out);
  return ec == std::errc() && ptr == e;
}

struct Line {
  int64_t number;  // 1-based line number in the file
  std::string_view text;
};

}  // namespace

StatusOr<Table> read_csv(const std::string& path, const CsvOptions& options,
                         const std::optional<Schema>& declared) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::not_found(path + ": cannot open file");
  // A directory opens fine on Linux; its "size" is then -1 or INT64_MAX, by filesystem.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return Status::invalid(path + ": is a directory");
  in.seekg(0, std::ios::end);
  const int64_t size = in.tellg();
  if (size < 0) return Status::invalid(path + ": cannot determine the file size");
  if (size > options.max_bytes) {
    return Status::invalid(path + ": file has " + std::to_string(size) + " bytes, limit is " +
                           std::to_string(options.max_bytes));
  }
  in.seekg(0);
  std::string buf(static_cast<size_t>(size), '\0');
  in.read(buf.data(), size);
  if (!in) return Status::internal(path + ": read failed");
  return parse_csv(buf, options, declared, path);
}

StatusOr<Table> parse_csv(std::string_view buf, const CsvOptions& options,
                          const std::optional<Schema>& declared, const std::string& where) {
  if (static_cast<int64_t>(buf.size()) > options.max_bytes) {
    return Status::invalid(where + ": input has " + std::to_string(buf.size()) +
                           " bytes, limit is " + std::to_string(options.max_bytes));
  }

  // Lines, without blank ones (blank lines are not rows).
  std::vector<Line> lines;
  {
    int64_t number = 0;
    size_t pos = 0;
    while (pos < buf.size()) {
      size_t nl = buf.find('\n', pos);
      if (nl == std::string::npos) nl = buf.size();
      ++number;
      std::string_view text(buf.data() + pos, nl - pos);
      // CRLF: the '\r' ends the line; it must not stick to a quoted last cell.
      if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
      if (!trim(text).empty()) lines.push_back({number, text});
      pos = nl + 1;
    }
  }
  if (lines.empty()) return Status::invalid(where + ": file is empty");

  Table table;
  std::vector<std::string> cells;
  size_t first_data = 0;
  std::vector<std::string> names;
  if (options.header) {
    if (!split_cells(lines[0].text, options.delimiter, cells)) {
      return Status::invalid(where + ":" + std::to_string(lines[0].number) + ": unterminated quote in header");
    }
    names = cells;
    std::set<std::string> seen;
    for (const auto& n : names) {
      if (n.empty()) return Status::invalid(where + ":" + std::to_string(lines[0].number) + ": empty column name in header");
      if (!seen.insert(n).second) return Status::invalid(where + ": duplicate column '" + n + "' in header");
    }
    first_data = 1;
  }
  if (declared) {
    if (options.header) {
      if (names.size() != declared->columns.size()) {
        return Status(StatusCode::kSchemaMismatch,
                      where + ": header has " + std::to_string(names.size()) +
                          " columns, the declared schema " + std::to_string(declared->columns.size()));
      }
      for (size_t i = 0; i < names.size(); ++i) {
        if (names[i] != declared->columns[i].name) {
          return Status(StatusCode::kSchemaMismatch,
                        where + ": header column " + std::to_string(i + 1) + " is '" + names[i] +
                            "', the declared schema says '" + declared->columns[i].name + "'");
        }
      }
    }
    table.schema.columns = declared->columns;
  } else {
    if (!options.header) {
      if (!split_cells(lines[0].text, options.delimiter, cells)) cells.assign(1, "");
      for (size_t i = 0; i < cells.size(); ++i) names.push_back("col_" + std::to_string(i));
    }
    for (const auto& n : names) table.schema.columns.push_back({n, ColumnType::kNumeric, {}});
  }
  const size_t ncols = table.schema.columns.size();

  auto bad_row = [&](int64_t line, const std::string& why) -> Status {
    std::string reason = where + ":" + std::to_string(line) + ": " + why;
    if (options.on_bad_row == BadRowPolicy::kError) return Status::invalid(reason);
    ++table.skipped_rows;
    if (static_cast<int>(table.skipped_reasons.size()) < kMaxReportedBadRows) {
      table.skipped_reasons.push_back(std::move(reason));
    }
    return Status();
  };

  // Pass 1 (inference only): which columns hold a non-number, and their distinct values.
  std::vector<std::set<std::string>> distinct(ncols);
  std::vector<std::string> mostly_numeric(ncols);  // the note its bad cells get; "" for others
  if (!declared) {
    std::vector<bool> numeric(ncols, true);
    std::vector<int64_t> numbers(ncols, 0), others(ncols, 0);
    double v;
    for (size_t li = first_data; li < lines.size(); ++li) {
      if (!split_cells(lines[li].text, options.delimiter, cells) || cells.size() != ncols) {
        continue;  // reported in pass 2
      }
      for (size_t c = 0; c < ncols; ++c) {
        if (cells[c].empty()) continue;
        if (!parse_number(cells[c], v)) {
          numeric[c] = false;
          ++others[c];
        } else {
          ++numbers[c];
        }
        if (distinct[c].size() <= 4096) distinct[c].insert(cells[c]);
      }
    }
    for (size_t c = 0; c < ncols; ++c) {
      // A column of numbers with a few cells that are not (at least 90% numbers, 10 or
      // more): a typo or a missing-value marker, not a categorical column. It stays
      // numeric and those rows are bad rows, reported with file:line (or skipped);
      // a column that really is categorical is declared in the pod's schema.
      if (!numeric[c] && numbers[c] >= 10 && numbers[c] >= 9 * others[c]) {
        mostly_numeric[c] = " (the column is numeric in " + std::to_string(numbers[c]) + " of " +
                            std::to_string(numbers[c] + others[c]) +
                            " rows; if it is categorical, declare it so in the pod's schema)";
        continue;
      }
      if (numeric[c]) continue;
      if (distinct[c].size() > 4096) {
        return Status::invalid(where + ": column '" + names[c] +
                               "' is not numeric and has more than 4096 distinct values; declare its schema");
      }
      auto& col = table.schema.columns[c];
      col.type = ColumnType::kCategorical;
      col.categories.assign(distinct[c].begin(), distinct[c].end());
    }
  }

  // Category lookup per categorical column.
  std::vector<std::map<std::string, int64_t>> codes(ncols);
  for (size_t c = 0; c < ncols; ++c) {
    const auto& col = table.schema.columns[c];
    for (size_t k = 0; k < col.categories.size(); ++k) codes[c][col.categories[k]] = static_cast<int64_t>(k);
  }

  // Pass 2: convert.
  std::vector<double> values;
  values.reserve((lines.size() - first_data) * ncols);
  int64_t rows = 0;
  std::vector<double> row(ncols);
  for (size_t li = first_data; li < lines.size(); ++li) {
    const int64_t ln = lines[li].number;
    if (!split_cells(lines[li].text, options.delimiter, cells)) {
      FEDPOD_RETURN_IF_ERROR(bad_row(ln, "unterminated quote"));
      continue;
    }
    if (cells.size() != ncols) {
      FEDPOD_RETURN_IF_ERROR(bad_row(ln, "expected " + std::to_string(ncols) + " cells, got " +
                                             std::to_string(cells.size())));
      continue;
    }
    std::string why;
    for (size_t c = 0; c < ncols && why.empty(); ++c) {
      const auto& col = table.schema.columns[c];
      const std::string& cell = cells[c];
      if (cell.empty()) {
        why = "column '" + col.name + "' is empty";
      } else if (col.type == ColumnType::kNumeric || col.categories.empty()) {
        double v;
        if (!parse_number(cell, v)) {
          why = "column '" + col.name + "': \"" + cell + "\" is not a number" + mostly_numeric[c];
        } else if (!std::isfinite(v)) {
          why = "column '" + col.name + "': \"" + cell + "\" is not finite";
        } else if (col.type == ColumnType::kCategorical && (v < 0 || v != std::floor(v))) {
          why = "column '" + col.name + "': \"" + cell + "\" is not a category code (an integer >= 0)";
        } else {
          row[c] = v;
        }
      } else {
        auto it = codes[c].find(cell);
        if (it == codes[c].end()) {
          why = "column '" + col.name + "': \"" + cell + "\" is not a declared category";
        } else {
          row[c] = static_cast<double>(it->second);
        }
      }
    }
    if (!why.empty()) {
      FEDPOD_RETURN_IF_ERROR(bad_row(ln, why));
      continue;
    }
    values.insert(values.end(), row.begin(), row.end());
    ++rows;
  }
  if (rows == 0) return Status::invalid(where + ": no data rows");
  table.schema.num_rows = rows;
  table.values = torch::from_blob(values.data(), {rows, static_cast<int64_t>(ncols)}, torch::kFloat64).clone();
  return table;
}

}  // namespace fedpod::data
