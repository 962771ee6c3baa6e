// The RDP accountant against figures published with their inputs: hard-coded values
// of TensorFlow Privacy's and Opacus's own tests and docstrings, and the figures of
// their MNIST tutorials (docs/privacy.md lists every case with its source). Each is
// checked to the precision it was published with.
#include "fedpod/privacy/accountant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace fedpod::privacy {
namespace {

// TensorFlow Privacy's compute_dp_sgd_privacy orders (compute_dp_sgd_privacy_lib.py).
std::vector<double> tf_cli_orders() {
  std::vector<double> o = {1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5};
  for (int a = 5; a < 64; ++a) o.push_back(a);
  for (double a : {128., 256., 512.}) o.push_back(a);
  return o;
}

// Opacus's RDPAccountant DEFAULT_ALPHAS, also TensorFlow Privacy's MNIST tutorials'.
std::vector<double> opacus_orders() {
  std::vector<double> o;
  for (int x = 1; x < 100; ++x) o.push_back(1 + x / 10.0);
  for (int a = 12; a < 64; ++a) o.push_back(a);
  return o;
}

std::vector<double> range_orders(int from, int to) {
  std::vector<double> o;
  for (int a = from; a < to; ++a) o.push_back(a);
  return o;
}

Epsilon eps_of(double q, double sigma, int64_t steps, double delta, const std::vector<double>& orders,
               Conversion c) {
  return epsilon_from_rdp(orders, compute_rdp(q, sigma, steps, orders), delta, c);
}

// TF Privacy rdp_accountant_test.py: raw RDP values (places=5 / 1e-5 tolerance).
TEST(Accountant, RdpValuesOfTensorFlowPrivacyTests) {
  EXPECT_NEAR(compute_rdp(0.1, 2, 10, {5})[0], 0.07737, 1e-5);
  const std::vector<double> orders = {1.5, 2.5, 5, 50, 100};
  const std::vector<double> want = {0.00065, 0.001085, 0.00218075, 0.023846, 167.416307};
  auto got = compute_rdp(0.01, 2.5, 50, orders);
  for (size_t i = 0; i < orders.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "order " << orders[i];
  EXPECT_TRUE(std::isinf(rdp_subsampled_gaussian(0.01, 2.5, INFINITY)));
}

// TF Privacy rdp_accountant_test.py (classic conversion, before 2020-12):
// q 0.01, σ 4, 10000 steps, orders 2..32, δ 1e-5 → ε 1.258575 at order 20.
TEST(Accountant, TensorFlowPrivacyClassicConversion) {
  Epsilon e = eps_of(0.01, 4, 10000, 1e-5, range_orders(2, 33), Conversion::kMironov2017);
  EXPECT_NEAR(e.epsilon, 1.258575, 5e-6);
  EXPECT_EQ(e.order, 20);
}

// TF Privacy test_check_composition: two mechanisms composed, classic → 8.509656 at 2.5.
TEST(Accountant, TensorFlowPrivacyComposition) {
  const std::vector<double> orders = {1.25, 1.5, 1.75, 2, 2.5, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 64, 256};
  auto a = compute_rdp(1e-4, 0.4, 40000, orders);
  auto b = compute_rdp(0.1, 2, 100, orders);
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  Epsilon e = epsilon_from_rdp(orders, a, 1e-5, Conversion::kMironov2017);
  EXPECT_NEAR(e.epsilon, 8.509656, 5e-6);
  EXPECT_EQ(e.order, 2.5);
}

// Opacus analysis/rdp.py docstring: (q 1e-5, σ 1, 10 steps) + (q 1e-4, σ 3, 4 steps),
// orders 2..32, δ 1e-5 → (0.336, 23).
TEST(Accountant, OpacusDocstringExample) {
  const auto orders = range_orders(2, 33);
  auto a = compute_rdp(1e-5, 1.0, 10, orders);
  auto b = compute_rdp(1e-4, 3.0, 4, orders);
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  Epsilon e = epsilon_from_rdp(orders, a, 1e-5, Conversion::kBalle2020);
  EXPECT_NEAR(e.epsilon, 0.336, 5e-4);
  EXPECT_EQ(e.order, 23);
}

// Opacus tests/accountants_test.py: σ 1.5, q 0.04, 90 epochs (2250 steps), δ 1e-5 → 7.32911117143.
TEST(Accountant, OpacusAccountantTest) {
  Epsilon e = eps_of(0.04, 1.5, 2250, 1e-5, opacus_orders(), Conversion::kBalle2020);
  EXPECT_NEAR(e.epsilon, 7.32911117143, 1e-8);
  EXPECT_NEAR(e.order, 3.9, 1e-12);
}

// TF Privacy compute_dp_sgd_privacy_test.py (improved conversion): the CLI's orders,
// steps = ceil(epochs·N/B).
TEST(Accountant, TensorFlowPrivacyComputeDpSgdPrivacyTests) {
  auto steps = [](double n, double b, double epochs) { return static_cast<int64_t>(std::ceil(epochs * n / b)); };
  EXPECT_NEAR(eps_of(150.0 / 60000, 1.3, steps(60000, 150, 15), 1e-5, tf_cli_orders(), Conversion::kBalle2020).epsilon,
              0.7242234026109595, 1e-9);
  EXPECT_NEAR(eps_of(100.0 / 100000, 1.0, steps(100000, 100, 30), 1e-7, tf_cli_orders(), Conversion::kBalle2020).epsilon,
              1.4154988495444842, 1e-9);
}

struct Published {
  const char* source;
  double q, sigma;
  int64_t steps;
  double epsilon;  // as published, two decimals
};

// The MNIST tutorials' tables (N 60000, δ 1e-5, classic conversion, two decimals).
TEST(Accountant, TutorialTables) {
  const std::vector<Published> cases = {
      // TensorFlow Privacy tutorials/README.md: B 256, steps = epochs·(60000 // 256).
      {"tf-privacy README σ1.1 1 epoch", 256.0 / 60000, 1.1, 1 * 234, 1.03},
      {"tf-privacy README σ1.1 2 epochs", 256.0 / 60000, 1.1, 2 * 234, 1.11},
      {"tf-privacy README σ1.1 60 epochs", 256.0 / 60000, 1.1, 60 * 234, 3.01},
      {"tf-privacy README σ1.3 15 epochs", 256.0 / 60000, 1.3, 15 * 234, 1.19},
      {"tf-privacy README σ0.7 45 epochs", 256.0 / 60000, 0.7, 45 * 234, 7.10},
      // Opacus examples/mnist_README.md: q 0.004 (B 240), 250 steps per epoch.
      {"opacus mnist README σ0.7 45 epochs", 0.004, 0.7, 45 * 250, 6.86},
      {"opacus mnist README σ1.1 60 epochs", 0.004, 1.1, 60 * 250, 2.91},
      {"opacus mnist README σ1.3 15 epochs", 0.004, 1.3, 15 * 250, 1.16},
  };
  for (const auto& c : cases) {
    Epsilon e = eps_of(c.q, c.sigma, c.steps, 1e-5, opacus_orders(), Conversion::kMironov2017);
    EXPECT_NEAR(e.epsilon, c.epsilon, 0.005) << c.source;
  }
  // tf-privacy README's CLI example: --N=60000 --batch_size=256 --noise_multiplier=1.1
  // --epochs=60 --delta=1e-5 → 3.01 (CLI orders, ceil steps).
  EXPECT_NEAR(eps_of(256.0 / 60000, 1.1, 14063, 1e-5, tf_cli_orders(), Conversion::kMironov2017).epsilon, 3.01, 0.005);
}

TEST(Accountant, CurvesComposeAndRoundTrip) {
  RdpCurve zero;
  EXPECT_TRUE(zero.is_zero());
  EXPECT_EQ(zero.epsilon(1e-5).epsilon, 0);
  RdpCurve a = RdpCurve::subsampled_gaussian(0.01, 1.0, 1000);
  RdpCurve b = RdpCurve::subsampled_gaussian(0.01, 1.0, 2000);
  RdpCurve sum = a;
  sum += b;
  RdpCurve whole = RdpCurve::subsampled_gaussian(0.01, 1.0, 3000);
  for (size_t i = 0; i < sum.values().size(); ++i) EXPECT_NEAR(sum.values()[i], whole.values()[i], 1e-9);
  // Composition costs less than adding the two ε, more than either.
  const double ea = a.epsilon(1e-5).epsilon, eb = b.epsilon(1e-5).epsilon, es = sum.epsilon(1e-5).epsilon;
  EXPECT_GT(es, std::max(ea, eb));
  EXPECT_LT(es, ea + eb);
  auto back = RdpCurve::from_values(sum.values());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->epsilon(1e-5).epsilon, es);
  EXPECT_FALSE(RdpCurve::from_values({1, 2}).ok());
  std::vector<double> negative(default_orders().size(), 0.0);
  negative[3] = -1;
  EXPECT_FALSE(RdpCurve::from_values(negative).ok());
}

TEST(Accountant, MoreNoiseOrFewerStepsCostLess) {
  const double base = dp_sgd_epsilon(0.01, 1.0, 1000, 1e-5).epsilon;
  EXPECT_LT(dp_sgd_epsilon(0.01, 2.0, 1000, 1e-5).epsilon, base);
  EXPECT_LT(dp_sgd_epsilon(0.01, 1.0, 500, 1e-5).epsilon, base);
  EXPECT_LT(dp_sgd_epsilon(0.005, 1.0, 1000, 1e-5).epsilon, base);
  EXPECT_TRUE(std::isinf(dp_sgd_epsilon(0.01, 0.0, 10, 1e-5).epsilon));
}

TEST(Accountant, ValidateNamesTheBadParameter) {
  EXPECT_TRUE(validate(0.01, 1.0, 10, 1e-5).ok());
  EXPECT_NE(validate(1.5, 1.0, 10, 1e-5).message().find("sampling rate"), std::string::npos);
  EXPECT_NE(validate(0.1, 0.0, 10, 1e-5).message().find("noise multiplier"), std::string::npos);
  EXPECT_NE(validate(0.1, 1.0, -1, 1e-5).message().find("steps"), std::string::npos);
  EXPECT_NE(validate(0.1, 1.0, 1, 0).message().find("delta"), std::string::npos);
}

}  // namespace
}  // namespace fedpod::privacy
