#include "fedpod/aggregation/fedavg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace fedpod::aggregation {

Status check_tiling(const std::vector<Segment>& update, int64_t numel) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  ranges.reserve(update.size());
  for (const auto& s : update) {
    if (!s.values.defined() || s.values.scalar_type() != torch::kFloat32 || !s.values.is_contiguous()) {
      return Status::invalid("update segment at offset " + std::to_string(s.offset) +
                             " is not contiguous float32");
    }
    ranges.emplace_back(s.offset, s.values.numel());
  }
  std::sort(ranges.begin(), ranges.end());
  int64_t next = 0;
  for (const auto& [off, n] : ranges) {
    if (off != next) {
      return Status::invalid("update segments leave a gap or overlap at element " + std::to_string(next));
    }
    next = off + n;
  }
  if (next != numel) {
    return Status::invalid("update covers " + std::to_string(next) + " elements, the model has " +
                           std::to_string(numel));
  }
  return Status();
}

void FedAvg::begin_round(const torch::Tensor& global) {
  const int64_t n = global.numel();
  // Reuse the buffer handed out last time once nobody else holds it (the caller has
  // moved on to a newer global): no fresh pages to fault in and zero every round.
  // Both counts: a copy of the handle shares our TensorImpl (use_count), a view has
  // its own TensorImpl on the same storage (storage().use_count()).
  if (last_out_.defined() && last_out_.numel() == n && last_out_.use_count() == 1 &&
      last_out_.storage().use_count() == 1) {
    acc_ = last_out_;
  } else {
    acc_ = torch::empty({n}, torch::kFloat32);
  }
  last_out_ = torch::Tensor();
  int64_t max_elements = 0;
  for (const Range& r : max_ranges_) max_elements += r.numel;
  max_acc_ = max_elements > 0 ? torch::empty({max_elements}, torch::kFloat32) : torch::Tensor();
  total_weight_ = 0;
  magnitude_bound_ = 0;
  folded_ = 0;
}

Status FedAvg::fold(const std::vector<Segment>& update, double weight) {
  if (!acc_.defined()) return Status::failed_precondition("fold before begin_round");
  if (!(weight > 0) || !std::isfinite(weight)) {
    return Status::invalid("update weight must be a positive number, got " + std::to_string(weight));
  }
  FEDPOD_RETURN_IF_ERROR(check_tiling(update, acc_.numel()));
  // Finite values can still overflow the weighted sum (3e38 from a pod of 100 samples
  // is 3e40) and make the round's parameters infinite, which every pod then refuses
  // and every later round inherits. Refused here, before anything is added, while the
  // bound on the sum stays at half of float32's largest value (room for rounding).
  double largest = 0;
  for (const auto& s : update) {
    double m = s.max_abs;
    if (!(m >= 0)) m = s.values.numel() > 0 ? s.values.abs().max().item<double>() : 0.0;
    if (!std::isfinite(m)) return Status::invalid("update holds NaN or infinity");
    largest = std::max(largest, m);
  }
  constexpr double kSumBound = std::numeric_limits<float>::max() / 2.0;
  if (magnitude_bound_ + weight * largest > kSumBound) {
    char why[320];
    std::snprintf(why, sizeof why,
                  "update refused: its largest value in magnitude is %.3g; weighted by %g and added to this "
                  "round's other updates it could overflow float32 (largest %.3g) and make the round's "
                  "parameters infinite",
                  largest, weight, static_cast<double>(std::numeric_limits<float>::max()));
    return Status::invalid(why);
  }
  magnitude_bound_ += weight * largest;
  const torch::Tensor w = torch::scalar_tensor(weight, torch::kFloat32);
  for (const auto& s : update) {
    torch::Tensor dst = acc_.narrow(0, s.offset, s.values.numel());
    if (folded_ == 0) {
      // The first update tiles the whole buffer: write it instead of adding to zeros.
      torch::mul_out(dst, s.values.view({-1}), w);
    } else {
      dst.add_(s.values.view({-1}), weight);
    }
  }
  // The max ranges: each piece of a segment that falls inside one.
  int64_t at = 0;
  for (const Range& r : max_ranges_) {
    for (const auto& s : update) {
      const int64_t lo = std::max(r.offset, s.offset);
      const int64_t hi = std::min(r.offset + r.numel, s.offset + s.values.numel());
      if (lo >= hi) continue;
      torch::Tensor src = s.values.view({-1}).narrow(0, lo - s.offset, hi - lo);
      torch::Tensor dst = max_acc_.narrow(0, at + lo - r.offset, hi - lo);
      if (folded_ == 0) {
        dst.copy_(src);
      } else {
        torch::maximum_out(dst, dst, src);
      }
    }
    at += r.numel;
  }
  total_weight_ += weight;
  ++folded_;
  return Status();
}

StatusOr<torch::Tensor> FedAvg::finish() {
  if (folded_ == 0) return Status::failed_precondition("no update was folded in this round");
  // finish() hands the accumulator out: a second call needs a new begin_round.
  if (!acc_.defined()) return Status::failed_precondition("finish called twice in one round");
  torch::Tensor out = acc_.div_(total_weight_);
  int64_t at = 0;
  for (const Range& r : max_ranges_) {
    out.narrow(0, r.offset, r.numel).copy_(max_acc_.narrow(0, at, r.numel));
    at += r.numel;
  }
  acc_ = torch::Tensor();
  last_out_ = out;
  return out;
}

std::unique_ptr<Strategy> make_strategy(const std::string& name) {
  if (name == "fedavg") return std::make_unique<FedAvg>();
  return nullptr;
}


}  // namespace fedpod::aggregation
