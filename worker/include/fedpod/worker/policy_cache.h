// PolicyCache: the access policy a pod decides with, kept current from the hub or
// from a local file.
//
// Two modes, chosen by PolicyCacheOptions:
//   hub mode   `fetch` is set. start() fetches once; a background thread then fetches
//              every `refresh`. Each good policy is persisted to `cache_path`, so a pod
//              restarted during a hub outage still has its last policy.
//   file mode  `file` is set (an air-gapped pod). The file is read at start() and
//              re-read by current() whenever its mtime or size changed.
//
// Freshness guarantees (what a pod owner can rely on):
//   - A revocation (role or grant removed on the hub) reaches the pod within
//     `refresh` plus one fetch timeout, and applies to the next job the pod starts
//     and to the next request of a job already running, which it ends (the worker
//     decides each train, fetch and evaluate again).
//   - A hub outage keeps the last good policy for up to `max_staleness` after the
//     last successful fetch (counted across restarts through the persisted copy);
//     after that current() refuses with kUnavailable, so new jobs are refused until
//     the hub answers again. Failing closed is deliberate: an old policy may still
//     hold a revoked grant.
//   - A fetched or re-read policy that is not signed by the pinned key, does not
//     parse, is for another pod, has expired or is older than the one in force is
//     logged and ignored: the previous good policy stays in force.
//
// Thread safety: every method may be called from any thread. The policy handed out
// is immutable (shared_ptr<const Policy>): a caller keeps a consistent policy for a
// whole decision even if a refresh swaps in a new one meanwhile; the shared_ptr is
// what lets the old one live until its last reader is done. snapshot() and
// current() never wait for the network (hub mode); fetches run without holding the
// lock they read under.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "fedpod/common/log.h"
#include "fedpod/common/status.h"
#include "fedpod/worker/policy.h"

namespace fedpod::worker {

struct PolicyCacheOptions {
  // Hub mode: returns the policy JSON (GET /api/v1/pods/{pod}/policy) or why not.
  // Called from start(), refresh_now() and the refresh thread, never concurrently
  // with itself. It must bound its own wait (an HTTP timeout): the destructor waits
  // for a fetch in progress. Empty in file mode.
  std::function<StatusOr<nlohmann::json>()> fetch;
  // File mode: the policy file (YAML or JSON; see policy.h). Empty in hub mode.
  std::string file;
  // Hub mode: where the last good fetched policy is kept (written atomically: temp
  // file, fsync, rename, fsync of the directory; mode 0600). Empty: not persisted.
  // Its content is {"fetched_at": "<UTC time>", "policy": <the hub's signed document>}. A crash
  // mid-write leaves the old file whole plus a hidden temp file
  // (".<name>.tmp-XXXXXX"), which start() removes: one pod per cache path.
  std::string cache_path;
  // Hub mode: how often the policy is fetched. Bounds how long a revocation takes
  // to reach the pod.
  std::chrono::milliseconds refresh{30'000};
  // Hub mode: how long after the last successful fetch the policy is still used.
  // Long enough to ride out a hub restart or a network blip; short enough that a
  // revocation cannot be dodged for long by cutting the pod off from the hub.
  std::chrono::milliseconds max_staleness{std::chrono::hours(24)};
  // The policy's "pod" must equal this (a policy for another pod is an error); "" skips
  // the check.
  std::string pod_name;
  // The Ed25519 public key (base64) every policy must be signed with (policy.h,
  // verify_signed_policy); required. A policy that is unsigned, signed by another
  // key, altered, for another pod, expired, or older than the one in force is
  // refused (logged, the previous one stays); an expired policy in force refuses
  // new jobs (current() is kUnavailable). The persisted copy is the signed document,
  // verified again when read back, and its version is the floor after a restart.
  std::string signing_key;
};

class PolicyCache {
 public:
  // Exactly one of options.fetch and options.file must be set (checked by start()).
  PolicyCache(PolicyCacheOptions options, Logger log);
  // Stops the refresh thread, waiting for a fetch in progress.
  ~PolicyCache();
  PolicyCache(const PolicyCache&) = delete;
  PolicyCache& operator=(const PolicyCache&) = delete;

  // File mode: loads the file; an error if it cannot be read or is not a valid
  // policy for this pod. Hub mode: tries one fetch; when that fails, falls back to
  // the persisted cache with a warning; an error only if neither gives a policy.
  // Then (hub mode) starts the refresh thread, even after a fallback, so the pod
  // recovers when the hub does. Call once.
  Status start();

  // The policy to decide a new job with. File mode: re-reads the file if its mtime
  // or size changed (a bad new file is logged and the old policy kept). Hub mode:
  // the last good policy, or kUnavailable naming its age when it is older than
  // max_staleness. kFailedPrecondition before a successful start().
  StatusOr<std::shared_ptr<const Policy>> current();

  // The current policy for the ZAP authenticator's key -> user lookups, whatever its
  // age; never touches the network or the file system. Null before start().
  std::shared_ptr<const Policy> snapshot() const;

  // Fetches (hub mode) or re-reads the file (file mode) now, for tests and SIGHUP.
  // Returns the fetch's or the parse's status; on error the old policy stays.
  Status refresh_now();

  // Time of the last successful fetch (possibly before this process started, when
  // the policy came from the persisted cache) or file load; the epoch if none.
  std::chrono::system_clock::time_point loaded_at() const;

 private:
  struct FileStamp {
    bool exists = false;
    int64_t mtime_ns = 0;
    int64_t size = 0;
    bool operator==(const FileStamp& o) const {
      return exists == o.exists && mtime_ns == o.mtime_ns && size == o.size;
    }
  };
  FileStamp stamp_file() const;
  StatusOr<Policy> read_file();  // load + pod check
  Status fetch_once();           // hub mode: fetch, parse, check, persist, install
  Status load_persisted();       // hub mode: the fallback at start()
  Status check_pod(const Policy& p, const std::string& where) const;
  Status check_fresh(const Policy& p, const std::string& where) const;  // expiry, version floor
  void install(Policy p, std::chrono::system_clock::time_point at);
  void run();  // the refresh thread

  const PolicyCacheOptions options_;
  const Logger log_;

  mutable std::mutex mu_;  // guards the fields below
  std::shared_ptr<const Policy> policy_;
  std::chrono::system_clock::time_point loaded_at_{};
  FileStamp file_stamp_;  // file mode: the stamp last looked at (good or bad)
  bool started_ = false;
  bool stop_ = false;
  bool fetch_failing_ = false;  // hub mode: log the first failure of a streak, and the recovery
  std::vector<std::string> sharing_keys_;  // users_sharing_keys() of policy_, warned about once
  std::condition_variable wake_;

  std::mutex refresh_mu_;  // serialises fetches and file reloads; never held with mu_ while waiting
  std::thread thread_;
};

}  // namespace fedpod::worker
