// Tests for fedpod/aggregation: FedAvg against hand-computed averages, segment tiling
// checks that leave the round untouched, and the one-accumulator memory bound.
#include "fedpod/aggregation/fedavg.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace fedpod::aggregation {
namespace {

torch::Tensor vec(std::vector<float> v) { return torch::tensor(v, torch::kFloat32); }

// Splits `values` into segments at the given cut points, listed in `order`.
std::vector<Segment> pieces(const torch::Tensor& values, const std::vector<int64_t>& cuts,
                            const std::vector<int>& order) {
  std::vector<int64_t> bounds = {0};
  bounds.insert(bounds.end(), cuts.begin(), cuts.end());
  bounds.push_back(values.numel());
  std::vector<Segment> out;
  for (int i : order) {
    out.push_back({bounds[i], values.narrow(0, bounds[i], bounds[i + 1] - bounds[i])});
  }
  return out;
}

std::vector<Segment> whole(const torch::Tensor& values) { return {{0, values}}; }

void expect_values(const torch::Tensor& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size()));
  torch::Tensor a = actual.contiguous();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_FLOAT_EQ(a.data_ptr<float>()[i], expected[i]) << "element " << i;
  }
}

class FedAvgTest : public ::testing::Test {
 protected:
  void SetUp() override { fedavg_.begin_round(global_); }

  torch::Tensor global_ = torch::zeros({6});
  torch::Tensor u1_ = vec({1, 2, 3, 4, 5, 6});
  torch::Tensor u2_ = vec({5, 6, 7, 8, 9, 10});
  torch::Tensor u3_ = vec({-4, 0, 4, 8, 0, 2});
  FedAvg fedavg_;
};

// ---- Averages -------------------------------------------------------------------------

TEST_F(FedAvgTest, TwoUpdatesWeightedOneAndThree) {
  ASSERT_TRUE(fedavg_.fold(whole(u1_), 1).ok());
  ASSERT_TRUE(fedavg_.fold(whole(u2_), 3).ok());
  EXPECT_EQ(fedavg_.folded(), 2);
  EXPECT_DOUBLE_EQ(fedavg_.total_weight(), 4);
  auto out = fedavg_.finish();
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  // (1 * u1 + 3 * u2) / 4
  expect_values(*out, {4, 5, 6, 7, 8, 9});
  EXPECT_EQ(out->sizes().vec(), std::vector<int64_t>{6});
  EXPECT_EQ(out->scalar_type(), torch::kFloat32);
}

TEST_F(FedAvgTest, ThreeUpdatesInOutOfOrderPieces) {
  // u1 whole, u2 in three pieces given middle-last-first, u3 in two pieces reversed.
  ASSERT_TRUE(fedavg_.fold(whole(u1_), 1).ok());
  ASSERT_TRUE(fedavg_.fold(pieces(u2_, {2, 3}, {1, 2, 0}), 3).ok());
  ASSERT_TRUE(fedavg_.fold(pieces(u3_, {1}, {1, 0}), 4).ok());
  auto out = fedavg_.finish();
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  // (u1 + 3 u2 + 4 u3) / 8
  expect_values(*out, {0, 2.5, 5, 7.5, 4, 5.5});
  // Inputs are read, never written.
  expect_values(u2_, {5, 6, 7, 8, 9, 10});
  expect_values(u3_, {-4, 0, 4, 8, 0, 2});
}

TEST_F(FedAvgTest, SingleUpdateIsReturnedAsIs) {
  ASSERT_TRUE(fedavg_.fold(pieces(u3_, {1, 2, 3, 4, 5}, {5, 3, 1, 0, 2, 4}), 17).ok());
  auto out = fedavg_.finish();
  ASSERT_TRUE(out.ok());
  expect_values(*out, {-4, 0, 4, 8, 0, 2});
}

TEST_F(FedAvgTest, FractionalWeightsAndShapedSegments) {
  // Segments may be shaped (one per parameter tensor) as long as they are contiguous.
  std::vector<Segment> a = {{0, vec({2, 4, 6, 8}).view({2, 2})}, {4, vec({1, 1})}};
  std::vector<Segment> b = {{4, vec({3, 5})}, {0, vec({0, 0, 0, 0}).view({1, 4})}};
  ASSERT_TRUE(fedavg_.fold(a, 0.5).ok());
  ASSERT_TRUE(fedavg_.fold(b, 1.5).ok());
  auto out = fedavg_.finish();
  ASSERT_TRUE(out.ok());
  // (0.5 a + 1.5 b) / 2
  expect_values(*out, {0.5, 1, 1.5, 2, 2.5, 4});
}

