#include "fedpod/aggregation/strategies.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

namespace fedpod::aggregation {
namespace {

// Copies `ranges` of `from` into `to` (both flat, the same size).
void copy_ranges(torch::Tensor& to, const torch::Tensor& from, const std::vector<Range>& ranges) {
  for (const Range& r : ranges) to.narrow(0, r.offset, r.numel).copy_(from.narrow(0, r.offset, r.numel));
}

std::string allowed(const std::vector<std::string>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out.empty() ? "none" : out;
}

}  // namespace

const std::vector<std::string>& strategy_names() {
  static const std::vector<std::string> names = {"fedavg", "fedprox", "fedavgm",      "fedadagrad", "fedadam",
                                                 "fedyogi", "median", "trimmed_mean", "krum"};
  return names;
}

double proximal_mu(const std::string& name, const StrategyOptions& options) {
  auto it = options.find(name == "fedprox" ? "mu" : "proximal_mu");
  return it != options.end() ? it->second : name == "fedprox" ? 0.01 : 0.0;
}

bool holds_all_updates(const std::string& name) {
  return name == "median" || name == "trimmed_mean" || name == "krum";
}

StatusOr<std::unique_ptr<Strategy>> make_strategy(const std::string& name, const StrategyOptions& options) {
  const auto& names = strategy_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) {
    return Status::invalid("strategy: unknown '" + name + "' (" + allowed(names) + ")");
  }
  std::vector<std::string> keys;
  if (name == "fedavgm") keys = {"server_lr", "momentum"};
  if (name == "fedadagrad") keys = {"server_lr", "beta1", "tau"};
  if (name == "fedadam" || name == "fedyogi") keys = {"server_lr", "beta1", "beta2", "tau"};
  if (name == "trimmed_mean") keys = {"trim", "max_memory_mb"};
  if (name == "median") keys = {"max_memory_mb"};
  if (name == "krum") keys = {"byzantine", "select", "max_memory_mb"};
  keys.push_back(name == "fedprox" ? "mu" : "proximal_mu");
  for (const auto& [k, v] : options) {
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      return Status::invalid("strategy " + name + ": unknown option '" + k + "' (" + allowed(keys) + ")");
    }
    if (!std::isfinite(v)) return Status::invalid("strategy " + name + ": " + k + " must be a finite number");
  }
  auto get = [&](const std::string& k, double d) {
    auto it = options.find(k);
    return it == options.end() ? d : it->second;
  };
  auto bad = [&](const std::string& k, const std::string& range) {
    return Status::invalid("strategy " + name + ": " + k + " must be " + range + ", got " + std::to_string(get(k, 0)));
  };
  const std::string mu_key = name == "fedprox" ? "mu" : "proximal_mu";
  if (options.count(mu_key) && !(get(mu_key, 0) >= 0)) return bad(mu_key, "0 or above");
  if (name == "fedavg") return std::unique_ptr<Strategy>(std::make_unique<FedAvg>());
  if (name == "fedprox") {
    // FedAvg's aggregation; the proximal term is the pods' (proximal_mu()).
    struct FedProx : FedAvg {
      std::string name() const override { return "fedprox"; }
    };
    return std::unique_ptr<Strategy>(std::make_unique<FedProx>());
  }
  if (name == "fedavgm" || name == "fedadagrad" || name == "fedadam" || name == "fedyogi") {
    ServerOptimizer::Options o;
    o.server_lr = get("server_lr", name == "fedavgm" ? 1.0 : 0.01);
    o.momentum = get("momentum", 0.9);
    o.beta1 = get("beta1", 0.9);
    o.beta2 = get("beta2", 0.99);
    o.tau = get("tau", 1e-3);
    if (!(o.server_lr > 0)) return bad("server_lr", "above 0");
    if (!(o.momentum >= 0 && o.momentum < 1)) return bad("momentum", "in [0, 1)");
    if (!(o.beta1 >= 0 && o.beta1 < 1)) return bad("beta1", "in [0, 1)");
    if (!(o.beta2 >= 0 && o.beta2 < 1)) return bad("beta2", "in [0, 1)");
    if (!(o.tau > 0)) return bad("tau", "above 0");
    const auto rule = name == "fedavgm"      ? ServerOptimizer::Rule::kMomentum
                      : name == "fedadagrad" ? ServerOptimizer::Rule::kAdagrad
                      : name == "fedadam"    ? ServerOptimizer::Rule::kAdam
                                             : ServerOptimizer::Rule::kYogi;
    return std::unique_ptr<Strategy>(std::make_unique<ServerOptimizer>(rule, o));
  }
  RobustAggregate::Options o;
  o.trim = get("trim", 0.1);
  o.max_memory_mb = get("max_memory_mb", 4096);
  if (!(o.trim >= 0 && o.trim < 0.5)) return bad("trim", "in [0, 0.5)");
  if (!(o.max_memory_mb > 0)) return bad("max_memory_mb", "above 0");
  if (options.count("byzantine")) {
    const double f = get("byzantine", 0);
    if (!(f >= 0 && f == std::floor(f))) return bad("byzantine", "an integer >= 0");
    o.byzantine = static_cast<int>(f);
  }
  const double m = get("select", 1);
  if (!(m >= 1 && m == std::floor(m))) return bad("select", "an integer >= 1");
  o.select = static_cast<int>(m);
  const auto rule = name == "median"         ? RobustAggregate::Rule::kMedian
                    : name == "trimmed_mean" ? RobustAggregate::Rule::kTrimmedMean
                                             : RobustAggregate::Rule::kKrum;
  return std::unique_ptr<Strategy>(std::make_unique<RobustAggregate>(rule, o));
}

