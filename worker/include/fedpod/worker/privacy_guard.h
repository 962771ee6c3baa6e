// The pod owner's privacy limits (pod.yaml privacy; docs/privacy.md), applied by the
// pod to every job: minimum batch size, minimum samples per returned update, maximum
// local steps, and, with differential_privacy, DP-SGD within a budget that lasts
// across jobs.
//
// The budget lives in a ledger (PrivacyLedger): one entry per accepted job start,
// written durably *before* the job's first step with the ε of every step the job
// declared (its plan), and settled to the steps actually trained when the job ends.
// A pod killed mid-job therefore restarts charged with the whole plan of the job it
// was running: spent budget is never forgotten, only over-counted. Entries are RDP
// curves (privacy/accountant.h) that add up across jobs, and the total ε is that of
// their sum.
//
//   auto ledger = PrivacyLedger::open(policy.ledger, policy.delta);
//   PrivacyDecision d = decide_privacy(policy, request, (*ledger)->spent(), pod);
//   if (d.allowed && d.dp) (*ledger)->reserve(entry);   // before training starts
//   ...                                                   // each train: check_train
//   (*ledger)->settle(key, steps_done);                  // at endJob
//
// Not thread-safe: the pod's socket thread owns the ledger.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fedpod/common/status.h"
#include "fedpod/privacy/accountant.h"
#include "fedpod/privacy/dp_sgd.h"
#include "fedpod/worker/config.h"

namespace fedpod::worker {

// What a job will ask of the pod (startJob's plan).
struct JobPlan {
  int64_t rounds = 0;        // 0: not declared
  int64_t local_epochs = 0;  // 0 when local_steps is used
  int64_t local_steps = 0;
  int64_t batch_size = 0;
};

struct PrivacyRequest {
  JobPlan plan;
  privacy::DpSgdOptions dp;
  int64_t train_rows = 0;  // rows of the pod's training split
};

struct PrivacyDecision {
  bool allowed = true;
  std::string reason;   // a metric label: privacy_min_batch_size, privacy_budget, ...
  std::string message;  // for the modeller: names the limit, the job's value and the fix
  // With DP: the job's cost as planned.
  bool dp = false;
  double sample_rate = 0;
  int64_t steps = 0;        // every round's steps together
  double epsilon = 0;       // this job alone
  double epsilon_after = 0; // everything spent so far plus this job
  privacy::RdpCurve curve;  // this job's
};

// The limits that do not depend on the budget, for a round of `batch_size` and
// `epochs`/`steps` over `train_rows`. Used at startJob (plan) and at every train.
PrivacyDecision check_limits(const PrivacyPolicy& policy, int64_t batch_size, int64_t epochs, int64_t steps,
                             int64_t train_rows, const std::string& pod);

// The whole startJob decision: the limits on the plan, DP demanded or not, the
// noise's minimum, and the ε the plan would spend against what `spent` leaves.
PrivacyDecision decide_privacy(const PrivacyPolicy& policy, const PrivacyRequest& request,
                               const privacy::RdpCurve& spent, const std::string& pod);

class PrivacyLedger {
 public:
  struct Entry {
    std::string key;     // job id and the start's time: unique per accepted startJob
    std::string job, user, model;
    std::string state;   // "reserved" (running, or the pod died during it) or "settled"
    std::string started, ended;  // UTC
    double sample_rate = 0, noise_multiplier = 0;
    int64_t steps_planned = 0, steps_done = 0;
    privacy::RdpCurve curve;  // reserved: of steps_planned; settled: of steps_done
  };

  // Reads the ledger at `path`, or starts an empty one where there is none. A ledger
  // that cannot be read or parsed is an error naming the file: the pod refuses to
  // start rather than forget spent budget.
  static StatusOr<std::unique_ptr<PrivacyLedger>> open(const std::string& path, double delta);
  PrivacyLedger(const PrivacyLedger&) = delete;
  PrivacyLedger& operator=(const PrivacyLedger&) = delete;

  // Everything charged: the sum of every entry's curve.
  privacy::RdpCurve spent() const;
  double delta() const { return delta_; }
  const std::vector<Entry>& entries() const { return entries_; }
  const std::string& path() const { return path_; }

  // Appends `e` and writes the ledger durably before returning.
  Status reserve(Entry e);
  // Settles the entry `key` to `steps_done` steps (at most its plan) and writes it.
  Status settle(const std::string& key, int64_t steps_done, const std::string& ended);

  // The ledger as `fedpod privacy status --json` prints it, with ε per entry and in
  // total, against `epsilon_cap` (0: none configured).
  nlohmann::json summary(double epsilon_cap) const;

 private:
  PrivacyLedger(std::string path, double delta) : path_(std::move(path)), delta_(delta) {}
  Status write() const;

  std::string path_;
  double delta_;
  std::vector<Entry> entries_;
};

}  // namespace fedpod::worker
