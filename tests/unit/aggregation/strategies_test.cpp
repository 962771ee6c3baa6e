// The strategies beyond FedAvg (aggregation/strategies.h), each against numbers worked
// out by hand (or by a few lines of plain Python arithmetic, written out here), not
// recomputed by the code under test.
#include "fedpod/aggregation/strategies.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace fedpod::aggregation {
namespace {

torch::Tensor t(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }
std::vector<Segment> whole(const torch::Tensor& v) { return {{0, v}}; }

std::unique_ptr<Strategy> make(const std::string& name, const StrategyOptions& o = {}) {
  auto s = make_strategy(name, o);
  EXPECT_TRUE(s.ok()) << s.status().to_string();
  return s.ok() ? std::move(*s) : nullptr;
}

void expect_near(const torch::Tensor& got, std::vector<double> want, double tol = 1e-6) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i].item<double>(), want[i], tol) << "element " << i;
  }
}

// Two rounds from x0 = [0, 0, 1]. Round 1: updates [1, -2, 1] (weight 1) and
// [3, 2, 1] (weight 3), mean [2.5, 1, 1], so Δ = [2.5, 1, 0]. Round 2: both pods
// return x1 + [1, -1, 0.5]. η = 0.5, β1 = 0.5, β2 = 0.75, τ = 0.5; momentum 0.9.
torch::Tensor two_rounds(Strategy& s, torch::Tensor* after_first = nullptr) {
  torch::Tensor x = t({0, 0, 1});
  s.begin_round(x);
  EXPECT_TRUE(s.fold(whole(t({1, -2, 1})), 1).ok());
  EXPECT_TRUE(s.fold(whole(t({3, 2, 1})), 3).ok());
  auto x1 = s.finish();
  EXPECT_TRUE(x1.ok()) << x1.status().to_string();
  if (after_first) *after_first = x1->clone();
  s.begin_round(*x1);
  torch::Tensor u = *x1 + t({1, -1, 0.5});
  EXPECT_TRUE(s.fold(whole(u.clone()), 2).ok());
  EXPECT_TRUE(s.fold(whole(u.clone()), 5).ok());
  auto x2 = s.finish();
  EXPECT_TRUE(x2.ok()) << x2.status().to_string();
  return *x2;
}

const StrategyOptions kAdaptive = {{"server_lr", 0.5}, {"beta1", 0.5}, {"beta2", 0.75}, {"tau", 0.5}};

TEST(ServerOptimizerTest, FedAvgMAddsServerMomentum) {
  auto s = make("fedavgm", {{"server_lr", 0.5}, {"momentum", 0.9}});
  torch::Tensor x1;
  torch::Tensor x2 = two_rounds(*s, &x1);
  expect_near(x1, {1.25, 0.5, 1.0});     // v = [2.5, 1, 0], x = x0 + 0.5 v
  expect_near(x2, {2.875, 0.45, 1.25});  // v = 0.9 v + [1, -1, 0.5] = [3.25, -0.1, 0.5]
}

TEST(ServerOptimizerTest, FedAvgMWithLr1AndNoMomentumIsFedAvg) {
  auto s = make("fedavgm", {{"server_lr", 1.0}, {"momentum", 0.0}});
  s->begin_round(t({0, 0, 1}));
  ASSERT_TRUE(s->fold(whole(t({1, -2, 1})), 1).ok());
  ASSERT_TRUE(s->fold(whole(t({3, 2, 1})), 3).ok());
  expect_near(*s->finish(), {2.5, 1.0, 1.0});
}

TEST(ServerOptimizerTest, FedAdagrad) {
  auto s = make("fedadagrad", {{"server_lr", 0.5}, {"beta1", 0.5}, {"tau", 0.5}});
  torch::Tensor x1;
  torch::Tensor x2 = two_rounds(*s, &x1);
  expect_near(x1, {0.204950976, 0.154508497, 1.0});
  expect_near(x2, {0.378636451, 0.092008497, 1.103553391});
  auto st = s->state();
  ASSERT_EQ(st.size(), 2u);
  expect_near(st[0], {1.125, -0.25, 0.25});  // m
  expect_near(st[1], {7.5, 2.25, 0.5});      // v = τ² + Δ1² + Δ2²
}

TEST(ServerOptimizerTest, FedAdam) {
  auto s = make("fedadam", kAdaptive);
  torch::Tensor x1;
  torch::Tensor x2 = two_rounds(*s, &x1);
  expect_near(x1, {0.342864856, 0.215250437, 1.0});
  expect_near(x2, {0.664293428, 0.116071269, 1.131482908});
  expect_near(s->state()[1], {1.5625, 0.578125, 0.203125});
}

