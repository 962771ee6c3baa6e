// Tests for fedpod/data/schema.h and dataset.h: feature resolution, input shapes,
// seeded splits, label checks, and batching.
#include "fedpod/data/dataset.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "fedpod/data/csv.h"
#include "testutil.h"

namespace fedpod::data {
namespace {

std::vector<int64_t> to_vec(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kInt64).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// A table of `n` rows: feature "id" = row index, "f1".."f<extra>" = id * 10 + k, and
// "label" = id % classes. The id lets a test trace every sample back to its row.
Table make_table(int64_t n, int extra = 1, int64_t classes = 3) {
  Table t;
  t.schema.columns.push_back({"id", ColumnType::kNumeric, {}});
  for (int k = 1; k <= extra; ++k) {
    t.schema.columns.push_back({"f" + std::to_string(k), ColumnType::kNumeric, {}});
  }
  t.schema.columns.push_back({"label", ColumnType::kNumeric, {}});
  const int64_t cols = extra + 2;
  t.values = torch::empty({n, cols}, torch::kFloat64);
  auto a = t.values.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    a[i][0] = static_cast<double>(i);
    for (int k = 1; k <= extra; ++k) a[i][k] = static_cast<double>(i * 10 + k);
    a[i][cols - 1] = static_cast<double>(i % classes);
  }
  t.schema.num_rows = n;
  return t;
}

Datastructure make_ds(double validation = 0.1, double test = 0.2, uint64_t seed = 7) {
  Datastructure ds;
  ds.target = "label";
  ds.num_classes = 3;
  ds.split = {validation, test, seed};
  return ds;
}

// The ids (feature 0) of a dataset's samples, in order.
std::vector<int64_t> ids(const Dataset& d) {
  if (d.size() == 0) return {};
  return to_vec(d.x.reshape({d.size(), -1}).select(1, 0));
}

// ---- resolve_features / resolve_input_shape -------------------------------------------

Schema mixed_schema() {
  Schema s;
  s.columns = {{"age", ColumnType::kNumeric, {}},
               {"city", ColumnType::kCategorical, {"a", "b"}},
               {"income", ColumnType::kNumeric, {}},
               {"row_id", ColumnType::kNumeric, {}},
               {"label", ColumnType::kNumeric, {}}};
  return s;
}

TEST(ResolveFeaturesTest, DefaultIsEveryColumnButTargetAndIgnoredInTableOrder) {
  Datastructure ds;
  ds.target = "label";
  ds.ignore = {"city", "row_id"};
  auto f = resolve_features(mixed_schema(), ds);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(*f, (std::vector<std::string>{"age", "income"}));
}

TEST(ResolveFeaturesTest, ExplicitFeaturesKeepTheirOrder) {
  Datastructure ds;
  ds.target = "label";
  ds.features = {"income", "age"};
  auto f = resolve_features(mixed_schema(), ds);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(*f, (std::vector<std::string>{"income", "age"}));
}

TEST(ResolveFeaturesTest, MissingTargetNamesTheColumn) {
  Datastructure ds;
  ds.target = "outcome";
  auto f = resolve_features(mixed_schema(), ds);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(f.status().message(), "no column 'outcome' (the target)");
}

TEST(ResolveFeaturesTest, NoTargetIsInvalid) {
  auto f = resolve_features(mixed_schema(), Datastructure{});
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.status().message(), "datastructure has no target column");
}

TEST(ResolveFeaturesTest, MissingIgnoredColumn) {
  Datastructure ds;
  ds.target = "label";
  ds.ignore = {"zip"};
  auto f = resolve_features(mixed_schema(), ds);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(f.status().message(), "no column 'zip' (listed in ignore)");
}

TEST(ResolveFeaturesTest, MissingExplicitFeature) {
  Datastructure ds;
  ds.target = "label";
  ds.features = {"age", "height"};
  auto f = resolve_features(mixed_schema(), ds);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(f.status().message(), "no column 'height' (a feature)");
}

