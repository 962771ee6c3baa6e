#include "fedpod/worker/privacy_guard.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fedpod/common/files.h"

namespace fedpod::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

PrivacyDecision refuse(std::string reason, std::string message) {
  PrivacyDecision d;
  d.allowed = false;
  d.reason = std::move(reason);
  d.message = std::move(message);
  return d;
}

std::string fmt(double v) {
  std::ostringstream o;
  o.precision(4);
  o << v;
  return o.str();
}

constexpr const char* kFormat = "fedpod-privacy-ledger/1";

}  // namespace

PrivacyDecision check_limits(const PrivacyPolicy& policy, int64_t batch_size, int64_t epochs, int64_t steps,
                             int64_t train_rows, const std::string& pod) {
  const std::string who = "pod " + pod + " ";
  // What a batch really holds: no more than the training split's rows. The job sets
  // the split fractions, so a job could shrink the training split to one row and ask
  // for batches of 32 of it.
  const int64_t batch_rows = train_rows > 0 ? std::min(batch_size, train_rows) : batch_size;
  if (policy.min_batch_size > 0 && batch_rows < policy.min_batch_size) {
    return refuse("privacy_min_batch_size",
                  who + "requires a batch size of at least " + std::to_string(policy.min_batch_size) +
                      " (pod.yaml privacy.min_batch_size); the job asks for " + std::to_string(batch_size) +
                      (batch_rows < batch_size ? " over a training split of " + std::to_string(train_rows) + " rows" : ""));
  }
  const int64_t round_steps = privacy::steps_per_round(epochs, steps, batch_size, train_rows);
  if (policy.max_local_steps > 0 && round_steps > policy.max_local_steps) {
    return refuse("privacy_max_local_steps", who + "allows at most " + std::to_string(policy.max_local_steps) +
                                                 " optimizer steps per round (pod.yaml privacy.max_local_steps); the job's round is " +
                                                 std::to_string(round_steps) + " steps (" +
                                                 (steps > 0 ? "local_steps" : "local_epochs over " + std::to_string(train_rows) + " rows") + ")");
  }
  // Distinct rows behind one returned update: every step's batch, or an epoch's every
  // row, and never more than the training split holds (a row trained on twice is
  // still one row: 40 epochs over 20 rows are 20 samples).
  const int64_t drawn = steps > 0 ? steps * batch_size : epochs * train_rows;
  const int64_t samples = train_rows > 0 ? std::min(drawn, train_rows) : drawn;
  if (policy.min_samples_per_update > 0 && samples < policy.min_samples_per_update) {
    return refuse("privacy_min_samples", who + "returns an update only after training on at least " +
                                             std::to_string(policy.min_samples_per_update) +
                                             " distinct rows (pod.yaml privacy.min_samples_per_update); the job's round "
                                             "trains on " + std::to_string(samples) +
                                             (samples < drawn ? " (its training split's rows)" : "") +
                                             "; raise local_steps, local_epochs or batch_size, or give the training "
                                             "split more rows");
  }
  return PrivacyDecision{};
}

