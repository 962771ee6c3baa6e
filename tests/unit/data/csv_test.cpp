// Tests for fedpod/data/csv.h: schema inference, declared schemas, quoting, line
// endings, and bad rows (as errors naming "file:line" and the column, or skipped and
// counted). Error paths are checked by their message.
#include "fedpod/data/csv.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "testutil.h"

namespace fedpod::data {
namespace {

std::vector<std::string> names(const Schema& s) {
  std::vector<std::string> out;
  for (const auto& c : s.columns) out.push_back(c.name);
  return out;
}

// Row `r` of a table as doubles.
std::vector<double> row(const Table& t, int64_t r) {
  torch::Tensor v = t.values[r].contiguous();
  return std::vector<double>(v.data_ptr<double>(), v.data_ptr<double>() + v.numel());
}

class CsvTest : public ::testing::Test {
 protected:
  // Writes `content` to data.csv and reads it.
  StatusOr<Table> read(const std::string& content, const CsvOptions& options = {},
                       const std::optional<Schema>& declared = std::nullopt) {
    path_ = dir_.write("data.csv", content);
    return read_csv(path_, options, declared);
  }
  // "<path>:<line>" as error messages spell it.
  std::string at(int line) const { return path_ + ":" + std::to_string(line); }

  static CsvOptions skip() {
    CsvOptions o;
    o.on_bad_row = BadRowPolicy::kSkip;
    return o;
  }

  static Schema numeric_schema(const std::vector<std::string>& cols) {
    Schema s;
    for (const auto& c : cols) s.columns.push_back({c, ColumnType::kNumeric, {}});
    return s;
  }

  fedpod::testing::TempDir dir_;
  std::string path_;
};

// ---- Reading and inference -----------------------------------------------------------

TEST_F(CsvTest, HeaderNamesColumnsAndValuesAreFloat64) {
  auto t = read("a,b,c\n1,2.5,-3\n+4,5e1,0\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(t->schema.num_rows, 2);
  EXPECT_EQ(t->values.scalar_type(), torch::kFloat64);
  EXPECT_EQ(t->values.sizes().vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 2.5, -3}));
  EXPECT_EQ(row(*t, 1), (std::vector<double>{4, 50, 0}));
  EXPECT_EQ(t->skipped_rows, 0);
  EXPECT_EQ(t->schema.find("c"), 2);
  EXPECT_EQ(t->schema.find("d"), -1);
}

TEST_F(CsvTest, WithoutHeaderColumnsAreNumbered) {
  CsvOptions o;
  o.header = false;
  auto t = read("1,2\n3,4\n", o);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"col_0", "col_1"}));
  EXPECT_EQ(t->schema.num_rows, 2);
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 2}));
}

TEST_F(CsvTest, InfersNumericAndCategoricalWithSortedCategories) {
  auto t = read("x,city,y\n1,paris,0\n2,berlin,1\n3,paris,0\n4,athens,1\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  const auto& cols = t->schema.columns;
  EXPECT_EQ(cols[0].type, ColumnType::kNumeric);
  EXPECT_TRUE(cols[0].categories.empty());
  EXPECT_EQ(cols[1].type, ColumnType::kCategorical);
  EXPECT_EQ(cols[1].categories, (std::vector<std::string>{"athens", "berlin", "paris"}));
  EXPECT_EQ(cols[2].type, ColumnType::kNumeric);
  // Cells become their category codes.
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 2, 0}));
  EXPECT_EQ(row(*t, 1), (std::vector<double>{2, 1, 1}));
  EXPECT_EQ(row(*t, 3), (std::vector<double>{4, 0, 1}));
  EXPECT_STREQ(to_string(ColumnType::kCategorical), "categorical");
  EXPECT_STREQ(to_string(ColumnType::kNumeric), "numeric");
}

TEST_F(CsvTest, OtherDelimiter) {
  CsvOptions o;
  o.delimiter = ';';
  auto t = read("a;b\n1,5;2\n", o);  // "1,5" is not a number: categorical
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.columns[0].type, ColumnType::kCategorical);
  EXPECT_EQ(t->schema.columns[0].categories, std::vector<std::string>{"1,5"});
  EXPECT_EQ(t->schema.columns[1].type, ColumnType::kNumeric);
}

