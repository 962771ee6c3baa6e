#include "web.h"

#include <sodium.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <dtl/dtl.hpp>
#include <kainjow/mustache.hpp>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "fedpod/common/sha256.h"
#include "util.h"

namespace fedpod::hub::detail {

// Defined in the generated web_assets.cpp: hub/web/'s files, embedded at build time.
struct WebAsset {
  const char* name;
  std::string_view content;
};
extern const WebAsset kWebAssets[];
extern const size_t kWebAssetCount;

std::string_view web_asset(const std::string& name) {
  for (size_t i = 0; i < kWebAssetCount; ++i)
    if (name == kWebAssets[i].name) return kWebAssets[i].content;
  return {};
}

std::vector<std::string> web_asset_names() {
  std::vector<std::string> names;
  for (size_t i = 0; i < kWebAssetCount; ++i) names.emplace_back(kWebAssets[i].name);
  return names;
}

std::string ApiReply::error_message() const {
  if (body.is_object() && body.contains("error") && body["error"].is_object())
    return body["error"].value("message", std::string("HTTP ") + std::to_string(status));
  return "HTTP " + std::to_string(status);
}

namespace {

using json = nlohmann::json;
namespace mustache = kainjow::mustache;
using Req = const httplib::Request&;
using Res = httplib::Response&;

// JSON to mustache data: objects and arrays as they are, strings as strings, numbers
// as their text, null and "" as false (so {{#x}} hides an absent or empty value).
mustache::data to_data(const json& j) {
  switch (j.type()) {
    case json::value_t::object: {
      mustache::data d{mustache::data::type::object};
      for (const auto& [k, v] : j.items()) d.set(k, to_data(v));
      return d;
    }
    case json::value_t::array: {
      mustache::data d{mustache::data::type::list};
      for (const auto& v : j) d.push_back(to_data(v));
      return d;
    }
    case json::value_t::string:  // "" is false too, so {{#reason}} hides an empty one
      return j.get<std::string>().empty() ? mustache::data(false) : mustache::data(j.get<std::string>());
    case json::value_t::boolean:
      return mustache::data(j.get<bool>());
    case json::value_t::null:
    case json::value_t::discarded:
      return mustache::data(false);
    default:
      return mustache::data(j.dump());
  }
}

// A page that cannot be shown: HTTP status and what to tell the user.
struct PageError {
  int status;
  std::string message;
};

[[noreturn]] void page_fail(int status, std::string message) { throw PageError{status, std::move(message)}; }

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  randombytes_buf(raw.data(), raw.size());
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  return out;
}

bool same_secret(const std::string& a, const std::string& b) {
  return !a.empty() && a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The value of cookie `name` in the request's Cookie header; "" when absent.
std::string cookie(Req req, const std::string& name) {
  const std::string header = req.get_header_value("Cookie");
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(';', pos);
    if (end == std::string::npos) end = header.size();
    std::string pair = header.substr(pos, end - pos);
    const size_t start = pair.find_first_not_of(' ');
    if (start != std::string::npos) pair.erase(0, start);
    const size_t eq = pair.find('=');
    if (eq != std::string::npos && pair.compare(0, eq, name) == 0 && eq == name.size()) return pair.substr(eq + 1);
    pos = end + 1;
  }
  return {};
}

// `s` percent-encoded for a query parameter's value.
std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string human_size(int64_t bytes) {
  char buf[32];
  if (bytes < 1024) return std::to_string(bytes) + " B";
  if (bytes < (1 << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", static_cast<double>(bytes) / 1024.0);
  } else if (bytes < (1 << 30)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  } else {
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1 << 30));
  }
  return buf;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::string line;
  std::istringstream in(text);
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// One file's source as template data: {name, bytes, lines: [{n, text}]}.
json source_file(const std::string& name, const std::string& content) {
  json lines = json::array();
  int n = 0;
  for (const auto& l : split_lines(content)) lines.push_back({{"n", ++n}, {"text", l}});
  return {{"name", name}, {"bytes", human_size(static_cast<int64_t>(content.size()))}, {"lines", lines}};
}

json file_hunks(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  dtl::Diff<std::string, std::vector<std::string>> d(a, b);
  d.onHuge();
  d.compose();
  d.composeUnifiedHunks();
  json hunks = json::array();
  for (const auto& h : d.getUniHunks()) {
    json lines = json::array();
    auto add = [&](const std::pair<std::string, dtl::elemInfo>& e) {
      const char* kind = e.second.type == dtl::SES_ADD ? "add" : e.second.type == dtl::SES_DELETE ? "del" : "ctx";
      json line = {{"kind", kind}, {"text", e.first}, {"old", ""}, {"new", ""}};
      if (e.second.type != dtl::SES_ADD) line["old"] = std::to_string(e.second.beforeIdx);
      if (e.second.type != dtl::SES_DELETE) line["new"] = std::to_string(e.second.afterIdx);
      if (e.second.type == dtl::SES_ADD) line["sign"] = "+";
      else if (e.second.type == dtl::SES_DELETE) line["sign"] = "-";
      else line["sign"] = " ";
      lines.push_back(line);
    };
    for (const auto& e : h.common[0]) add(e);
    for (const auto& e : h.change) add(e);
    for (const auto& e : h.common[1]) add(e);
    hunks.push_back({{"header", "@@ -" + std::to_string(h.a) + "," + std::to_string(h.b) + " +" +
                                    std::to_string(h.c) + "," + std::to_string(h.d) + " @@"},
                     {"lines", lines}});
  }
  return hunks;
}

}  // namespace