TEST(ResolveFeaturesTest, CategoricalFeatureIsAFeature) {
  Datastructure ds;
  ds.target = "label";  // city is not ignored, so it is a default feature
  auto f = resolve_features(mixed_schema(), ds);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(*f, (std::vector<std::string>{"age", "city", "income", "row_id"}));
}

// ---- agree_categories ------------------------------------------------------------------

Schema labelled(std::vector<std::string> categories, bool withheld = false,
                ColumnType type = ColumnType::kCategorical) {
  Schema s;
  s.columns = {{"x", ColumnType::kNumeric, {}}, {"label", type, std::move(categories)}};
  s.columns[1].categories_withheld = withheld;
  return s;
}

Datastructure label_ds() {
  Datastructure ds;
  ds.target = "label";
  ds.num_classes = 3;
  return ds;
}

TEST(AgreeCategoriesTest, UnionOfDeclaredCategoriesIsSorted) {
  Schema a = labelled({"dog", "cat"}), b = labelled({"bird", "cat"});
  auto c = agree_categories({{"pod-a", &a}, {"pod-b", &b}}, label_ds(), {"label", "x"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->size(), 1u);
  EXPECT_EQ(c->at("label"), (std::vector<std::string>{"bird", "cat", "dog"}));
}

TEST(AgreeCategoriesTest, TheJobsListWinsInItsOrder) {
  Schema a = labelled({"cat"}), b = labelled({}, /*withheld=*/true);
  Datastructure ds = label_ds();
  ds.categories["label"] = {"dog", "cat", "bird"};
  auto c = agree_categories({{"pod-a", &a}, {"pod-b", &b}}, ds, {"label", "x"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->at("label"), (std::vector<std::string>{"dog", "cat", "bird"}));
}

TEST(AgreeCategoriesTest, WithheldCategoriesNeedTheJobsList) {
  Schema a = labelled({"cat", "dog"}), b = labelled({}, /*withheld=*/true);
  auto c = agree_categories({{"pod-a", &a}, {"pod-b", &b}}, label_ds(), {"label", "x"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_NE(c.status().message().find("column 'label' is categorical on pod pod-b"), std::string::npos)
      << c.status().message();
  EXPECT_NE(c.status().message().find("datastructure.categories.label"), std::string::npos);
}

TEST(AgreeCategoriesTest, DeclaredCategoryOutsideTheJobsListNamesPodAndValue) {
  Schema a = labelled({"cat", "dog", "emu"});
  Datastructure ds = label_ds();
  ds.categories["label"] = {"cat", "dog", "bird"};
  auto c = agree_categories({{"pod-a", &a}}, ds, {"label", "x"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "pod pod-a declares categories of 'label' that datastructure.categories.label does not list: emu");
}

TEST(AgreeCategoriesTest, NumericOnOnePodCategoricalOnAnother) {
  Schema a = labelled({}, false, ColumnType::kNumeric), b = labelled({"cat", "dog"});
  auto c = agree_categories({{"pod-a", &a}, {"pod-b", &b}}, label_ds(), {"label", "x"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            "column 'label' is numeric on pod pod-a but categorical on pod pod-b; declare the same type on every "
            "pod (dataset.schema)");
  Datastructure ds = label_ds();
  ds.categories["label"] = {"cat", "dog", "emu"};
  c = agree_categories({{"pod-b", &b}, {"pod-a", &a}}, ds, {"label", "x"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("but pod pod-a holds it as numbers"), std::string::npos) << c.status().message();
}

TEST(AgreeCategoriesTest, CodesEverywhereNeedNoListButCodesAndNamesDoNotMix) {
  Schema a = labelled({}), b = labelled({});  // declared categorical, values are codes
  auto c = agree_categories({{"pod-a", &a}, {"pod-b", &b}}, label_ds(), {"label", "x"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->empty());
  Schema named = labelled({"cat"});
  c = agree_categories({{"pod-a", &a}, {"pod-c", &named}}, label_ds(), {"label", "x"});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("named categories on pod pod-c but integer codes on pod pod-a"),
            std::string::npos)
      << c.status().message();
}

TEST(AgreeCategoriesTest, ListForAColumnTheJobDoesNotUse) {
  Schema a = labelled({"cat"});
  Datastructure ds = label_ds();
  ds.categories["colour"] = {"red"};
  auto c = agree_categories({{"pod-a", &a}}, ds, {"label", "x"});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(), "datastructure.categories: 'colour' is neither the target nor a feature of this job");
}

TEST(ResolveFeaturesTest, TargetAsFeatureAndNothingLeft) {
  Datastructure ds;
  ds.target = "label";
  ds.features = {"age", "label"};
  auto both = resolve_features(mixed_schema(), ds);
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.status().message(), "column 'label' is both target and feature");

  ds.features.clear();
  ds.ignore = {"age", "city", "income", "row_id"};
  auto none = resolve_features(mixed_schema(), ds);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(none.status().message(), "no feature columns left after target and ignore");
}

TEST(ResolveInputShapeTest, DefaultIsFlatAndExplicitMustMatch) {
  Datastructure ds;
  auto flat = resolve_input_shape(ds, 64);
  ASSERT_TRUE(flat.ok());
  EXPECT_EQ(*flat, std::vector<int64_t>{64});

  ds.input_shape = {1, 8, 8};
  auto image = resolve_input_shape(ds, 64);
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(*image, (std::vector<int64_t>{1, 8, 8}));

  auto mismatch = resolve_input_shape(ds, 63);
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(mismatch.status().message(), "input_shape has 64 elements but there are 63 features");

  ds.input_shape = {0, 8};
  auto zero = resolve_input_shape(ds, 0);
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.status().message(), "input_shape dimensions must be positive");
}

// Regression (tests/fuzz envelope_fuzz, tests/fuzz/regressions/envelope/
// start-job-input-shape-overflow.bin): a startJob's inputShape whose product overflows
// int64 was signed-overflow UB; the wrapped product could even match the features.
TEST(ResolveInputShapeTest, ProductThatOverflowsInt64IsRefused) {
  Datastructure ds;
  ds.input_shape = {3819052484026957824, 105587565199361};
  auto huge = resolve_input_shape(ds, 4);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(huge.status().message(),
            "input_shape [3819052484026957824, 105587565199361] has more elements than an int64 "
            "can count, but "
            "there are 4 features");
  // 2^32 * 2^32 wraps to exactly 0 in two's complement: it must not match 0 features.
  ds.input_shape = {int64_t{1} << 32, int64_t{1} << 32};
  EXPECT_FALSE(resolve_input_shape(ds, 0).ok());
}

// ---- make_splits ----------------------------------------------------------------------

TEST(MakeSplitsTest, SizesAreFloorsOfFractions) {
  struct Case {
    int64_t n;
    double validation, test;
    int64_t n_train, n_val, n_test;
  };
  for (const Case& c :
       {Case{100, 0.1, 0.2, 70, 10, 20}, Case{7, 0.15, 0.3, 4, 1, 2}, Case{10, 0.0, 0.5, 5, 0, 5},
        Case{9, 0.25, 0.0, 7, 2, 0}, Case{3, 0.0, 0.0, 3, 0, 0}}) {
    SCOPED_TRACE(::testing::Message()
                 << "n=" << c.n << " val=" << c.validation << " test=" << c.test);
    auto s = make_splits(make_table(c.n), make_ds(c.validation, c.test));
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->train.size(), c.n_train);
    EXPECT_EQ(s->validation.size(), c.n_val);
    EXPECT_EQ(s->test.size(), c.n_test);
    // Empty splits still have the per-sample shape.
    EXPECT_EQ(s->validation.x.sizes().vec(), (std::vector<int64_t>{c.n_val, 2}));
    EXPECT_EQ(s->test.x.sizes().vec(), (std::vector<int64_t>{c.n_test, 2}));
  }
}

TEST(MakeSplitsTest, TypesFeaturesAndShapes) {
  auto s = make_splits(make_table(20, 2), make_ds());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->features, (std::vector<std::string>{"id", "f1", "f2"}));
  EXPECT_EQ(s->input_shape, std::vector<int64_t>{3});
  EXPECT_EQ(s->train.x.scalar_type(), torch::kFloat32);
  EXPECT_EQ(s->train.y.scalar_type(), torch::kInt64);
  EXPECT_EQ(s->train.x.sizes().vec(), (std::vector<int64_t>{14, 3}));
  // Each sample keeps its own row's features and label.
  for (int64_t i = 0; i < s->train.size(); ++i) {
    const int64_t id = static_cast<int64_t>(s->train.x[i][0].item<float>());
    EXPECT_EQ(s->train.x[i][1].item<float>(), id * 10 + 1);
    EXPECT_EQ(s->train.x[i][2].item<float>(), id * 10 + 2);
    EXPECT_EQ(s->train.y[i].item<int64_t>(), id % 3);
  }
}

TEST(MakeSplitsTest, SplitsAreDisjointAndCoverEveryRow) {
  auto s = make_splits(make_table(50), make_ds(0.2, 0.3, 11));
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  std::vector<int64_t> all;
  for (const Dataset* d : {&s->train, &s->validation, &s->test}) {
    auto v = ids(*d);
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  std::vector<int64_t> expected(50);
  for (int64_t i = 0; i < 50; ++i) expected[i] = i;
  EXPECT_EQ(all, expected);
}

TEST(MakeSplitsTest, SameSeedSameRowsOtherSeedOtherRows) {
  Table t = make_table(60);
  auto a = make_splits(t, make_ds(0.1, 0.2, 42));
  auto b = make_splits(t, make_ds(0.1, 0.2, 42));
  auto c = make_splits(t, make_ds(0.1, 0.2, 43));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(ids(a->train), ids(b->train));
  EXPECT_EQ(ids(a->validation), ids(b->validation));
  EXPECT_EQ(ids(a->test), ids(b->test));
  EXPECT_TRUE(torch::equal(a->train.x, b->train.x));
  EXPECT_TRUE(torch::equal(a->train.y, b->train.y));

  auto sorted = [](std::vector<int64_t> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  EXPECT_NE(sorted(ids(a->test)), sorted(ids(c->test)));
  EXPECT_NE(ids(a->train), ids(c->train));
}

TEST(MakeSplitsTest, LabelOutOfRangeNamesTheDataRow) {
  Table t = make_table(6);
  auto a = t.values.accessor<double, 2>();
  a[3][2] = 5;  // data row 4 (1-based)
  auto s = make_splits(t, make_ds());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.status().message(), "target 'label' in data row 4 is 5");
  EXPECT_CONTAINS(s.status().message(), "not a class in [0, 3)");

  a[3][2] = 1;
  a[1][2] = -1;
  s = make_splits(t, make_ds());
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.status().message(), "in data row 2 is -1");

  a[1][2] = 1;
  a[5][2] = 1.5;
  s = make_splits(t, make_ds());
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.status().message(), "in data row 6 is 1.5");
}

TEST(MakeSplitsTest, BadClassCountAndFractions) {
  Datastructure ds = make_ds();
  ds.num_classes = 1;
  auto s = make_splits(make_table(10), ds);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "num_classes must be at least 2");

  s = make_splits(make_table(10), make_ds(0.5, 0.5));
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.status().message(), "split fractions must be >= 0 and leave rows to train");

  s = make_splits(make_table(10), make_ds(-0.1, 0.2));
  ASSERT_FALSE(s.ok());
  EXPECT_CONTAINS(s.status().message(), "split fractions");
}