// ---- server optimizers ----------------------------------------------------------------

ServerOptimizer::ServerOptimizer(Rule rule, Options options) : rule_(rule), o_(options) {}

std::string ServerOptimizer::name() const {
  switch (rule_) {
    case Rule::kMomentum: return "fedavgm";
    case Rule::kAdagrad: return "fedadagrad";
    case Rule::kAdam: return "fedadam";
    case Rule::kYogi: return "fedyogi";
  }
  return "?";
}

void ServerOptimizer::set_max_ranges(std::vector<Range> ranges) {
  max_ranges_ = ranges;
  mean_.set_max_ranges(std::move(ranges));
}

void ServerOptimizer::begin_round(const torch::Tensor& global) {
  global_ = global;
  mean_.begin_round(global);
}

Status ServerOptimizer::fold(const std::vector<Segment>& update, double weight) { return mean_.fold(update, weight); }

StatusOr<torch::Tensor> ServerOptimizer::finish() {
  if (!global_.defined()) return Status::failed_precondition("finish before begin_round");
  auto mean = mean_.finish();
  if (!mean.ok()) return mean.status();
  const torch::Tensor& x = global_;
  torch::Tensor delta = *mean - x;
  if (!m_.defined() || m_.numel() != x.numel()) {
    if (rule_ == Rule::kMomentum) {
      m_ = torch::zeros_like(x);
    } else {
      m_ = torch::zeros_like(x);
      v_ = torch::full_like(x, o_.tau * o_.tau);
    }
  }
  torch::Tensor next;
  if (rule_ == Rule::kMomentum) {
    m_.mul_(o_.momentum).add_(delta);
    next = x + o_.server_lr * m_;
  } else {
    m_.mul_(o_.beta1).add_(delta, 1 - o_.beta1);
    torch::Tensor d2 = delta * delta;
    if (rule_ == Rule::kAdagrad) {
      v_.add_(d2);
    } else if (rule_ == Rule::kAdam) {
      v_.mul_(o_.beta2).add_(d2, 1 - o_.beta2);
    } else {
      v_.sub_((1 - o_.beta2) * d2 * torch::sign(v_ - d2));
    }
    next = x + o_.server_lr * m_ / (v_.sqrt() + o_.tau);
  }
  // Buffers take the mean, integer buffers their maximum (already in the mean).
  copy_ranges(next, *mean, average_ranges_);
  copy_ranges(next, *mean, max_ranges_);
  global_ = torch::Tensor();
  return next;
}

std::vector<torch::Tensor> ServerOptimizer::state() const {
  if (!m_.defined()) return {};
  if (rule_ == Rule::kMomentum) return {m_};
  return {m_, v_};
}

Status ServerOptimizer::restore(std::vector<torch::Tensor> saved) {
  const size_t want = rule_ == Rule::kMomentum ? 1 : 2;
  if (saved.empty()) return Status();  // saved before the first round ended
  if (saved.size() != want) {
    return Status::invalid("strategy " + name() + " carries " + std::to_string(want) +
                           " state tensors, the checkpoint holds " + std::to_string(saved.size()));
  }
  for (const auto& t : saved) {
    if (t.scalar_type() != torch::kFloat32 || t.dim() != 1 || t.numel() != saved[0].numel()) {
      return Status::invalid("strategy " + name() + ": the checkpoint's state is not flat float32 of one size");
    }
  }
  m_ = saved[0].clone();
  if (want == 2) v_ = saved[1].clone();
  return Status();
}

// ---- robust aggregates ----------------------------------------------------------------

RobustAggregate::RobustAggregate(Rule rule, Options options) : rule_(rule), o_(options) {}

std::string RobustAggregate::name() const {
  switch (rule_) {
    case Rule::kMedian: return "median";
    case Rule::kTrimmedMean: return "trimmed_mean";
    case Rule::kKrum: return "krum";
  }
  return "?";
}

void RobustAggregate::begin_round(const torch::Tensor& global) {
  numel_ = global.numel();
  updates_.clear();
  weights_.clear();
  selected_.clear();
}

