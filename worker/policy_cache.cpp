#include "fedpod/worker/policy_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "fedpod/common/files.h"
#include "fedpod/common/signing.h"

namespace fedpod::worker {
namespace {

using std::chrono::system_clock;

// "26h 3m", "4m 10s", "12s", "250ms".
std::string format_age(std::chrono::milliseconds age) {
  using namespace std::chrono;
  const int64_t ms = age.count();
  if (ms < 1000) return std::to_string(ms) + "ms";
  const int64_t s = ms / 1000;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m " + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h " + std::to_string((s % 3600) / 60) + "m";
}

std::chrono::milliseconds since(system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(system_clock::now() - t);
}

}  // namespace

PolicyCache::PolicyCache(PolicyCacheOptions options, Logger log)
    : options_(std::move(options)), log_(log ? std::move(log) : null_logger()) {}

PolicyCache::~PolicyCache() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status PolicyCache::start() {
  const bool hub = static_cast<bool>(options_.fetch);
  if (hub == !options_.file.empty()) {
    return Status::invalid(
        "access policy: give either a hub to fetch it from or a policy file, not " +
        std::string(hub ? "both" : "neither"));
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (started_)
      return Status::failed_precondition("access policy: PolicyCache::start() called twice");
  }
  if (options_.signing_key.empty()) {
    return Status::invalid("access policy: no signing key is pinned (pod.yaml policy.signing_key): a pod accepts "
                           "only policies signed by the key it pins");
  }
  if (!is_signing_public_key(options_.signing_key)) {
    return Status::invalid("access policy: the pinned signing key '" + options_.signing_key +
                           "' is not a base64 Ed25519 public key (44 characters)");
  }
  if (hub && !options_.cache_path.empty()) {
    // Temp files of cache writes a crash interrupted.
    const std::filesystem::path cache(options_.cache_path);
    const int removed =
        remove_interrupted_writes(cache.parent_path().string(), cache.filename().string());
    if (removed > 0)
      log_->warn(
          "access policy: removed {} temp files of cache writes interrupted by a crash cache={}",
          removed, options_.cache_path);
  }
  if (!hub) {
    std::lock_guard<std::mutex> reload(refresh_mu_);
    const FileStamp stamp = stamp_file();
    auto policy = read_file();
    if (!policy.ok()) return policy.status();
    log_->info("access policy loaded file={} pod={} users={} grants={}", options_.file, policy->pod,
               policy->users.size(), policy->grants.size());
    {
      std::lock_guard<std::mutex> lk(mu_);
      file_stamp_ = stamp;
    }
    install(std::move(policy).value(), system_clock::now());
  } else {
    // The persisted copy first: its version is the floor a fetched policy must reach
    // (a rolled-back or replayed policy is refused across restarts too).
    Status fallback = load_persisted();
    if (!fallback.ok() && fallback.code() != StatusCode::kNotFound) {
      log_->warn("access policy: the persisted copy is not used: {}", fallback.message());
    }
    Status fetched = fetch_once();
    if (!fetched.ok() && fetched.code() == StatusCode::kPermissionDenied) {
      // The hub answered and refused: a wrong or revoked token, not an outage.
      const std::string why = "access policy: the hub refused this pod's credentials (authentication failed: " +
                              fetched.message() +
                              "); check policy.token_file: it must hold a token of this pod from `fedpod pod token`";
      if (!fallback.ok()) return Status(StatusCode::kPermissionDenied, why);
      log_->error("{}; using the persisted copy cache={} fetched_at={} until the token is fixed", why,
                  options_.cache_path, format_utc(loaded_at()));
    } else if (!fetched.ok()) {
      if (!fallback.ok()) {
        return Status(StatusCode::kUnavailable, "access policy: fetching it from the hub failed (" +
                                                    fetched.message() + "), and " +
                                                    fallback.message());
      }
      log_->warn(
          "access policy: the hub is unreachable, using the persisted copy cache={} fetched_at={} "
          "age={} "
          "max_staleness={}",
          options_.cache_path, format_utc(loaded_at()), format_age(since(loaded_at())),
          format_age(options_.max_staleness));
    }
    thread_ = std::thread(&PolicyCache::run, this);
  }
  std::lock_guard<std::mutex> lk(mu_);
  started_ = true;
  return Status();
}

StatusOr<std::shared_ptr<const Policy>> PolicyCache::current() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!policy_) {
      return Status::failed_precondition(
          "the pod's access policy is not loaded (PolicyCache::start() has not "
          "succeeded)");
    }
  }
  if (!options_.file.empty()) {
    std::lock_guard<std::mutex> reload(refresh_mu_);
    const FileStamp stamp = stamp_file();
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stamp == file_stamp_ && !(policy_->expires_at && *policy_->expires_at <= system_clock::now())) {
        return policy_;
      }
      file_stamp_ = stamp;  // looked at, good or bad: a bad file is reported once
    }
    auto policy = read_file();
    if (policy.ok()) {
      log_->info("access policy reloaded file={} users={} grants={}", options_.file,
                 policy->users.size(), policy->grants.size());
      install(std::move(policy).value(), system_clock::now());
    } else {
      log_->error(
          "access policy file changed but is not usable; keeping the policy loaded at {}: {}",
          format_utc(loaded_at()), policy.status().message());
    }
    std::lock_guard<std::mutex> lk(mu_);
    if (policy_->expires_at && *policy_->expires_at <= system_clock::now()) {
      return Status(StatusCode::kUnavailable, "pod " + policy_->pod + ": its signed access policy " + options_.file +
                                                  " expired at " + format_utc(*policy_->expires_at) +
                                                  ": refusing new jobs until the owner signs a new one");
    }
    return policy_;
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (policy_->expires_at && *policy_->expires_at <= system_clock::now()) {
    return Status(StatusCode::kUnavailable,
                  "pod " + (options_.pod_name.empty() ? policy_->pod : options_.pod_name) +
                      ": its signed access policy (version " + std::to_string(policy_->version) + ") expired at " +
                      format_utc(*policy_->expires_at) + ": refusing new jobs until a newer one arrives");
  }
  const auto age = since(loaded_at_);
  if (age > options_.max_staleness) {
    return Status(StatusCode::kUnavailable,
                  "pod " + (options_.pod_name.empty() ? policy_->pod : options_.pod_name) +
                      ": its access policy is " + format_age(age) +
                      " old (last fetched from the hub at " + format_utc(loaded_at_) +
                      "), beyond max_staleness " + format_age(options_.max_staleness) +
                      ": refusing new jobs until the hub can be reached again");
  }
  return policy_;
}