TEST(MakeSplitsTest, SchemaErrorsPassThrough) {
  Datastructure ds = make_ds();
  ds.target = "y";
  auto s = make_splits(make_table(10), ds);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(s.status().message(), "no column 'y' (the target)");

  ds = make_ds();
  ds.input_shape = {3};
  s = make_splits(make_table(10), ds);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "input_shape has 3 elements but there are 2 features");
}

TEST(MakeSplitsTest, ScaleIsApplied) {
  Datastructure ds = make_ds(0, 0);
  ds.scale = 0.5;
  auto s = make_splits(make_table(8), ds);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  for (int64_t i = 0; i < s->train.size(); ++i) {
    const float id2 = s->train.x[i][0].item<float>();  // id * 0.5
    EXPECT_FLOAT_EQ(s->train.x[i][1].item<float>(), (id2 * 2 * 10 + 1) * 0.5f);
    // Labels are not scaled.
    EXPECT_EQ(s->train.y[i].item<int64_t>(), static_cast<int64_t>(id2 * 2) % 3);
  }
}

TEST(MakeSplitsTest, InputShapeReshapesSamples) {
  Table t = make_table(10, 63);  // id + f1..f63 = 64 features
  Datastructure ds = make_ds(0.2, 0.2);
  ds.input_shape = {1, 8, 8};
  auto s = make_splits(t, ds);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->input_shape, (std::vector<int64_t>{1, 8, 8}));
  EXPECT_EQ(s->train.x.sizes().vec(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_EQ(s->validation.x.sizes().vec(), (std::vector<int64_t>{2, 1, 8, 8}));
  EXPECT_EQ(s->test.x.sizes().vec(), (std::vector<int64_t>{2, 1, 8, 8}));
  // Row-major: feature k lands at [k / 8][k % 8].
  const torch::Tensor& x = s->train.x;
  for (int64_t i = 0; i < x.size(0); ++i) {
    const int64_t id = static_cast<int64_t>(x[i][0][0][0].item<float>());
    EXPECT_EQ(x[i][0][0][1].item<float>(), id * 10 + 1);
    EXPECT_EQ(x[i][0][2][3].item<float>(), id * 10 + 19);
    EXPECT_EQ(x[i][0][7][7].item<float>(), id * 10 + 63);
  }
}

TEST(MakeSplitsTest, DigitsPodFile) {
  auto t = read_csv(fedpod::testing::source_dir() + "/examples/digits/pod-a.csv", {});
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  Datastructure ds;
  ds.target = "label";
  ds.num_classes = 10;
  ds.input_shape = {1, 8, 8};
  ds.scale = 1.0 / 16;
  ds.split = {0.1, 0.2, 1};
  auto s = make_splits(*t, ds);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->features.size(), 64u);
  EXPECT_EQ(s->features.front(), "px_0_0");
  EXPECT_EQ(s->test.size(), 136);       // floor(0.2 * 684)
  EXPECT_EQ(s->validation.size(), 68);  // floor(0.1 * 684)
  EXPECT_EQ(s->train.size(), 480);
  EXPECT_EQ(s->train.x.sizes().vec(), (std::vector<int64_t>{480, 1, 8, 8}));
  EXPECT_LE(s->train.x.max().item<float>(), 1.0f);
  EXPECT_GE(s->train.x.min().item<float>(), 0.0f);
}