json diff_sources(const Files& before, const Files& after) {
  std::map<std::string, std::pair<const std::string*, const std::string*>> files;
  for (const auto& [name, content] : before) files[name].first = &content;
  for (const auto& [name, content] : after) files[name].second = &content;
  json out = json::array();
  for (const auto& [name, pair] : files) {
    const auto a = pair.first ? split_lines(*pair.first) : std::vector<std::string>{};
    const auto b = pair.second ? split_lines(*pair.second) : std::vector<std::string>{};
    std::string status = !pair.first ? "added" : !pair.second ? "removed" : a == b ? "unchanged" : "changed";
    json f = {{"name", name}, {"status", status}, {"hunks", json::array()}};
    if (status != "unchanged") f["hunks"] = file_hunks(a, b);
    f["changed"] = status != "unchanged";
    out.push_back(f);
  }
  return out;
}

std::string render_template(const std::string& name, const json& data) {
  const std::string_view text = web_asset(name);
  if (text.empty()) throw std::runtime_error("hub web: no template " + name);
  mustache::mustache tmpl{std::string(text)};
  if (!tmpl.is_valid()) throw std::runtime_error("hub web: template " + name + ": " + tmpl.error_message());
  std::string out = tmpl.render(to_data(data));
  if (!tmpl.error_message().empty())
    throw std::runtime_error("hub web: template " + name + ": " + tmpl.error_message());
  return out;
}

namespace {

// What every page response carries: no script may run, no other site may frame it,
// and nothing is cached (pages show permissions that change).
void page_headers(Res res) {
  res.set_header("Content-Security-Policy",
                 "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                 "frame-ancestors 'none'; base-uri 'none'");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("X-Frame-Options", "DENY");
  res.set_header("Referrer-Policy", "same-origin");
  res.set_header("Cache-Control", "no-store");
}

// The whole page: `body` (already rendered, its values escaped) inside the layout.
std::string layout(const std::string& title, const std::string& body, const json& chrome) {
  json data = chrome;
  data["title"] = title;
  data["body"] = body;
  return render_template("layout.mustache", data);
}

}  // namespace

void error_page(Res res, int status, const std::string& message) {
  page_headers(res);
  res.status = status;
  const std::string body = render_template("error.mustache", {{"status", status}, {"message", message}});
  res.set_content(layout("Error " + std::to_string(status), body, json::object()), "text/html; charset=utf-8");
}

namespace {

struct Session {
  std::string username;
  std::string csrf;
  std::chrono::steady_clock::time_point expires;
};

// Signed-in sessions, keyed by the sha256 of their id (so the table's lookups do not
// time the secret itself).
class Sessions {
 public:
  // A new session for `username`: its id (the cookie's value) and the session.
  std::pair<std::string, Session> create(const std::string& username, std::chrono::seconds ttl) {
    const auto now = std::chrono::steady_clock::now();
    Session s{username, random_hex(32), now + ttl};
    std::string id = random_hex(32);
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = map_.begin(); it != map_.end();) it = it->second.expires <= now ? map_.erase(it) : std::next(it);
    map_[sha256_hex(id)] = s;
    return {id, s};
  }
  std::optional<Session> find(const std::string& id) {
    if (id.size() != 64) return std::nullopt;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(sha256_hex(id));
    if (it == map_.end()) return std::nullopt;
    if (it->second.expires <= std::chrono::steady_clock::now()) {
      map_.erase(it);
      return std::nullopt;
    }
    return it->second;
  }
  void remove(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    map_.erase(sha256_hex(id));
  }

