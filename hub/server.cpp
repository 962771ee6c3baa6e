#include "fedpod/hub/server.h"

#include <httplib.h>
#include <prometheus/text_serializer.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "fedpod/common/peer_text.h"
#include "fedpod/common/sha256.h"
#include "fedpod/metrics/metrics.h"
#include "store.h"
#include "web.h"

#include <sodium.h>
#include <zmq.h>

#include <ctime>
#include "util.h"

namespace fedpod::hub {
namespace {

using json = nlohmann::json;
using detail::Store;
using detail::User;

// An error answered to the client: HTTP status, a stable code and a message.
struct ApiError {
  int status;
  std::string code;
  std::string message;
};

[[noreturn]] void fail(int status, std::string code, std::string message) {
  throw ApiError{status, std::move(code), std::move(message)};
}

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(json_text(body), "application/json");
}

void reply_error(httplib::Response& res, int status, const std::string& code,
                 const std::string& message) {
  reply(res, status, json{{"error", {{"code", code}, {"message", message}}}});
}

// Maps a store Status to the HTTP error it means.
[[noreturn]] void fail(const Status& s) {
  switch (s.code()) {
    case StatusCode::kInvalidArgument:
      fail(400, "invalid_argument", s.message());
    case StatusCode::kNotFound:
      fail(404, "not_found", s.message());
    case StatusCode::kFailedPrecondition:
      fail(409, "conflict", s.message());
    case StatusCode::kPermissionDenied:
      fail(403, "forbidden", s.message());
    default:
      fail(500, "internal", s.message());
  }
}

json parse_json_object(const std::string& body, size_t limit, const std::string& what) {
  if (body.size() > limit)
    fail(413, "too_large",
         what + " is " + std::to_string(body.size()) + " bytes, over the limit of " +
             std::to_string(limit) + " bytes (max_json_bytes)");
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) fail(400, "malformed_json", what + " is not valid JSON");
  if (!j.is_object()) fail(400, "malformed_json", what + " must be a JSON object");
  return j;
}

// The string field `key` of `j`; `fallback` when absent (nullopt: required).
std::string string_field(const json& j, const char* key, const std::string& what,
                         std::optional<std::string> fallback = std::nullopt) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (fallback) return *fallback;
    fail(400, "missing_field", what + ": missing field '" + key + "'");
  }
  if (!it->is_string()) fail(400, "invalid_field", what + ": field '" + key + "' must be a string");
  return it->get<std::string>();
}

void check(const std::string& problem, const std::string& what) {
  if (!problem.empty()) fail(400, "invalid_argument", what + " " + problem);
}

bool valid_utf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::exception&) {
    return false;
  }
}

json version_json(const detail::Version& v) {
  return {{"username", v.username},
          {"model_ref", v.model_ref},
          {"version", v.version},
          {"sha256", v.sha256},
          {"size", v.size},
          {"format", v.format},
          {"description", v.description},
          {"created_at", v.created_at}};
}

json model_json(const detail::Model& m) {
  json j = {{"username", m.username},     {"model_ref", m.model_ref},
            {"visibility", m.visibility}, {"description", m.description},
            {"created_at", m.created_at}, {"latest", nullptr}};
  if (m.latest) j["latest"] = version_json(*m.latest);
  return j;
}

// "expired" for an approved request whose expiry has passed; the stored status else.
std::string effective_status(const detail::AccessRequest& r, const std::string& now) {
  if (r.status == "approved" && r.expires_at && *r.expires_at <= now) return "expired";
  return r.status;
}

json nullable(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

json request_json(const detail::AccessRequest& r, const std::string& now) {
  return {{"id", r.id},
          {"pod", r.pod},
          {"pod_owner", r.pod_owner},
          {"requester", r.requester},
          {"model", r.model_user + "/" + r.model_ref},
          {"version", r.version},
          {"sha256", r.sha256},
          {"format", r.format},
          {"purpose", r.purpose},
          {"status", effective_status(r, now)},
          {"reason", r.reason},
          {"expires_at", nullable(r.expires_at)},
          {"created_at", r.created_at},
          {"decided_at", nullable(r.decided_at)},
          {"decided_by", nullable(r.decided_by)}};
}

json role_json(const detail::Role& r) {
  return {{"username", r.username},
          {"role", r.role},
          {"granted_by", r.granted_by},
          {"granted_at", r.granted_at}};
}

// Characters (UTF-8 code points) of a string nlohmann has already checked is UTF-8.
size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

// Purposes and reasons are for people to read; 2000 characters is a long paragraph.
constexpr size_t kMaxTextChars = 2000;

void check_text(const std::string& s, const std::string& what, bool required) {
  if (required && s.find_first_not_of(" \t\r\n") == std::string::npos)
    fail(400, "invalid_argument", what + " must not be empty");
  if (utf8_length(s) > kMaxTextChars)
    fail(400, "invalid_argument",
         what + " is " + std::to_string(utf8_length(s)) + " characters, over the limit of " +
             std::to_string(kMaxTextChars));
}

// A positive request id from the URL; 400 otherwise.
int64_t parse_id(const std::string& text) {
  try {
    size_t used = 0;
    int64_t id = std::stoll(text, &used);
    if (used == text.size() && id > 0) return id;
  } catch (const std::exception&) {
  }
  fail(400, "invalid_argument", "request id must be a positive integer, got '" + text + "'");
}

const char* const kRoles = "\"general-modeller\" or \"super-modeller\"";
const char* const kRequestStatuses =
    "\"pending\", \"approved\", \"expired\", \"rejected\" or \"revoked\"";

json pod_json(const detail::Pod& p) {
  json schema = json::parse(p.schema_json, nullptr, false);
  return {{"name", p.name},       {"owner", p.owner},
          {"address", p.address}, {"public_key", p.public_key},
          {"schema", schema},     {"created_at", p.created_at}};
}

// When the request being handled on this thread began: set by the pre-routing
// handler, read and cleared by the logger, which httplib calls on the same thread
// once the response is written. Zero when routing never ran (a malformed request
// line), and then no duration is observed.
thread_local std::chrono::steady_clock::time_point t_request_start{};

// The user an in-process API call runs as (the web pages' WebContext::api sets it
// around one handler call on its own thread, and clears it after). Requests from the
// network never set it, so they are identified by their Authorization header alone.
thread_local const User* t_page_user = nullptr;

// The regex of a route label: each {placeholder} matches one path segment.
std::string label_regex(const std::string& label) {
  static const std::regex placeholder(R"(\{[a-z_]+\})");
  return std::regex_replace(label, placeholder, "([^/]+)");
}

// Methods kept as they are in the `method` label; anything else is "other", so a
// client cannot add series by inventing methods.
std::string method_label(const std::string& method) {
  static const std::set<std::string> known = {"GET",    "HEAD",    "POST", "PUT",
                                              "DELETE", "OPTIONS", "PATCH"};
  return known.count(method) ? method : "other";
}

}  // namespace

