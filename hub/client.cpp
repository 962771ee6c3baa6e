#include "fedpod/hub/client.h"

#include "fedpod/common/signing.h"

#include <sodium.h>
#include <zmq.h>

#include <fcntl.h>
#include <httplib.h>
#include <signal.h>

#include <csignal>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util.h"

namespace fedpod::hub {
namespace {

using json = nlohmann::json;

StatusCode code_for_http(int status) {
  switch (status) {
    case 400:
    case 413:
      return StatusCode::kInvalidArgument;
    case 401:
    case 403:
      return StatusCode::kPermissionDenied;
    case 404:
      return StatusCode::kNotFound;
    case 409:
      return StatusCode::kFailedPrecondition;
    default:
      return StatusCode::kInternal;
  }
}

// The Status of a failed exchange: a transport error, or the server's error body.
Status error_of(const httplib::Result& r, const std::string& what) {
  if (!r && r.error() == httplib::Error::SSLServerVerification) {
    return {StatusCode::kUnavailable,
            what + ": the hub's TLS certificate is not trusted (not signed by a CA in the system store or the "
                   "configured CA file, expired, or not naming this host); give the CA with --hub-ca, hub_ca: or "
                   "FEDPOD_HUB_CA"};
  }
  if (!r && r.error() == httplib::Error::SSLConnection) {
    return {StatusCode::kUnavailable,
            what + ": TLS handshake with the hub failed (is it serving https? an http:// hub needs an http:// URL; "
                   "a CA file that cannot be read fails here too)"};
  }
  if (!r && r.error() == httplib::Error::Write)
    return {StatusCode::kUnavailable,
            what + ": the hub closed the connection while the request was being sent (it refuses a large upload "
                   "without a valid token, or over its size limit, before reading it: check the token)"};
  if (!r && r.error() == httplib::Error::Read)
    return {StatusCode::kUnavailable,
            what + ": hub unreachable (Read: the connection closed without a reply; a hub that serves https "
                   "needs an https:// URL)"};
  if (!r)
    return {StatusCode::kUnavailable,
            what + ": hub unreachable (" + httplib::to_string(r.error()) + ")"};
  std::string message = "HTTP " + std::to_string(r->status);
  json j = json::parse(r->body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_object() &&
      j["error"].value("message", json()).is_string())
    message += ": " + j["error"]["message"].get<std::string>();
  else if (!r->body.empty())
    message += ": " + r->body.substr(0, 200);
  return {code_for_http(r->status), what + ": " + message};
}

// Parses a successful JSON reply; anything else is a Status.
StatusOr<json> json_reply(const httplib::Result& r, int expected, const std::string& what) {
  if (!r || r->status != expected) return error_of(r, what);
  json j = json::parse(r->body, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return Status::bad_message(what + ": hub replied with malformed JSON");
  return j;
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

VersionInfo to_version(const json& j) {
  VersionInfo v;
  v.username = str(j, "username");
  v.model_ref = str(j, "model_ref");
  v.version = j.value("version", int64_t{0});
  v.sha256 = str(j, "sha256");
  v.size = j.value("size", int64_t{0});
  v.format = str(j, "format");
  v.description = str(j, "description");
  v.created_at = str(j, "created_at");
  return v;
}

ModelInfo to_model(const json& j) {
  ModelInfo m;
  m.username = str(j, "username");
  m.model_ref = str(j, "model_ref");
  m.visibility = str(j, "visibility");
  m.description = str(j, "description");
  if (j.contains("latest") && j["latest"].is_object()) m.latest = to_version(j["latest"]);
  if (j.contains("versions") && j["versions"].is_array())
    for (const auto& v : j["versions"]) m.versions.push_back(to_version(v));
  return m;
}

PodInfo to_pod(const json& j) {
  return PodInfo{str(j, "name"),
                 str(j, "owner"),
                 str(j, "address"),
                 str(j, "public_key"),
                 j.value("schema", json::object()),
                 str(j, "created_at")};
}

std::optional<std::string> opt_str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

RoleInfo to_role(const json& j, const std::string& pod) {
  return RoleInfo{pod, str(j, "username"), str(j, "role"), str(j, "granted_by"),
                  str(j, "granted_at")};
}

AccessRequestInfo to_request(const json& j) {
  AccessRequestInfo r;
  r.id = j.value("id", int64_t{0});
  r.pod = str(j, "pod");
  r.pod_owner = str(j, "pod_owner");
  r.requester = str(j, "requester");
  r.model = str(j, "model");
  r.version = j.value("version", int64_t{0});
  r.sha256 = str(j, "sha256");
  r.format = str(j, "format");
  r.purpose = str(j, "purpose");
  r.status = str(j, "status");
  r.reason = str(j, "reason");
  r.expires_at = opt_str(j, "expires_at");
  r.created_at = str(j, "created_at");
  r.decided_at = opt_str(j, "decided_at");
  r.decided_by = opt_str(j, "decided_by");
  return r;
}

std::string request_path(int64_t id) { return "/api/v1/access-requests/" + std::to_string(id); }

std::string version_path(const std::string& user, const std::string& ref, int64_t version) {
  return "/api/v1/models/" + user + "/" + ref + "/versions/" +
         (version > 0 ? std::to_string(version) : "latest");
}

bool read_whole(const std::string& path, std::string& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

}  // namespace

Client::Client(const std::string& host, int port, std::string token)
    : http_(std::make_unique<httplib::Client>(host, port)), token_(std::move(token)) {
  http_->set_connection_timeout(10, 0);
  http_->set_read_timeout(300, 0);
  http_->set_write_timeout(300, 0);
}

Client::Client(const HubUrl& url, std::string token)
    : http_(std::make_unique<httplib::Client>(url.to_string())), token_(std::move(token)) {
  if (url.tls) {
    // OpenSSL writes to the socket with write(2): a hub that closes the connection
    // mid-request (refusing an upload before reading it) would kill the process with
    // SIGPIPE instead of failing the call. Ignore it unless the program chose a handler.
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) std::signal(SIGPIPE, SIG_IGN);
    // Verification is httplib's default; said here so that no later edit loses it.
    http_->enable_server_certificate_verification(true);
    if (!url.ca_file.empty()) http_->set_ca_cert_path(url.ca_file);
  }
  http_->set_connection_timeout(10, 0);
  http_->set_read_timeout(300, 0);
  http_->set_write_timeout(300, 0);
}

Client::~Client() = default;

void Client::set_timeouts(int connect_seconds, int io_seconds) {
  http_->set_connection_timeout(connect_seconds, 0);
  http_->set_read_timeout(io_seconds, 0);
  http_->set_write_timeout(io_seconds, 0);
}

namespace {
httplib::Headers auth(const std::string& token) {
  if (token.empty()) return {};
  return {{"Authorization", "Bearer " + token}};
}
}  // namespace

StatusOr<std::string> Client::register_user(const std::string& username, const std::string& public_key,
                                            const std::string& secret_key) {
  unsigned char sk[crypto_box_SECRETKEYBYTES], pk[crypto_box_PUBLICKEYBYTES];
  if (secret_key.size() != 40 || !zmq_z85_decode(sk, secret_key.c_str())) {
    return Status::invalid("register user " + username + ": the secret key is not 40 Z85 characters");
  }
  if (sodium_init() < 0) return Status::internal("libsodium cannot initialise");
  crypto_scalarmult_base(pk, sk);
  char z85[41];
  if (!zmq_z85_encode(z85, pk, sizeof pk) || public_key != z85) {
    sodium_memzero(sk, sizeof sk);
    return Status::invalid("register user " + username + ": the public and secret keys do not belong together");
  }
  json ask = {{"username", username}, {"public_key", public_key}};
  auto c = json_reply(http_->Post("/api/v1/users/challenge", ask.dump(), "application/json"), 200,
                      "register user " + username + " (challenge)");
  if (!c.ok()) {
    sodium_memzero(sk, sizeof sk);
    return c.status();
  }
  std::string server_key, nonce, box, answer;
  const bool decoded = c->contains("server_key") && (*c)["server_key"].is_string() && c->contains("nonce") &&
                       (*c)["nonce"].is_string() && c->contains("box") && (*c)["box"].is_string() &&
                       c->contains("expires") && (*c)["expires"].is_number_integer() &&
                       base64_decode((*c)["server_key"].get<std::string>(), server_key) &&
                       base64_decode((*c)["nonce"].get<std::string>(), nonce) &&
                       base64_decode((*c)["box"].get<std::string>(), box) &&
                       server_key.size() == crypto_box_PUBLICKEYBYTES && nonce.size() == crypto_box_NONCEBYTES &&
                       box.size() > crypto_box_MACBYTES && box.size() < 1024;
  if (decoded) {
    answer.resize(box.size() - crypto_box_MACBYTES);
    if (crypto_box_open_easy(reinterpret_cast<unsigned char*>(answer.data()),
                             reinterpret_cast<const unsigned char*>(box.data()), box.size(),
                             reinterpret_cast<const unsigned char*>(nonce.data()),
                             reinterpret_cast<const unsigned char*>(server_key.data()), sk) != 0) {
      answer.clear();
    }
  }
  sodium_memzero(sk, sizeof sk);
  if (answer.empty()) return Status::bad_message("register user " + username + ": the hub's challenge does not open");
  json body = {{"username", username},
               {"public_key", public_key},
               {"expires", (*c)["expires"]},
               {"answer", base64_encode(answer)}};
  auto j = json_reply(http_->Post("/api/v1/users", body.dump(), "application/json"), 201,
                      "register user " + username);
  if (!j.ok()) return j.status();
  return str(*j, "token");
}

StatusOr<VersionInfo> Client::push_model(const std::string& user, const std::string& ref,
                                         const std::string& format, const std::string& description,
                                         const std::string& visibility,
                                         const std::string& artifact_path,
                                         const std::vector<std::string>& source_paths) {
  std::string what = "push " + user + "/" + ref;
  json meta = {{"format", format}, {"description", description}};
  if (!visibility.empty()) meta["visibility"] = visibility;
  httplib::MultipartFormDataItems items;
  items.push_back({"meta", meta.dump(), "", "application/json"});
  std::string artifact;
  if (!read_whole(artifact_path, artifact))
    return Status::invalid(what + ": cannot read " + artifact_path);
  items.push_back({"artifact", std::move(artifact),
                   std::filesystem::path(artifact_path).filename().string(),
                   "application/octet-stream"});
  for (const auto& p : source_paths) {
    std::string content;
    if (!read_whole(p, content)) return Status::invalid(what + ": cannot read " + p);
    items.push_back(
        {"source", std::move(content), std::filesystem::path(p).filename().string(), "text/plain"});
  }
  auto j = json_reply(http_->Post(("/api/v1/models/" + user + "/" + ref + "/versions").c_str(),
                                  auth(token_), items),
                      201, what);
  if (!j.ok()) return j.status();
  return to_version(*j);
}

StatusOr<std::vector<ModelInfo>> Client::list_models(const std::string& owner) {
  httplib::Params params;
  if (!owner.empty()) params.emplace("owner", owner);
  auto j = json_reply(http_->Get("/api/v1/models", params, auth(token_)), 200, "list models");
  if (!j.ok()) return j.status();
  std::vector<ModelInfo> out;
  for (const auto& m : j->value("models", json::array())) out.push_back(to_model(m));
  return out;
}

StatusOr<ModelInfo> Client::get_model(const std::string& user, const std::string& ref) {
  auto j = json_reply(http_->Get(("/api/v1/models/" + user + "/" + ref).c_str(), auth(token_)), 200,
                      "get model " + user + "/" + ref);
  if (!j.ok()) return j.status();
  return to_model(*j);
}

StatusOr<VersionInfo> Client::resolve(const std::string& user, const std::string& ref,
                                      int64_t version) {
  auto j = json_reply(http_->Get(version_path(user, ref, version).c_str(), auth(token_)), 200,
                      "resolve " + user + "/" + ref);
  if (!j.ok()) return j.status();
  return to_version(*j);
}

StatusOr<std::vector<SourceFile>> Client::get_source(const std::string& user,
                                                     const std::string& ref, int64_t version) {
  auto j =
      json_reply(http_->Get((version_path(user, ref, version) + "/source").c_str(), auth(token_)),
                 200, "get source of " + user + "/" + ref);
  if (!j.ok()) return j.status();
  std::vector<SourceFile> out;
  for (const auto& f : j->value("files", json::array()))
    out.push_back({str(f, "name"), str(f, "content")});
  return out;
}

StatusOr<std::string> Client::download_artifact(const std::string& user, const std::string& ref,
                                                int64_t version, const std::string& dest_path,
                                                const std::string& expected_sha256) {
  std::string what = "download " + user + "/" + ref;
  std::string part = dest_path + ".part";
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::invalid(what + ": cannot create " + part);
  detail::Sha256 hash;
  std::string header_sha, error_body;
  int status = 0;
  bool write_failed = false;
  auto r = http_->Get((version_path(user, ref, version) + "/artifact").c_str(), auth(token_),
                      [&](const httplib::Response& res) {
                        status = res.status;
                        header_sha = res.get_header_value("X-Fedpod-Sha256");
                        return true;
                      },
                      [&](const char* data, size_t n) {
                        if (status != 200) {
                          error_body.append(data, n);
                          return error_body.size() < (1u << 20);
                        }
                        hash.update(data, n);
                        size_t off = 0;
                        while (off < n) {
                          ssize_t w = ::write(fd, data + off, n - off);
                          if (w < 0) {
                            if (errno == EINTR) continue;
                            write_failed = true;
                            return false;
                          }
                          off += static_cast<size_t>(w);
                        }
                        return true;
                      });
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  auto discard = [&](Status s) {
    std::remove(part.c_str());
    return s;
  };
  if (write_failed || !synced) return discard(Status::internal(what + ": cannot write " + part));
  if (!r) return discard(error_of(r, what));
  if (r->status != 200) {
    r->body = error_body;
    return discard(error_of(r, what));
  }
  std::string got = hash.hex();
  if (header_sha.empty() || got != header_sha)
    return discard(Status::bad_message(what + ": sha256 of the download is " + got +
                                       ", the hub said '" + header_sha + "'"));
  if (!expected_sha256.empty() && got != expected_sha256)
    return discard(Status::bad_message(what + ": sha256 of the download is " + got + ", expected " +
                                       expected_sha256));
  if (std::rename(part.c_str(), dest_path.c_str()) != 0)
    return discard(Status::internal(what + ": cannot rename " + part + " to " + dest_path));
  return got;
}

Status Client::register_pod(const std::string& name, const std::string& address,
                            const std::string& public_key, const nlohmann::json& schema) {
  json body = {
      {"name", name}, {"address", address}, {"public_key", public_key}, {"schema", schema}};
  auto j = json_reply(http_->Post("/api/v1/pods", auth(token_), body.dump(), "application/json"),
                      201, "register pod " + name);
  return j.status();
}

StatusOr<std::vector<PodInfo>> Client::list_pods() {
  auto j = json_reply(http_->Get("/api/v1/pods", auth(token_)), 200, "list pods");
  if (!j.ok()) return j.status();
  std::vector<PodInfo> out;
  for (const auto& p : j->value("pods", json::array())) out.push_back(to_pod(p));
  return out;
}

StatusOr<PodInfo> Client::get_pod(const std::string& name) {
  auto j = json_reply(http_->Get(("/api/v1/pods/" + name).c_str(), auth(token_)), 200,
                      "get pod " + name);
  if (!j.ok()) return j.status();
  return to_pod(*j);
}

StatusOr<RoleInfo> Client::grant_role(const std::string& pod, const std::string& username,
                                      const std::string& role) {
  json body = {{"role", role}};
  auto j = json_reply(http_->Put(("/api/v1/pods/" + pod + "/roles/" + username).c_str(),
                                 auth(token_), body.dump(), "application/json"),
                      200, "grant " + role + " on " + pod + " to " + username);
  if (!j.ok()) return j.status();
  return to_role(*j, pod);
}

Status Client::revoke_role(const std::string& pod, const std::string& username) {
  auto j = json_reply(
      http_->Delete(("/api/v1/pods/" + pod + "/roles/" + username).c_str(), auth(token_)), 200,
      "revoke the role of " + username + " on " + pod);
  return j.status();
}

StatusOr<std::vector<RoleInfo>> Client::list_roles(const std::string& pod) {
  auto j = json_reply(http_->Get(("/api/v1/pods/" + pod + "/roles").c_str(), auth(token_)), 200,
                      "list roles on " + pod);
  if (!j.ok()) return j.status();
  std::vector<RoleInfo> out;
  for (const auto& r : j->value("roles", json::array())) out.push_back(to_role(r, pod));
  return out;
}

StatusOr<AccessRequestInfo> Client::request_access(const std::string& model_user,
                                                   const std::string& ref, int64_t version,
                                                   const std::string& pod,
                                                   const std::string& purpose) {
  json body = {
      {"model", model_user + "/" + ref}, {"version", version}, {"pod", pod}, {"purpose", purpose}};
  auto j = json_reply(
      http_->Post("/api/v1/access-requests", auth(token_), body.dump(), "application/json"), 201,
      "request access to " + model_user + "/" + ref + " on " + pod);
  if (!j.ok()) return j.status();
  return to_request(*j);
}

StatusOr<std::vector<AccessRequestInfo>> Client::list_access_requests(const std::string& pod,
                                                                      const std::string& status) {
  httplib::Params params;
  if (!pod.empty()) params.emplace("pod", pod);
  if (!status.empty()) params.emplace("status", status);
  auto j = json_reply(http_->Get("/api/v1/access-requests", params, auth(token_)), 200,
                      "list access requests");
  if (!j.ok()) return j.status();
  std::vector<AccessRequestInfo> out;
  for (const auto& r : j->value("requests", json::array())) out.push_back(to_request(r));
  return out;
}

StatusOr<AccessRequestInfo> Client::get_access_request(int64_t id) {
  auto j = json_reply(http_->Get(request_path(id).c_str(), auth(token_)), 200,
                      "get access request " + std::to_string(id));
  if (!j.ok()) return j.status();
  return to_request(*j);
}

namespace {
StatusOr<AccessRequestInfo> decide(httplib::Client& http, const std::string& token, int64_t id,
                                   const std::string& action, const json& body) {
  auto j = json_reply(http.Post((request_path(id) + "/" + action).c_str(), auth(token), body.dump(),
                                "application/json"),
                      200, action + " access request " + std::to_string(id));
  if (!j.ok()) return j.status();
  return to_request(*j);
}
}  // namespace

StatusOr<AccessRequestInfo> Client::approve_access_request(
    int64_t id, const std::string& reason, const std::optional<std::string>& expires_at) {
  json body = {{"reason", reason}, {"expires_at", nullptr}};
  if (expires_at) body["expires_at"] = *expires_at;
  return decide(*http_, token_, id, "approve", body);
}

StatusOr<AccessRequestInfo> Client::reject_access_request(int64_t id, const std::string& reason) {
  return decide(*http_, token_, id, "reject", {{"reason", reason}});
}

StatusOr<AccessRequestInfo> Client::revoke_access_request(int64_t id, const std::string& reason) {
  return decide(*http_, token_, id, "revoke", {{"reason", reason}});
}

StatusOr<std::string> Client::get_signing_key() {
  auto j = json_reply(http_->Get("/api/v1/signing-key"), 200, "get the hub's signing key");
  if (!j.ok()) return j.status();
  if (!j->contains("public_key") || !(*j)["public_key"].is_string() ||
      !is_signing_public_key((*j)["public_key"].get<std::string>())) {
    return Status::bad_message("the hub's signing key reply has no valid public_key");
  }
  return (*j)["public_key"].get<std::string>();
}

StatusOr<nlohmann::json> Client::get_pod_policy(const std::string& pod) {
  return json_reply(http_->Get(("/api/v1/pods/" + pod + "/policy").c_str(), auth(token_)), 200,
                    "get the policy of pod " + pod);
}

StatusOr<bool> Client::publish_audit_head(const std::string& pod, const nlohmann::json& signed_head) {
  auto r = http_->Post(("/api/v1/pods/" + pod + "/audit-heads").c_str(), auth(token_), signed_head.dump(),
                       "application/json");
  if (r && r->status == 200) return false;
  auto j = json_reply(r, 201, "publish the audit head of pod " + pod);
  if (!j.ok()) return j.status();
  return true;
}

StatusOr<nlohmann::json> Client::get_audit_heads(const std::string& pod) {
  auto j = json_reply(http_->Get(("/api/v1/pods/" + pod + "/audit-heads").c_str(), auth(token_)), 200,
                      "get the audit heads of pod " + pod);
  if (!j.ok()) return j.status();
  if (!j->contains("heads") || !(*j)["heads"].is_array()) {
    return Status::internal("get the audit heads of pod " + pod + ": the hub's reply has no heads list");
  }
  return (*j)["heads"];
}

StatusOr<std::string> Client::create_pod_token(const std::string& pod) {
  auto j = json_reply(http_->Post(("/api/v1/pods/" + pod + "/token").c_str(), auth(token_), "", "application/json"),
                      201, "create a token for pod " + pod);
  if (!j.ok()) return j.status();
  if (!j->contains("token") || !(*j)["token"].is_string()) {
    return Status::internal("create a token for pod " + pod + ": the hub's reply has no token");
  }
  return (*j)["token"].get<std::string>();
}

}  // namespace fedpod::hub