PrivacyDecision decide_privacy(const PrivacyPolicy& policy, const PrivacyRequest& r, const privacy::RdpCurve& spent,
                               const std::string& pod) {
  const JobPlan& p = r.plan;
  const std::string who = "pod " + pod + " ";
  if (p.rounds > 0) {
    PrivacyDecision lim = check_limits(policy, p.batch_size, p.local_epochs, p.local_steps, r.train_rows, pod);
    if (!lim.allowed) return lim;
  }
  if (!r.dp.enabled()) {
    if (policy.dp_required) {
      return refuse("differential_privacy_required",
                    who + "trains only with differential privacy (pod.yaml privacy.differential_privacy): set "
                          "differential_privacy: {noise_multiplier, max_grad_norm} in the job (docs/privacy.md)");
    }
    return PrivacyDecision{};
  }
  if (!(r.dp.max_grad_norm > 0) || !std::isfinite(r.dp.max_grad_norm) || !(r.dp.noise_multiplier > 0) ||
      !std::isfinite(r.dp.noise_multiplier)) {
    return refuse("differential_privacy_invalid", who + "received a malformed differential_privacy setting");
  }
  if (r.dp.noise_multiplier < policy.min_noise_multiplier) {
    return refuse("privacy_noise", who + "requires a noise multiplier of at least " + fmt(policy.min_noise_multiplier) +
                                       " (pod.yaml privacy.differential_privacy.min_noise_multiplier); the job's is " +
                                       fmt(r.dp.noise_multiplier));
  }
  if (p.rounds <= 0 || p.batch_size <= 0 || (p.local_epochs <= 0 && p.local_steps <= 0)) {
    return refuse("privacy_plan_missing", who + "accounts a differentially private job before it starts, and this "
                                                "startJob declares no plan (rounds, batch size, local epochs or steps); "
                                                "update the coordinator");
  }
  if (r.train_rows <= 0) return refuse("privacy_no_data", who + "has no training rows");
  PrivacyDecision d;
  d.dp = true;
  d.sample_rate = std::min(1.0, static_cast<double>(p.batch_size) / static_cast<double>(r.train_rows));
  d.steps = p.rounds * privacy::steps_per_round(p.local_epochs, p.local_steps, p.batch_size, r.train_rows);
  d.curve = privacy::RdpCurve::subsampled_gaussian(d.sample_rate, r.dp.noise_multiplier, d.steps);
  d.epsilon = d.curve.epsilon(policy.delta).epsilon;
  privacy::RdpCurve after = spent;
  after += d.curve;
  d.epsilon_after = after.epsilon(policy.delta).epsilon;
  if (policy.dp_required && d.epsilon_after > policy.epsilon_cap) {
    const double before = spent.epsilon(policy.delta).epsilon;
    d.allowed = false;
    d.reason = "privacy_budget";
    d.message = who + "refuses the job: its " + std::to_string(p.rounds) + " rounds of " +
                      std::to_string(d.steps / p.rounds) + " steps at sampling rate " + fmt(d.sample_rate) +
                      " and noise multiplier " + fmt(r.dp.noise_multiplier) + " spend ε = " + fmt(d.epsilon) +
                      " (δ = " + fmt(policy.delta) + "), and with the ε = " + fmt(before) +
                      " already spent on this dataset the total would be " + fmt(d.epsilon_after) +
                      ", above the pod's budget of " + fmt(policy.epsilon_cap) +
                      " (pod.yaml privacy.differential_privacy.epsilon); fewer rounds or steps, or more noise, "
                      "spend less";
  }
  return d;
}

StatusOr<std::unique_ptr<PrivacyLedger>> PrivacyLedger::open(const std::string& path, double delta) {
  std::unique_ptr<PrivacyLedger> l(new PrivacyLedger(path, delta));
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (ec) return Status(StatusCode::kUnavailable, "privacy ledger " + path + ": " + ec.message());
    return l;
  }
  std::ifstream in(path);
  if (!in) return Status(StatusCode::kUnavailable, "privacy ledger " + path + ": cannot be read");
  json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || j.value("format", "") != kFormat || !j.contains("entries") ||
      !j["entries"].is_array()) {
    return Status::invalid("privacy ledger " + path + ": not a " + kFormat +
                           " file; the pod will not start without the budget it has spent (restore the file, "
                           "or move it away only if this dataset is new)");
  }
  for (const auto& e : j["entries"]) {
    try {
      Entry x;
      x.key = e.at("key").get<std::string>();
      x.job = e.at("job").get<std::string>();
      x.user = e.value("user", "");
      x.model = e.value("model", "");
      x.state = e.at("state").get<std::string>();
      x.started = e.value("started", "");
      x.ended = e.value("ended", "");
      x.sample_rate = e.at("sample_rate").get<double>();
      x.noise_multiplier = e.at("noise_multiplier").get<double>();
      x.steps_planned = e.at("steps_planned").get<int64_t>();
      x.steps_done = e.at("steps_done").get<int64_t>();
      if (x.state != "reserved" && x.state != "settled") throw std::runtime_error("state '" + x.state + "'");
      if (x.steps_done < 0 || x.steps_done > x.steps_planned) {
        throw std::runtime_error("steps_done " + std::to_string(x.steps_done) + " is not between 0 and steps_planned " +
                                 std::to_string(x.steps_planned));
      }
      if (Status st = privacy::validate(x.sample_rate, x.noise_multiplier, x.steps_planned, delta); !st.ok()) {
        throw std::runtime_error(st.message());
      }
      // Recomputed from what was trained, never read: the curve cannot disagree with it.
      const int64_t charged = x.state == "reserved" ? x.steps_planned : x.steps_done;
      x.curve = privacy::RdpCurve::subsampled_gaussian(x.sample_rate, x.noise_multiplier, charged);
      l->entries_.push_back(std::move(x));
    } catch (const std::exception& ex) {
      return Status::invalid("privacy ledger " + path + ": entry " + std::to_string(l->entries_.size() + 1) +
                             " is malformed: " + ex.what());
    }
  }
  return l;
}