// The hub's metrics (see server.h) and the route table their labels come from; the
// same table gives the web pages the API's handlers to call in-process.
struct Server::Metrics {
  struct Route {
    std::string method;  // "GET" also covers HEAD, as httplib does
    std::regex regex;
    std::string label;
    httplib::Server::Handler handler;  // set for /api/ routes (ApiReply calls), else empty
  };

  explicit Metrics(prometheus::Registry& registry)
      : requests(metrics::counter(registry, "fedpod_hub_http_requests_total",
                                  "HTTP requests the hub answered, by route pattern (\"unmatched\" "
                                  "for a path no route matches), method and status code")),
        duration(metrics::histogram(registry, "fedpod_hub_http_request_duration_seconds",
                                    "Time from a request's headers to the last byte of its "
                                    "response, by route pattern")),
        models(metrics::gauge(registry, "fedpod_hub_models", "Models stored on the hub").Add({})),
        versions(metrics::gauge(registry, "fedpod_hub_versions",
                                "Model versions stored on the hub, all models together")
                     .Add({})),
        pods(metrics::gauge(registry, "fedpod_hub_pods", "Pods registered on the hub").Add({})),
        pending_requests(metrics::gauge(registry, "fedpod_hub_pending_requests",
                                        "Access requests waiting for a pod owner's decision")
                             .Add({})) {}

  // The label of the route `method` `path` matched: the route for this method, else
  // one for another method (httplib answers 404 then), else "unmatched".
  std::string route_of(const std::string& method, const std::string& path) const {
    const std::string m = method == "HEAD" ? "GET" : method;
    const Route* any = nullptr;
    for (const auto& r : routes) {
      if (!std::regex_match(path, r.regex)) continue;
      if (r.method == m) return r.label;
      if (!any) any = &r;
    }
    return any ? any->label : "unmatched";
  }