TEST(ServerOptimizerTest, FedYogi) {
  auto s = make("fedyogi", kAdaptive);
  torch::Tensor x1;
  torch::Tensor x2 = two_rounds(*s, &x1);
  expect_near(x1, {0.338516481, 0.207106781, 1.0});
  expect_near(x2, {0.659945052, 0.11560043, 1.125});
  expect_near(s->state()[1], {1.5625, 0.75, 0.25});
}

// A resumed job: the state saved after round 1, restored into a new strategy, gives
// round 2 exactly as an uninterrupted run does.
TEST(ServerOptimizerTest, StateCarriesThroughRestore) {
  auto a = make("fedadam", kAdaptive);
  torch::Tensor x1;
  torch::Tensor x2 = two_rounds(*a, &x1);
  auto b = make("fedadam", kAdaptive);
  b->begin_round(t({0, 0, 1}));
  ASSERT_TRUE(b->fold(whole(t({1, -2, 1})), 1).ok());
  ASSERT_TRUE(b->fold(whole(t({3, 2, 1})), 3).ok());
  auto first = b->finish();
  ASSERT_TRUE(first.ok());
  auto c = make("fedadam", kAdaptive);
  ASSERT_TRUE(c->restore(b->state()).ok());
  c->begin_round(*first);
  torch::Tensor u = *first + t({1, -1, 0.5});
  ASSERT_TRUE(c->fold(whole(u.clone()), 1).ok());
  EXPECT_TRUE(torch::equal(*c->finish(), x2));
  EXPECT_FALSE(c->restore({t({1, 2, 3})}).ok());  // adam carries m and v
}

// Batch-norm statistics take the plain mean and integer buffers the maximum, not the
// optimizer's step.
TEST(ServerOptimizerTest, BuffersTakeTheMeanAndIntegerBuffersTheMaximum) {
  auto s = make("fedadam", kAdaptive);
  s->set_average_ranges({{1, 1}});
  s->set_max_ranges({{2, 1}});
  s->begin_round(t({0, 0, 1}));
  ASSERT_TRUE(s->fold(whole(t({1, -2, 1})), 1).ok());
  ASSERT_TRUE(s->fold(whole(t({3, 2, 4})), 3).ok());
  expect_near(*s->finish(), {0.342864856, 1.0, 4.0});
}

TEST(RobustTest, CoordinateWiseMedianOfAnEvenCountAveragesTheMiddleTwo) {
  auto s = make("median");
  s->begin_round(t({0, 0, 0}));
  for (auto u : {t({1, 10, -1}), t({2, 20, -2}), t({3, 30, -3}), t({100, -5, 0})}) ASSERT_TRUE(s->fold(whole(u), 1).ok());
  expect_near(*s->finish(), {2.5, 15, -1.5});
  s->begin_round(t({0, 0, 0}));
  for (auto u : {t({1, 10, -1}), t({2, 20, -2}), t({100, -5, 0})}) ASSERT_TRUE(s->fold(whole(u), 7).ok());
  expect_near(*s->finish(), {2, 10, -1});  // odd: the middle value; weights play no part
}

TEST(RobustTest, TrimmedMeanDropsTheExtremesOfEachCoordinate) {
  auto s = make("trimmed_mean", {{"trim", 0.2}});
  s->begin_round(t({0, 0, 0}));
  for (auto u : {t({1, 10, -1}), t({2, 20, -2}), t({3, 30, -3}), t({100, -5, 0}), t({4, 40, 7})}) {
    ASSERT_TRUE(s->fold(whole(u), 1).ok());
  }
  expect_near(*s->finish(), {3, 20, -1});  // one dropped at each end of each column
}