privacy::RdpCurve PrivacyLedger::spent() const {
  privacy::RdpCurve total;
  for (const auto& e : entries_) total += e.curve;
  return total;
}

Status PrivacyLedger::reserve(Entry e) {
  e.state = "reserved";
  e.curve = privacy::RdpCurve::subsampled_gaussian(e.sample_rate, e.noise_multiplier, e.steps_planned);
  entries_.push_back(std::move(e));
  Status st = write();
  if (!st.ok()) entries_.pop_back();
  return st;
}

Status PrivacyLedger::settle(const std::string& key, int64_t steps_done, const std::string& ended) {
  for (auto& e : entries_) {
    if (e.key != key || e.state != "reserved") continue;
    Entry before = e;
    e.state = "settled";
    e.steps_done = std::min(steps_done, e.steps_planned);
    e.ended = ended;
    e.curve = privacy::RdpCurve::subsampled_gaussian(e.sample_rate, e.noise_multiplier, e.steps_done);
    Status st = write();
    if (!st.ok()) e = before;  // still charged at the plan: the safe side
    return st;
  }
  return Status::not_found("privacy ledger " + path_ + ": no open entry '" + key + "'");
}

Status PrivacyLedger::write() const {
  json entries = json::array();
  for (const auto& e : entries_) {
    entries.push_back({{"key", e.key}, {"job", e.job}, {"user", e.user}, {"model", e.model}, {"state", e.state},
                       {"started", e.started}, {"ended", e.ended}, {"sample_rate", e.sample_rate},
                       {"noise_multiplier", e.noise_multiplier}, {"steps_planned", e.steps_planned},
                       {"steps_done", e.steps_done}, {"epsilon", e.curve.epsilon(delta_).epsilon}});
  }
  json j = {{"format", kFormat}, {"delta", delta_}, {"entries", std::move(entries)}};
  std::error_code ec;
  const fs::path dir = fs::path(path_).parent_path();
  if (!dir.empty()) fs::create_directories(dir, ec);
  std::string err = write_file_durably(path_, j.dump(2) + "\n");
  if (!err.empty()) return Status(StatusCode::kUnavailable, "privacy ledger: " + err);
  return Status();
}

json PrivacyLedger::summary(double epsilon_cap) const {
  json jobs = json::array();
  double naive = 0;
  for (const auto& e : entries_) {
    const double eps = e.curve.epsilon(delta_).epsilon;
    naive += eps;
    jobs.push_back({{"job", e.job}, {"user", e.user}, {"model", e.model}, {"state", e.state},
                    {"started", e.started}, {"ended", e.ended}, {"sample_rate", e.sample_rate},
                    {"noise_multiplier", e.noise_multiplier}, {"steps_planned", e.steps_planned},
                    {"steps_done", e.steps_done}, {"epsilon", eps}});
  }
  const privacy::Epsilon total = spent().epsilon(delta_);
  json s = {{"ledger", path_}, {"delta", delta_}, {"epsilon_spent", total.epsilon},
            {"epsilon_sum_of_jobs", naive}, {"jobs", std::move(jobs)}};
  if (epsilon_cap > 0) {
    s["epsilon_cap"] = epsilon_cap;
    s["epsilon_left"] = std::max(0.0, epsilon_cap - total.epsilon);
  }
  return s;
}

}  // namespace fedpod::worker