 private:
  std::mutex mu_;
  std::unordered_map<std::string, Session> map_;
};

constexpr const char* kSessionCookie = "fedpod_session";
constexpr const char* kSigninCookie = "fedpod_signin";

// One page request being answered.
struct Page {
  Req req;
  Res res;
  const WebContext& ctx;
  std::optional<User> user;  // the signed-in user
  Session session;
  std::string session_id;

  // Runs the API route as the signed-in user.
  ApiReply api(const std::string& method, const std::string& path, const httplib::Params& query = {},
               const json& body = nullptr) const {
    return ctx.api(*user, method, path, query, body);
  }
  // The same, failing the page with the API's status and message on an error.
  json must(const std::string& method, const std::string& path, const httplib::Params& query = {},
            const json& body = nullptr) const {
    ApiReply r = api(method, path, query, body);
    if (!r.ok()) page_fail(r.status, r.error_message());
    return r.body;
  }
  std::string param(const std::string& name) const { return req.get_param_value(name.c_str()); }

  // The layout's data: who is signed in, the CSRF token, the inbox's pending count.
  json chrome(const std::string& nav) const {
    json c = {{"signed_in", bool(user)}, {"nav_" + nav, true}};
    if (user) {
      c["username"] = user->username;
      c["csrf"] = session.csrf;
      ApiReply pending = api("GET", "/api/v1/access-requests", {{"status", "pending"}});
      int n = 0;
      if (pending.ok())
        for (const auto& r : pending.body["requests"]) n += r["pod_owner"] == user->username;
      if (n > 0) c["inbox_count"] = std::to_string(n);
    }
    return c;
  }
  void show(const std::string& nav, const std::string& title, const std::string& tmpl, json data) {
    data["csrf"] = session.csrf;
    if (user) data["me"] = user->username;
    res.status = 200;
    res.set_content(layout(title, render_template(tmpl, data), chrome(nav)), "text/html; charset=utf-8");
  }
  void redirect(const std::string& to) {
    res.status = 303;
    res.set_header("Location", to);
  }
};

std::string cookie_attributes(const WebContext& ctx) {
  return std::string("; Path=/; HttpOnly; SameSite=Strict") + (ctx.tls ? "; Secure" : "");
}

json version_rows(const json& versions, int64_t selected) {
  json rows = json::array();
  for (const auto& v : versions) {
    json row = v;
    row["size_text"] = human_size(v.value("size", int64_t{0}));
    row["selected"] = v.value("version", int64_t{0}) == selected;
    rows.push_back(row);
  }
  return rows;
}

Files files_of(const json& source) {
  Files out;
  for (const auto& f : source["files"]) out.emplace_back(f.value("name", ""), f.value("content", ""));
  return out;
}

json sources_data(const json& source) {
  json files = json::array();
  for (const auto& f : source["files"]) files.push_back(source_file(f.value("name", ""), f.value("content", "")));
  return files;
}

int64_t parse_positive(const std::string& text, const std::string& what) {
  try {
    size_t used = 0;
    const long long n = std::stoll(text, &used);
    if (used == text.size() && n > 0) return n;
  } catch (const std::exception&) {
  }
  page_fail(400, what + " must be a positive integer, got '" + text + "'");
}

// A name from a form that becomes one segment of an API path: empty or with a '/'
// (which would address another route) is refused before any call.
std::string segment(const std::string& value, const std::string& what) {
  if (value.empty()) page_fail(400, "give the " + what);
  if (value.find_first_of("/?#") != std::string::npos) page_fail(400, what + " '" + value + "' is not a name");
  return value;
}

// Where to go after signing in: `next` when it is a path on this hub ("/inbox"), else
// /models (not "//evil.example", which a browser reads as another site).
std::string local_path(const std::string& next) {
  if (next.empty() || next[0] != '/' || (next.size() > 1 && (next[1] == '/' || next[1] == '\\'))) return "/models";
  return next;
}

void status_flags(json& r) {
  const std::string s = r.value("status", "");
  r["is_" + s] = true;
}

}  // namespace

