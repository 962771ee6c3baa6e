// Rényi differential privacy (RDP) accounting of DP-SGD: the Poisson-subsampled
// Gaussian mechanism (Mironov, Talwar & Zhang, "Rényi Differential Privacy of the
// Sampled Gaussian Mechanism", 2019), converted to (ε, δ).
//
// A step of DP-SGD samples each record with probability q, clips every sampled
// record's gradient to norm C and adds Gaussian noise of standard deviation σ·C to
// their sum. Its RDP at order α is computed exactly (integer α: a finite sum; other
// α: the paper's convergent series), RDP adds up over steps and over jobs, and the
// smallest ε over the orders is reported.
//
//   RdpCurve job = RdpCurve::subsampled_gaussian(q, sigma, steps);
//   Epsilon e = job.epsilon(1e-5);            // e.epsilon, at order e.order
//   RdpCurve total = spent; total += job;      // composition across jobs
//
// The figures this reproduces, with their sources, are listed in docs/privacy.md and
// checked by tests/unit/privacy/accountant_test.cpp.
//
// Pure math; every function is thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::privacy {

// The RDP orders every curve is kept at: 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63, as
// TensorFlow Privacy's compute_dp_sgd_privacy and Opacus's RDPAccountant use, plus
// 64, 128, 256 (useful for small ε at large σ). Fixed, so that curves of different
// jobs, written at different times, add up order by order.
const std::vector<double>& default_orders();

// RDP at order `alpha` (> 1) of one step of the Poisson-subsampled Gaussian with
// sampling rate `q` in [0, 1] and noise multiplier `sigma` (> 0; 0 gives infinity).
double rdp_subsampled_gaussian(double q, double sigma, double alpha);

// How RDP becomes (ε, δ).
enum class Conversion {
  // ε = RDP(α) + log((α−1)/α) − (log δ + log α)/(α−1): Balle et al., "Hypothesis
  // testing interpretations and Rényi differential privacy" (2020), Theorem 21; what
  // Opacus and TensorFlow Privacy use today. Tighter; the default.
  kBalle2020,
  // ε = RDP(α) − log(δ)/(α−1): Mironov 2017, Proposition 3; what TensorFlow Privacy
  // used before 2020 (its published tutorial figures).
  kMironov2017,
};

struct Epsilon {
  double epsilon = 0;  // +infinity when no order gives a finite value
  double order = 0;    // the order that gave it
};

// RDP of `steps` steps at each of `orders` (for reproducing figures computed with
// other order lists; RdpCurve uses default_orders()).
std::vector<double> compute_rdp(double q, double sigma, int64_t steps, const std::vector<double>& orders);

// The smallest ε over `orders` of the composed RDP values `rdp` (same length).
Epsilon epsilon_from_rdp(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                         Conversion conversion = Conversion::kBalle2020);

// An RDP curve: RDP at each of default_orders(). Adding curves composes mechanisms.
class RdpCurve {
 public:
  RdpCurve();  // zero: nothing spent
  // `steps` steps of the subsampled Gaussian. Invalid arguments (q outside [0, 1],
  // σ < 0, steps < 0) are programming errors: the callers validate; see validate().
  static RdpCurve subsampled_gaussian(double q, double sigma, int64_t steps);
  // A curve read back from storage; its size must match default_orders().
  static StatusOr<RdpCurve> from_values(std::vector<double> values);

  RdpCurve& operator+=(const RdpCurve& other);
  const std::vector<double>& values() const { return rdp_; }
  bool is_zero() const;

  // The smallest ε over the orders for `delta` in (0, 1).
  Epsilon epsilon(double delta, Conversion conversion = Conversion::kBalle2020) const;

 private:
  std::vector<double> rdp_;
};

// Checks DP-SGD's parameters as a pod receives them; the message names the bad one.
Status validate(double q, double sigma, int64_t steps, double delta);

// The ε of `steps` steps at sampling rate q and noise σ, for δ (a shorthand).
Epsilon dp_sgd_epsilon(double q, double sigma, int64_t steps, double delta,
                       Conversion conversion = Conversion::kBalle2020);

}  // namespace fedpod::privacy