TEST_F(FedAvgTest, ResultIsANewTensorAndGlobalIsUntouched) {
  ASSERT_TRUE(fedavg_.fold(whole(u1_), 2).ok());
  auto out = fedavg_.finish();
  ASSERT_TRUE(out.ok());
  EXPECT_NE(out->data_ptr(), global_.data_ptr());
  EXPECT_NE(out->data_ptr(), u1_.data_ptr());
  EXPECT_TRUE(torch::equal(global_, torch::zeros({6})));
}

// Integer buffers (num_batches_tracked) take the maximum; everything else the mean.
TEST(FedAvgMaxRangesTest, MaxRangesTakeTheLargestValueWhateverTheTiling) {
  FedAvg f;
  f.set_max_ranges({{1, 2}, {5, 1}});
  f.begin_round(vec({0, 0, 0, 0, 0, 0}));
  // Segments cut across the ranges, in any order.
  ASSERT_TRUE(f.fold(pieces(vec({1, 10, 3, 2, 2, 7}), {2, 4}, {2, 0, 1}), 1).ok());
  ASSERT_TRUE(f.fold(pieces(vec({3, 4, 9, 4, 6, 5}), {1, 5}, {1, 2, 0}), 3).ok());
  auto out = f.finish();
  ASSERT_TRUE(out.ok());
  // Weighted means (1*a + 3*b) / 4 outside the ranges; maxima inside.
  expect_values(*out, {2.5f, 10, 9, 3.5f, 5, 7});
}

TEST(FedAvgMaxRangesTest, ARejectedUpdateLeavesTheMaximaUntouched) {
  FedAvg f;
  f.set_max_ranges({{0, 1}});
  f.begin_round(vec({0, 0}));
  ASSERT_TRUE(f.fold(whole(vec({2, 4})), 1).ok());
  EXPECT_FALSE(f.fold({{0, vec({99})}}, 1).ok());  // does not tile: refused before any change
  ASSERT_TRUE(f.fold(whole(vec({1, 8})), 1).ok());
  auto out = f.finish();
  ASSERT_TRUE(out.ok());
  expect_values(*out, {2, 6});
  // The next round starts over.
  f.begin_round(*out);
  ASSERT_TRUE(f.fold(whole(vec({-5, 0})), 2).ok());
  expect_values(*f.finish(), {-5, 0});
}

TEST(FedAvgRandomTest, MatchesDoublePrecisionReference) {
  torch::manual_seed(301);
  const int64_t P = 1000;
  const std::vector<double> weights = {12, 1, 250, 33, 7};
  FedAvg fedavg;
  fedavg.begin_round(torch::zeros({P}));
  torch::Tensor sum = torch::zeros({P}, torch::kFloat64);
  for (size_t k = 0; k < weights.size(); ++k) {
    torch::Tensor u = torch::randn({P});
    // Cut at a different place for each update.
    std::vector<int64_t> cuts = {static_cast<int64_t>(37 * (k + 1)), 600};
    ASSERT_TRUE(fedavg.fold(pieces(u, cuts, {2, 0, 1}), weights[k]).ok());
    sum += weights[k] * u.to(torch::kFloat64);
  }
  auto out = fedavg.finish();
  ASSERT_TRUE(out.ok());
  torch::Tensor reference = sum / (12 + 1 + 250 + 33 + 7);
  EXPECT_LT((out->to(torch::kFloat64) - reference).abs().max().item<double>(), 1e-5);
}

TEST_F(FedAvgTest, BeginRoundResetsState) {
  ASSERT_TRUE(fedavg_.fold(whole(u1_), 1).ok());
  ASSERT_TRUE(fedavg_.finish().ok());
  fedavg_.begin_round(global_);
  EXPECT_EQ(fedavg_.folded(), 0);
  EXPECT_DOUBLE_EQ(fedavg_.total_weight(), 0);
  ASSERT_TRUE(fedavg_.fold(whole(u2_), 5).ok());
  auto out = fedavg_.finish();
  ASSERT_TRUE(out.ok());
  expect_values(*out, {5, 6, 7, 8, 9, 10});  // nothing of the previous round left
}

