// The hub's web pages (internal to the hub library): sign-in, My Models with each
// model's card, source and version diffs, Request Access, the pod owner's inbox and
// review, pods and roles, and the modeller's requests. Served by `fedpod hub serve`
// on the API's port and TLS; docs/hub-web.md is the user's guide.
//
// The pages are a client of the HTTP API that runs in the hub's process: every read
// and every decision a page makes goes through WebContext::api, which calls the API
// route's own handler as the signed-in user. So a page can do exactly what that
// user's token can do over the API, with the same checks and the same error
// messages, and no permission rule exists twice.
//
// Sessions: signing in with a user token (pasted once) makes a random 256-bit
// session id, sent as an HttpOnly, SameSite=Strict cookie (Secure under TLS) that
// expires after `session_ttl`; the hub keeps only the id's sha256, the user and the
// session's CSRF token, in memory (a restarted hub signs everyone out). Every form
// carries the session's CSRF token and every POST is refused without it (the sign-in
// form, before a session exists, uses a double-submit cookie). Templates are
// mustache (kainjow), which escapes every value; pages set a Content-Security-Policy
// that allows no script at all.
//
// Threading: handlers run on httplib's worker threads; the session table has its own
// mutex.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "fedpod/common/log.h"
#include "store.h"

namespace fedpod::hub::detail {

// What an API route answered: its HTTP status and JSON body ({"error": {code,
// message}} for an error).
struct ApiReply {
  int status = 0;
  nlohmann::json body;
  bool ok() const { return status >= 200 && status < 300; }
  std::string error_message() const;
};

struct WebContext {
  Store* store = nullptr;
  bool tls = false;  // cookies get the Secure attribute
  std::chrono::seconds session_ttl{std::chrono::hours(8)};
  Logger logger;
  // Registers a page handler for `method` on paths matching `regex`, counted in the
  // hub's metrics under `label`.
  std::function<void(const std::string& method, const std::string& label, const std::string& regex,
                     httplib::Server::Handler handler)>
      route;
  // Runs the API route `method` `path` (query parameters `query`, JSON body `body`,
  // none when null) as `user`.
  std::function<ApiReply(const User& user, const std::string& method, const std::string& path,
                         const httplib::Params& query, const nlohmann::json& body)>
      api;
};

// Registers every page route on the context's server.
void register_pages(const WebContext& ctx);

// --- Exposed for unit tests. ---

// Renders template `name` (a file of hub/web/, e.g. "model.mustache") with `data`;
// throws std::runtime_error naming the template on a template error.
std::string render_template(const std::string& name, const nlohmann::json& data);
// A line diff of two sets of source files, as the template data of one file each:
// {name, status: "added"|"removed"|"changed"|"unchanged", hunks: [{header, lines:
// [{kind: "add"|"del"|"ctx", old, new, text}]}]}.
nlohmann::json diff_sources(const Files& before, const Files& after);
// Answers `res` with the HTML error page (status, a message, a link back).
void error_page(httplib::Response& res, int status, const std::string& message);
// The static asset `name` (e.g. "hub.css"); empty when there is none.
std::string_view web_asset(const std::string& name);
// The names of every embedded file of hub/web/.
std::vector<std::string> web_asset_names();

}  // namespace fedpod::hub::detail
