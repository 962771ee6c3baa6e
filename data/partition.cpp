#include "fedpod/data/partition.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

namespace fedpod::data {
namespace {

// Draws written out so that a seed gives the same partition with any standard
// library: only mt19937_64's raw output is used (its sequence is fixed by the
// standard), never <random>'s distributions.
class Draws {
 public:
  explicit Draws(uint64_t seed) : rng_(seed) {}
  double uniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double open_uniform() {                                                    // (0, 1)
    double u;
    do u = uniform();
    while (u <= 0.0);
    return u;
  }
  uint64_t below(uint64_t n) {  // uniform in [0, n), without modulo bias
    const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do r = rng_();
    while (r >= limit);
    return r % n;
  }
  double normal() {  // Box-Muller
    const double u1 = open_uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  // Gamma(shape, 1): Marsaglia and Tsang (2000); shape < 1 via Gamma(shape + 1)·U^(1/shape).
  double gamma(double shape) {
    if (shape < 1.0) return gamma(shape + 1.0) * std::pow(open_uniform(), 1.0 / shape);
    const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x, v;
      do {
        x = normal();
        v = 1.0 + c * x;
      } while (v <= 0.0);
      v = v * v * v;
      const double u = open_uniform();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
    }
  }
  template <typename T>
  void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  std::mt19937_64 rng_;
};

std::vector<std::vector<int64_t>> by_class(const std::vector<int64_t>& labels) {
  std::vector<std::vector<int64_t>> rows;
  for (size_t i = 0; i < labels.size(); ++i) {
    const auto c = static_cast<size_t>(labels[i]);
    if (rows.size() <= c) rows.resize(c + 1);
    rows[c].push_back(static_cast<int64_t>(i));
  }
  return rows;
}

}  // namespace

StatusOr<std::vector<std::vector<int64_t>>> partition(const std::vector<int64_t>& labels, int64_t pods,
                                                      const PartitionSpec& spec) {
  const auto n = static_cast<int64_t>(labels.size());
  if (pods < 1) return Status::invalid("partition: pods must be at least 1 (got " + std::to_string(pods) + ")");
  if (pods > n) {
    return Status::invalid("partition: " + std::to_string(pods) + " pods but only " + std::to_string(n) +
                           " rows; every pod needs at least one");
  }
  for (int64_t i = 0; i < n; ++i) {
    if (labels[static_cast<size_t>(i)] < 0) {
      return Status::invalid("partition: row " + std::to_string(i) + " has label " +
                             std::to_string(labels[static_cast<size_t>(i)]) + "; labels must be class codes >= 0");
    }
  }
  Draws draw(spec.seed);
  std::vector<std::vector<int64_t>> parts(static_cast<size_t>(pods));

  if (spec.method == "iid") {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    draw.shuffle(order);
    for (int64_t p = 0; p < pods; ++p) {
      const int64_t from = p * n / pods, to = (p + 1) * n / pods;
      parts[static_cast<size_t>(p)].assign(order.begin() + from, order.begin() + to);
    }
  } else if (spec.method == "dirichlet") {
    if (!(spec.alpha > 0) || !std::isfinite(spec.alpha)) {
      return Status::invalid("partition: dirichlet alpha must be a number above 0 (got " + std::to_string(spec.alpha) +
                             ")");
    }
    if (spec.min_rows < 0 || spec.min_rows * pods > n) {
      return Status::invalid("partition: min_rows " + std::to_string(spec.min_rows) + " for " +
                             std::to_string(pods) + " pods needs more than the " + std::to_string(n) + " rows");
    }
    auto classes = by_class(labels);
    for (int attempt = 0;; ++attempt) {
      if (attempt == 100) {
        return Status::invalid("partition: 100 Dirichlet draws with alpha " + std::to_string(spec.alpha) +
                               " all left a pod with fewer than min_rows " + std::to_string(spec.min_rows) +
                               " rows; raise alpha, lower min_rows or use fewer pods");
      }
      for (auto& p : parts) p.clear();
      for (auto& rows : classes) {
        if (rows.empty()) continue;
        std::vector<int64_t> shuffled = rows;
        draw.shuffle(shuffled);
        std::vector<double> share(static_cast<size_t>(pods));
        double total = 0;
        for (auto& s : share) total += (s = draw.gamma(spec.alpha));
        // Cut points at the cumulative proportions: pod p gets [cut(p), cut(p+1)).
        double cumulative = 0;
        int64_t from = 0;
        const auto count = static_cast<int64_t>(shuffled.size());
        for (int64_t p = 0; p < pods; ++p) {
          cumulative += share[static_cast<size_t>(p)];
          const int64_t to = p + 1 == pods ? count
                                           : std::min<int64_t>(count, static_cast<int64_t>(std::llround(
                                                                          cumulative / total * static_cast<double>(count))));
          for (int64_t i = from; i < to; ++i) parts[static_cast<size_t>(p)].push_back(shuffled[static_cast<size_t>(i)]);
          from = std::max(from, to);
        }
      }
      bool enough = true;
      for (const auto& p : parts) enough = enough && static_cast<int64_t>(p.size()) >= std::max<int64_t>(spec.min_rows, 1);
      if (enough) break;
    }
  } else if (spec.method == "shards") {
    const int64_t k = spec.shards_per_pod;
    if (k < 1) return Status::invalid("partition: shards_per_pod must be at least 1 (got " + std::to_string(k) + ")");
    const int64_t shards = pods * k;
    if (shards > n) {
      return Status::invalid("partition: " + std::to_string(pods) + " pods x " + std::to_string(k) +
                             " shards need at least " + std::to_string(shards) + " rows (have " + std::to_string(n) + ")");
    }
    // Sorted by label (ties in row order), cut into equal shards.
    std::vector<int64_t> sorted(static_cast<size_t>(n));
    std::iota(sorted.begin(), sorted.end(), 0);
    std::stable_sort(sorted.begin(), sorted.end(),
                     [&](int64_t a, int64_t b) { return labels[static_cast<size_t>(a)] < labels[static_cast<size_t>(b)]; });
    std::vector<int64_t> shard_ids(static_cast<size_t>(shards));
    std::iota(shard_ids.begin(), shard_ids.end(), 0);
    draw.shuffle(shard_ids);
    for (int64_t p = 0; p < pods; ++p) {
      for (int64_t j = 0; j < k; ++j) {
        const int64_t s = shard_ids[static_cast<size_t>(p * k + j)];
        const int64_t from = s * n / shards, to = (s + 1) * n / shards;
        parts[static_cast<size_t>(p)].insert(parts[static_cast<size_t>(p)].end(), sorted.begin() + from,
                                             sorted.begin() + to);
      }
    }
  } else {
    return Status::invalid("partition: unknown method '" + spec.method + "' (iid, dirichlet or shards)");
  }
  for (auto& p : parts) std::sort(p.begin(), p.end());
  return parts;
}

std::vector<std::vector<int64_t>> class_counts(const std::vector<int64_t>& labels,
                                               const std::vector<std::vector<int64_t>>& parts, int64_t num_classes) {
  std::vector<std::vector<int64_t>> counts(parts.size(), std::vector<int64_t>(static_cast<size_t>(num_classes), 0));
  for (size_t p = 0; p < parts.size(); ++p) {
    for (int64_t row : parts[p]) {
      const int64_t c = labels[static_cast<size_t>(row)];
      if (c >= 0 && c < num_classes) ++counts[p][static_cast<size_t>(c)];
    }
  }
  return counts;
}

}  // namespace fedpod::data