// Two pods' files with string labels, read with inferred schemas: pod A has all three
// classes, pod B lacks "bird". Each pod's own sorted codes would give "cat" 1 on A
// and 0 on B; with the job's list both code it 1.
TEST(MakeSplitsTest, AgreedCategoriesGiveEveryPodTheSameCodes) {
  fedpod::testing::TempDir dir;
  auto a = read_csv(dir.write("a.csv", "x,colour,label\n1,red,bird\n2,blue,cat\n3,red,dog\n4,blue,cat\n"), {});
  auto b = read_csv(dir.write("b.csv", "x,colour,label\n5,blue,dog\n6,blue,cat\n7,blue,cat\n"), {});
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(b->schema.columns[2].categories, (std::vector<std::string>{"cat", "dog"}));  // local: cat 0, dog 1
  Datastructure ds;
  ds.target = "label";
  ds.num_classes = 3;
  ds.split = {0, 0, 1};
  ds.categories["label"] = {"bird", "cat", "dog"};
  ds.categories["colour"] = {"blue", "green", "red"};
  // Without the list a categorical column cannot be coded safely: refused.
  Datastructure no_list = ds;
  no_list.categories.clear();
  auto refused = make_splits(*b, no_list);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("column 'label' is categorical: the job must give its categories"),
            std::string::npos)
      << refused.status().message();

  for (const auto* table : {&*a, &*b}) {
    auto s = make_splits(*table, ds);
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    EXPECT_EQ(s->features, (std::vector<std::string>{"x", "colour"}));
    for (int64_t i = 0; i < s->train.size(); ++i) {
      const int64_t x = static_cast<int64_t>(s->train.x[i][0].item<float>());
      const int64_t y = s->train.y[i].item<int64_t>();
      const int64_t colour = static_cast<int64_t>(s->train.x[i][1].item<float>());
      // x identifies the row: labels by row are bird cat dog cat dog cat cat, colours
      // red blue red blue blue blue blue.
      const std::vector<int64_t> want_y = {0, 1, 2, 1, 2, 1, 1}, want_colour = {2, 0, 2, 0, 0, 0, 0};
      EXPECT_EQ(y, want_y[x - 1]) << "row x=" << x;
      EXPECT_EQ(colour, want_colour[x - 1]) << "row x=" << x;
    }
  }
}

