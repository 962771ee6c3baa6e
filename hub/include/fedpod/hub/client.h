// Client: typed calls to a fedpod hub's HTTP API (fedpod/hub/server.h).
//
// Every call returns a Status (or StatusOr) instead of throwing: an HTTP error
// becomes a Status carrying the server's message ("403 ... may only push to models
// under 'alice'"), a connection failure kUnavailable. HTTP statuses map to codes as
// 400/413 -> kInvalidArgument, 401/403 -> kPermissionDenied, 404 -> kNotFound,
// 409 -> kFailedPrecondition, anything else -> kInternal.
//
// Threading: not thread-safe (one httplib::Client underneath); use one Client per
// thread. Ownership: owns its connection; files it writes belong to the caller.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fedpod/common/hub_url.h"
#include "fedpod/common/status.h"

namespace httplib {
class Client;
}

namespace fedpod::hub {

// One immutable version of a model.
struct VersionInfo {
  std::string username;
  std::string model_ref;
  int64_t version = 0;
  std::string sha256;  // lowercase hex of the artifact
  int64_t size = 0;    // artifact bytes
  std::string format;  // "torchscript" or "plugin"
  std::string description;
  std::string created_at;  // ISO 8601 UTC, "2026-11-28T23:50:00Z"
};

struct ModelInfo {
  std::string username;
  std::string model_ref;
  std::string visibility;  // "private" or "public"
  std::string description;
  std::optional<VersionInfo> latest;
  std::vector<VersionInfo> versions;  // filled by get_model only, oldest first
};

struct PodInfo {
  std::string name;
  std::string owner;
  std::string address;
  std::string public_key;
  nlohmann::json schema;
  std::string created_at;
};

struct SourceFile {
  std::string name;
  std::string content;
};

// A user's role on a pod: "general-modeller" or "super-modeller".
struct RoleInfo {
  std::string pod;
  std::string username;
  std::string role;
  std::string granted_by;  // the pod's owner
  std::string granted_at;  // ISO 8601 UTC
};

// A request to run one model version on one pod, decided by the pod's owner.
struct AccessRequestInfo {
  int64_t id = 0;
  std::string pod;
  std::string pod_owner;
  std::string requester;
  std::string model;  // "user/ref"
  int64_t version = 0;
  std::string sha256;  // of the version's artifact
  std::string format;
  std::string purpose;
  // "pending", "approved", "rejected", "revoked", or "expired" (approved, and
  // expires_at has passed).
  std::string status;
  std::string reason;                     // the owner's, from the latest decision
  std::optional<std::string> expires_at;  // "2027-01-01T00:00:00Z"; nullopt: never
  std::string created_at;
  std::optional<std::string> decided_at;
  std::optional<std::string> decided_by;
};

class Client {
 public:
  // `host` and `port` of the hub; `token` authenticates mutating calls (and lets
  // reads see the caller's private models); empty for anonymous.
  //
  // This form speaks plain HTTP: for a hub on loopback (tests, one machine).
  Client(const std::string& host, int port, std::string token = "");
  // A hub by URL (fedpod/common/hub_url.h): over TLS when url.tls, verifying the
  // hub's certificate and host name against url.ca_file or the system store; a
  // certificate that does not verify fails every call with kUnavailable saying so.
  // With TLS it sets SIGPIPE to ignored when the program left it at its default
  // (OpenSSL writes with write(2); a closed connection must fail a call, not kill).
  explicit Client(const HubUrl& url, std::string token = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void set_token(std::string token) { token_ = std::move(token); }
  // Bounds every later call: connecting, and each read or write (defaults 10 s and
  // 300 s, the latter sized for artifact uploads and downloads).
  void set_timeouts(int connect_seconds, int io_seconds);

  // Creates a user with a CURVE key pair (Z85), proving that the caller holds the
  // secret key: the hub sends a challenge encrypted to the public key, which only the
  // secret key opens, and the answer registers the user. Returns the bearer token,
  // which the hub shows only this once. The secret key never leaves this process.
  StatusOr<std::string> register_user(const std::string& username, const std::string& public_key,
                                      const std::string& secret_key);

  // Uploads a new version of `user/ref` from files on disk. `visibility` "" keeps
  // the model's current one (private for a new model).
  StatusOr<VersionInfo> push_model(const std::string& user, const std::string& ref,
                                   const std::string& format, const std::string& description,
                                   const std::string& visibility, const std::string& artifact_path,
                                   const std::vector<std::string>& source_paths);

  // Models visible to the caller, each with its latest version; `owner` filters.
  StatusOr<std::vector<ModelInfo>> list_models(const std::string& owner = "");
  StatusOr<ModelInfo> get_model(const std::string& user, const std::string& ref);
  // `version` 0 means the latest.
  StatusOr<VersionInfo> resolve(const std::string& user, const std::string& ref, int64_t version);
  StatusOr<std::vector<SourceFile>> get_source(const std::string& user, const std::string& ref,
                                               int64_t version);

  // Downloads the artifact to `dest_path` (through `dest_path.part`, renamed when
  // complete) and checks its sha256 against the hub's X-Fedpod-Sha256 header and,
  // when `expected_sha256` is given, against that. Returns the sha256; on mismatch
  // returns kBadMessage and leaves no file at `dest_path`.
  StatusOr<std::string> download_artifact(const std::string& user, const std::string& ref,
                                          int64_t version, const std::string& dest_path,
                                          const std::string& expected_sha256 = "");

  Status register_pod(const std::string& name, const std::string& address,
                      const std::string& public_key, const nlohmann::json& schema);
  StatusOr<std::vector<PodInfo>> list_pods();
  StatusOr<PodInfo> get_pod(const std::string& name);

  // Roles on a pod; all three are for the pod's owner only (kPermissionDenied
  // otherwise). grant_role replaces the user's current role; revoke_role returns
  // kNotFound when the user had none.
  StatusOr<RoleInfo> grant_role(const std::string& pod, const std::string& username,
                                const std::string& role);
  Status revoke_role(const std::string& pod, const std::string& username);
  StatusOr<std::vector<RoleInfo>> list_roles(const std::string& pod);

  // Asks the owner of `pod` to let the caller run `user/ref` version `version`
  // (0 = latest, resolved by the hub) there. kFailedPrecondition when the caller
  // already has a pending request for that version on that pod.
  StatusOr<AccessRequestInfo> request_access(const std::string& model_user, const std::string& ref,
                                             int64_t version, const std::string& pod,
                                             const std::string& purpose);
  // Requests the caller made or must decide (as a pod's owner), newest first;
  // `pod` and `status` ("pending", "approved", "expired", "rejected", "revoked")
  // filter when not empty.
  StatusOr<std::vector<AccessRequestInfo>> list_access_requests(const std::string& pod = "",
                                                                const std::string& status = "");
  StatusOr<AccessRequestInfo> get_access_request(int64_t id);
  // Decisions, the pod's owner only. approve takes a pending request, with an
  // optional expiry "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM:SSZ" (UTC, in the future);
  // reject a pending one; revoke an approved one.
  StatusOr<AccessRequestInfo> approve_access_request(
      int64_t id, const std::string& reason,
      const std::optional<std::string>& expires_at = std::nullopt);
  StatusOr<AccessRequestInfo> reject_access_request(int64_t id, const std::string& reason);
  StatusOr<AccessRequestInfo> revoke_access_request(int64_t id, const std::string& reason);

  // The pod's policy as the hub sends it (the owner's only): {"pod", "owner",
  // "generated_at", "users": [{username, public_key}], "roles": [{username, role}],
  // "grants": [{id, username, model, version, sha256, format, expires_at}]}.
  // The pod's policy as the hub signs it: a signed document (common/signing.h) whose
  // payload is the policy (worker/policy.h), valid for the hub's policy_ttl.
  // Works with the owner's token or the pod's own (create_pod_token).
  StatusOr<nlohmann::json> get_pod_policy(const std::string& pod);
  // A new read-only token for `pod` (its owner only), for the pod to fetch its
  // policy with; it replaces the pod's previous token, which stops working at once.
  // It starts with "pod_" and can do nothing else on the hub.
  StatusOr<std::string> create_pod_token(const std::string& pod);

  // Audit heads (pod token or owner): publish one signed head (worker/audit_anchor.h);
  // true when recorded, false when it was already the latest; kFailedPrecondition
  // when it contradicts an earlier head (the log shrank or was replaced). The list:
  // [{entries, head, reset, signing_key, published_at, document}], oldest first.
  StatusOr<bool> publish_audit_head(const std::string& pod, const nlohmann::json& signed_head);
  StatusOr<nlohmann::json> get_audit_heads(const std::string& pod);
  // The Ed25519 public key the hub signs policies with (GET /api/v1/signing-key).
  StatusOr<std::string> get_signing_key();

 private:
  std::unique_ptr<httplib::Client> http_;
  std::string token_;
};

}  // namespace fedpod::hub