// ---- Memory bound ---------------------------------------------------------------------

TEST(FedAvgMemoryTest, OneAccumulatorOfModelSizeWhateverTheUpdateCount) {
  const int64_t P = 4096;
  FedAvg fedavg;
  fedavg.begin_round(torch::zeros({P}));
  ASSERT_EQ(fedavg.accumulator().numel(), P);
  const void* acc = fedavg.accumulator().data_ptr();
  torch::Tensor u = torch::ones({P});
  for (int k = 1; k <= 64; ++k) {
    ASSERT_TRUE(fedavg.fold(pieces(u, {P / 3, P / 2}, {1, 0, 2}), k).ok());
    EXPECT_EQ(fedavg.accumulator().numel(), P);
    EXPECT_EQ(fedavg.accumulator().data_ptr(), acc);  // folded in place, never reallocated
  }
  EXPECT_EQ(fedavg.folded(), 64);
  auto out = fedavg.finish();
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(torch::allclose(*out, torch::ones({P})));
}

// ---- Rejections -----------------------------------------------------------------------

class FedAvgRejectTest : public FedAvgTest {
 protected:
  // One good update is in; every rejected fold must leave exactly that state.
  void SetUp() override {
    FedAvgTest::SetUp();
    ASSERT_TRUE(fedavg_.fold(whole(u1_), 1).ok());
    before_ = fedavg_.accumulator().clone();
  }

  void expect_rejected(const std::vector<Segment>& update, double weight,
                       const std::string& message) {
    Status s = fedavg_.fold(update, weight);
    EXPECT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(s.message(), message);
    EXPECT_EQ(fedavg_.folded(), 1);
    EXPECT_DOUBLE_EQ(fedavg_.total_weight(), 1);
    EXPECT_TRUE(torch::equal(fedavg_.accumulator(), before_));
  }

  // After the rejections, the round still finishes with the one good update.
  void TearDown() override {
    auto out = fedavg_.finish();
    ASSERT_TRUE(out.ok());
    expect_values(*out, {1, 2, 3, 4, 5, 6});
  }

  torch::Tensor before_;
};

TEST_F(FedAvgRejectTest, Gap) {
  expect_rejected({{0, vec({1, 1})}, {3, vec({1, 1, 1})}}, 1,
                  "update segments leave a gap or overlap at element 2");
}

TEST_F(FedAvgRejectTest, Overlap) {
  expect_rejected({{0, vec({1, 1, 1})}, {2, vec({1, 1, 1, 1})}}, 1,
                  "update segments leave a gap or overlap at element 3");
  // The same segment twice.
  expect_rejected({{0, vec({9, 9, 9})}, {0, vec({9, 9, 9})}, {3, vec({9, 9, 9})}}, 1,
                  "update segments leave a gap or overlap at element 3");
}

TEST_F(FedAvgRejectTest, NegativeOffset) {
  expect_rejected({{-1, vec({1, 1, 1, 1, 1, 1, 1})}}, 1,
                  "update segments leave a gap or overlap at element 0");
}

TEST_F(FedAvgRejectTest, WrongTotal) {
  expect_rejected({{0, vec({1, 1, 1, 1, 1})}}, 1, "update covers 5 elements, the model has 6");
  expect_rejected({{0, vec({1, 1, 1, 1})}, {4, vec({1, 1, 1})}}, 1,
                  "update covers 7 elements, the model has 6");
  expect_rejected({}, 1, "update covers 0 elements, the model has 6");
}

TEST_F(FedAvgRejectTest, WrongDtypeOrLayout) {
  expect_rejected({{0, vec({1, 1, 1})}, {3, torch::ones({3}, torch::kFloat64)}}, 1,
                  "update segment at offset 3 is not contiguous float32");
  torch::Tensor strided = torch::ones({6, 2}).select(1, 0);
  ASSERT_FALSE(strided.is_contiguous());
  expect_rejected({{0, strided}}, 1, "update segment at offset 0 is not contiguous float32");
  expect_rejected({{0, torch::Tensor()}}, 1,
                  "update segment at offset 0 is not contiguous float32");
}