std::shared_ptr<const Policy> PolicyCache::snapshot() const {
  std::lock_guard<std::mutex> lk(mu_);
  return policy_;
}

Status PolicyCache::refresh_now() {
  if (options_.fetch) return fetch_once();
  if (options_.file.empty())
    return Status::invalid("access policy: neither a hub nor a policy file is set");
  std::lock_guard<std::mutex> reload(refresh_mu_);
  const FileStamp stamp = stamp_file();
  auto policy = read_file();
  {
    std::lock_guard<std::mutex> lk(mu_);
    file_stamp_ = stamp;
  }
  if (!policy.ok()) {
    log_->error("access policy file is not usable; keeping the current policy: {}",
                policy.status().message());
    return policy.status();
  }
  install(std::move(policy).value(), system_clock::now());
  return Status();
}

system_clock::time_point PolicyCache::loaded_at() const {
  std::lock_guard<std::mutex> lk(mu_);
  return loaded_at_;
}

PolicyCache::FileStamp PolicyCache::stamp_file() const {
  struct stat st {};
  FileStamp stamp;
  if (::stat(options_.file.c_str(), &st) != 0) return stamp;
  stamp.exists = true;
  stamp.mtime_ns = int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  stamp.size = st.st_size;
  return stamp;
}

StatusOr<Policy> PolicyCache::read_file() {
  auto policy = load_signed_policy_file(options_.file, options_.signing_key, "");
  if (!policy.ok()) return policy.status();
  FEDPOD_RETURN_IF_ERROR(check_pod(*policy, options_.file));
  FEDPOD_RETURN_IF_ERROR(check_fresh(*policy, options_.file));
  return policy;
}