TEST(MakeSplitsTest, ValueOutsideTheJobsCategoriesIsRefusedWithoutNamingIt) {
  fedpod::testing::TempDir dir;
  auto t = read_csv(dir.write("t.csv", "x,label\n1,cat\n2,secret-diagnosis\n3,dog\n4,secret-diagnosis\n"), {});
  ASSERT_TRUE(t.ok());
  Datastructure ds;
  ds.target = "label";
  ds.num_classes = 2;
  ds.categories["label"] = {"cat", "dog"};
  auto s = make_splits(*t, ds);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_EQ(s.status().message(),
            "column 'label': 2 row(s), the first data row 2, hold a category that the job's list "
            "(datastructure.categories.label, 2 categories) does not have");
  EXPECT_EQ(s.status().message().find("secret"), std::string::npos);
  // A numeric column for which the job gives categories.
  ds.categories = {{"x", {"a"}}, {"label", {"cat", "dog", "secret-diagnosis"}}};
  ds.num_classes = 3;
  s = make_splits(*t, ds);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "column 'x' is numeric on this pod, but the job gives categories for it");
}

TEST(ConcatTest, JoinsNonEmptyParts) {
  auto s = make_splits(make_table(20), make_ds(0.0, 0.5, 3));
  ASSERT_TRUE(s.ok());
  Dataset all = concat({s->train, s->validation, s->test});
  EXPECT_EQ(all.size(), 20);
  EXPECT_EQ(all.x.size(1), 2);
  EXPECT_EQ(concat({}).size(), 0);
}

