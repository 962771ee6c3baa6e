// Store: the hub's state in its data directory (internal to the hub library).
//
// `<data_dir>/hub.db` is a SQLite database (WAL journal, foreign keys on, a busy
// timeout) whose schema is built by numbered migrations recorded in `schema_version`;
// each migration runs in its own transaction, so opening an old or new directory is
// idempotent. Artifacts live outside the database, content-addressed by sha256 in
// `<data_dir>/artifacts/<first two hex>/<sha256>`.
//
// Crash safety of a push: the artifact file is written durably first (temp file,
// fsync, rename, fsync of the directory), and only then is the version row inserted
// in one transaction with its source files. A crash before the commit leaves no
// version (at most an orphan artifact file that no row names: harmless, and reused
// if the same bytes are pushed again); a crash after it leaves a whole version.
// A crash mid-write leaves a hidden temp file (".<sha256>.tmp-XXXXXX"); open()
// removes those, so one hub process per data directory is assumed (the Kubernetes
// Deployment runs one replica with the Recreate strategy).
//
// What survives what: SQLite runs in WAL mode with synchronous=FULL, so a COMMIT
// has reached the disk (WAL fsynced) before the hub replies; artifacts and their
// directory entries are fsynced before the row naming them commits. A process kill
// (SIGKILL, OOM) at any point loses nothing that was acknowledged, and so does a
// power loss on storage that honours fsync (a volume that acknowledges writes it
// has not persisted voids the second guarantee, not the first).
// tests/integration/crash_safety_test.cpp kills `fedpod hub serve` mid-write.
//
// Threading: all methods may be called from any thread; one mutex serializes them
// (one SQLite connection). Ownership: owns the connection.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fedpod/common/status.h"

struct sqlite3;

namespace fedpod::hub::detail {

struct User {
  int64_t id = 0;
  std::string username;
  std::string public_key;
};

struct Version {
  int64_t id = 0;
  std::string username;
  std::string model_ref;
  int64_t version = 0;
  std::string sha256;
  int64_t size = 0;
  std::string format;
  std::string description;
  std::string created_at;
};

struct Model {
  int64_t id = 0;
  int64_t owner_id = 0;
  std::string username;
  std::string model_ref;
  std::string visibility;
  std::string description;
  std::string created_at;
  std::optional<Version> latest;
};

// Pod tokens start with this; user tokens are 64 hex digits, so the two never mix.
inline constexpr const char* kPodTokenPrefix = "pod_";

struct Pod {
  std::string name;
  std::string owner;
  std::string address;
  std::string public_key;
  std::string schema_json;
  std::string created_at;
  int64_t id = 0;        // filled when read from the database
  int64_t owner_id = 0;  // filled when read from the database
};

// One audit chain head a pod published (signed by the pod; `document` is the signed
// text, kept so anyone can check the signature later).
struct AuditHead {
  int64_t entries = 0;
  std::string head;
  bool reset = false;
  std::string signing_key;
  std::string document;
  std::string published_at;
};

// A pod's role for one user. `role` is "general-modeller" or "super-modeller".
struct Role {
  std::string pod;
  std::string username;
  std::string role;
  std::string granted_by;
  std::string granted_at;
};

// A modeller's request to run one model version on one pod. `status` is the stored
// one ("pending", "approved", "rejected", "revoked"); an approved request whose
// expires_at has passed is reported as "expired" by the server, not stored as such
// (expiry needs no write, and a pod checks it against its own clock anyway).
struct AccessRequest {
  int64_t id = 0;
  std::string pod;
  int64_t pod_owner_id = 0;
  std::string pod_owner;
  int64_t requester_id = 0;
  std::string requester;
  std::string model_user;
  std::string model_ref;
  int64_t version = 0;
  std::string sha256;  // of the version's artifact, recorded when requested
  std::string format;
  std::string purpose;
  std::string status;
  std::string reason;
  std::optional<std::string> expires_at;  // "2027-01-01T00:00:00Z"; nullopt: never
  std::string created_at;
  std::optional<std::string> decided_at;
  std::optional<std::string> decided_by;  // username of the pod owner who decided
};

// Filters of Store::list_access_requests; empty strings match everything.
struct AccessRequestFilter {
  int64_t viewer_id = 0;  // only requests this user made or whose pod this user owns
  std::string pod;        // a pod name
  // "pending", "approved" (not expired), "expired", "rejected" or "revoked".
  std::string status;
  std::string now;  // "YYYY-MM-DDTHH:MM:SSZ", what "expired" is measured against
};

// A decision on a request: move it from `from` to `to`, by `by`, with a reason.
struct Decision {
  int64_t id = 0;
  std::string from;  // the status the request must be in, else kFailedPrecondition
  std::string to;
  const User* by = nullptr;
  std::string reason;
  std::optional<std::string> expires_at;  // approvals only
  std::string now;
};

using Files = std::vector<std::pair<std::string, std::string>>;  // name, content

// How much the hub holds, for its /metrics gauges.
struct Counts {
  int64_t models = 0;
  int64_t versions = 0;
  int64_t pods = 0;
  int64_t pending_requests = 0;  // access requests awaiting a decision
};

struct NewVersion {
  const User* owner = nullptr;
  std::string model_ref;
  std::string format;
  std::string description;
  std::string visibility;  // "" keeps the model's (private for a new model)
  // The artifact: its bytes in memory, or a file streamed by begin_upload() (fsynced,
  // with its sha256 and size), which push() renames into place or removes.
  const std::string* artifact = nullptr;
  std::string artifact_file;
  std::string artifact_sha256;
  int64_t artifact_size = 0;
  Files sources;
};

class Store {
 public:
  explicit Store(std::string data_dir);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Creates the directories, removes temp files of artifact writes a crash
  // interrupted, opens the database and applies pending migrations.
  Status open();
  // Temp files open() removed (for the hub's log).
  int removed_temp_files() const { return removed_temp_files_; }
  // True once open() succeeded (the hub's readiness).
  bool is_open();