TEST_F(CsvTest, QuotedCellsWithDelimitersAndEscapedQuotes) {
  auto t = read("name,score\n\"Smith, John\",1\n\"say \"\"hi\"\"\",2\n\" pad \",\"3\"\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  ASSERT_EQ(t->schema.num_rows, 3);
  // Byte order: ' ' < 'S' < 's'. Spaces inside quotes are kept.
  EXPECT_EQ(t->schema.columns[0].categories,
            (std::vector<std::string>{" pad ", "Smith, John", "say \"hi\""}));
  EXPECT_EQ(t->schema.columns[1].type, ColumnType::kNumeric);  // "3" quoted is still a number
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 1}));
  EXPECT_EQ(row(*t, 1), (std::vector<double>{2, 2}));
  EXPECT_EQ(row(*t, 2), (std::vector<double>{0, 3}));
}

TEST_F(CsvTest, UnquotedCellsAreTrimmed) {
  auto t = read(" a , b \n 1 ,\t2\t\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 2}));
}

TEST_F(CsvTest, CrlfLineEndings) {
  auto t = read("a,b\r\n1,2\r\n3,4\r\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(t->schema.columns[1].type, ColumnType::kNumeric);
  EXPECT_EQ(row(*t, 1), (std::vector<double>{3, 4}));
}

TEST_F(CsvTest, CrlfAfterQuotedLastCellIsNotPartOfTheCell) {
  // Regression: the '\r' of a CRLF line ending used to be kept in a quoted last cell,
  // turning "paris" into "paris\r" (and "b" in the header into "b\r").
  auto t = read("id,\"city\"\r\n1,\"paris\"\r\n2,\"berlin\"\r\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"id", "city"}));
  EXPECT_EQ(t->schema.columns[1].categories, (std::vector<std::string>{"berlin", "paris"}));
}

TEST_F(CsvTest, BlankLinesAreIgnoredAndLineNumbersKept) {
  auto t = read("\na,b\n\n1,2\n   \n3,4\n\n\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.num_rows, 2);
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"a", "b"}));

  // A bad row after blank lines is reported at its line in the file.
  auto bad = read("a,b\n\n1,2\n\n3\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), at(5) + ": expected 2 cells, got 1");
}

TEST_F(CsvTest, NoTrailingNewline) {
  auto t = read("a,b\n1,2\n3,4");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.num_rows, 2);
  EXPECT_EQ(row(*t, 1), (std::vector<double>{3, 4}));
}

TEST_F(CsvTest, DeclaredSchemaIsUsedWithItsCategoryOrder) {
  Schema declared;
  declared.columns = {{"x", ColumnType::kNumeric, {}},
                      {"city", ColumnType::kCategorical, {"paris", "berlin"}},
                      {"code", ColumnType::kCategorical, {}}};
  auto t = read("x,city,code\n1,berlin,2\n2,paris,0\n", {}, declared);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.columns[1].categories, (std::vector<std::string>{"paris", "berlin"}));
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 1, 2}));
  EXPECT_EQ(row(*t, 1), (std::vector<double>{2, 0, 0}));
  EXPECT_EQ(t->schema.num_rows, 2);
}

TEST_F(CsvTest, DeclaredSchemaWithoutHeader) {
  CsvOptions o;
  o.header = false;
  auto t = read("1,2\n", o, numeric_schema({"p", "q"}));
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(names(t->schema), (std::vector<std::string>{"p", "q"}));
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 2}));
}

TEST_F(CsvTest, LargeFileWithRealRowCount) {
  std::string content = "a,b\n";
  for (int i = 0; i < 5000; ++i) content += std::to_string(i) + "," + std::to_string(i * 2) + "\n";
  auto t = read(content);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.num_rows, 5000);
  EXPECT_EQ(row(*t, 4999), (std::vector<double>{4999, 9998}));
}

// ---- The committed example data -------------------------------------------------------

TEST(CsvDigitsTest, ReadsCommittedPodFile) {
  auto t = read_csv(fedpod::testing::source_dir() + "/examples/digits/pod-a.csv", {});
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  const Schema& s = t->schema;
  ASSERT_EQ(s.columns.size(), 65u);
  EXPECT_EQ(s.columns[0].name, "px_0_0");
  EXPECT_EQ(s.columns[9].name, "px_1_1");
  EXPECT_EQ(s.columns[63].name, "px_7_7");
  EXPECT_EQ(s.columns[64].name, "label");
  for (const auto& c : s.columns) EXPECT_EQ(c.type, ColumnType::kNumeric) << c.name;
  EXPECT_EQ(s.num_rows, 684);
  EXPECT_EQ(t->values.sizes().vec(), (std::vector<int64_t>{684, 65}));
  EXPECT_EQ(t->skipped_rows, 0);
  // Pixels are 0..16; labels are the digits 0..9.
  torch::Tensor px = t->values.narrow(1, 0, 64);
  EXPECT_GE(px.min().item<double>(), 0);
  EXPECT_LE(px.max().item<double>(), 16);
  torch::Tensor label = t->values.select(1, 64);
  EXPECT_EQ(label.min().item<double>(), 0);
  EXPECT_EQ(label.max().item<double>(), 9);
}

