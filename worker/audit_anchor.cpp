#include "fedpod/worker/audit_anchor.h"

#include <filesystem>

#include "fedpod/common/utc.h"

namespace fedpod::worker {

namespace fs = std::filesystem;

namespace {

// The heads from the last reset on (a reset starts a new log).
std::vector<nlohmann::json> current_heads(const nlohmann::json& heads) {
  std::vector<nlohmann::json> out;
  if (!heads.is_array()) return out;
  for (const auto& h : heads) {
    if (!h.is_object()) continue;
    if (h.value("reset", false) == true) out.clear();
    out.push_back(h);
  }
  return out;
}

std::string sign_key_path(const std::string& log_path) { return log_path + ".sign.key"; }

}  // namespace

std::string check_log_against_heads(const std::string& log_path, const nlohmann::json& heads) {
  const std::vector<std::string> hashes = audit_log_hashes(log_path);
  const auto n = static_cast<int64_t>(hashes.size());
  for (const auto& h : current_heads(heads)) {
    const int64_t entries = h.value("entries", int64_t{0});
    const std::string head = h.value("head", std::string());
    const std::string when = h.value("published_at", std::string("?"));
    if (entries == 0) continue;
    if (n < entries) {
      return "truncated: the pod published a head at entry " + std::to_string(entries) + " (" + when +
             "), but the log has " + std::to_string(n) + " entries";
    }
    if (hashes[static_cast<size_t>(entries - 1)] != head) {
      return "replaced: entry " + std::to_string(entries) + "'s hash is not the one the pod published (" + when + ")";
    }
  }
  return "";
}

StatusOr<AuditPrepared> prepare_audit_log(const std::string& log_path, const nlohmann::json& heads,
                                          const std::string& reset_reason) {
  AuditPrepared out;
  std::error_code ec;
  const bool log_missing = !fs::exists(log_path, ec) || fs::file_size(log_path, ec) == 0;
  const std::string key_path = sign_key_path(log_path);
  const bool key_exists = fs::exists(key_path, ec);
  std::string problem;
  if (log_missing && key_exists) {
    problem = "missing: " + log_path + " is gone or empty, but this pod kept an audit log before (" + key_path +
              " exists)";
  } else if (!log_missing && !heads.is_null()) {
    problem = check_log_against_heads(log_path, heads);
  } else if (log_missing && !heads.is_null()) {
    for (const auto& h : current_heads(heads)) {
      if (h.value("entries", int64_t{0}) > 0) {
        problem = "missing: " + log_path + " is gone or empty, but the pod published a head at entry " +
                  std::to_string(h.value("entries", int64_t{0})) + " to the hub";
      }
    }
  }
  if (!problem.empty() && reset_reason.empty()) {
    return Status::failed_precondition(
        "audit_log: " + problem +
        ". An audit log must not shrink or restart unnoticed: restore it from a backup, or start a new one on "
        "purpose with `fedpod worker --config POD.yaml --reset-audit-log \"REASON\"` (the reset is recorded in "
        "the new log and on the hub)");
  }
  if (problem.empty() && !reset_reason.empty()) {
    return Status::failed_precondition("--reset-audit-log: the audit log " + log_path +
                                       " is intact and agrees with the hub; there is nothing to reset");
  }
  if (!problem.empty()) {
    // The old log is moved aside (never deleted): the owner may still want it.
    if (!log_missing) {
      const std::string aside = log_path + ".before-reset-" + std::to_string(std::time(nullptr));
      fs::rename(log_path, aside, ec);
      if (ec) return Status(StatusCode::kUnavailable, "--reset-audit-log: cannot move " + log_path + " aside: " + ec.message());
    }
    nlohmann::json last = nullptr;
    const auto cur = current_heads(heads);
    if (!cur.empty()) last = {{"entries", cur.back().value("entries", 0)}, {"head", cur.back().value("head", "")}};
    out.reset_entry = {{"event", "audit_log_reset"}, {"reason", reset_reason}, {"problem", problem},
                       {"hub_head", last}};
    out.startup.reset = true;
  }
  if (key_exists) {
    auto k = read_signing_key_file(key_path);
    if (!k.ok()) return Status::failed_precondition("audit_log: " + k.status().message());
    out.startup.key = *k;
  } else {
    out.startup.key = generate_signing_keypair();
    Status st = write_signing_key_files(log_path, out.startup.key, /*force=*/true);
    if (!st.ok()) return Status(StatusCode::kUnavailable, "audit_log: cannot write its signing key: " + st.message());
  }
  return out;
}

AuditAnchor::AuditAnchor(AuditAnchorOptions options, AuditStartup startup, AuditLog* log, Logger logger)
    : options_(std::move(options)),
      startup_(std::move(startup)),
      log_(log),
      logger_(std::move(logger)),
      thread_(&AuditAnchor::run, this) {}

AuditAnchor::~AuditAnchor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AuditAnchor::notify() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

nlohmann::json AuditAnchor::signed_head() {
  std::lock_guard<std::mutex> lock(mu_);
  return make_head(log_->head(), startup_.reset);
}

nlohmann::json AuditAnchor::make_head(const std::pair<int64_t, std::string>& head, bool reset) const {
  nlohmann::json payload = {{"pod", options_.pod_name}, {"entries", head.first}, {"head", head.second},
                            {"reset", reset},           {"time", now_utc()}};
  return nlohmann::json::parse(sign_document(payload, startup_.key));
}

void AuditAnchor::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, options_.interval, [this] { return stop_ || wake_; });
    if (stop_) break;
    wake_ = false;
    const auto head = log_->head();
    const int64_t entries = head.first;
    if (entries == published_entries_ && !startup_.reset) continue;
    nlohmann::json doc = make_head(head, startup_.reset);
    lock.unlock();
    auto r = options_.publish(doc);
    lock.lock();
    std::string result;
    if (r.ok()) {
      result = "ok";
      published_entries_ = entries;
      startup_.reset = false;
      if (!last_error_.empty()) logger_->info("event=audit_head_published pod={} entries={}", options_.pod_name, entries);
      last_error_.clear();
    } else {
      result = r.status().code() == StatusCode::kFailedPrecondition ? "refused" : "unavailable";
      // Once per distinct error: a hub that is down for an hour is one line, not sixty.
      if (r.status().message() != last_error_) {
        last_error_ = r.status().message();
        if (result == "refused") {
          logger_->error("event=audit_head_refused pod={} entries={} error=\"{}\"", options_.pod_name, entries,
                         last_error_);
        } else {
          logger_->warn("event=audit_head_unpublished pod={} entries={} error=\"{}\" (retried every {} ms)",
                        options_.pod_name, entries, last_error_, options_.interval.count());
        }
      }
    }
    if (options_.on_result) options_.on_result(result);
  }
}

}  // namespace fedpod::worker
