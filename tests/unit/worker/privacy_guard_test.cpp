// The pod's privacy limits and budget ledger (worker/privacy_guard.h): each limit
// refuses with its reason, the budget composes across jobs, and the ledger keeps
// what was charged across reopening, a crash between reserve and settle included.
#include "fedpod/worker/privacy_guard.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "testutil.h"

namespace fedpod::worker {
namespace {

PrivacyPolicy budget(double cap) {
  PrivacyPolicy p;
  p.dp_required = true;
  p.epsilon_cap = cap;
  p.delta = 1e-5;
  return p;
}

PrivacyRequest dp_job(int64_t rounds, double sigma = 1.0) {
  PrivacyRequest r;
  r.plan = JobPlan{rounds, 1, 0, 32};
  r.dp.on = true;
  r.dp.noise_multiplier = sigma;
  r.dp.max_grad_norm = 1.0;
  r.train_rows = 1000;
  return r;
}

TEST(PrivacyLimits, EachLimitRefusesWithItsReason) {
  PrivacyPolicy p;
  p.min_batch_size = 16;
  p.min_samples_per_update = 200;
  p.max_local_steps = 50;
  EXPECT_TRUE(check_limits(p, 32, 1, 0, 1000, "a").allowed);
  EXPECT_EQ(check_limits(p, 8, 1, 0, 1000, "a").reason, "privacy_min_batch_size");
  EXPECT_EQ(check_limits(p, 16, 0, 5, 1000, "a").reason, "privacy_min_samples");     // 80 samples
  EXPECT_EQ(check_limits(p, 16, 1, 0, 1000, "a").reason, "privacy_max_local_steps");  // 63 steps
  EXPECT_TRUE(check_limits(p, 16, 0, 50, 1000, "a").allowed);
  const auto d = check_limits(p, 4, 1, 0, 1000, "pod-x");
  EXPECT_NE(d.message.find("pod-x"), std::string::npos);
  EXPECT_NE(d.message.find("privacy.min_batch_size"), std::string::npos);
  EXPECT_NE(d.message.find("4"), std::string::npos);
}

// The job sets the split fractions, so it can shrink the training split: batches of 32
// from one row are batches of one row, and 40 epochs over 20 rows are 20 rows behind
// the update, not 800.
TEST(PrivacyLimits, ATrainingSplitShrunkBelowTheLimitsIsRefused) {
  PrivacyPolicy p;
  p.min_batch_size = 16;
  p.min_samples_per_update = 200;
  const auto one_row = check_limits(p, 32, 0, 40, 1, "a");
  EXPECT_EQ(one_row.reason, "privacy_min_batch_size");
  EXPECT_NE(one_row.message.find("asks for 32 over a training split of 1 rows"), std::string::npos) << one_row.message;
  const auto repeated = check_limits(p, 16, 40, 0, 20, "a");
  EXPECT_EQ(repeated.reason, "privacy_min_samples");
  EXPECT_NE(repeated.message.find("trains on 20 (its training split's rows)"), std::string::npos) << repeated.message;
  const auto steps = check_limits(p, 16, 0, 100, 150, "a");  // 1600 draws from 150 rows
  EXPECT_EQ(steps.reason, "privacy_min_samples");
  EXPECT_TRUE(check_limits(p, 16, 0, 100, 250, "a").allowed);
  EXPECT_TRUE(check_limits(p, 16, 3, 0, 250, "a").allowed);
}

TEST(PrivacyBudget, DpRequiredNoiseFloorPlanAndCap) {
  PrivacyRequest plain = dp_job(3);
  plain.dp = {};
  EXPECT_EQ(decide_privacy(budget(3), plain, {}, "a").reason, "differential_privacy_required");
  EXPECT_TRUE(decide_privacy(PrivacyPolicy{}, plain, {}, "a").allowed);

  PrivacyPolicy floor = budget(100);
  floor.min_noise_multiplier = 1.5;
  EXPECT_EQ(decide_privacy(floor, dp_job(3, 1.0), {}, "a").reason, "privacy_noise");

  PrivacyRequest undeclared = dp_job(3);
  undeclared.plan = {};
  EXPECT_EQ(decide_privacy(budget(3), undeclared, {}, "a").reason, "privacy_plan_missing");

  // One job of 10 rounds at q = 0.032, σ = 1: ε from the accountant.
  const PrivacyDecision one = decide_privacy(budget(100), dp_job(10), {}, "a");
  ASSERT_TRUE(one.allowed);
  EXPECT_EQ(one.steps, 10 * 32);  // ceil(1000 / 32) steps per epoch
  EXPECT_NEAR(one.sample_rate, 0.032, 1e-12);
  EXPECT_NEAR(one.epsilon, privacy::dp_sgd_epsilon(0.032, 1.0, 320, 1e-5).epsilon, 1e-12);
  // A cap between one job and two: the first fits, the second does not, and the
  // message names the spend, the total and the cap.
  const double two = privacy::dp_sgd_epsilon(0.032, 1.0, 640, 1e-5).epsilon;
  const double cap = (one.epsilon + two) / 2;
  const PrivacyDecision first = decide_privacy(budget(cap), dp_job(10), {}, "a");
  ASSERT_TRUE(first.allowed) << first.message;
  const PrivacyDecision second = decide_privacy(budget(cap), dp_job(10), first.curve, "a");
  EXPECT_FALSE(second.allowed);
  EXPECT_EQ(second.reason, "privacy_budget");
  EXPECT_NE(second.message.find("budget"), std::string::npos) << second.message;
  EXPECT_NEAR(second.epsilon_after, two, 1e-9);
  // A shorter second job still fits.
  EXPECT_TRUE(decide_privacy(budget(cap), dp_job(1), first.curve, "a").allowed);
}

TEST(PrivacyLedger, ReservesSettlesAndSurvivesReopening) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "state" / "pod.privacy.json").string();
  auto ledger = PrivacyLedger::open(path, 1e-5);
  ASSERT_TRUE(ledger.ok()) << ledger.status().message();
  EXPECT_TRUE((*ledger)->spent().is_zero());
  PrivacyLedger::Entry e;
  e.key = "job-1@t";
  e.job = "job-1";
  e.user = "bob";
  e.sample_rate = 0.032;
  e.noise_multiplier = 1.0;
  e.steps_planned = 320;
  ASSERT_TRUE((*ledger)->reserve(e).ok());
  const double planned = privacy::dp_sgd_epsilon(0.032, 1.0, 320, 1e-5).epsilon;
  // A crash now: reopening finds the reservation, charged for the whole plan.
  {
    auto again = PrivacyLedger::open(path, 1e-5);
    ASSERT_TRUE(again.ok());
    ASSERT_EQ((*again)->entries().size(), 1u);
    EXPECT_EQ((*again)->entries()[0].state, "reserved");
    EXPECT_NEAR((*again)->spent().epsilon(1e-5).epsilon, planned, 1e-12);
  }
  // The job ran 64 of its steps: settled to those.
  ASSERT_TRUE((*ledger)->settle("job-1@t", 64, "t2").ok());
  EXPECT_FALSE((*ledger)->settle("job-1@t", 64, "t2").ok()) << "settled twice";
  auto reopened = PrivacyLedger::open(path, 1e-5);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ((*reopened)->entries()[0].state, "settled");
  EXPECT_EQ((*reopened)->entries()[0].steps_done, 64);
  EXPECT_NEAR((*reopened)->spent().epsilon(1e-5).epsilon, privacy::dp_sgd_epsilon(0.032, 1.0, 64, 1e-5).epsilon, 1e-12);
  auto s = (*reopened)->summary(3.0);
  EXPECT_EQ(s["jobs"].size(), 1u);
  EXPECT_EQ(s["epsilon_cap"], 3.0);
  EXPECT_GT(s["epsilon_left"].get<double>(), 0);
}