// ---- BatchIterator --------------------------------------------------------------------

Dataset range_dataset(int64_t n) {
  Dataset d;
  d.x = torch::arange(n, torch::kFloat32).reshape({n, 1});
  d.y = torch::arange(n, torch::kInt64);
  return d;
}

// One epoch's labels, in order, and the batch sizes.
std::vector<int64_t> epoch(BatchIterator& it, std::vector<int64_t>* sizes = nullptr) {
  std::vector<int64_t> seen;
  torch::Tensor x, y;
  while (it.next(x, y)) {
    EXPECT_EQ(x.size(0), y.size(0));
    // x and y stay paired: x holds the row index, as y does.
    EXPECT_TRUE(torch::equal(x.select(1, 0).to(torch::kInt64), y));
    if (sizes) sizes->push_back(y.size(0));
    auto v = to_vec(y);
    seen.insert(seen.end(), v.begin(), v.end());
  }
  return seen;
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

TEST(BatchIteratorTest, WithoutShuffleVisitsInOrderLastBatchSmaller) {
  Dataset d = range_dataset(10);
  BatchIterator it(d, 3, /*shuffle=*/false, 0);
  std::vector<int64_t> sizes;
  EXPECT_EQ(epoch(it, &sizes), iota(10));
  EXPECT_EQ(sizes, (std::vector<int64_t>{3, 3, 3, 1}));
  torch::Tensor x, y;
  EXPECT_FALSE(it.next(x, y));  // stays at the end until reset
  it.reset();
  EXPECT_EQ(epoch(it), iota(10));
}

TEST(BatchIteratorTest, ShuffleCoversEverySampleOncePerEpoch) {
  Dataset d = range_dataset(23);
  BatchIterator it(d, 4, /*shuffle=*/true, 5);
  std::vector<int64_t> sizes;
  auto first = epoch(it, &sizes);
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 4, 4, 4, 3}));
  EXPECT_NE(first, iota(23));  // shuffled
  auto sorted = first;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, iota(23));

  it.reset();
  auto second = epoch(it);
  EXPECT_NE(second, first);  // reset reshuffles
  std::sort(second.begin(), second.end());
  EXPECT_EQ(second, iota(23));
}

