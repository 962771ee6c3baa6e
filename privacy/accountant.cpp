#include "fedpod/privacy/accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

namespace fedpod::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)), exact for -inf arguments.
double log_add(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b), lo = std::min(a, b);
  return hi + std::log1p(std::exp(lo - hi));
}

// log(exp(a) - exp(b)) for a >= b; -inf when they are equal.
double log_sub(double a, double b) {
  if (b == -kInf) return a;
  if (a <= b) return -kInf;  // rounding: the series' partial sums stay positive in exact arithmetic
  return a + std::log1p(-std::exp(b - a));
}

// log(erfc(x)), accurate where erfc(x) underflows: the asymptotic expansion
// erfc(x) ~ exp(-x²)/(x√π)·(1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸)) beyond
// x = 20, where its next term is below 1e-9 relative.
double log_erfc(double x) {
  if (x < 20) return std::log(std::erfc(x));
  const double r = 1.0 / (x * x);
  const double series = 1 - r / 2 + 3 * r * r / 4 - 15 * r * r * r / 8 + 105 * r * r * r * r / 16;
  return -x * x - std::log(x) - 0.5 * std::log(M_PI) + std::log(series);
}

// log A_α for integer α (Mironov et al. 2019, Section 3.3):
// A_α = Σ_{i=0}^{α} C(α,i) (1−q)^{α−i} q^i exp((i² − i)/(2σ²)).
double log_a_int(double q, double sigma, int64_t alpha) {
  double log_a = -kInf;
  double log_binom = 0;  // log C(α, i), updated as i grows
  for (int64_t i = 0; i <= alpha; ++i) {
    if (i > 0) log_binom += std::log(static_cast<double>(alpha - i + 1)) - std::log(static_cast<double>(i));
    const double term = log_binom + static_cast<double>(i) * std::log(q) +
                        static_cast<double>(alpha - i) * std::log1p(-q) +
                        static_cast<double>(i * i - i) / (2 * sigma * sigma);
    log_a = log_add(log_a, term);
  }
  return log_a;
}

// log A_α for fractional α: the two convergent series of Mironov et al. 2019
// (Section 3.3), split at z0 = σ² log(1/q − 1) + 1/2; summed until both terms fall
// below e^-30 of the leading ones.
double log_a_frac(double q, double sigma, double alpha) {
  double log_a0 = -kInf, log_a1 = -kInf;
  const double z0 = sigma * sigma * std::log(1 / q - 1) + 0.5;
  double log_abs_coef = 0;  // log |C(α, i)|
  double sign = 1;          // sign of C(α, i)
  for (int64_t i = 0;; ++i) {
    if (i > 0) {
      const double factor = (alpha - static_cast<double>(i - 1)) / static_cast<double>(i);
      if (factor == 0) break;  // α is an integer after all: the series ends
      log_abs_coef += std::log(std::abs(factor));
      if (factor < 0) sign = -sign;
    }
    const double di = static_cast<double>(i);
    const double j = alpha - di;
    const double log_t0 = log_abs_coef + di * std::log(q) + j * std::log1p(-q);
    const double log_t1 = log_abs_coef + j * std::log(q) + di * std::log1p(-q);
    const double log_e0 = std::log(0.5) + log_erfc((di - z0) / (std::sqrt(2.0) * sigma));
    const double log_e1 = std::log(0.5) + log_erfc((z0 - j) / (std::sqrt(2.0) * sigma));
    const double log_s0 = log_t0 + (di * di - di) / (2 * sigma * sigma) + log_e0;
    const double log_s1 = log_t1 + (j * j - j) / (2 * sigma * sigma) + log_e1;
    if (sign > 0) {
      log_a0 = log_add(log_a0, log_s0);
      log_a1 = log_add(log_a1, log_s1);
    } else {
      log_a0 = log_sub(log_a0, log_s0);
      log_a1 = log_sub(log_a1, log_s1);
    }
    if (std::max(log_s0, log_s1) < -30 || i > 100000) break;
  }
  return log_add(log_a0, log_a1);
}

}  // namespace

