// Tests for fedpod/data/partition.h: every row in exactly one pod, the sizes and
// label mixes each method promises, determinism by seed, and named errors.
#include "fedpod/data/partition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

namespace fedpod::data {
namespace {

// `per_class` rows of each of `classes` classes, interleaved: 0,1,..,9,0,1,...
std::vector<int64_t> labels_of(int64_t classes, int64_t per_class) {
  std::vector<int64_t> l;
  for (int64_t i = 0; i < classes * per_class; ++i) l.push_back(i % classes);
  return l;
}

void expect_exact_cover(const std::vector<std::vector<int64_t>>& parts, int64_t n) {
  std::vector<int> seen(static_cast<size_t>(n), 0);
  for (const auto& p : parts) {
    EXPECT_TRUE(std::is_sorted(p.begin(), p.end()));
    for (int64_t r : p) {
      ASSERT_GE(r, 0);
      ASSERT_LT(r, n);
      ++seen[static_cast<size_t>(r)];
    }
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<size_t>(i)], 1) << "row " << i;
}

int distinct_classes(const std::vector<int64_t>& counts) {
  return static_cast<int>(std::count_if(counts.begin(), counts.end(), [](int64_t c) { return c > 0; }));
}

TEST(PartitionTest, IidGivesEqualCountsAndEveryClassToEveryPod) {
  const auto labels = labels_of(10, 600);  // 6000 rows
  PartitionSpec spec;
  spec.seed = 3;
  auto parts = partition(labels, 100, spec);
  ASSERT_TRUE(parts.ok()) << parts.status().to_string();
  ASSERT_EQ(parts->size(), 100u);
  expect_exact_cover(*parts, 6000);
  for (const auto& p : *parts) EXPECT_EQ(p.size(), 60u);
  // 60 random rows of 10 balanced classes: a pod missing 4 classes has chance < 1e-6.
  for (const auto& c : class_counts(labels, *parts, 10)) EXPECT_GE(distinct_classes(c), 7);

  auto uneven = partition(labels_of(3, 3), 4, spec);  // 9 rows, 4 pods: 2,2,2,3
  ASSERT_TRUE(uneven.ok());
  std::vector<size_t> sizes;
  for (const auto& p : *uneven) sizes.push_back(p.size());
  std::sort(sizes.begin(), sizes.end());
  EXPECT_EQ(sizes, (std::vector<size_t>{2, 2, 2, 3}));
}

TEST(PartitionTest, ShardsGiveEachPodKShardsOfSortedLabelsAsInMcMahan) {
  const auto labels = labels_of(10, 600);
  PartitionSpec spec;
  spec.method = "shards";
  spec.shards_per_pod = 2;
  spec.seed = 11;
  auto parts = partition(labels, 100, spec);
  ASSERT_TRUE(parts.ok()) << parts.status().to_string();
  expect_exact_cover(*parts, 6000);
  // 200 shards of 30 rows, each within one class (600 rows per class = 20 shards):
  // a pod has 60 rows of at most 2 classes, each class's count a multiple of 30.
  for (const auto& c : class_counts(labels, *parts, 10)) {
    int64_t total = 0;
    for (int64_t k : c) {
      EXPECT_EQ(k % 30, 0);
      total += k;
    }
    EXPECT_EQ(total, 60);
    EXPECT_LE(distinct_classes(c), 2);
    EXPECT_GE(distinct_classes(c), 1);
  }
  // Not every pod gets the same pair: the shards were dealt at random.
  std::set<std::vector<int64_t>> mixes;
  for (const auto& c : class_counts(labels, *parts, 10)) mixes.insert(c);
  EXPECT_GT(mixes.size(), 20u);
}

TEST(PartitionTest, DirichletSkewFollowsAlpha) {
  const auto labels = labels_of(10, 600);
  auto mean_classes = [&](double alpha) {
    PartitionSpec spec;
    spec.method = "dirichlet";
    spec.alpha = alpha;
    spec.seed = 5;
    auto parts = partition(labels, 20, spec);
    EXPECT_TRUE(parts.ok()) << parts.status().to_string();
    expect_exact_cover(*parts, 6000);
    double sum = 0;
    for (const auto& c : class_counts(labels, *parts, 10)) sum += distinct_classes(c);
    return sum / 20;
  };
  const double skewed = mean_classes(0.05), mixed = mean_classes(1000);
  // α = 1000: every pod holds nearly 1/20 of every class (30 rows each): all 10 classes.
  EXPECT_EQ(mixed, 10.0);
  // α = 0.05: a class's rows go almost all to one or two pods.
  EXPECT_LT(skewed, 5.0) << "alpha 0.05 left pods with " << skewed << " classes on average";
}

TEST(PartitionTest, DirichletMinRowsRedrawsAndGivesUpWithAClearError) {
  const auto labels = labels_of(10, 100);
  PartitionSpec spec;
  spec.method = "dirichlet";
  spec.alpha = 0.3;
  spec.min_rows = 20;
  spec.seed = 2;
  auto parts = partition(labels, 10, spec);
  ASSERT_TRUE(parts.ok()) << parts.status().to_string();
  for (const auto& p : *parts) EXPECT_GE(p.size(), 20u);

  spec.alpha = 0.001;
  spec.min_rows = 99;  // 10 pods × 99 of 1000 rows: α this small never spreads that evenly
  auto never = partition(labels, 10, spec);
  ASSERT_FALSE(never.ok());
  EXPECT_NE(never.status().message().find("min_rows 99"), std::string::npos) << never.status().message();
}

TEST(PartitionTest, TheSameSeedGivesTheSamePartitionAndAnotherSeedAnother) {
  const auto labels = labels_of(10, 60);
  for (const char* method : {"iid", "dirichlet", "shards"}) {
    PartitionSpec spec;
    spec.method = method;
    spec.seed = 42;
    auto a = partition(labels, 10, spec), b = partition(labels, 10, spec);
    spec.seed = 43;
    auto c = partition(labels, 10, spec);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok()) << method;
    EXPECT_EQ(*a, *b) << method;
    EXPECT_NE(*a, *c) << method;
  }
}

TEST(PartitionTest, BadSettingsAreNamed) {
  const auto labels = labels_of(2, 5);
  auto error = [&](PartitionSpec spec, int64_t pods) {
    auto r = partition(labels, pods, spec);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().message();
  };
  PartitionSpec spec;
  EXPECT_NE(error(spec, 0).find("at least 1"), std::string::npos);
  EXPECT_NE(error(spec, 11).find("11 pods but only 10 rows"), std::string::npos);
  spec.method = "random";
  EXPECT_NE(error(spec, 2).find("unknown method 'random'"), std::string::npos);
  spec.method = "dirichlet";
  spec.alpha = 0;
  EXPECT_NE(error(spec, 2).find("alpha"), std::string::npos);
  spec.method = "shards";
  spec.shards_per_pod = 3;
  EXPECT_NE(error(spec, 4).find("at least 12 rows"), std::string::npos);
  auto negative = partition({0, 1, -1}, 1, PartitionSpec{});
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("row 2"), std::string::npos);
}

}  // namespace
}  // namespace fedpod::data