  // Rows counted in one read transaction (four COUNT(*)s over small tables and
  // their indexes: cheap enough for every scrape).
  Counts counts();

  // Returns the new user's token; kFailedPrecondition when the name is taken.
  StatusOr<std::string> create_user(const std::string& username, const std::string& public_key);
  std::optional<User> user_by_token(const std::string& token);
  std::optional<User> find_user(const std::string& username);
  // Every registered user, by name (the pods' policy lists their public keys).
  std::vector<User> list_users();

  // A new file for streaming an upload into (artifacts/uploads/, named like an
  // interrupted write so that open() removes one a crash left): its path, opened for
  // writing with mode 0600 as `*fd`.
  StatusOr<std::string> begin_upload(int* fd);
  // Stores the artifact durably, then records the next version of the model.
  StatusOr<Version> push(const NewVersion& v);

  // Models `viewer_id` may see (public ones and its own; 0 = anonymous).
  std::vector<Model> list_models(int64_t viewer_id, const std::string& owner);
  std::optional<Model> find_model(const std::string& username, const std::string& ref);
  std::vector<Version> versions(const Model& m);
  // `number` 0 = latest.
  std::optional<Version> version(const Model& m, int64_t number);
  Files sources(const Version& v);
  std::string artifact_path(const std::string& sha256) const;

  // kFailedPrecondition when the name is taken.
  Status create_pod(const User& owner, const Pod& pod);
  std::vector<Pod> list_pods();
  std::optional<Pod> find_pod(const std::string& name);
  // A new read-only token for `pod` (kPodTokenPrefix + 64 hex), replacing the one it
  // had: the old one stops working at once. Only its sha256 is stored.
  std::string rotate_pod_token(const Pod& pod);
  // The name of the pod whose token this is.
  std::optional<std::string> pod_by_token(const std::string& token);
  // Records a head the pod published: true when added, false when the same head was
  // already the latest. Without `reset`, kFailedPrecondition when it contradicts the
  // latest one (fewer entries, another hash at the same entry, another signing key).
  StatusOr<bool> add_audit_head(const Pod& pod, const AuditHead& head);
  std::vector<AuditHead> audit_heads(const Pod& pod);  // oldest first

  // Roles. grant_role replaces a user's existing role on the pod. revoke_role
  // returns kNotFound when the user had none.
  StatusOr<Role> grant_role(const Pod& pod, const User& user, const std::string& role,
                            const User& by);
  Status revoke_role(const Pod& pod, const User& user);
  std::vector<Role> roles(const Pod& pod);  // by username

  // Records a pending request of `requester` for version `v` on `pod`. Returns
  // kFailedPrecondition when the same requester already has a pending request for
  // that version on that pod.
  StatusOr<AccessRequest> create_access_request(const Pod& pod, const User& requester,
                                                const Version& v, const std::string& purpose,
                                                const std::string& now);
  std::optional<AccessRequest> access_request(int64_t id);
  // Newest first.
  std::vector<AccessRequest> list_access_requests(const AccessRequestFilter& f);
  // Applies `d` in one transaction. Returns kNotFound for an unknown id and
  // kFailedPrecondition when the request is not in `d.from` (naming its status).
  StatusOr<AccessRequest> decide(const Decision& d);
  // Every approved request of the pod (expired ones included), oldest first.
  std::vector<AccessRequest> grants(const Pod& pod);
  // True when `user_id` owns a pod that has an access request (any status) for
  // any version of model `model_id`: such a pod owner may review the model.
  bool reviews_model(int64_t user_id, int64_t model_id);

 private:
  Status migrate();
  std::optional<Version> version_locked(const Model& m, int64_t number);
  std::vector<Version> query_versions(const Model& m, const char* tail, int64_t number);
  std::optional<AccessRequest> access_request_locked(int64_t id);

  std::string data_dir_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;
  bool open_ = false;  // guarded by mu_: open() and its migrations succeeded
  int removed_temp_files_ = 0;  // set by open(), before any other thread sees the Store
};

}  // namespace fedpod::hub::detail
