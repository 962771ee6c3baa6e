#include "fedpod/hub/server.h"

#include <httplib.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "store.h"
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

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
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

json pod_json(const detail::Pod& p) {
  json schema = json::parse(p.schema_json, nullptr, false);
  return {{"name", p.name},       {"owner", p.owner},
          {"address", p.address}, {"public_key", p.public_key},
          {"schema", schema},     {"created_at", p.created_at}};
}

}  // namespace

Server::Server(ServerOptions options, Logger logger)
    : options_(std::move(options)), logger_(logger ? std::move(logger) : null_logger()) {}

Server::~Server() { stop(); }

Status Server::start() {
  store_ = std::make_unique<Store>(options_.data_dir);
  FEDPOD_RETURN_IF_ERROR(store_->open());
  http_ = std::make_unique<httplib::Server>();
  // The largest legal push plus room for multipart framing; anything larger is cut
  // off by httplib with a bare 413 before a handler runs.
  http_->set_payload_max_length(options_.max_artifact_bytes + options_.max_source_bytes +
                                options_.max_json_bytes + (1u << 20));
  http_->set_read_timeout(60, 0);
  http_->set_write_timeout(60, 0);
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
  logger_->info("event=listening host={} port={} data_dir={}", options_.host, port_,
                options_.data_dir);
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
  auto wrap = [this](Fn fn) {
    return [this, fn](Req req, Res res) {
      try {
        fn(req, res);
      } catch (const ApiError& e) {
        reply_error(res, e.status, e.code, e.message);
      } catch (const std::exception& e) {
        logger_->error("event=handler_exception method={} path={} what=\"{}\"", req.method,
                       req.path, e.what());
        reply_error(res, 500, "internal", std::string("internal error: ") + e.what());
      } catch (...) {
        reply_error(res, 500, "internal", "internal error");
      }
    };
  };

  // The caller's identity: nullopt when no Authorization header is sent; 401 when
  // one is sent but names no user.
  auto caller = [&store](Req req) -> std::optional<User> {
    if (!req.has_header("Authorization")) return std::nullopt;
    std::string h = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (h.compare(0, prefix.size(), prefix) != 0)
      fail(401, "unauthenticated", "Authorization must be 'Bearer <token>'");
    auto user = store.user_by_token(h.substr(prefix.size()));
    if (!user) fail(401, "unauthenticated", "invalid token");
    return user;
  };
  auto require_caller = [caller](Req req) -> User {
    auto user = caller(req);
    if (!user) fail(401, "unauthenticated", "this call needs 'Authorization: Bearer <token>'");
    return *user;
  };
  // The model at `user/ref` if the caller may see it; 404 otherwise (a private
  // model of someone else is reported exactly like a missing one).
  auto visible_model = [&store, caller](Req req, const std::string& user, const std::string& ref) {
    auto me = caller(req);
    auto m = store.find_model(user, ref);
    if (!m || (m->visibility != "public" && (!me || me->id != m->owner_id)))
      fail(404, "not_found", "no model " + user + "/" + ref);
    return *m;
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

  http_->Get("/healthz", wrap([](Req, Res res) { res.set_content("ok", "text/plain"); }));

  http_->Post("/api/v1/users", wrap([&store, &opt](Req req, Res res) {
                json body = parse_json_object(req.body, opt.max_json_bytes, "request body");
                std::string username = string_field(body, "username", "user");
                std::string key = string_field(body, "public_key", "user");
                check(detail::check_username(username), "username '" + username + "'");
                check(detail::check_public_key(key), "public_key");
                auto token = store.create_user(username, key);
                if (!token.ok()) fail(token.status());
                reply(res, 201, {{"username", username}, {"token", *token}});
              }));

  http_->Post(
      R"(/api/v1/models/([^/]+)/([^/]+)/versions)",
      wrap([&store, &opt, require_caller](Req req, Res res) {
        User me = require_caller(req);
        std::string user = req.matches[1], ref = req.matches[2];
        if (user != me.username)
          fail(403, "forbidden",
               "user '" + me.username + "' may only push to models under '" + me.username +
                   "/', not '" + user + "/'");
        check(detail::check_model_ref(ref), "model ref '" + ref + "'");
        if (!req.is_multipart_form_data())
          fail(400, "invalid_argument",
               "a push must be multipart/form-data with parts 'meta' and 'artifact'");
        if (!req.has_file("meta")) fail(400, "missing_part", "missing part 'meta' (JSON)");
        if (!req.has_file("artifact")) fail(400, "missing_part", "missing part 'artifact'");
        json meta = parse_json_object(req.get_file_value("meta").content, opt.max_json_bytes,
                                      "part 'meta'");
        detail::NewVersion v;
        v.owner = &me;
        v.model_ref = ref;
        v.format = string_field(meta, "format", "meta");
        v.description = string_field(meta, "description", "meta", std::string());
        v.visibility = string_field(meta, "visibility", "meta", std::string());
        if (v.format != "torchscript" && v.format != "plugin")
          fail(400, "invalid_argument",
               "meta: format must be \"torchscript\" or \"plugin\", got \"" + v.format + "\"");
        if (!v.visibility.empty() && v.visibility != "private" && v.visibility != "public")
          fail(400, "invalid_argument",
               "meta: visibility must be \"private\" or \"public\", got \"" + v.visibility + "\"");
        const std::string& artifact = req.get_file_value("artifact").content;
        if (artifact.size() > opt.max_artifact_bytes)
          fail(413, "too_large",
               "artifact is " + std::to_string(artifact.size()) + " bytes, over the limit of " +
                   std::to_string(opt.max_artifact_bytes) + " bytes (max_artifact_bytes)");
        check(detail::check_artifact(v.format, artifact), "artifact:");
        size_t source_bytes = 0;
        std::set<std::string> names;
        auto range = req.files.equal_range("source");
        for (auto it = range.first; it != range.second; ++it) {
          const auto& part = it->second;
          check(detail::check_source_name(part.filename),
                "source file name '" + part.filename + "'");
          if (!names.insert(part.filename).second)
            fail(400, "invalid_argument", "source file '" + part.filename + "' is given twice");
          source_bytes += part.content.size();
          if (source_bytes > opt.max_source_bytes)
            fail(413, "too_large",
                 "source files total more than the limit of " +
                     std::to_string(opt.max_source_bytes) + " bytes (max_source_bytes)");
          if (!valid_utf8(part.content))
            fail(400, "invalid_argument", "source file '" + part.filename + "' is not UTF-8 text");
          v.sources.emplace_back(part.filename, part.content);
        }
        for (const auto& [name, part] : req.files)
          if (name != "meta" && name != "artifact" && name != "source")
            fail(400, "invalid_argument",
                 "unknown part '" + name + "' (expected meta, artifact, source)");
        v.artifact = &artifact;
        auto out = store.push(v);
        if (!out.ok()) fail(out.status());
        json j = version_json(*out);
        j.erase("description");
        reply(res, 201, j);
      }));

  http_->Get(
      "/api/v1/models", wrap([&store, caller](Req req, Res res) {
        auto me = caller(req);
        json list = json::array();
        for (const auto& m : store.list_models(me ? me->id : 0, req.get_param_value("owner")))
          list.push_back(model_json(m));
        reply(res, 200, {{"models", list}});
      }));

  http_->Get(R"(/api/v1/models/([^/]+)/([^/]+))", wrap([&store, visible_model](Req req, Res res) {
               auto m = visible_model(req, req.matches[1], req.matches[2]);
               json j = model_json(m);
               json versions = json::array();
               for (const auto& v : store.versions(m)) versions.push_back(version_json(v));
               j["versions"] = versions;
               reply(res, 200, j);
             }));

  http_->Get(R"(/api/v1/models/([^/]+)/([^/]+)/versions/([^/]+))",
             wrap([resolve](Req req, Res res) { reply(res, 200, version_json(resolve(req))); }));

  http_->Get(
      R"(/api/v1/models/([^/]+)/([^/]+)/versions/([^/]+)/artifact)",
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

  http_->Get(R"(/api/v1/models/([^/]+)/([^/]+)/versions/([^/]+)/source)",
             wrap([&store, resolve](Req req, Res res) {
               auto v = resolve(req);
               json files = json::array();
               for (const auto& [name, content] : store.sources(v))
                 files.push_back({{"name", name}, {"content", content}});
               reply(res, 200, {{"files", files}});
             }));

  http_->Post("/api/v1/pods", wrap([&store, &opt, require_caller](Req req, Res res) {
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
                pod.schema_json = dump(*schema);
                pod.owner = me.username;
                pod.created_at = detail::now_iso8601();
                Status s = store.create_pod(me, pod);
                if (!s.ok()) fail(s);
                reply(res, 201, pod_json(pod));
              }));

  http_->Get("/api/v1/pods", wrap([&store](Req, Res res) {
               json list = json::array();
               for (const auto& p : store.list_pods()) list.push_back(pod_json(p));
               reply(res, 200, {{"pods", list}});
             }));

  http_->Get(R"(/api/v1/pods/([^/]+))", wrap([&store](Req req, Res res) {
               auto pod = store.find_pod(req.matches[1]);
               if (!pod) fail(404, "not_found", "no pod '" + std::string(req.matches[1]) + "'");
               reply(res, 200, pod_json(*pod));
             }));

  // Backstops: httplib's own errors (unknown route, payload over the transport
  // limit) get a JSON body too, and an exception escaping a wrapper a 500.
  http_->set_error_handler([](Req, Res res) {
    if (!res.body.empty()) return;
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
  http_->set_logger([this](Req req, const httplib::Response& res) {
    logger_->info("method={} path={} status={} remote={} bytes_in={} bytes_out={}", req.method,
                  req.path, res.status, req.remote_addr, req.body.size(), res.body.size());
  });
}

}  // namespace fedpod::hub