Status RobustAggregate::fold(const std::vector<Segment>& update, double weight) {
  if (numel_ == 0) return Status::failed_precondition("fold before begin_round");
  if (!(weight > 0) || !std::isfinite(weight)) {
    return Status::invalid("update weight must be a positive number, got " + std::to_string(weight));
  }
  FEDPOD_RETURN_IF_ERROR(check_tiling(update, numel_));
  const double bytes = static_cast<double>(updates_.size() + 1) * static_cast<double>(numel_) * 4;
  if (bytes > o_.max_memory_mb * 1024 * 1024) {
    return Status(StatusCode::kUnavailable,
                  "strategy " + name() + " holds every update of a round: " + std::to_string(updates_.size() + 1) +
                      " updates of " + std::to_string(numel_) + " parameters exceed max_memory_mb " +
                      std::to_string(static_cast<int64_t>(o_.max_memory_mb)));
  }
  torch::Tensor flat = torch::empty({numel_}, torch::kFloat32);
  for (const auto& s : update) flat.narrow(0, s.offset, s.values.numel()).copy_(s.values.view({-1}));
  updates_.push_back(std::move(flat));
  weights_.push_back(weight);
  return Status();
}

StatusOr<torch::Tensor> RobustAggregate::finish() {
  if (updates_.empty()) return Status::failed_precondition("no update was folded in this round");
  const int64_t k = static_cast<int64_t>(updates_.size());
  torch::Tensor out;
  if (rule_ == Rule::kKrum) {
    auto chosen = krum();
    if (!chosen.ok()) return chosen.status();
    out = std::move(*chosen);
  } else {
    out = torch::empty({numel_}, torch::kFloat32);
    // Column blocks: the sort's working set stays K × 1M floats.
    const int64_t block = int64_t{1} << 20;
    const int64_t trim = rule_ == Rule::kTrimmedMean ? static_cast<int64_t>(std::floor(o_.trim * k)) : 0;
    for (int64_t at = 0; at < numel_; at += block) {
      const int64_t n = std::min(block, numel_ - at);
      std::vector<torch::Tensor> cols;
      for (const auto& u : updates_) cols.push_back(u.narrow(0, at, n));
      torch::Tensor sorted = std::get<0>(torch::stack(cols).sort(0));
      torch::Tensor dst = out.narrow(0, at, n);
      if (rule_ == Rule::kMedian) {
        if (k % 2 == 1) dst.copy_(sorted[k / 2]);
        else dst.copy_((sorted[k / 2 - 1] + sorted[k / 2]) / 2);
      } else {
        dst.copy_(sorted.narrow(0, trim, k - 2 * trim).mean(0));
      }
    }
  }
  // Integer buffers: the maximum, as under FedAvg.
  for (const Range& r : max_ranges_) {
    torch::Tensor dst = out.narrow(0, r.offset, r.numel);
    dst.copy_(updates_[0].narrow(0, r.offset, r.numel));
    for (size_t i = 1; i < updates_.size(); ++i) torch::maximum_out(dst, dst, updates_[i].narrow(0, r.offset, r.numel));
  }
  updates_.clear();
  weights_.clear();
  return out;
}

StatusOr<torch::Tensor> RobustAggregate::krum() {
  const int k = static_cast<int>(updates_.size());
  const int f = o_.byzantine >= 0 ? o_.byzantine : std::max(0, (k - 3) / 2);
  if (k <= 2 * f + 2) {
    return Status(StatusCode::kUnavailable, "strategy krum needs more than 2f + 2 = " + std::to_string(2 * f + 2) +
                                                " updates (byzantine f = " + std::to_string(f) + "), got " +
                                                std::to_string(k));
  }
  if (o_.select > k) {
    return Status(StatusCode::kUnavailable, "strategy krum: select " + std::to_string(o_.select) + " of only " +
                                                std::to_string(k) + " updates");
  }
  // Squared distances in float64, from dot products over column blocks.
  std::vector<std::vector<double>> d2(k, std::vector<double>(k, 0));
  const int64_t block = int64_t{1} << 20;
  for (int64_t at = 0; at < numel_; at += block) {
    const int64_t n = std::min(block, numel_ - at);
    std::vector<torch::Tensor> rows;
    for (const auto& u : updates_) rows.push_back(u.narrow(0, at, n).to(torch::kFloat64));
    torch::Tensor x = torch::stack(rows);
    torch::Tensor sq = (x * x).sum(1);
    torch::Tensor dist = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * x.matmul(x.t())).clamp_min(0);
    auto a = dist.accessor<double, 2>();
    for (int i = 0; i < k; ++i)
      for (int j = 0; j < k; ++j) d2[i][j] += a[i][j];
  }
  const int neighbours = k - f - 2;
  std::vector<std::pair<double, int>> scores;
  for (int i = 0; i < k; ++i) {
    std::vector<double> others;
    for (int j = 0; j < k; ++j) {
      if (j != i) others.push_back(d2[i][j]);
    }
    std::partial_sort(others.begin(), others.begin() + neighbours, others.end());
    scores.push_back({std::accumulate(others.begin(), others.begin() + neighbours, 0.0), i});
  }
  std::stable_sort(scores.begin(), scores.end());
  selected_.clear();
  for (int s = 0; s < o_.select; ++s) selected_.push_back(scores[s].second);
  if (o_.select == 1) return updates_[selected_[0]].clone();
  torch::Tensor out = torch::zeros({numel_}, torch::kFloat32);
  double total = 0;
  for (int i : selected_) {
    out.add_(updates_[i], weights_[i]);
    total += weights_[i];
  }
  return out.div_(total);
}

}  // namespace fedpod::aggregation
