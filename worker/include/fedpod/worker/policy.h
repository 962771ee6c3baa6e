// A pod's access policy: who may run what on this pod, and the decision for one job.
//
// The permission model (docs/permissions.md, "The model"):
//   general-modeller  may run the built-in zoo models; may run a custom model only
//                     with an approved grant for that exact model version and sha256,
//                     not expired. A new version needs a new review.
//   super-modeller    may run any model. A custom model is arbitrary code, so this
//                     role means "may execute anything on this pod".
// Nobody else runs anything. A pod decides from the identity its transport
// authenticated (the modeller's CURVE public key, mapped to a user by the policy),
// never from a name written in a message.
//
// Where a policy comes from: the hub serves it (GET /api/v1/pods/{pod}/policy) and
// the pod polls it (policy_cache.h); an air-gapped pod reads the same structure from
// a hand-written YAML or JSON file:
//
//   {"pod": "pod-a", "owner": "bob", "generated_at": "2026-11-29T01:00:00Z",
//    "users":  [{"username": "alice", "public_key": "<40 Z85 chars>"}],
//    "roles":  [{"username": "alice", "role": "general-modeller"}],
//    "grants": [{"id": 7, "username": "alice", "model": "alice/net", "version": 2,
//                "sha256": "<64 lowercase hex>", "format": "torchscript",
//                "expires_at": "2027-01-01T00:00:00Z"}]}       # or null: no expiry
//
// In a file, `owner`, `generated_at`, and a grant's `id` and `format` may be left
// out, and `expires_at` may be a date ("2027-01-01", meaning midnight UTC at the
// start of that day). Parsing is strict: an unknown key or a malformed value is an
// error naming the entry, because a typo in a policy must not quietly grant or deny.
//
// Thread safety: a Policy is a value; a const Policy is safe to share between
// threads (the policy cache hands out shared_ptr<const Policy>). The free functions
// are stateless.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "fedpod/common/signing.h"
#include "fedpod/common/status.h"

namespace fedpod::worker {

enum class Role { kNone, kGeneralModeller, kSuperModeller };

// "none", "general-modeller", "super-modeller".
std::string to_string(Role role);

// The pod owner's approval for one user to run one exact custom model version.
struct Grant {
  int64_t id = 0;        // the hub's grant id; 0 when a policy file gives none
  std::string username;  // who may run it
  std::string model;     // "owner/ref"
  int64_t version = 0;   // exactly this version (>= 1)
  std::string sha256;    // and exactly these bytes (64 lowercase hex)
  std::string format;    // "torchscript" | "plugin"; "" when a policy file gives none
  std::optional<std::chrono::system_clock::time_point> expires_at;  // nullopt: no expiry
};

struct Policy {
  std::string pod;                           // the pod this policy is for
  std::string owner;                         // the pod owner's username ("" when a file gives none)
  std::string generated_at;                  // when the hub generated it, as the hub wrote it
  // Signed policies (verify_signed_policy) carry these three; a pod refuses one that
  // has expired, or whose version is older than one it already accepted. The version
  // grows with every issue (the issuer's clock in microseconds).
  int64_t version = 0;
  std::optional<std::chrono::system_clock::time_point> issued_at, expires_at;
  std::map<std::string, std::string> users;  // username -> Z85 CURVE public key
  std::map<std::string, Role> roles;         // a user missing here has Role::kNone
  std::vector<Grant> grants;

  // The user whose public key this is; nullopt for an unknown key, and for a key
  // that several users share: public keys are public, and nothing stops someone
  // from registering another user's key on the hub, so a shared key identifies (and
  // authenticates) no one. O(log n) through an index that parse_policy() builds. A
  // Policy assembled or edited by hand must call build_key_index() after changing
  // `users`; until then an index of the wrong size is bypassed (a linear scan), and
  // a stale index can only miss a key (fail closed), never map a key to a user
  // whose key it no longer is.
  std::optional<std::string> user_by_key(const std::string& public_key) const;
  void build_key_index();

  // The users whose public key another user also has, sorted (for a warning: they
  // cannot be authenticated until the keys differ).
  std::vector<std::string> users_sharing_keys() const;

  // The user's role on this pod (kNone for an unknown user).
  Role role_of(const std::string& username) const;