Status PolicyCache::check_fresh(const Policy& p, const std::string& where) const {
  if (p.expires_at && *p.expires_at <= system_clock::now()) {
    return Status::invalid(where + ": the policy expired at " + format_utc(*p.expires_at) + " (version " +
                           std::to_string(p.version) + ")");
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (policy_ && p.version < policy_->version) {
    return Status::invalid(where + ": the policy's version " + std::to_string(p.version) + " is older than version " +
                           std::to_string(policy_->version) +
                           ", which this pod already accepted: a replayed or rolled-back policy");
  }
  return Status();
}

Status PolicyCache::check_pod(const Policy& p, const std::string& where) const {
  if (options_.pod_name.empty() || p.pod == options_.pod_name) return Status();
  return Status::invalid(where + ": the policy is for pod '" + p.pod + "', but this pod is '" +
                         options_.pod_name + "' (wrong pod's policy)");
}

Status PolicyCache::fetch_once() {
  std::lock_guard<std::mutex> serial(refresh_mu_);
  auto note_failure = [&](const Status& st, bool bad_policy) {
    bool first;
    {
      std::lock_guard<std::mutex> lk(mu_);
      first = !fetch_failing_;
      fetch_failing_ = true;
    }
    // Once per outage, not every `refresh`.
    if (bad_policy) {
      log_->error("access policy from the hub ignored, keeping the current one: {}", st.message());
    } else if (first) {
      log_->warn(
          "access policy fetch failed, keeping the current one (further failures logged at debug): "
          "{}",
          st.message());
    } else {
      log_->debug("access policy fetch failed: {}", st.message());
    }
    return st;
  };

  StatusOr<nlohmann::json> fetched = Status(StatusCode::kUnavailable, "no fetch");
  try {
    fetched = options_.fetch();
  } catch (const std::exception& e) {
    fetched =
        Status(StatusCode::kUnavailable, std::string("fetching the policy threw: ") + e.what());
  }
  if (!fetched.ok()) return note_failure(fetched.status(), false);
  auto policy = verify_signed_policy(*fetched, options_.signing_key, "", "policy from the hub");
  if (!policy.ok()) return note_failure(policy.status(), true);
  Status pod = check_pod(*policy, "policy from the hub");
  if (!pod.ok()) return note_failure(pod, true);
  Status fresh = check_fresh(*policy, "policy from the hub");
  if (!fresh.ok()) return note_failure(fresh, true);

  const auto now = system_clock::now();
  if (!options_.cache_path.empty()) {
    // The signed document itself: verified again when it is read back.
    nlohmann::json persisted = {{"fetched_at", format_utc(now)}, {"policy", *fetched}};
    std::string err = write_file_durably(options_.cache_path, persisted.dump(2) + "\n");
    if (!err.empty())
      log_->warn("access policy: cannot persist the fetched policy cache={}: {}",
                 options_.cache_path, err);
  }
  bool recovered;
  {
    std::lock_guard<std::mutex> lk(mu_);
    recovered = fetch_failing_;
    fetch_failing_ = false;
  }
  if (recovered)
    log_->info("access policy fetched again pod={} users={} grants={}", policy->pod,
               policy->users.size(), policy->grants.size());
  install(std::move(policy).value(), now);
  return Status();
}

Status PolicyCache::load_persisted() {
  const std::string& path = options_.cache_path;
  if (path.empty())
    return Status::not_found("no persisted copy to fall back to (no cache path is set)");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::not_found("there is no persisted copy at " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(buf.str(), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("fetched_at") || !j["fetched_at"].is_string() ||
      !j.contains("policy")) {
    return Status::invalid("the persisted copy " + path +
                           " is not a {fetched_at, policy} JSON object");
  }
  auto fetched_at = parse_utc(j["fetched_at"].get<std::string>());
  if (!fetched_at) return Status::invalid("the persisted copy " + path + " has a bad fetched_at");
  auto policy = verify_signed_policy(j["policy"], options_.signing_key, "", path);
  if (!policy.ok())
    return Status::invalid("the persisted copy is not usable: " + policy.status().message());
  FEDPOD_RETURN_IF_ERROR(check_pod(*policy, path));
  FEDPOD_RETURN_IF_ERROR(check_fresh(*policy, path));
  install(std::move(policy).value(), *fetched_at);
  return Status();
}

void PolicyCache::install(Policy p, system_clock::time_point at) {
  std::vector<std::string> sharing = p.users_sharing_keys();
  auto fresh = std::make_shared<const Policy>(std::move(p));
  bool changed;
  {
    std::lock_guard<std::mutex> lk(mu_);
    policy_ = std::move(fresh);
    loaded_at_ = at;
    changed = sharing != sharing_keys_;
    if (changed) sharing_keys_ = sharing;
  }
  if (changed && !sharing.empty()) {
    std::string names;
    for (const auto& n : sharing) names += (names.empty() ? "" : ", ") + n;
    log_->warn(
        "access policy: users {} share public keys, so none of them can be authenticated "
        "until each has a key of their own",
        names);
  }
}

void PolicyCache::run() {
  const auto interval = std::max(options_.refresh, std::chrono::milliseconds(1));
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    if (wake_.wait_for(lk, interval, [this] { return stop_; })) break;
    lk.unlock();
    fetch_once();  // logs its own failures
    lk.lock();
  }
}

}  // namespace fedpod::worker