const std::vector<double>& default_orders() {
  static const std::vector<double> orders = [] {
    std::vector<double> o;
    for (int x = 1; x < 100; ++x) o.push_back(1 + x / 10.0);
    for (int a = 12; a < 64; ++a) o.push_back(a);
    for (double a : {64.0, 128.0, 256.0}) o.push_back(a);
    return o;
  }();
  return orders;
}

double rdp_subsampled_gaussian(double q, double sigma, double alpha) {
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (q == 1) return alpha / (2 * sigma * sigma);  // the Gaussian mechanism itself
  if (std::isinf(alpha)) return kInf;
  const double log_a = alpha == std::floor(alpha) ? log_a_int(q, sigma, static_cast<int64_t>(alpha))
                                                  : log_a_frac(q, sigma, alpha);
  return log_a / (alpha - 1);
}

std::vector<double> compute_rdp(double q, double sigma, int64_t steps, const std::vector<double>& orders) {
  std::vector<double> out;
  out.reserve(orders.size());
  for (double a : orders) out.push_back(steps == 0 ? 0.0 : rdp_subsampled_gaussian(q, sigma, a) * static_cast<double>(steps));
  return out;
}

Epsilon epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                         Conversion conversion) {
  Epsilon best{kInf, 0};
  for (size_t i = 0; i < orders.size() && i < rdp.size(); ++i) {
    const double a = orders[i];
    double eps = conversion == Conversion::kBalle2020
                     ? rdp[i] + std::log((a - 1) / a) - (std::log(delta) + std::log(a)) / (a - 1)
                     : rdp[i] - std::log(delta) / (a - 1);
    if (std::isnan(eps)) continue;
    eps = std::max(eps, 0.0);
    if (eps < best.epsilon) best = Epsilon{eps, a};
  }
  return best;
}

RdpCurve::RdpCurve() : rdp_(default_orders().size(), 0.0) {}

RdpCurve RdpCurve::subsampled_gaussian(double q, double sigma, int64_t steps) {
  RdpCurve c;
  c.rdp_ = compute_rdp(q, sigma, steps, default_orders());
  return c;
}

StatusOr<RdpCurve> RdpCurve::from_values(std::vector<double> values) {
  if (values.size() != default_orders().size()) {
    return Status::invalid("an RDP curve has " + std::to_string(default_orders().size()) + " orders, this one " +
                           std::to_string(values.size()));
  }
  for (double v : values) {
    if (!(v >= 0)) return Status::invalid("an RDP curve's values are non-negative; found " + std::to_string(v));
  }
  RdpCurve c;
  c.rdp_ = std::move(values);
  return c;
}

RdpCurve& RdpCurve::operator+=(const RdpCurve& other) {
  for (size_t i = 0; i < rdp_.size(); ++i) rdp_[i] += other.rdp_[i];
  return *this;
}

bool RdpCurve::is_zero() const {
  return std::all_of(rdp_.begin(), rdp_.end(), [](double v) { return v == 0; });
}

Epsilon RdpCurve::epsilon(double delta, Conversion conversion) const {
  if (is_zero()) return Epsilon{0, 0};
  return epsilon_from_rdp(default_orders(), rdp_, delta, conversion);
}

Status validate(double q, double sigma, int64_t steps, double delta) {
  if (!(q >= 0 && q <= 1)) return Status::invalid("sampling rate " + std::to_string(q) + " is not in [0, 1]");
  if (!(sigma > 0) || std::isinf(sigma)) {
    return Status::invalid("noise multiplier " + std::to_string(sigma) + " is not a positive finite number");
  }
  if (steps < 0) return Status::invalid("a negative number of steps (" + std::to_string(steps) + ")");
  if (!(delta > 0 && delta < 1)) return Status::invalid("delta " + std::to_string(delta) + " is not in (0, 1)");
  return Status();
}

Epsilon dp_sgd_epsilon(double q, double sigma, int64_t steps, double delta, Conversion conversion) {
  return RdpCurve::subsampled_gaussian(q, sigma, steps).epsilon(delta, conversion);
}

}  // namespace fedpod::privacy
