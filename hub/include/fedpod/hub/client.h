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

class Client {
 public:
  // `host` and `port` of the hub; `token` authenticates mutating calls (and lets
  // reads see the caller's private models); empty for anonymous.
  Client(const std::string& host, int port, std::string token = "");
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  void set_token(std::string token) { token_ = std::move(token); }

  // Creates a user; returns the bearer token, which the hub shows only this once.
  StatusOr<std::string> register_user(const std::string& username, const std::string& public_key);

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

 private:
  std::unique_ptr<httplib::Client> http_;
  std::string token_;
};

}  // namespace fedpod::hub