TEST_F(FedAvgRejectTest, NonPositiveWeight) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double w : {0.0, -3.0, nan, inf}) {
    SCOPED_TRACE(w);
    expect_rejected(whole(u2_), w,
                    "update weight must be a positive number, got " + std::to_string(w));
  }
}

// Finite values whose weighted sum could overflow float32 (and make the round's
// parameters infinite) are refused before anything is added.
TEST_F(FedAvgRejectTest, ValuesWhoseWeightedSumCouldOverflowFloat32) {
  torch::Tensor huge = vec({1, 2, 3e38f, 4, 5, 6});
  expect_rejected(whole(huge), 1,
                  "update refused: its largest value in magnitude is 3e+38; weighted by 1 and added to this "
                  "round's other updates it could overflow float32 (largest 3.4e+38) and make the round's "
                  "parameters infinite");
  // Small alone, too large once weighted by its samples.
  expect_rejected(pieces(vec({1, 2, 3, -1e36f, 5, 6}), {3}, {1, 0}), 1000,
                  "update refused: its largest value in magnitude is 1e+36; weighted by 1000 and added to this "
                  "round's other updates it could overflow float32 (largest 3.4e+38) and make the round's "
                  "parameters infinite");
  // A caller that checked the values passes their largest along; it is believed.
  std::vector<Segment> told = whole(u2_);
  told[0].max_abs = 2e38f;
  expect_rejected(told, 1,
                  "update refused: its largest value in magnitude is 2e+38; weighted by 1 and added to this "
                  "round's other updates it could overflow float32 (largest 3.4e+38) and make the round's "
                  "parameters infinite");
  expect_rejected(whole(vec({1, 2, std::numeric_limits<float>::quiet_NaN(), 4, 5, 6})), 1,
                  "update holds NaN or infinity");
}

// The bound is on the sum of the round's updates: each one below it alone, the one
// that would carry the sum past it is refused, the others make the round.
TEST(FedAvgOverflowTest, TheUpdateThatWouldCarryTheSumPastFloat32IsRefusedAndTheOthersKept) {
  FedAvg fedavg;
  fedavg.begin_round(torch::zeros({3}));
  ASSERT_TRUE(fedavg.fold(whole(vec({1e38f, -1e38f, 1})), 1).ok());
  Status s = fedavg.fold(whole(vec({1e38f, 1e38f, 1})), 1);  // 2e38 > FLT_MAX / 2
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("could overflow float32"), std::string::npos) << s.message();
  ASSERT_TRUE(fedavg.fold(whole(vec({0, 0, 3})), 1).ok());  // small: still welcome
  EXPECT_EQ(fedavg.folded(), 2);
  auto out = fedavg.finish();
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  expect_values(*out, {5e37f, -5e37f, 2});
  // A new round starts from a zero bound.
  fedavg.begin_round(torch::zeros({3}));
  EXPECT_TRUE(fedavg.fold(whole(vec({1e38f, 1e38f, 1})), 1).ok());
}

// ---- Round state ----------------------------------------------------------------------

TEST(FedAvgStateTest, FinishWithoutFoldsFails) {
  FedAvg fedavg;
  fedavg.begin_round(torch::zeros({3}));
  auto out = fedavg.finish();
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(out.status().message(), "no update was folded in this round");
}

TEST(FedAvgStateTest, FoldBeforeBeginRoundFails) {
  FedAvg fedavg;
  Status s = fedavg.fold({{0, torch::ones({3})}}, 1);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(), "fold before begin_round");
  EXPECT_EQ(fedavg.folded(), 0);
}

TEST(FedAvgStateTest, FinishTwiceFailsInsteadOfCrashing) {
  // Regression: the second finish() divided an undefined accumulator (a c10::Error).
  FedAvg fedavg;
  fedavg.begin_round(torch::zeros({3}));
  ASSERT_TRUE(fedavg.fold({{0, torch::ones({3})}}, 1).ok());
  ASSERT_TRUE(fedavg.finish().ok());
  auto again = fedavg.finish();
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  // And a fold after finish needs a new round.
  EXPECT_EQ(fedavg.fold({{0, torch::ones({3})}}, 1).code(), StatusCode::kFailedPrecondition);
}