// ---- Errors ---------------------------------------------------------------------------

TEST_F(CsvTest, MissingFileIsNotFound) {
  auto t = read_csv((dir_.path() / "nope.csv").string(), {});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(t.status().message(), "nope.csv: cannot open file");
}

TEST_F(CsvTest, DirectoryIsAnErrorNotACrash) {
  // Regression: a directory opens as a stream; its size read back as -1 on tmpfs (an
  // std::length_error allocating the buffer) and as INT64_MAX on ext4 ("file has
  // 9223372036854775807 bytes").
  auto t = read_csv(dir_.path().string(), {});
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), dir_.path().string() + ": is a directory");
}

TEST_F(CsvTest, EmptyFile) {
  for (const char* content : {"", "\n\n", "  \r\n"}) {
    auto t = read(content);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(t.status().message(), path_ + ": file is empty");
  }
}

TEST_F(CsvTest, HeaderOnlyFileHasNoDataRows) {
  auto t = read("a,b,c\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), path_ + ": no data rows");
}

TEST_F(CsvTest, MaxBytesLimit) {
  CsvOptions o;
  o.max_bytes = 10;
  auto t = read("a,b\n1,2\n3,4\n", o);  // 12 bytes
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), path_ + ": file has 12 bytes, limit is 10");
  o.max_bytes = 12;
  EXPECT_TRUE(read("a,b\n1,2\n3,4\n", o).ok());
}

TEST_F(CsvTest, BadHeaders) {
  auto dup = read("a,b,a\n1,2,3\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().message(), path_ + ": duplicate column 'a' in header");

  auto empty = read("a,,c\n1,2,3\n");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().message(), at(1) + ": empty column name in header");

  auto quote = read("a,\"b\n1,2\n");
  ASSERT_FALSE(quote.ok());
  EXPECT_EQ(quote.status().message(), at(1) + ": unterminated quote in header");
}

TEST_F(CsvTest, DeclaredSchemaHeaderCountMismatch) {
  auto t = read("a,b,c\n1,2,3\n", {}, numeric_schema({"a", "b"}));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(t.status().message(), path_ + ": header has 3 columns, the declared schema 2");
}

TEST_F(CsvTest, DeclaredSchemaHeaderNameMismatch) {
  auto t = read("a,b,c\n1,2,3\n", {}, numeric_schema({"a", "x", "c"}));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(t.status().message(), path_ + ": header column 2 is 'b', the declared schema says 'x'");
}

TEST_F(CsvTest, WrongCellCount) {
  auto t = read("a,b\n1,2\n3,4,5\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(t.status().message(), at(3) + ": expected 2 cells, got 3");
}

TEST_F(CsvTest, NotANumberInDeclaredNumericColumn) {
  auto t = read("a,b\n1,2\n3,4x\n", {}, numeric_schema({"a", "b"}));
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), at(3) + ": column 'b': \"4x\" is not a number");
}

// A column of numbers with a stray word is a typo, not a categorical column: at
// start-up the pod names the file, line and cell (or skips the row), and the column
// stays numeric; a column with many words stays categorical.
TEST_F(CsvTest, AStrayWordInANumericColumnIsABadRowNotACategory) {
  std::string csv = "age,label\n";
  for (int i = 0; i < 30; ++i) csv += std::to_string(20 + i) + "," + std::to_string(i % 2) + "\n";
  csv += "thirty,1\n";  // line 32
  for (int i = 0; i < 5; ++i) csv += std::to_string(50 + i) + ",0\n";
  auto t = read(csv);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), at(32) + ": column 'age': \"thirty\" is not a number (the column is numeric in 35 "
                                            "of 36 rows; if it is categorical, declare it so in the pod's schema)");
  auto skipped = read(csv, skip());
  ASSERT_TRUE(skipped.ok()) << skipped.status().to_string();
  EXPECT_EQ(skipped->schema.columns[0].type, ColumnType::kNumeric);
  EXPECT_EQ(skipped->schema.num_rows, 35);
  EXPECT_EQ(skipped->skipped_rows, 1);

  // Below 90% numbers (or fewer than 10), the column is categorical as before.
  std::string mixed = "size,label\n";
  for (int i = 0; i < 8; ++i) mixed += std::to_string(i) + ",0\n";
  mixed += "small,1\nlarge,1\n";
  auto m = read(mixed);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->schema.columns[0].type, ColumnType::kCategorical);
}