TEST(PrivacyLedger, AnUnreadableLedgerStopsThePod) {
  testing::TempDir dir;
  const std::string path = dir.write("ledger.json", "{\"format\": \"something else\"}");
  auto l = PrivacyLedger::open(path, 1e-5);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find(path), std::string::npos);
  const std::string bad = dir.write(
      "bad.json", "{\"format\": \"fedpod-privacy-ledger/1\", \"entries\": [{\"key\": \"k\", \"job\": \"j\", "
                  "\"state\": \"reserved\", \"sample_rate\": 2, \"noise_multiplier\": 1, \"steps_planned\": 1, "
                  "\"steps_done\": 0}]}");
  auto b = PrivacyLedger::open(bad, 1e-5);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("entry 1"), std::string::npos) << b.status().message();
  // Negative steps would subtract budget: refused too.
  const std::string negative = dir.write(
      "negative.json", "{\"format\": \"fedpod-privacy-ledger/1\", \"entries\": [{\"key\": \"k\", \"job\": \"j\", "
                       "\"state\": \"settled\", \"sample_rate\": 0.1, \"noise_multiplier\": 1, \"steps_planned\": 10, "
                       "\"steps_done\": -5}]}");
  auto n = PrivacyLedger::open(negative, 1e-5);
  ASSERT_FALSE(n.ok());
  EXPECT_NE(n.status().message().find("steps_done -5"), std::string::npos) << n.status().message();
}

}  // namespace
}  // namespace fedpod::worker