void register_pages(const WebContext& ctx_in) {
  auto ctx_ptr = std::make_shared<WebContext>(ctx_in);
  auto sessions = std::make_shared<Sessions>();
  const WebContext& ctx = *ctx_ptr;

  // Wraps a page handler: security headers, the session, CSRF on every POST, and
  // errors as pages. `signed_in`: the page needs a user (else: to the sign-in page).
  auto page = [ctx_ptr, sessions](bool signed_in, std::function<void(Page&)> fn) {
    return [ctx_ptr, sessions, signed_in, fn](Req req, Res res) {
      page_headers(res);
      Page p{req, res, *ctx_ptr, std::nullopt, {}, {}};
      try {
        p.session_id = cookie(req, kSessionCookie);
        if (!p.session_id.empty()) {
          if (auto s = sessions->find(p.session_id)) {
            p.user = ctx_ptr->store->find_user(s->username);
            if (p.user) p.session = *s;
          }
        }
        if (signed_in && !p.user) {
          if (req.method == "GET") {
            p.redirect("/signin?next=" + url_encode(req.path));
            return;
          }
          page_fail(401, "You are not signed in, or your session expired. Sign in again and resend the form.");
        }
        if (req.method == "POST" && p.user && !same_secret(req.get_param_value("csrf"), p.session.csrf))
          page_fail(403,
                    "This form's CSRF token is missing or belongs to another session, so it was refused. "
                    "Reload the page and submit it again.");
        fn(p);
      } catch (const PageError& e) {
        // A signed-in user keeps the navigation.
        res.status = e.status;
        const std::string body = render_template("error.mustache", {{"status", e.status}, {"message", e.message}});
        res.set_content(layout("Error " + std::to_string(e.status), body, p.user ? p.chrome("") : json::object()),
                        "text/html; charset=utf-8");
      } catch (const std::exception& e) {
        ctx_ptr->logger->error("event=page_exception path={} what=\"{}\"", req.path, e.what());
        error_page(res, 500, std::string("internal error: ") + e.what());
      }
    };
  };
  auto get = [&ctx](const std::string& label, const std::string& regex, httplib::Server::Handler h) {
    ctx.route("GET", label, regex, std::move(h));
  };
  auto post = [&ctx](const std::string& label, const std::string& regex, httplib::Server::Handler h) {
    ctx.route("POST", label, regex, std::move(h));
  };

  get("/static/{file}", R"(/static/([a-z0-9_-]+\.css))", [](Req req, Res res) {
    const std::string_view css = web_asset(req.matches[1]);
    if (css.empty()) {
      res.status = 404;
      res.set_content("no such file", "text/plain");
      return;
    }
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Cache-Control", "max-age=300");
    res.set_content(std::string(css), "text/css; charset=utf-8");
  });

  get("/", "/", page(false, [](Page& p) { p.redirect(p.user ? "/models" : "/signin"); }));

  // --- Sign-in: the user's token, once; a session cookie afterwards. The form's
  // CSRF token is a double-submit cookie (no session exists yet). ---
  auto signin_form = [&ctx](Page& p, int status, const std::string& error) {
    std::string token = cookie(p.req, kSigninCookie);
    if (token.size() != 64) {
      token = random_hex(32);
      p.res.set_header("Set-Cookie", std::string(kSigninCookie) + "=" + token + "; Max-Age=3600" +
                                          cookie_attributes(ctx));
    }
    const std::string next = local_path(p.param("next"));
    json data = {{"signin_csrf", token}, {"next", next}};
    if (!error.empty()) data["error"] = error;
    p.show("signin", "Sign in", "signin.mustache", data);
    p.res.status = status;
  };
  get("/signin", "/signin", page(false, [signin_form](Page& p) {
        if (p.user) return p.redirect("/models");
        signin_form(p, 200, "");
      }));
  post("/signin", "/signin", page(false, [&ctx, sessions, signin_form](Page& p) {
         if (!same_secret(p.param("csrf"), cookie(p.req, kSigninCookie)))
           page_fail(403, "This sign-in form's CSRF token does not match this browser's; reload the page and try again.");
         std::string token = p.param("token");
         token.erase(0, token.find_first_not_of(" \t\r\n"));
         token.erase(token.find_last_not_of(" \t\r\n") + 1);
         if (token.rfind(kPodTokenPrefix, 0) == 0)
           return signin_form(p, 401, "That is a pod's token; sign in with your user token.");
         auto user = token.empty() ? std::nullopt : ctx.store->user_by_token(token);
         if (!user)
           return signin_form(p, 401,
                              "That token is not a user token of this hub. `fedpod user register` printed yours "
                              "(or see ~/.config/fedpod/config.yaml).");
         auto [id, session] = sessions->create(user->username, ctx.session_ttl);
         p.res.set_header("Set-Cookie", std::string(kSessionCookie) + "=" + id +
                                            "; Max-Age=" + std::to_string(ctx.session_ttl.count()) +
                                            cookie_attributes(ctx));
         const std::string next = local_path(p.param("next"));
         ctx.logger->info("event=web_signin user={}", user->username);
         p.redirect(next);
       }));
  post("/signout", "/signout", page(true, [&ctx, sessions](Page& p) {
         sessions->remove(p.session_id);
         p.res.set_header("Set-Cookie", std::string(kSessionCookie) + "=; Max-Age=0" + cookie_attributes(ctx));
         p.redirect("/signin");
       }));

  // --- Models: mine, then the public ones of others. ---
  get("/models", "/models", page(true, [](Page& p) {
        json mine = json::array(), others = json::array();
        const json models = p.must("GET", "/api/v1/models")["models"];  // named: a temporary's element would dangle
        for (json m : models) {
          if (m["latest"].is_object()) m["latest"]["size_text"] = human_size(m["latest"].value("size", int64_t{0}));
          (m["username"] == p.user->username ? mine : others).push_back(m);
        }
        p.show("models", "My Models", "models.mustache",
               {{"mine", mine}, {"others", others}, {"has_mine", !mine.empty()}, {"has_others", !others.empty()}});
      }));

  // A model's card: every version, and the source of one (latest by default).
  get("/models/{user}/{ref}", "/models/([^/]+)/([^/]+)", page(true, [](Page& p) {
        const std::string user = p.req.matches[1], ref = p.req.matches[2];
        const std::string base = "/api/v1/models/" + user + "/" + ref;
        json m = p.must("GET", base);
        if (m["versions"].empty()) page_fail(404, "model " + user + "/" + ref + " has no versions yet");
        const int64_t latest = m["versions"].back().value("version", int64_t{1});
        const std::string wanted = p.param("version");
        const int64_t selected = wanted.empty() ? latest : parse_positive(wanted, "version");
        json v = p.must("GET", base + "/versions/" + std::to_string(selected));
        json source = p.must("GET", base + "/versions/" + std::to_string(selected) + "/source");
        json versions = version_rows(m["versions"], selected);
        json from_rows = version_rows(m["versions"], std::max<int64_t>(1, selected - 1));
        m["versions"] = versions;
        v["size_text"] = human_size(v.value("size", int64_t{0}));
        p.show("models", user + "/" + ref, "model.mustache",
               {{"model", m},
                {"version", v},
                {"from_versions", from_rows},
                {"several", versions.size() > 1},
                {"files", sources_data(source)},
                {"no_files", source["files"].empty()},
                {"own", user == p.user->username}});
      }));

  get("/models/{user}/{ref}/diff", "/models/([^/]+)/([^/]+)/diff", page(true, [](Page& p) {
        const std::string user = p.req.matches[1], ref = p.req.matches[2];
        const std::string base = "/api/v1/models/" + user + "/" + ref + "/versions/";
        const int64_t from = parse_positive(p.param("from"), "from");
        const int64_t to = parse_positive(p.param("to"), "to");
        json a = p.must("GET", base + std::to_string(from));
        json b = p.must("GET", base + std::to_string(to));
        json diff = diff_sources(files_of(p.must("GET", base + std::to_string(from) + "/source")),
                                 files_of(p.must("GET", base + std::to_string(to) + "/source")));
        p.show("models", "Diff " + user + "/" + ref, "diff.mustache",
               {{"model", user + "/" + ref},
                {"user", user},
                {"ref", ref},
                {"from", a},
                {"to", b},
                {"diff_html", render_template("diff_files.mustache", {{"files", diff}})}});
      }));

  // --- Request Access: form, confirmation (naming the exact version), request. ---
  get("/models/{user}/{ref}/request", "/models/([^/]+)/([^/]+)/request", page(true, [](Page& p) {
        const std::string user = p.req.matches[1], ref = p.req.matches[2];
        json m = p.must("GET", "/api/v1/models/" + user + "/" + ref);
        if (m["versions"].empty()) page_fail(404, "model " + user + "/" + ref + " has no versions yet");
        const std::string wanted = p.param("version");
        const int64_t selected = wanted.empty() ? m["versions"].back().value("version", int64_t{1})
                                                : parse_positive(wanted, "version");
        json pods = p.must("GET", "/api/v1/pods")["pods"];
        p.show("models", "Request access to " + user + "/" + ref, "request_form.mustache",
               {{"user", user},
                {"ref", ref},
                {"versions", version_rows(m["versions"], selected)},
                {"pods", pods},
                {"has_pods", !pods.empty()}});
      }));
  post("/models/{user}/{ref}/request", "/models/([^/]+)/([^/]+)/request", page(true, [](Page& p) {
         const std::string user = p.req.matches[1], ref = p.req.matches[2];
         const std::string pod = segment(p.param("pod"), "pod to run the model on"), purpose = p.param("purpose");
         const int64_t number = parse_positive(p.param("version"), "version");
         if (purpose.find_first_not_of(" \t\r\n") == std::string::npos)
           page_fail(400, "state the purpose: the pod's owner reads it before deciding");
         json v = p.must("GET", "/api/v1/models/" + user + "/" + ref + "/versions/" + std::to_string(number));
         json pod_json = p.must("GET", "/api/v1/pods/" + pod);
         if (p.param("step") != "confirm") {
           v["size_text"] = human_size(v.value("size", int64_t{0}));
           p.show("models", "Confirm the request", "request_confirm.mustache",
                  {{"user", user}, {"ref", ref}, {"version", v}, {"pod", pod_json}, {"purpose", purpose}});
           return;
         }
         // Versions are immutable, so this only fails on a forged form; it keeps the
         // promise that what was confirmed is what is requested.
         if (p.param("sha256") != v.value("sha256", ""))
           page_fail(409, "version " + std::to_string(number) + " of " + user + "/" + ref +
                              " is not the one you confirmed (its sha256 differs); start the request again");
         json created = p.must("POST", "/api/v1/access-requests", {},
                               {{"model", user + "/" + ref}, {"pod", pod}, {"version", number}, {"purpose", purpose}});
         p.redirect("/requests/" + std::to_string(created.value("id", int64_t{0})));
       }));

  // --- Requests: the modeller's own, and the pod owner's inbox. ---
  auto request_rows = [](const json& list, const std::function<bool(const json&)>& keep) {
    json rows = json::array();
    for (json r : list) {
      if (!keep(r)) continue;
      status_flags(r);
      rows.push_back(r);
    }
    return rows;
  };
  get("/requests", "/requests", page(true, [request_rows](Page& p) {
        json rows = request_rows(p.must("GET", "/api/v1/access-requests")["requests"],
                                 [&](const json& r) { return r["requester"] == p.user->username; });
        p.show("requests", "My requests", "requests.mustache", {{"requests", rows}, {"none", rows.empty()}});
      }));
  get("/inbox", "/inbox", page(true, [request_rows](Page& p) {
        const json all = p.must("GET", "/api/v1/access-requests")["requests"];
        auto mine = [&](const json& r) { return r["pod_owner"] == p.user->username; };
        json pending = request_rows(all, [&](const json& r) { return mine(r) && r["status"] == "pending"; });
        json decided = request_rows(all, [&](const json& r) { return mine(r) && r["status"] != "pending"; });
        p.show("inbox", "Inbox", "inbox.mustache",
               {{"pending", pending},
                {"decided", decided},
                {"no_pending", pending.empty()},
                {"no_decided", decided.empty()}});
      }));

  // One request: its details and the exact source of the requested version; for the
  // pod's owner, the diff from the last version this pod approved for the model and
  // the decisions the request's state allows.
  get("/requests/{id}", R"(/requests/([0-9]+))", page(true, [](Page& p) {
        const std::string id = p.req.matches[1];
        json r = p.must("GET", "/api/v1/access-requests/" + id);
        status_flags(r);
        const std::string model = r.value("model", "");
        const std::string version = std::to_string(r.value("version", int64_t{0}));
        const std::string src_path = "/api/v1/models/" + model + "/versions/" + version + "/source";
        ApiReply source = p.api("GET", src_path);
        const bool owner = r["pod_owner"] == p.user->username;
        json data = {{"request", r}, {"owner", owner}, {"id", id}};
        if (source.ok()) {
          data["files"] = sources_data(source.body);
          data["has_source"] = true;
        } else {
          data["source_error"] = source.error_message();
        }
        if (owner && source.ok()) {
          // The last version of this model the pod approved (still granted or expired).
          json last;
          const json others = p.must("GET", "/api/v1/access-requests", {{"pod", r.value("pod", "")}})["requests"];
          for (const auto& o : others) {
            if (o["model"] != r["model"] || o["id"] == r["id"]) continue;
            if (o["status"] != "approved" && o["status"] != "expired") continue;
            if (last.is_null() || o.value("decided_at", "") > last.value("decided_at", "")) last = o;
          }
          if (!last.is_null()) {
            data["previous"] = last;
            if (last["version"] == r["version"]) {
              data["same_as_previous"] = true;
            } else {
              ApiReply before = p.api(
                  "GET", "/api/v1/models/" + model + "/versions/" + std::to_string(last.value("version", int64_t{0})) +
                             "/source");
              if (before.ok()) {
                data["diff_html"] = render_template(
                    "diff_files.mustache", {{"files", diff_sources(files_of(before.body), files_of(source.body))}});
              }
            }
          }
          data["today"] = now_utc().substr(0, 10);
        }
        p.show(owner ? "inbox" : "requests", "Request " + id, "request.mustache", data);
      }));
  post("/requests/{id}/{action}", R"(/requests/([0-9]+)/(approve|reject|revoke))", page(true, [](Page& p) {
         const std::string id = p.req.matches[1], action = p.req.matches[2];
         json body = {{"reason", p.param("reason")}};
         if (action == "reject" && p.param("reason").find_first_not_of(" \t\r\n") == std::string::npos)
           page_fail(400, "give the modeller a reason for the rejection");
         if (action == "approve" && !p.param("expires").empty()) body["expires_at"] = p.param("expires");
         p.must("POST", "/api/v1/access-requests/" + id + "/" + action, {}, body);
         p.redirect("/requests/" + id);
       }));

  // --- Pods: the owner's, who holds which role; granting and removing roles. ---
  get("/pods", "/pods", page(true, [](Page& p) {
        json mine = json::array(), others = json::array();
        const json pods = p.must("GET", "/api/v1/pods")["pods"];
        for (json pod : pods) {
          if (pod["owner"] == p.user->username) {
            pod["roles"] = p.must("GET", "/api/v1/pods/" + pod.value("name", "") + "/roles")["roles"];
            pod["no_roles"] = pod["roles"].empty();
            mine.push_back(pod);
          } else {
            others.push_back(pod);
          }
        }
        p.show("pods", "Pods", "pods.mustache",
               {{"mine", mine}, {"others", others}, {"no_mine", mine.empty()}, {"has_others", !others.empty()}});
      }));
  get("/pods/{pod}", "/pods/([^/]+)", page(true, [](Page& p) {
        const std::string name = p.req.matches[1];
        json pod = p.must("GET", "/api/v1/pods/" + name);
        json roles = p.must("GET", "/api/v1/pods/" + name + "/roles")["roles"];
        p.show("pods", "Pod " + name, "pod.mustache",
               {{"pod", pod}, {"roles", roles}, {"no_roles", roles.empty()}, {"schema", pod["schema"].dump(2)}});
      }));
  post("/pods/{pod}/roles", "/pods/([^/]+)/roles", page(true, [](Page& p) {
         const std::string name = p.req.matches[1], user = segment(p.param("username"), "user to grant a role to");
         p.must("PUT", "/api/v1/pods/" + name + "/roles/" + user, {}, {{"role", p.param("role")}});
         p.redirect("/pods/" + name);
       }));
  post("/pods/{pod}/roles/{user}/remove", "/pods/([^/]+)/roles/([^/]+)/remove", page(true, [](Page& p) {
         const std::string name = p.req.matches[1], user = p.req.matches[2];
         p.must("DELETE", "/api/v1/pods/" + name + "/roles/" + user);
         p.redirect("/pods/" + name);
       }));
}

}  // namespace fedpod::hub::detail