 private:
  std::map<std::string, std::string> user_by_key_;  // public key -> username; shared keys left out
  size_t indexed_users_ = 0;                        // users.size() when the index was built
};

// Validates `j` (the hub's JSON, or a policy file converted to JSON) and builds a
// Policy. Returns kInvalidArgument for unknown keys, wrong types, a bad role name,
// a malformed username, public key (40 chars of the Z85 alphabet), model name or
// sha256, a user listed twice or with two roles, and roles or grants naming a user
// missing from `users`. Two users with the same public key are not an error (see
// user_by_key): one bogus registration on the hub must not void every pod's policy.
// The message starts with `where` and names the entry:
//   "policy.yaml: roles[2]: role 'admin' is not general-modeller or super-modeller".
StatusOr<Policy> parse_policy(const nlohmann::json& j, const std::string& where);

// The hub's JSON form of `policy`; parse_policy(to_json(p)) gives back p.
nlohmann::json to_json(const Policy& policy);

// ---- Signed policies ---------------------------------------------------------------
//
// What a pod accepts: a signed document (common/signing.h) whose payload is a policy
// with issued_at, expires_at and version, signed by the key the pod pins in pod.yaml
// (policy.signing_key: the hub's key for a hub-served policy, or the owner's for an
// air-gapped file made with `fedpod policy sign`).

// Checks `document` against `signing_key` and returns its policy. Refused, naming the
// reason after `where`: not signed; a signature that does not verify (altered, or
// another key); a payload that is not a valid policy; a policy for another pod than
// `pod`; no issued_at, expires_at or version. Expiry and version order depend on the
// time and on what the pod accepted before: PolicyCache checks them.
StatusOr<Policy> verify_signed_policy(const nlohmann::json& document, const std::string& signing_key,
                                      const std::string& pod, const std::string& where);

// Stamps `policy` (issued now, expiring after `ttl`, version: now in microseconds,
// at least `min_version`) and signs it: the text `fedpod policy sign` writes.
std::string sign_policy(Policy policy, const SigningKeyPair& key, std::chrono::seconds ttl,
                        int64_t min_version = 0);

// Reads a signed policy file (JSON, as `fedpod policy sign` writes it) and verifies it.
// An unsigned policy file (a hand-written YAML) is refused, with how to sign it.
StatusOr<Policy> load_signed_policy_file(const std::string& path, const std::string& signing_key,
                                         const std::string& pod);

// Reads a policy file (YAML; JSON is valid YAML) and parses it, naming `path` in
// errors. kNotFound when the file cannot be read, kInvalidArgument when it is not
// valid YAML (with the line) or not a valid policy.
StatusOr<Policy> load_policy_file(const std::string& path);

// "2027-01-01T00:00:00Z", with ".250" added when the time has milliseconds.
std::string format_utc(std::chrono::system_clock::time_point t);

// Parses "2027-01-01T00:00:00Z" (optionally with fractional seconds, and "Z" or a
// "+HH:MM"/"-HH:MM" offset) or a date "2027-01-01" (midnight UTC); nullopt when
// `text` is anything else.
std::optional<std::chrono::system_clock::time_point> parse_utc(const std::string& text);

// ---- The decision ------------------------------------------------------------------

// One job's request to run a model, as the pod sees it.
struct AccessRequest {
  std::string user;     // the user the transport authenticated; "" = unauthenticated
  bool custom = false;  // false: a built-in zoo model
  std::string model;    // "logreg" for built-ins, "owner/ref" for custom models
  int64_t version = 0;  // custom only
  std::string sha256;   // custom only: sha256 of the bytes the pod received
  std::string format;   // custom only: how the job asks to load them ("torchscript", "plugin")
};

struct Decision {
  bool allowed = false;
  // A metric label, one of: ok, unauthenticated, unknown_user, no_role, no_grant,
  // grant_other_version, grant_expired, hash_mismatch.
  std::string reason;
  // When allowed, what allowed it: "super-modeller", "general-modeller", or
  // "general-modeller with grant 7 (expires 2027-01-01T00:00:00Z)" / "(no expiry)".
  std::string basis;
  // When refused, text for the modeller: it names the pod, the user, what is
  // missing, and the exact `fedpod access ...` command that gets it.
  std::string message;
};

// Decides whether `req` may run on the pod named `pod_name` under `policy` at time
// `now`. Pure: no I/O, no clock. Rules, in order:
//   no authenticated user -> unauthenticated; user not in policy.users ->
//   unknown_user; Role::kNone -> no_role; built-in model -> allowed for either role;
//   custom model -> allowed for super-modeller; for general-modeller it needs a
//   grant of that user for that model with the same version and sha256, unexpired.
//   Otherwise the closest grant explains the refusal: same version and bytes but
//   expired -> grant_expired; same version but the received bytes hash differently
//   (a tampered or substituted artifact) -> hash_mismatch; grants for other versions
//   only -> grant_other_version; none -> no_grant.
Decision decide(const Policy& policy, const std::string& pod_name, const AccessRequest& req,
                std::chrono::system_clock::time_point now);

}  // namespace fedpod::worker