TEST(CheckTilingTest, EmptyModelAndEmptySegments) {
  EXPECT_TRUE(check_tiling({}, 0).ok());
  // A zero-length segment in the middle does not break the tiling.
  EXPECT_TRUE(
      check_tiling({{0, torch::ones({2})}, {2, torch::ones({0})}, {2, torch::ones({1})}}, 3).ok());
}

TEST(MakeStrategyTest, KnownAndUnknownNames) {
  auto s = make_strategy("fedavg");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->name(), "fedavg");
  EXPECT_NE(dynamic_cast<FedAvg*>(s.get()), nullptr);
  EXPECT_EQ(make_strategy("fedprox"), nullptr);
  EXPECT_EQ(make_strategy(""), nullptr);
  // It works through the interface.
  s->begin_round(torch::zeros({2}));
  ASSERT_TRUE(s->fold({{0, vec({2, 4})}}, 1).ok());
  ASSERT_TRUE(s->fold({{0, vec({4, 8})}}, 1).ok());
  EXPECT_EQ(s->folded(), 2);
  auto out = s->finish();
  ASSERT_TRUE(out.ok());
  expect_values(*out, {3, 6});
}

}  // namespace
}  // namespace fedpod::aggregation

namespace fedpod::aggregation {
namespace {

// FedAvg recycles the buffer it handed out last round, but only once the caller has
// let go of it: a result still held (e.g. by frames in flight) is never overwritten.
TEST(FedAvgReuseTest, HeldResultIsNeverOverwritten) {
  FedAvg f;
  torch::Tensor global = torch::zeros({4});
  f.begin_round(global);
  ASSERT_TRUE(f.fold({{0, torch::tensor({1.f, 2.f, 3.f, 4.f})}}, 1.0).ok());
  torch::Tensor round1 = *f.finish();
  f.begin_round(round1);
  ASSERT_TRUE(f.fold({{0, torch::tensor({9.f, 9.f, 9.f, 9.f})}}, 2.0).ok());
  torch::Tensor round2 = *f.finish();
  EXPECT_TRUE(torch::equal(round1, torch::tensor({1.f, 2.f, 3.f, 4.f})));
  EXPECT_TRUE(torch::equal(round2, torch::tensor({9.f, 9.f, 9.f, 9.f})));
  EXPECT_NE(round1.data_ptr(), round2.data_ptr());
}

// Regression: the first version checked only storage().use_count(), which a plain
// copy of the returned handle does not raise, and overwrote the caller's result.
TEST(FedAvgReuseTest, HeldViewOfResultIsNeverOverwritten) {
  FedAvg f;
  f.begin_round(torch::zeros({4}));
  ASSERT_TRUE(f.fold({{0, torch::tensor({1.f, 2.f, 3.f, 4.f})}}, 1.0).ok());
  torch::Tensor view = f.finish()->narrow(0, 1, 2);  // only a view survives
  f.begin_round(torch::zeros({4}));
  ASSERT_TRUE(f.fold({{0, torch::tensor({9.f, 9.f, 9.f, 9.f})}}, 1.0).ok());
  ASSERT_TRUE(f.finish().ok());
  EXPECT_TRUE(torch::equal(view, torch::tensor({2.f, 3.f})));
}

TEST(FedAvgReuseTest, ReleasedResultBecomesTheNextAccumulator) {
  FedAvg f;
  f.begin_round(torch::zeros({4}));
  ASSERT_TRUE(f.fold({{0, torch::tensor({1.f, 2.f, 3.f, 4.f})}}, 1.0).ok());
  void* first = nullptr;
  {
    torch::Tensor round1 = *f.finish();
    first = round1.data_ptr();
  }  // the caller drops round 1's result
  f.begin_round(torch::zeros({4}));
  EXPECT_EQ(f.accumulator().data_ptr(), first);
  // Reuse must not leak old values into the new average.
  ASSERT_TRUE(f.fold({{0, torch::tensor({2.f, 2.f, 2.f, 2.f})}}, 3.0).ok());
  ASSERT_TRUE(f.fold({{0, torch::tensor({6.f, 6.f, 6.f, 6.f})}}, 1.0).ok());
  EXPECT_TRUE(torch::allclose(*f.finish(), torch::full({4}, 3.f)));
}

}  // namespace
}  // namespace fedpod::aggregation