TEST(BatchIteratorTest, SameSeedSameOrder) {
  Dataset d = range_dataset(30);
  BatchIterator a(d, 7, true, 99), b(d, 7, true, 99), c(d, 7, true, 100);
  auto ea = epoch(a);
  EXPECT_EQ(ea, epoch(b));
  EXPECT_NE(ea, epoch(c));
  a.reset();
  b.reset();
  EXPECT_EQ(epoch(a), epoch(b));
}

TEST(BatchIteratorTest, BatchLargerThanDatasetAndEmptyDataset) {
  Dataset d = range_dataset(5);
  BatchIterator it(d, 64, true, 1);
  std::vector<int64_t> sizes;
  auto seen = epoch(it, &sizes);
  EXPECT_EQ(sizes, std::vector<int64_t>{5});
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, iota(5));

  Dataset empty;
  BatchIterator none(empty, 4, true, 1);
  torch::Tensor x, y;
  EXPECT_FALSE(none.next(x, y));
}

TEST(BatchIteratorTest, NonPositiveBatchSizeMeansOne) {
  Dataset d = range_dataset(3);
  BatchIterator it(d, 0, false, 0);
  std::vector<int64_t> sizes;
  EXPECT_EQ(epoch(it, &sizes), iota(3));
  EXPECT_EQ(sizes, (std::vector<int64_t>{1, 1, 1}));
}

// ---- fixed splits (Table::row_split) ---------------------------------------------------

TEST(FixedSplitTest, RowsGoWhereTheTableSaysInTableOrderAndHeldOutRowsAreBothValidationAndTest) {
  Table t = make_table(8);
  // rows 0..7: train, test, train, validation, held-out, train, held-out, test
  t.row_split = {0, 2, 0, 1, 3, 0, 3, 2};
  auto s = make_splits(t, make_ds(0.5, 0.4, 99));  // the fractions are ignored
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(ids(s->train), (std::vector<int64_t>{0, 2, 5}));
  EXPECT_EQ(ids(s->validation), (std::vector<int64_t>{3, 4, 6}));
  EXPECT_EQ(ids(s->test), (std::vector<int64_t>{1, 4, 6, 7}));
  EXPECT_EQ(to_vec(s->test.y), (std::vector<int64_t>{1, 1, 0, 1}));
}

TEST(FixedSplitTest, NoValidationRowsGiveAnEmptySplitAndBadMarksAreNamed) {
  Table t = make_table(4);
  t.row_split = {0, 0, 2, 2};
  auto s = make_splits(t, make_ds());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->validation.size(), 0);
  EXPECT_EQ(s->test.size(), 2);

  t.row_split = {0, 0, 7, 2};
  auto bad = make_splits(t, make_ds());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("row 2"), std::string::npos) << bad.status().message();

  t.row_split = {0, 0, 2};
  auto short_marks = make_splits(t, make_ds());
  ASSERT_FALSE(short_marks.ok());
  EXPECT_NE(short_marks.status().message().find("3 rows but has 4"), std::string::npos) << short_marks.status().message();

  t.row_split = {2, 2, 2, 2};
  auto none = make_splits(t, make_ds());
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("no rows to train"), std::string::npos);
}

}  // namespace
}  // namespace fedpod::data