  void record(const std::string& method, const std::string& path, int status,
              std::chrono::steady_clock::time_point start) {
    const std::string route = route_of(method, path);
    requests
        .Add({{"route", route},
              {"method", method_label(method)},
              {"status", std::to_string(status)}})
        .Increment();
    if (start != std::chrono::steady_clock::time_point{}) {
      duration.Add({{"route", route}}, metrics::seconds_buckets())
          .Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }

  // Filled by routes() before serving starts; read-only afterwards, so the logger
  // reads it from handler threads without a lock.
  std::vector<Route> routes;
  prometheus::Family<prometheus::Counter>& requests;
  prometheus::Family<prometheus::Histogram>& duration;
  prometheus::Gauge& models;
  prometheus::Gauge& versions;
  prometheus::Gauge& pods;
  prometheus::Gauge& pending_requests;
};

Server::Server(ServerOptions options, Logger logger)
    : options_(std::move(options)), logger_(logger ? std::move(logger) : null_logger()) {
  if (!options_.registry) options_.registry = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<Metrics>(*options_.registry);
}

Server::~Server() { stop(); }

Status Server::start() {
  store_ = std::make_unique<Store>(options_.data_dir);
  FEDPOD_RETURN_IF_ERROR(store_->open());
  {
    // The key pod policies are signed with: made once, kept with the data.
    const std::string base = (std::filesystem::path(options_.data_dir) / "hub").string();
    if (!std::filesystem::exists(base + ".sign.key")) {
      FEDPOD_RETURN_IF_ERROR(write_signing_key_files(base, generate_signing_keypair(), false));
      logger_->info("event=signing_key_created file={}.sign.key", base);
    }
    auto k = read_signing_key_file(base + ".sign.key");
    if (!k.ok()) return Status::invalid("hub: " + k.status().message());
    signing_ = *k;
  }
  challenge_key_.assign(crypto_auth_hmacsha256_KEYBYTES, '\0');
  randombytes_buf(challenge_key_.data(), challenge_key_.size());
  if (store_->removed_temp_files() > 0)
    logger_->warn(
        "event=removed_temp_files count={} dir={}/artifacts reason=\"artifact writes interrupted "
        "by a crash\"",
        store_->removed_temp_files(), options_.data_dir);
  if (options_.tls_cert_file.empty() != options_.tls_key_file.empty()) {
    return Status::invalid("hub: TLS needs both a certificate and a private key file");
  }
  if (!options_.tls_cert_file.empty()) {
    for (const std::string& f : {options_.tls_cert_file, options_.tls_key_file}) {
      if (std::FILE* fp = std::fopen(f.c_str(), "rb")) {
        std::fclose(fp);
      } else {
        return Status::invalid("hub: cannot read TLS file " + f + ": " + std::strerror(errno));
      }
    }
    auto tls = std::make_unique<httplib::SSLServer>(options_.tls_cert_file.c_str(), options_.tls_key_file.c_str());
    if (!tls->is_valid()) {
      return Status::invalid("hub: the TLS certificate " + options_.tls_cert_file + " and key " +
                             options_.tls_key_file +
                             " cannot be used (not PEM, or the key does not match the certificate)");
    }
    SSL_CTX_set_min_proto_version(tls->ssl_context(), TLS1_2_VERSION);
    // OpenSSL writes with write(2): a client that hangs up mid-reply would raise
    // SIGPIPE and end the process. Ignored unless the program installed a handler.
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) std::signal(SIGPIPE, SIG_IGN);
    http_ = std::move(tls);
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  // The largest legal push plus room for multipart framing; anything larger is cut
  // off by httplib with a bare 413 before a handler runs.
  http_->set_payload_max_length(options_.max_artifact_bytes + options_.max_source_bytes +
                                options_.max_json_bytes + (1u << 20));
  // httplib's default socket options include SO_REUSEPORT, which would let a second
  // hub bind the same port and take half the requests; SO_REUSEADDR alone still
  // allows a quick restart over connections in TIME_WAIT.
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  http_->set_read_timeout(60, 0);
  // One request per connection. httplib decides whether to keep a connection open
  // from the request alone, so after a request refused on its headers (below, in
  // the pre-routing handler) it would read the unread body as the next request,
  // buffering it whole. Hub traffic is a few requests a minute; a new connection per
  // request costs nothing that matters.
  http_->set_keep_alive_max_count(1);
  http_->set_write_timeout(60, 0);
  metrics_->routes.clear();
  routes();
  if (options_.port == 0) {
    port_ = http_->bind_to_any_port(options_.host);
    if (port_ < 0) port_ = 0;
  } else if (http_->bind_to_port(options_.host, options_.port)) {
    port_ = options_.port;
  }
  if (port_ == 0)
    return Status::invalid("hub: cannot listen on " + options_.host + ":" +
                           std::to_string(options_.port));
  logger_->info("event=listening host={} port={} scheme={} data_dir={} metrics=/metrics policy_signing_key={}",
                options_.host, port_, options_.tls_cert_file.empty() ? "http" : "https", options_.data_dir,
                signing_.public_key);
  return Status();
}

bool Server::serve() { return http_ && http_->listen_after_bind(); }

void Server::stop() {
  if (http_) http_->stop();
}

void Server::routes() {
  using Req = const httplib::Request&;
  using Res = httplib::Response&;
  using Fn = std::function<void(Req, Res)>;
  Store& store = *store_;
  const ServerOptions& opt = options_;

  // Every handler runs inside this wrapper: an ApiError becomes its JSON reply, any
  // other exception a 500, so no input can take the server down.
  auto guard = [this](Req req, Res res, const std::function<void()>& body) {
    try {
      body();
    } catch (const ApiError& e) {
      reply_error(res, e.status, e.code, e.message);
    } catch (const std::exception& e) {
      logger_->error("event=handler_exception method={} path={} what=\"{}\"", req.method, req.path, e.what());
      reply_error(res, 500, "internal", std::string("internal error: ") + e.what());
    } catch (...) {
      reply_error(res, 500, "internal", "internal error");
    }
  };
  auto wrap = [guard](Fn fn) {
    return [guard, fn](Req req, Res res) { guard(req, res, [&] { fn(req, res); }); };
  };

  // The caller's identity: nullopt when no Authorization header is sent; 401 when
  // one is sent but names no user.
  auto caller = [&store](Req req) -> std::optional<User> {
    if (t_page_user) return *t_page_user;  // a web page's call, as its signed-in user
    if (!req.has_header("Authorization")) return std::nullopt;
    std::string h = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (h.compare(0, prefix.size(), prefix) != 0)
      fail(401, "unauthenticated", "Authorization must be 'Bearer <token>'");
    const std::string token = h.substr(prefix.size());
    if (token.rfind(detail::kPodTokenPrefix, 0) == 0) {
      if (!store.pod_by_token(token)) fail(401, "unauthenticated", "invalid token");
      fail(403, "forbidden", "a pod token may only read its own pod's policy (GET /api/v1/pods/NAME/policy)");
    }
    auto user = store.user_by_token(token);
    if (!user) fail(401, "unauthenticated", "invalid token");
    return user;
  };
  auto require_caller = [caller](Req req) -> User {
    auto user = caller(req);
    if (!user) fail(401, "unauthenticated", "this call needs 'Authorization: Bearer <token>'");
    return *user;
  };
  // Whether `me` may see model `m`: a public model, one's own, or a private one
  // that someone asked to run on a pod `me` owns (the owner reviews it before
  // deciding, and must be able to read it afterwards).
  auto can_see = [&store](const std::optional<User>& me, const detail::Model& m) {
    return m.visibility == "public" ||
           (me && (me->id == m.owner_id || store.reviews_model(me->id, m.id)));
  };
  // The model at `user/ref` if the caller may see it; 404 otherwise (a private
  // model of someone else is reported exactly like a missing one).
  auto visible_model = [&store, caller, can_see](Req req, const std::string& user,
                                                 const std::string& ref) {
    auto me = caller(req);
    auto m = store.find_model(user, ref);
    if (!m || !can_see(me, *m)) fail(404, "not_found", "no model " + user + "/" + ref);
    return *m;
  };
  auto find_pod = [&store](const std::string& name) {
    auto pod = store.find_pod(name);
    if (!pod) fail(404, "not_found", "no pod '" + name + "'");
    return *pod;
  };
  // Only a pod's owner decides who may do what on it.
  auto require_owner = [](const detail::Pod& pod, const User& me, const std::string& action) {
    if (pod.owner_id != me.id)
      fail(403, "forbidden",
           "only the owner of pod '" + pod.name + "' (" + pod.owner + ") may " + action);
  };
  auto resolve = [&store, visible_model](Req req) {
    auto m = visible_model(req, req.matches[1], req.matches[2]);
    std::string n = req.matches[3];
    int64_t number = 0;
    if (n != "latest") {
      try {
        size_t used = 0;
        number = std::stoll(n, &used);
        if (used != n.size() || number < 1) throw std::invalid_argument(n);
      } catch (const std::exception&) {
        fail(400, "invalid_argument",
             "version must be a positive integer or 'latest', got '" + n + "'");
      }
    }
    auto v = store.version(m, number);
    if (!v)
      fail(404, "not_found", "model " + m.username + "/" + m.model_ref + " has no version " + n);
    return *v;
  };

  // Registers `handler` for `method` on the route `label`, matched by `regex`, and
  // records the route so requests are counted under `label`.
  auto on_regex = [this](const std::string& method, const std::string& label,
                         const std::string& regex, httplib::Server::Handler handler) {
    metrics_->routes.push_back(
        {method, std::regex(regex), label, label.rfind("/api/", 0) == 0 ? handler : httplib::Server::Handler()});
    if (method == "GET") {
      http_->Get(regex, std::move(handler));
    } else if (method == "POST") {
      http_->Post(regex, std::move(handler));
    } else if (method == "PUT") {
      http_->Put(regex, std::move(handler));
    } else if (method == "DELETE") {
      http_->Delete(regex, std::move(handler));
    } else {
      throw std::logic_error("hub: no route method " + method);
    }
  };
  // The same with the regex derived from the label: "/api/v1/pods/{pod}" matches
  // "/api/v1/pods/([^/]+)".
  auto on = [on_regex](const std::string& method, const std::string& label,
                       httplib::Server::Handler handler) {
    on_regex(method, label, label_regex(label), std::move(handler));
  };

  // Operations: liveness, readiness and Prometheus metrics on the API's port.
  on("GET", "/healthz", wrap([](Req, Res res) { res.set_content("ok", "text/plain"); }));
  on("GET", "/readyz", wrap([&store](Req, Res res) {
       if (store.is_open()) {
         res.set_content("ready", "text/plain");
       } else {
         res.status = 503;
         res.set_content("the database is not open", "text/plain");
       }
     }));
  on("GET", "/metrics", wrap([this, &store](Req, Res res) {
       // Counted now, so the gauges are right whoever wrote the database.
       detail::Counts c = store.counts();
       metrics_->models.Set(static_cast<double>(c.models));
       metrics_->versions.Set(static_cast<double>(c.versions));
       metrics_->pods.Set(static_cast<double>(c.pods));
       metrics_->pending_requests.Set(static_cast<double>(c.pending_requests));
       auto families = options_.registry->Collect();
       for (auto& f : metrics::process_families()) families.push_back(std::move(f));
       res.set_content(prometheus::TextSerializer().Serialize(families), "text/plain; version=0.0.4; charset=utf-8");
     }));

  // The key pods pin to verify the policies this hub signs. Public, like the key.
  on("GET", "/api/v1/signing-key", wrap([this](Req, Res res) {
       reply(res, 200, {{"algorithm", "ed25519"}, {"public_key", signing_.public_key}});
     }));

  // Registration proves possession of the key's secret: the caller first asks for a
  // challenge, a value only the hub can compute (an HMAC over the username, key and
  // an expiry), encrypted to the key with crypto_box from a one-time key of the hub;
  // then registers with the value decrypted. Stateless: nothing is stored per
  // challenge, and a challenge expires after 5 minutes.
  auto challenge_answer = [this](const std::string& username, const std::string& key, int64_t expires) {
    const std::string msg = "fedpod-register-v1\n" + username + "\n" + key + "\n" + std::to_string(expires);
    std::string mac(crypto_auth_hmacsha256_BYTES, '\0');
    crypto_auth_hmacsha256(reinterpret_cast<unsigned char*>(mac.data()),
                           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(),
                           reinterpret_cast<const unsigned char*>(challenge_key_.data()));
    return mac;
  };
  // Both steps' body: {username, public_key, ...}, each checked.
  struct Registration {
    json body;
    std::string username, key;
  };
  auto registration = [&opt](Req req) {
    Registration r;
    r.body = parse_json_object(req.body, opt.max_json_bytes, "request body");
    r.username = string_field(r.body, "username", "user");
    r.key = string_field(r.body, "public_key", "user");
    check(detail::check_username(r.username), "username '" + r.username + "'");
    check(detail::check_public_key(r.key), "public_key");
    return r;
  };
  on("POST", "/api/v1/users/challenge", wrap([registration, challenge_answer](Req req, Res res) {
       const auto [body, username, key] = registration(req);
       unsigned char user_pk[crypto_box_PUBLICKEYBYTES];
       if (!zmq_z85_decode(user_pk, key.c_str())) fail(400, "bad_request", "public_key: not Z85");
       const int64_t expires = static_cast<int64_t>(std::time(nullptr)) + 300;
       const std::string answer = challenge_answer(username, key, expires);
       unsigned char eph_pk[crypto_box_PUBLICKEYBYTES], eph_sk[crypto_box_SECRETKEYBYTES];
       crypto_box_keypair(eph_pk, eph_sk);
       unsigned char nonce[crypto_box_NONCEBYTES];
       randombytes_buf(nonce, sizeof nonce);
       std::string boxed(answer.size() + crypto_box_MACBYTES, '\0');
       const int boxed_rc =
           crypto_box_easy(reinterpret_cast<unsigned char*>(boxed.data()),
                           reinterpret_cast<const unsigned char*>(answer.data()), answer.size(), nonce, user_pk, eph_sk);
       sodium_memzero(eph_sk, sizeof eph_sk);
       if (boxed_rc != 0) fail(400, "bad_request", "public_key: not a usable Curve25519 public key");
       reply(res, 200,
             {{"username", username},
              {"public_key", key},
              {"expires", expires},
              {"server_key", base64_encode({reinterpret_cast<const char*>(eph_pk), sizeof eph_pk})},
              {"nonce", base64_encode({reinterpret_cast<const char*>(nonce), sizeof nonce})},
              {"box", base64_encode(boxed)}});
     }));

  on("POST", "/api/v1/users", wrap([&store, registration, challenge_answer](Req req, Res res) {
       const auto [body, username, key] = registration(req);
       if (!body.contains("answer") || !body.contains("expires")) {
         fail(400, "bad_request",
              "registration proves you hold the secret key of public_key: POST /api/v1/users/challenge first, "
              "decrypt its box with your secret key, and send the value as answer with its expires (`fedpod user "
              "register --key-file NAME.key` does both)");
       }
       if (!body["expires"].is_number_integer()) fail(400, "bad_request", "expires: expected an integer");
       const int64_t expires = body["expires"].get<int64_t>();
       if (expires < static_cast<int64_t>(std::time(nullptr))) {
         fail(400, "bad_request", "the registration challenge expired; ask for a new one");
       }
       std::string answer;
       if (!body["answer"].is_string() || !base64_decode(body["answer"].get<std::string>(), answer) ||
           answer.size() != crypto_auth_hmacsha256_BYTES) {
         fail(400, "bad_request", "answer: expected the challenge's decrypted value in base64");
       }
       const std::string want = challenge_answer(username, key, expires);
       if (sodium_memcmp(answer.data(), want.data(), want.size()) != 0) {
         fail(403, "forbidden",
              "the answer does not match the challenge for this username and public_key: registering a key needs "
              "its secret key");
       }
       auto token = store.create_user(username, key);
       if (!token.ok()) fail(token.status());
       reply(res, 201, {{"username", username}, {"token", *token}});
     }));

  // A push streams its artifact to a file under artifacts/uploads/ as it arrives
  // (hashed on the way), so a 512 MiB model costs the hub no more memory than a small
  // one: only 'meta' and the sources (bounded by max_json_bytes, max_source_bytes) are
  // held. The token and the model name are checked before a byte of the body is read.
  {
    const std::string label = "/api/v1/models/{user}/{ref}/versions";
    const std::string regex = label_regex(label);
    metrics_->routes.push_back({"POST", std::regex(regex), label, {}});
    http_->Post(regex, [guard, &store, &opt, require_caller](Req req, Res res, const httplib::ContentReader& reader) {
      struct Upload {
        int fd = -1;
        std::string path;
        ~Upload() {
          if (fd >= 0) ::close(fd);
          if (!path.empty()) ::unlink(path.c_str());  // moved into place: the name is gone already
        }
      } upload;
      guard(req, res, [&] {
        User me = require_caller(req);
        std::string user = req.matches[1], ref = req.matches[2];
        if (user != me.username)
          fail(403, "forbidden",
               "user '" + me.username + "' may only push to models under '" + me.username + "/', not '" + user + "/'");
        check(detail::check_model_ref(ref), "model ref '" + ref + "'");
        if (!req.is_multipart_form_data())
          fail(400, "invalid_argument", "a push must be multipart/form-data with parts 'meta' and 'artifact'");
        // The parts as they arrive: 'artifact' to its file, the rest in memory.
        std::string meta, part, problem;
        bool have_meta = false, have_artifact = false;
        std::vector<std::pair<std::string, std::string>> sources;  // (file name, content)
        size_t source_bytes = 0;
        Sha256 sha;
        int64_t size = 0;
        std::string head, tail;  // first 4 bytes; the last 22 + 65535 (check_artifact's window)
        const size_t kTail = 22 + 65535;
        auto stop = [&](int status, const std::string& code, const std::string& message) {
          problem = std::to_string(status) + "\n" + code + "\n" + message;
          return false;
        };
        const bool read = reader(
            [&](const httplib::MultipartFormData& f) {
              part = f.name;
              if (part == "meta") {
                if (have_meta) return stop(400, "invalid_argument", "part 'meta' is given twice");
                have_meta = true;
              } else if (part == "artifact") {
                if (have_artifact) return stop(400, "invalid_argument", "part 'artifact' is given twice");
                have_artifact = true;
                auto p = store.begin_upload(&upload.fd);
                if (!p.ok()) return stop(500, "internal", p.status().message());
                upload.path = *p;
              } else if (part == "source") {
                const std::string bad_name = detail::check_source_name(f.filename);
                if (!bad_name.empty())
                  return stop(400, "invalid_argument", "source file name '" + f.filename + "' " + bad_name);
                for (const auto& [name, content] : sources) {
                  if (name == f.filename)
                    return stop(400, "invalid_argument", "source file '" + f.filename + "' is given twice");
                }
                sources.emplace_back(f.filename, std::string());
              } else {
                return stop(400, "invalid_argument", "unknown part '" + part + "' (expected meta, artifact, source)");
              }
              return true;
            },
            [&](const char* data, size_t n) {
              if (part == "meta") {
                if (meta.size() + n > opt.max_json_bytes)
                  return stop(413, "too_large", "part 'meta' is over " + std::to_string(opt.max_json_bytes) + " bytes");
                meta.append(data, n);
              } else if (part == "artifact") {
                size += static_cast<int64_t>(n);
                if (static_cast<size_t>(size) > opt.max_artifact_bytes)
                  return stop(413, "too_large",
                              "artifact is over the limit of " + std::to_string(opt.max_artifact_bytes) +
                                  " bytes (max_artifact_bytes)");
                sha.update(data, n);
                if (head.size() < 4) head.append(data, std::min<size_t>(n, 4 - head.size()));
                tail.append(data, n);
                if (tail.size() > 2 * kTail) tail.erase(0, tail.size() - kTail);
                for (size_t done = 0; done < n;) {
                  const ssize_t w = ::write(upload.fd, data + done, n - done);
                  if (w < 0 && errno == EINTR) continue;
                  if (w <= 0) return stop(500, "internal", std::string("hub: cannot write the upload: ") + std::strerror(errno));
                  done += static_cast<size_t>(w);
                }
              } else if (part == "source") {
                source_bytes += n;
                if (source_bytes > opt.max_source_bytes)
                  return stop(413, "too_large",
                              "source files total more than the limit of " + std::to_string(opt.max_source_bytes) +
                                  " bytes (max_source_bytes)");
                sources.back().second.append(data, n);
              }
              return true;
            });
        if (!problem.empty()) {
          const auto a = problem.find('\n'), b = problem.find('\n', a + 1);
          fail(std::stoi(problem.substr(0, a)), problem.substr(a + 1, b - a - 1), problem.substr(b + 1));
        }
        if (!read) fail(400, "bad_request", "the multipart body could not be read");
        if (!have_meta) fail(400, "missing_part", "missing part 'meta' (JSON)");
        if (!have_artifact) fail(400, "missing_part", "missing part 'artifact'");
        json meta_json = parse_json_object(meta, opt.max_json_bytes, "part 'meta'");
        detail::NewVersion v;
        v.owner = &me;
        v.model_ref = ref;
        v.format = string_field(meta_json, "format", "meta");
        v.description = string_field(meta_json, "description", "meta", std::string());
        v.visibility = string_field(meta_json, "visibility", "meta", std::string());
        if (v.format != "torchscript" && v.format != "plugin")
          fail(400, "invalid_argument", "meta: format must be \"torchscript\" or \"plugin\", got \"" + v.format + "\"");
        if (!v.visibility.empty() && v.visibility != "private" && v.visibility != "public")
          fail(400, "invalid_argument",
               "meta: visibility must be \"private\" or \"public\", got \"" + v.visibility + "\"");
        // check_artifact looks at the first bytes and the last kTail: give it those.
        if (tail.size() > kTail) tail.erase(0, tail.size() - kTail);
        const std::string sample = static_cast<size_t>(size) > tail.size() ? head + tail : tail;
        check(detail::check_artifact(v.format, sample), "artifact:");
        for (auto& [name, content] : sources) {
          if (!valid_utf8(content)) fail(400, "invalid_argument", "source file '" + name + "' is not UTF-8 text");
          v.sources.emplace_back(name, std::move(content));
        }
        if (::fsync(upload.fd) != 0) fail(500, "internal", std::string("hub: cannot fsync the upload: ") + std::strerror(errno));
        v.artifact_file = upload.path;
        v.artifact_sha256 = sha.hex();
        v.artifact_size = size;
        auto out = store.push(v);
        if (!out.ok()) fail(out.status());
        upload.path.clear();  // renamed into place, or removed as a duplicate, by push()
        json j = version_json(*out);
        j.erase("description");
        reply(res, 201, j);
      });
    });
  }

  on("GET", "/api/v1/models", wrap([&store, caller](Req req, Res res) {
       auto me = caller(req);
       json list = json::array();
       for (const auto& m : store.list_models(me ? me->id : 0, req.get_param_value("owner")))
         list.push_back(model_json(m));
       reply(res, 200, {{"models", list}});
     }));

  on("GET", "/api/v1/models/{user}/{ref}", wrap([&store, visible_model](Req req, Res res) {
       auto m = visible_model(req, req.matches[1], req.matches[2]);
       json j = model_json(m);
       json versions = json::array();
       for (const auto& v : store.versions(m)) versions.push_back(version_json(v));
       j["versions"] = versions;
       reply(res, 200, j);
     }));

  on("GET", "/api/v1/models/{user}/{ref}/versions/{version}",
     wrap([resolve](Req req, Res res) { reply(res, 200, version_json(resolve(req))); }));

  on("GET", "/api/v1/models/{user}/{ref}/versions/{version}/artifact",
     wrap([&store, resolve](Req req, Res res) {
       auto v = resolve(req);
       std::string path = store.artifact_path(v.sha256);
       auto file = std::make_shared<std::ifstream>(path, std::ios::binary);
       if (!*file)
         fail(500, "internal", "artifact " + v.sha256 + " is missing from the data directory");
       res.set_header("X-Fedpod-Sha256", v.sha256);
       res.set_header("X-Fedpod-Version", std::to_string(v.version));
       // Streamed from disk in chunks rather than loaded whole.
       res.set_content_provider(static_cast<size_t>(v.size), "application/octet-stream",
                                [file](size_t offset, size_t length, httplib::DataSink& sink) {
                                  char buf[1 << 16];
                                  file->seekg(static_cast<std::streamoff>(offset));
                                  size_t n = std::min(length, sizeof buf);
                                  file->read(buf, static_cast<std::streamsize>(n));
                                  if (file->gcount() <= 0) return false;
                                  return sink.write(buf, static_cast<size_t>(file->gcount()));
                                });
     }));

  on("GET", "/api/v1/models/{user}/{ref}/versions/{version}/source",
     wrap([&store, resolve](Req req, Res res) {
       auto v = resolve(req);
       json files = json::array();
       for (const auto& [name, content] : store.sources(v))
         files.push_back({{"name", name}, {"content", content}});
       reply(res, 200, {{"files", files}});
     }));

  on("POST", "/api/v1/pods", wrap([&store, &opt, require_caller](Req req, Res res) {
       User me = require_caller(req);
       json body = parse_json_object(req.body, opt.max_json_bytes, "request body");
       detail::Pod pod;
       pod.name = string_field(body, "name", "pod");
       pod.address = string_field(body, "address", "pod");
       pod.public_key = string_field(body, "public_key", "pod");
       check(detail::check_pod_name(pod.name), "pod name '" + pod.name + "'");
       if (pod.address.empty() || pod.address.size() > 255)
         fail(400, "invalid_argument", "pod address must be 1 to 255 characters");
       check(detail::check_public_key(pod.public_key), "pod public_key");
       auto schema = body.find("schema");
       if (schema == body.end()) fail(400, "missing_field", "pod: missing field 'schema'");
       if (!schema->is_object())
         fail(400, "invalid_field", "pod: field 'schema' must be a JSON object");
       pod.schema_json = json_text(*schema);
       pod.owner = me.username;
       pod.created_at = detail::now_utc();
       Status s = store.create_pod(me, pod);
       if (!s.ok()) fail(s);
       reply(res, 201, pod_json(pod));
     }));

  on("GET", "/api/v1/pods", wrap([&store](Req, Res res) {
       json list = json::array();
       for (const auto& p : store.list_pods()) list.push_back(pod_json(p));
       reply(res, 200, {{"pods", list}});
     }));

  on("GET", "/api/v1/pods/{pod}", wrap([&store](Req req, Res res) {
       auto pod = store.find_pod(req.matches[1]);
       if (!pod) fail(404, "not_found", "no pod '" + std::string(req.matches[1]) + "'");
       reply(res, 200, pod_json(*pod));
     }));

  // --- Roles: PUT/DELETE/GET, the pod's owner only. ---

  on("PUT", "/api/v1/pods/{pod}/roles/{user}",
     wrap([&store, &opt, require_caller, find_pod, require_owner](Req req, Res res) {
       User me = require_caller(req);
       auto pod = find_pod(req.matches[1]);
       require_owner(pod, me, "grant roles on it");
       json body = parse_json_object(req.body, opt.max_json_bytes, "request body");
       std::string role = string_field(body, "role", "role grant");
       if (role != "general-modeller" && role != "super-modeller")
         fail(400, "invalid_argument",
              std::string("role must be ") + kRoles + ", got \"" + role + "\"");
       std::string name = req.matches[2];
       auto user = store.find_user(name);
       if (!user) fail(404, "not_found", "no user '" + name + "'");
       auto granted = store.grant_role(pod, *user, role, me);
       if (!granted.ok()) fail(granted.status());
       json j = role_json(*granted);
       j["pod"] = pod.name;
       reply(res, 200, j);
     }));

  on("DELETE", "/api/v1/pods/{pod}/roles/{user}",
     wrap([&store, require_caller, find_pod, require_owner](Req req, Res res) {
       User me = require_caller(req);
       auto pod = find_pod(req.matches[1]);
       require_owner(pod, me, "revoke roles on it");
       std::string name = req.matches[2];
       auto user = store.find_user(name);
       if (!user) fail(404, "not_found", "no user '" + name + "'");
       Status s = store.revoke_role(pod, *user);
       if (!s.ok()) fail(s);
       reply(res, 200, {{"pod", pod.name}, {"username", name}, {"role", nullptr}});
     }));

  on("GET", "/api/v1/pods/{pod}/roles",
     wrap([&store, require_caller, find_pod, require_owner](Req req, Res res) {
       User me = require_caller(req);
       auto pod = find_pod(req.matches[1]);
       require_owner(pod, me, "list roles on it");
       json list = json::array();
       for (const auto& r : store.roles(pod)) list.push_back(role_json(r));
       reply(res, 200, {{"roles", list}});
     }));

  // --- Access requests: a modeller asks to run one model version on one pod; the
  // pod's owner approves (optionally until a date), rejects, or later revokes. ---

  on("POST", "/api/v1/access-requests",
     wrap([&store, &opt, require_caller, find_pod](Req req, Res res) {
       User me = require_caller(req);
       json body = parse_json_object(req.body, opt.max_json_bytes, "request body");
       const std::string what = "access request";
       std::string model = string_field(body, "model", what);
       std::string pod_name = string_field(body, "pod", what);
       std::string purpose = string_field(body, "purpose", what);
       int64_t number = 0;
       auto version = body.find("version");
       if (version != body.end() && !version->is_null()) {
         if (!version->is_number_integer() || version->get<int64_t>() < 0)
           fail(400, "invalid_field",
                what + ": field 'version' must be a non-negative integer (0 = latest), got " +
                    json_text(*version));
         number = version->get<int64_t>();
       }
       check_text(purpose, what + ": purpose", /*required=*/true);
       auto slash = model.find('/');
       if (slash == std::string::npos || slash == 0 || slash + 1 == model.size() ||
           model.find('/', slash + 1) != std::string::npos)
         fail(400, "invalid_field", what + ": model must be \"user/ref\", got \"" + model + "\"");
       // Only public models and one's own: a pod owner who may read a private model
       // to review it must not pass it on by asking for it on someone else's pod.
       auto m = store.find_model(model.substr(0, slash), model.substr(slash + 1));
       if (!m || (m->visibility != "public" && m->owner_id != me.id))
         fail(404, "not_found", "no model " + model);
       auto pod = find_pod(pod_name);
       auto v = store.version(*m, number);
       if (!v)
         fail(404, "not_found", "model " + model + " has no version " + std::to_string(number));
       const std::string now = detail::now_utc();
       auto created = store.create_access_request(pod, me, *v, purpose, now);
       if (!created.ok()) fail(created.status());
       reply(res, 201, request_json(*created, now));
     }));

  on("GET", "/api/v1/access-requests", wrap([&store, require_caller, find_pod](Req req, Res res) {
       User me = require_caller(req);
       detail::AccessRequestFilter f;
       f.viewer_id = me.id;
       f.now = detail::now_utc();
       f.status = req.get_param_value("status");
       if (!f.status.empty() && f.status != "pending" && f.status != "approved" &&
           f.status != "expired" && f.status != "rejected" && f.status != "revoked")
         fail(400, "invalid_argument",
              std::string("status must be one of ") + kRequestStatuses + ", got \"" + f.status +
                  "\"");
       f.pod = req.get_param_value("pod");
       if (!f.pod.empty()) find_pod(f.pod);  // 404 for a pod that does not exist
       json list = json::array();
       for (const auto& r : store.list_access_requests(f)) list.push_back(request_json(r, f.now));
       reply(res, 200, {{"requests", list}});
     }));

  on("GET", "/api/v1/access-requests/{id}", wrap([&store, require_caller](Req req, Res res) {
       User me = require_caller(req);
       int64_t id = parse_id(req.matches[1]);
       auto r = store.access_request(id);
       // Someone else's request is reported exactly like a missing one.
       if (!r || (r->requester_id != me.id && r->pod_owner_id != me.id))
         fail(404, "not_found", "no access request " + std::to_string(id));
       reply(res, 200, request_json(*r, detail::now_utc()));
     }));

  on_regex("POST", "/api/v1/access-requests/{id}/{action}",
           R"(/api/v1/access-requests/([^/]+)/(approve|reject|revoke))",
           wrap([&store, &opt, require_caller](Req req, Res res) {
             User me = require_caller(req);
             int64_t id = parse_id(req.matches[1]);
             const std::string action = req.matches[2];
             auto r = store.access_request(id);
             if (!r) fail(404, "not_found", "no access request " + std::to_string(id));
             if (r->pod_owner_id != me.id)
               fail(403, "forbidden",
                    "only the owner of pod '" + r->pod + "' (" + r->pod_owner + ") may " + action +
                        " access requests for it");
             json body = req.body.empty()
                             ? json::object()
                             : parse_json_object(req.body, opt.max_json_bytes, "request body");
             detail::Decision d;
             d.id = id;
             d.by = &me;
             d.now = detail::now_utc();
             d.reason = string_field(body, "reason", action, std::string());
             check_text(d.reason, action + ": reason", /*required=*/false);
             if (action == "approve") {
               d.from = "pending";
               d.to = "approved";
               auto e = body.find("expires_at");
               if (e != body.end() && !e->is_null()) {
                 if (!e->is_string())
                   fail(400, "invalid_field",
                        "approve: field 'expires_at' must be a string (\"YYYY-MM-DD\" or "
                        "\"YYYY-MM-DDTHH:MM:SSZ\") or null");
                 std::string normalized;
                 int64_t seconds = 0;
                 check(detail::parse_iso8601(e->get<std::string>(), &normalized, &seconds),
                       "approve: expires_at");
                 if (normalized <= d.now)
                   fail(400, "invalid_argument",
                        "approve: expires_at " + normalized + " is not in the future (now " +
                            d.now + ")");
                 d.expires_at = normalized;
               }
             } else if (action == "reject") {
               d.from = "pending";
               d.to = "rejected";
             } else {
               d.from = "approved";
               d.to = "revoked";
             }
             auto out = store.decide(d);
             if (!out.ok()) fail(out.status());
             reply(res, 200, request_json(*out, d.now));
           }));

  // --- A pod's token: read-only, scoped to the pod, for the pod to fetch its policy
  // with. Creating one replaces the last (rotation); only the owner may. ---

  on("POST", "/api/v1/pods/{pod}/token", wrap([&store, require_caller, find_pod, require_owner](Req req, Res res) {
       User me = require_caller(req);
       auto pod = find_pod(req.matches[1]);
       require_owner(pod, me, "create its token");
       const std::string token = store.rotate_pod_token(pod);
       reply(res, 201, {{"pod", pod.name}, {"token", token}, {"scope", "read this pod's policy"}});
     }));

  // --- A pod's policy: what its owner decided, for the pod to enforce. The pod
  // fetches it with its owner's token (or reads it from a file on an air-gapped
  // host), so it is the owner's only. Grants include expired approvals: a pod may
  // run on a cached policy and checks expiry against its own clock. ---

  // The pod's own read-only token (what a pod holds), or its owner's: the pod named
  // in the path, or a 401/403/404.
  auto pod_or_owner = [&store, require_caller, find_pod, require_owner](Req req, const std::string& action) {
    const std::string h = req.get_header_value("Authorization");
    const std::string bearer = "Bearer ";
    std::optional<std::string> token_pod;
    if (h.rfind(bearer + detail::kPodTokenPrefix, 0) == 0) {
      token_pod = store.pod_by_token(h.substr(bearer.size()));
      if (!token_pod) fail(401, "unauthenticated", "invalid token (a rotated pod token stops working at once)");
    }
    std::optional<User> me;
    if (!token_pod) me = require_caller(req);  // 401 before anything about the pod is told
    auto pod = find_pod(req.matches[1]);
    if (token_pod) {
      if (*token_pod != pod.name) {
        fail(403, "forbidden", "this token belongs to pod '" + *token_pod + "' and may only " + action + " of that pod");
      }
    } else {
      require_owner(pod, *me, action);
    }
    return pod;
  };

  // --- Audit heads: the pod signs its audit chain's head (entries, last hash) and
  // publishes it here; the hub keeps every head, so a log later cut, replaced or
  // deleted on the pod contradicts what it published (fedpod audit verify --pod). ---

  on("POST", "/api/v1/pods/{pod}/audit-heads", wrap([&store, &opt, pod_or_owner](Req req, Res res) {
       auto pod = pod_or_owner(req, "publish the audit head");
       json doc = parse_json_object(req.body, opt.max_json_bytes, "request body");
       if (!is_signed_document(doc) || !doc["key"].is_string()) {
         fail(400, "invalid_argument", "an audit head is a signed document (fedpod_signed, payload, signature, key)");
       }
       const std::string key = doc["key"].get<std::string>();
       auto payload = verify_document(doc, key, "audit head");
       if (!payload.ok()) fail(400, "invalid_argument", payload.status().message());
       const json& p = *payload;
       if (!p.contains("pod") || p["pod"] != pod.name) {
         fail(400, "invalid_argument", "the audit head names another pod than '" + pod.name + "'");
       }
       detail::AuditHead h;
       if (!p.contains("entries") || !p["entries"].is_number_integer() || p["entries"].get<int64_t>() < 0) {
         fail(400, "invalid_argument", "audit head: entries must be a non-negative integer");
       }
       h.entries = p["entries"].get<int64_t>();
       if (!p.contains("head") || !p["head"].is_string() || p["head"].get<std::string>().size() != 64 ||
           p["head"].get<std::string>().find_first_not_of("0123456789abcdef") != std::string::npos) {
         fail(400, "invalid_argument", "audit head: head must be 64 lowercase hex digits");
       }
       h.head = p["head"].get<std::string>();
       h.reset = p.value("reset", false) == true;
       h.signing_key = key;
       h.document = doc.dump();
       auto added = store.add_audit_head(pod, h);
       if (!added.ok()) fail(added.status());
       reply(res, *added ? 201 : 200, {{"pod", pod.name}, {"entries", h.entries}, {"head", h.head}, {"recorded", *added}});
     }));

  on("GET", "/api/v1/pods/{pod}/audit-heads", wrap([&store, pod_or_owner](Req req, Res res) {
       auto pod = pod_or_owner(req, "read the audit heads");
       json heads = json::array();
       for (const auto& h : store.audit_heads(pod)) {
         heads.push_back({{"entries", h.entries},
                          {"head", h.head},
                          {"reset", h.reset},
                          {"signing_key", h.signing_key},
                          {"published_at", h.published_at},
                          {"document", json::parse(h.document, nullptr, false)}});
       }
       reply(res, 200, {{"pod", pod.name}, {"heads", heads}});
     }));

  on("GET", "/api/v1/pods/{pod}/policy",
     wrap([this, &store, pod_or_owner](Req req, Res res) {
       auto pod = pod_or_owner(req, "read its policy");
       // Only the users the pod may admit at its CURVE handshake: its owner and those
       // with a role on it (and holders of a grant, which the pod honours only with a
       // role). Every other hub user stays unknown to the pod.
       const auto pod_roles = store.roles(pod);
       const auto pod_grants = store.grants(pod);
       std::set<std::string> admitted = {pod.owner};
       for (const auto& r : pod_roles) admitted.insert(r.username);
       for (const auto& g : pod_grants) admitted.insert(g.requester);
       json users = json::array();
       for (const auto& u : store.list_users()) {
         if (admitted.count(u.username)) users.push_back({{"username", u.username}, {"public_key", u.public_key}});
       }
       json roles = json::array();
       for (const auto& r : pod_roles)
         roles.push_back({{"username", r.username}, {"role", r.role}});
       json grants = json::array();
       for (const auto& g : pod_grants)
         grants.push_back({{"id", g.id},
                           {"username", g.requester},
                           {"model", g.model_user + "/" + g.model_ref},
                           {"version", g.version},
                           {"sha256", g.sha256},
                           {"format", g.format},
                           {"expires_at", nullable(g.expires_at)}});
       // Signed (common/signing.h): the pod verifies it with the key it pins, so a
       // policy rewritten on the way is refused. version: the issue time in
       // microseconds, so it only grows; the pod refuses one older than it holds.
       const auto now = std::chrono::system_clock::now();
       const int64_t version =
           std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count();
       const json payload = {{"pod", pod.name},
                             {"owner", pod.owner},
                             {"generated_at", detail::now_utc()},
                             {"issued_at", format_utc(std::chrono::system_clock::to_time_t(now))},
                             {"expires_at", format_utc(std::chrono::system_clock::to_time_t(now + options_.policy_ttl))},
                             {"version", version},
                             {"users", users},
                             {"roles", roles},
                             {"grants", grants}};
       reply(res, 200, json::parse(sign_document(payload, signing_)));
     }));

  // --- The web pages (web.h): a client of the routes above, run in-process as the
  // signed-in user, so they enforce exactly what the API enforces. ---
  detail::WebContext web;
  web.store = &store;
  web.tls = !options_.tls_cert_file.empty();
  web.session_ttl = options_.session_ttl;
  web.logger = logger_;
  web.route = [on_regex](const std::string& method, const std::string& label, const std::string& regex,
                         httplib::Server::Handler handler) { on_regex(method, label, regex, std::move(handler)); };
  web.api = [this](const User& user, const std::string& method, const std::string& path,
                   const httplib::Params& query, const json& body) {
    httplib::Request req;
    req.method = method;
    req.path = path;
    req.params = query;
    if (!body.is_null()) {
      req.body = body.dump();
      req.set_header("Content-Type", "application/json");
    }
    for (const auto& r : metrics_->routes) {
      if (!r.handler || r.method != method || !std::regex_match(req.path, req.matches, r.regex)) continue;
      httplib::Response res;
      struct As {
        explicit As(const User* u) { t_page_user = u; }
        ~As() { t_page_user = nullptr; }
      } as(&user);
      r.handler(req, res);
      return detail::ApiReply{res.status < 0 ? 200 : res.status, json::parse(res.body, nullptr, false)};
    }
    return detail::ApiReply{404, json{{"error", {{"code", "not_found"}, {"message", "no API route " + method + " " + path}}}}};
  };
  detail::register_pages(web);

  // Backstops: httplib's own errors (unknown route, payload over the transport
  // limit) get a JSON body too (an HTML page for a browser's page path), and an
  // exception escaping a wrapper a 500.
  http_->set_error_handler([](Req req, Res res) {
    if (!res.body.empty()) return;
    if (req.path.rfind("/api/", 0) != 0 && req.get_header_value("Accept").find("text/html") != std::string::npos) {
      detail::error_page(res, res.status, res.status == 404 ? "There is no page at this address." : "HTTP error");
      return;
    }
    std::string code = res.status == 404   ? "not_found"
                       : res.status == 413 ? "too_large"
                                           : "http_error";
    std::string msg = res.status == 404   ? "no such endpoint"
                      : res.status == 413 ? "request body over the hub's limit"
                                          : "HTTP " + std::to_string(res.status);
    reply_error(res, res.status, code, msg);
  });
  http_->set_exception_handler([](Req, Res res, std::exception_ptr) {
    reply_error(res, 500, "internal", "internal error");
  });
  // Before a byte of a body is read: the body must fit its endpoint (Content-Length
  // against that endpoint's limit; a body of unknown length only where a large one
  // is legal), and the one endpoint that takes a large body, a model push, needs a
  // valid token first. So nobody without a token can make the hub buffer more than
  // max_json_bytes, and an oversized request costs it nothing. The connection is
  // closed after such a refusal: the unread body must not be parsed as a request.
  static const std::regex upload_path("^/api/v1/models/[^/]+/[^/]+/versions$");
  http_->set_pre_routing_handler([this, &store](Req req, Res res) {
    t_request_start = std::chrono::steady_clock::now();
    using H = httplib::Server::HandlerResponse;
    if (req.method != "POST" && req.method != "PUT" && req.method != "PATCH") return H::Unhandled;
    const bool upload = req.method == "POST" && std::regex_match(req.path, upload_path);
    const size_t limit = upload ? options_.max_artifact_bytes + options_.max_source_bytes + options_.max_json_bytes +
                                      (1u << 20)
                                : options_.max_json_bytes + (64u << 10);
    auto refuse = [&](int status, const std::string& code, const std::string& message) {
      reply_error(res, status, code, message);
      res.set_header("Connection", "close");
      return H::Handled;
    };
    if (req.has_header("Content-Length")) {
      const std::string text = req.get_header_value("Content-Length");
      const bool digits = !text.empty() && text.size() <= 19 && text.find_first_not_of("0123456789") == std::string::npos;
      if (!digits) return refuse(400, "bad_request", "Content-Length '" + text + "' is not a number");
      const uint64_t length = std::stoull(text);
      if (length > limit) {
        return refuse(413, "too_large", "request body of " + std::to_string(length) + " bytes is over this endpoint's "
                                        "limit of " + std::to_string(limit) + " bytes");
      }
    } else if (!upload && req.has_header("Transfer-Encoding")) {
      return refuse(411, "length_required", "this endpoint takes a body with a Content-Length");
    }
    // A small push (the whole request under 64 KiB) is read and refused by its handler
    // like any call, so the client gets the 401 in reply: a client still sending
    // when the connection closes (TLS above all) would only see a broken pipe.
    const bool small = req.has_header("Content-Length") &&
                       std::stoull(req.get_header_value("Content-Length")) <= (64u << 10);
    if (upload && !small) {
      const std::string h = req.get_header_value("Authorization");
      const std::string prefix = "Bearer ";
      if (h.compare(0, prefix.size(), prefix) != 0) {
        return refuse(401, "unauthenticated", "a push needs 'Authorization: Bearer <token>', checked before the "
                                              "upload is read");
      }
      if (!store.user_by_token(h.substr(prefix.size()))) return refuse(401, "unauthenticated", "invalid token");
    }
    return H::Unhandled;
  });
  http_->set_logger([this](Req req, const httplib::Response& res) {
    const auto start = t_request_start;
    t_request_start = {};
    metrics_->record(req.method, req.path, res.status, start);
    // Probes and scrapes arrive every few seconds and are counted above: debug only.
    const bool routine = res.status == 200 && (req.path == "/healthz" || req.path == "/readyz" ||
                                               req.path == "/metrics");
    logger_->log(routine ? spdlog::level::debug : spdlog::level::info,
                 "method={} path={} status={} remote={} bytes_in={} bytes_out={}", req.method,
                 req.path, res.status, req.remote_addr, req.body.size(), res.body.size());
  });
}

}  // namespace fedpod::hub