TEST_F(CsvTest, EmptyCell) {
  auto t = read("a,b\n1,2\n,4\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), at(3) + ": column 'a' is empty");
  auto quoted = read("a,b\n1,\"\"\n");
  ASSERT_FALSE(quoted.ok());
  EXPECT_EQ(quoted.status().message(), at(2) + ": column 'b' is empty");
}

TEST_F(CsvTest, NonFiniteNumbers) {
  // from_chars reads these as numbers, so the column is numeric and the row is refused.
  for (const char* cell : {"nan", "inf", "-inf", "NaN", "Infinity"}) {
    SCOPED_TRACE(cell);
    auto t = read(std::string("a,b\n1,2\n3,") + cell + "\n");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().message(), at(3) + ": column 'b': \"" + cell + "\" is not finite");
  }
}

TEST_F(CsvTest, UnknownCategory) {
  Schema declared;
  declared.columns = {{"city", ColumnType::kCategorical, {"paris", "berlin"}},
                      {"y", ColumnType::kNumeric, {}}};
  auto t = read("city,y\nparis,1\nrome,0\n", {}, declared);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), at(3) + ": column 'city': \"rome\" is not a declared category");
}

TEST_F(CsvTest, CategoryCodeMustBeANonNegativeInteger) {
  Schema declared;
  declared.columns = {{"code", ColumnType::kCategorical, {}}};
  for (const char* cell : {"1.5", "-1"}) {
    auto t = read(std::string("code\n0\n") + cell + "\n", {}, declared);
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().message(),
              at(3) + ": column 'code': \"" + cell + "\" is not a category code (an integer >= 0)");
  }
}

TEST_F(CsvTest, UnterminatedQuoteInRow) {
  auto t = read("a,b\n1,\"2\n");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), at(2) + ": unterminated quote");
}

// ---- BadRowPolicy::kSkip --------------------------------------------------------------

TEST_F(CsvTest, SkipPolicyCountsAndKeepsReasons) {
  auto t = read("a,b\n1,2\n3\n,5\n6,nan\n7,8\n9,\"10\n11,12\n", skip());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.num_rows, 3);
  EXPECT_EQ(t->values.size(0), 3);
  EXPECT_EQ(row(*t, 0), (std::vector<double>{1, 2}));
  EXPECT_EQ(row(*t, 1), (std::vector<double>{7, 8}));
  EXPECT_EQ(row(*t, 2), (std::vector<double>{11, 12}));
  EXPECT_EQ(t->skipped_rows, 4);
  EXPECT_EQ(t->skipped_reasons, (std::vector<std::string>{
                                    at(3) + ": expected 2 cells, got 1",
                                    at(4) + ": column 'a' is empty",
                                    at(5) + ": column 'b': \"nan\" is not finite",
                                    at(7) + ": unterminated quote",
                                }));
}

TEST_F(CsvTest, SkipPolicyUnknownCategoryAndNonNumber) {
  Schema declared;
  declared.columns = {{"city", ColumnType::kCategorical, {"paris"}},
                      {"y", ColumnType::kNumeric, {}}};
  auto t = read("city,y\nparis,1\nrome,0\nparis,x\nparis,2\n", skip(), declared);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.num_rows, 2);
  EXPECT_EQ(t->skipped_rows, 2);
  ASSERT_EQ(t->skipped_reasons.size(), 2u);
  EXPECT_EQ(t->skipped_reasons[0], at(3) + ": column 'city': \"rome\" is not a declared category");
  EXPECT_EQ(t->skipped_reasons[1], at(4) + ": column 'y': \"x\" is not a number");
}

TEST_F(CsvTest, SkipPolicyReportsAtMostTheFirstReasons) {
  std::string content = "a,b\n";
  const int bad = kMaxReportedBadRows + 5;
  for (int i = 0; i < bad; ++i) content += "1,2,3\n";
  content += "4,5\n";
  auto t = read(content, skip());
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->schema.num_rows, 1);
  EXPECT_EQ(t->skipped_rows, bad);
  ASSERT_EQ(t->skipped_reasons.size(), static_cast<size_t>(kMaxReportedBadRows));
  EXPECT_EQ(t->skipped_reasons.front(), at(2) + ": expected 2 cells, got 3");
  EXPECT_EQ(t->skipped_reasons.back(), at(kMaxReportedBadRows + 1) + ": expected 2 cells, got 3");
}

TEST_F(CsvTest, SkipPolicyWithEveryRowBadHasNoDataRows) {
  auto t = read("a,b\n1\n2\n", skip());
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), path_ + ": no data rows");
}

}  // namespace
}  // namespace fedpod::data