// Five updates, f = 1: each is scored by its 2 nearest others. Squared distances:
// a-b 1, a-c 1, a-d 8, b-c 2, b-d 5, c-d 5, e far: scores a 2, b 3, c 3, d 10, e 309.
TEST(RobustTest, KrumPicksTheUpdateClosestToItsNeighboursAndMultiKrumAveragesTheBest) {
  const std::vector<torch::Tensor> u = {t({0, 0}), t({1, 0}), t({0, 1}), t({2, 2}), t({10, 10})};
  const std::vector<double> w = {1, 2, 1, 1, 50};
  auto krum = make("krum", {{"byzantine", 1}});
  krum->begin_round(t({0, 0}));
  for (size_t i = 0; i < u.size(); ++i) ASSERT_TRUE(krum->fold(whole(u[i]), w[i]).ok());
  expect_near(*krum->finish(), {0, 0});
  EXPECT_EQ(static_cast<RobustAggregate&>(*krum).selected(), (std::vector<int>{0}));

  auto multi = make("krum", {{"byzantine", 1}, {"select", 3}});
  multi->begin_round(t({0, 0}));
  for (size_t i = 0; i < u.size(); ++i) ASSERT_TRUE(multi->fold(whole(u[i]), w[i]).ok());
  expect_near(*multi->finish(), {0.5, 0.25});  // (1·a + 2·b + 1·c) / 4; e's weight of 50 is out

  // Krum needs K > 2f + 2.
  auto few = make("krum", {{"byzantine", 1}});
  few->begin_round(t({0, 0}));
  for (size_t i = 0; i < 4; ++i) ASSERT_TRUE(few->fold(whole(u[i]), 1).ok());
  auto r = few->finish();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("needs more than 2f + 2 = 4 updates"), std::string::npos) << r.status().message();
}

TEST(RobustTest, MemoryBoundRefusesTheUpdateThatWouldExceedIt) {
  auto s = make("median", {{"max_memory_mb", 1}});  // 1 MiB: two updates of 100k floats fit, three do not
  s->begin_round(torch::zeros({100000}));
  ASSERT_TRUE(s->fold(whole(torch::ones({100000})), 1).ok());
  ASSERT_TRUE(s->fold(whole(torch::ones({100000})), 1).ok());
  Status third = s->fold(whole(torch::ones({100000})), 1);
  ASSERT_FALSE(third.ok());
  EXPECT_NE(third.message().find("exceed max_memory_mb 1"), std::string::npos) << third.message();
  EXPECT_EQ(s->folded(), 2);
}

TEST(MakeStrategyTest, UnknownNamesOptionsAndValuesAreNamed) {
  auto bad = make_strategy("fedsgd", {});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown 'fedsgd' (fedavg, fedprox, fedavgm, fedadagrad, fedadam, fedyogi, median, "
                                        "trimmed_mean, krum)"),
            std::string::npos);
  auto opt = make_strategy("fedadam", {{"momentum", 0.9}});
  ASSERT_FALSE(opt.ok());
  EXPECT_NE(opt.status().message().find("unknown option 'momentum' (server_lr, beta1, beta2, tau, proximal_mu)"), std::string::npos);
  auto range = make_strategy("trimmed_mean", {{"trim", 0.5}});
  ASSERT_FALSE(range.ok());
  EXPECT_NE(range.status().message().find("trim must be in [0, 0.5)"), std::string::npos);
  EXPECT_FALSE(make_strategy("fedavg", {{"server_lr", 1}}).ok());
  for (const auto& name : strategy_names()) EXPECT_EQ((*make_strategy(name, {}))->name(), name);
  EXPECT_TRUE(holds_all_updates("krum"));
  EXPECT_FALSE(holds_all_updates("fedadam"));
}

TEST(MakeStrategyTest, FedProxMuDefaultsRangesAndTheProximalMuOfOtherStrategies) {
  EXPECT_EQ(proximal_mu("fedprox", {}), 0.01);
  EXPECT_EQ(proximal_mu("fedprox", {{"mu", 0.5}}), 0.5);
  EXPECT_EQ(proximal_mu("fedavg", {}), 0.0);
  EXPECT_EQ(proximal_mu("fedadam", {{"proximal_mu", 0.1}}), 0.1);
  EXPECT_TRUE(make_strategy("fedadam", {{"proximal_mu", 0.1}}).ok());
  auto negative = make_strategy("fedprox", {{"mu", -1}});
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("mu must be 0 or above"), std::string::npos) << negative.status().message();
  auto wrong_key = make_strategy("fedprox", {{"proximal_mu", 0.1}});
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_NE(wrong_key.status().message().find("unknown option 'proximal_mu' (mu)"), std::string::npos)
      << wrong_key.status().message();
  // FedProx aggregates as FedAvg: the weighted mean of the updates.
  auto s = make("fedprox", {{"mu", 0.1}});
  EXPECT_EQ(s->name(), "fedprox");
  s->begin_round(t({0, 0, 1}));
  ASSERT_TRUE(s->fold(whole(t({1, -2, 1})), 1).ok());
  ASSERT_TRUE(s->fold(whole(t({3, 2, 1})), 3).ok());
  expect_near(*s->finish(), {2.5, 1.0, 1.0});
}

}  // namespace
}  // namespace fedpod::aggregation
