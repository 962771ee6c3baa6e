// AuditAnchor: the pod's audit chain head, signed and published to the hub, so that
// the log cannot shrink unnoticed.
//
// The audit log's hash chain (audit.h) shows an edited or removed entry, but not a
// log cut at its end, replaced whole by a consistent chain, or deleted. So the pod
// signs its head — {pod, entries, head (the last hash), reset, time} — with its own
// Ed25519 key (AUDIT_LOG.sign.key, made on first start) and publishes it to the hub
// at a fixed pace and at every job end. The hub keeps every head (append-only) and
// refuses one that contradicts the last (fewer entries, another hash for the same
// entry, another key). `fedpod audit verify FILE --pod NAME` checks the log against
// every published head.
//
// At start-up (prepare_audit_log, before the log is opened):
//  - a missing or empty log is an error when this pod kept one before (its signing
//    key exists; a new log starts with an `audit_log_started` entry, so a log is
//    never empty once the key exists), and
//  - with a hub, a log that contradicts the heads published since the last reset
//    (truncated, or another hash at a published entry) is an error,
// unless the owner starts a new log on purpose (`fedpod worker --reset-audit-log
// REASON`): the new log's first entry records the reset (reason, what the hub held),
// and the next head is published as a reset, which the hub records as such.
//
// Thread safety: notify() from any thread; the publisher runs on its own thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "fedpod/common/log.h"
#include "fedpod/common/signing.h"
#include "fedpod/common/status.h"
#include "fedpod/worker/audit.h"

namespace fedpod::worker {

// The heads a log must agree with: those from the last reset on. `log_path` is read.
// Returns "" when the log agrees, else what is wrong ("truncated: ...",
// "replaced: ...").
std::string check_log_against_heads(const std::string& log_path, const nlohmann::json& heads);

struct AuditStartup {
  SigningKeyPair key;  // the pod's audit signing key
  bool reset = false;  // the log was started anew: publish the next head as a reset
};

// Checks the log at `log_path` before it is opened, as described above; `heads` is
// what the hub holds (null: no hub, or it could not be asked). With `reset_reason`
// and something to reset, moves the old log aside (LOG.before-reset-TIME) and returns
// the entry the caller must append first to the new log. Errors are
// kFailedPrecondition naming the problem and the fix.
struct AuditPrepared {
  AuditStartup startup;
  nlohmann::json reset_entry;  // an object when a reset entry must be appended first
};
StatusOr<AuditPrepared> prepare_audit_log(const std::string& log_path, const nlohmann::json& heads,
                                          const std::string& reset_reason);

struct AuditAnchorOptions {
  std::string pod_name;
  std::chrono::milliseconds interval{60'000};
  // Sends one signed head; true when recorded, false when already the latest.
  std::function<StatusOr<bool>(const nlohmann::json& signed_head)> publish;
  // Called after each attempt with "ok", "refused" (the hub contradicted it) or
  // "unavailable" (for metrics).
  std::function<void(const std::string& result)> on_result;
};

class AuditAnchor {
 public:
  AuditAnchor(AuditAnchorOptions options, AuditStartup startup, AuditLog* log, Logger logger);
  ~AuditAnchor();  // publishes nothing more; joins the thread
  AuditAnchor(const AuditAnchor&) = delete;
  AuditAnchor& operator=(const AuditAnchor&) = delete;

  // Publish soon (a job ended).
  void notify();
  // The signed head for the log as it is now (also what the thread sends).
  nlohmann::json signed_head();

 private:
  void run();
  nlohmann::json make_head(const std::pair<int64_t, std::string>& head, bool reset) const;

  AuditAnchorOptions options_;
  AuditStartup startup_;
  AuditLog* log_;
  Logger logger_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool wake_ = true;  // publish once at start
  int64_t published_entries_ = -1;
  std::string last_error_;
  std::thread thread_;  // last: starts after the members it uses
};

}  // namespace fedpod::worker
