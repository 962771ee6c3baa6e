// Server: fedpod's model hub, an HTTP JSON API over a data directory.
//
// The hub keeps users (a name, a CURVE public key and the sha256 of a bearer token),
// models (`<user>/<ref>`, each with immutable numbered versions: an artifact stored
// content-addressed on disk plus the source files kept for review) and pods (a name,
// an address, a public key and the schema of the data they hold). Everything lives
// under one data directory: `hub.db` (SQLite) and `artifacts/`. The HTTP API is
// listed, with its status codes, in Server::routes() (server.cpp).
//
// Permissions (the pods enforce them; the hub records them): a pod's owner grants
// users the role "general-modeller" (built-in models, plus custom model versions the
// owner approved) or "super-modeller" (anything) on that pod, and decides access
// requests, each for one model version (by sha256) on one pod, optionally until an
// expiry time. GET /api/v1/pods/{pod}/policy gives the owner, and through them the
// pod, all of it at once. A private model becomes readable to the owner of a pod
// that someone asked to run it on, so the owner can review its source.
//
// The hub never executes what it stores: an artifact is only checked for the shape
// of its format (a zip for "torchscript", an ELF file for "plugin") and hashed.
//
// Web pages: the same port also serves the pages of the review flow (sign-in, My
// Models, Request Access, the pod owner's inbox, pods and roles; hub/web.h,
// docs/hub-web.md), which call the API's own handlers in-process as the signed-in
// user.
//
// Operations: next to the API, the same port serves GET /healthz (200 while the
// process serves), GET /readyz (200 once the database is open, 503 with the reason
// before) and GET /metrics (Prometheus text format; one port, so one Service port
// and one NetworkPolicy rule cover the API, the probes and scraping):
//
//   fedpod_hub_http_requests_total{route,method,status}  counter
//   fedpod_hub_http_request_duration_seconds{route}      histogram, from the request
//       line through the last byte of the response (an upload's body and a streamed
//       artifact included)
//   fedpod_hub_models, fedpod_hub_versions, fedpod_hub_pods,
//   fedpod_hub_pending_requests                         gauges, counted in the
//       database on each scrape (so they are right after a restart or a write by
//       another process)
//
// `route` is the matched route's pattern with placeholders
// ("/api/v1/models/{user}/{ref}/versions"), never the raw path, and "unmatched" for
// a path no route matches, so a client probing random URLs cannot grow the number
// of time series. `method` is the HTTP method ("other" for one the hub never
// serves) and `status` the response code.
//
// Threading: start() and serve() are called once each; serve() blocks on the calling
// thread and handles requests on httplib's worker threads; stop() may be called from
// any thread, and makes serve() return. The database is shared by the handlers under
// a mutex, so writes are serialized (a push holds it while the artifact is written).
//
// Ownership: the Server owns its store and its httplib::Server. The logger is shared.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <prometheus/registry.h>

#include "fedpod/common/log.h"
#include "fedpod/common/signing.h"
#include "fedpod/common/status.h"

namespace httplib {
class Server;
}

namespace fedpod::hub {

namespace detail {
class Store;
}

struct ServerOptions {
  // Where to listen. Port 0 picks a free port; port() tells which after start().
  std::string host = "127.0.0.1";
  int port = 0;
  // TLS: PEM certificate (chain) and private key files. Both set: the hub serves
  // HTTPS only (TLS 1.2 or newer); both empty: plain HTTP, which `fedpod hub serve`
  // allows only on a loopback address or with --insecure-plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Holds hub.db and artifacts/; created when missing.
  std::string data_dir;
  // Total bytes of a version's source files. Sources are kept for humans to review
  // and are stored inside the database, so they are kept small: a model's code, not
  // its data. 3 MiB is generous for a few C++ or Python files.
  size_t max_source_bytes = 3u << 20;
  // Bytes of one artifact. A push streams its artifact to a file under
  // DATA_DIR/artifacts/uploads/ as it arrives, so this bounds disk, not memory (a push
  // holds at most its meta, its sources and 64 KiB of the artifact's tail in memory).
  // 512 MiB fits models with ~100M float parameters.
  size_t max_artifact_bytes = 512u << 20;
  // Bytes of a JSON request body (users, pods, a push's meta part). Nothing the API
  // takes as JSON needs more; the limit keeps a parser from chewing on garbage.
  size_t max_json_bytes = 1u << 20;
  // The registry /metrics serves and the hub's metrics are defined on; null: the
  // server makes its own (Server::registry() gives it). Shared because the server's
  // threads read it while the program that built it may hold it too.
  std::shared_ptr<prometheus::Registry> registry;
  // How long a signed pod policy is valid after the hub issues it (its expires_at).
  // Pods fetch theirs every `refresh` (30 s by default), so this only needs to
  // outlast a hub outage; a pod refuses new jobs once its policy has expired.
  std::chrono::seconds policy_ttl{std::chrono::hours(24)};
  // How long a web page sign-in lasts (the session cookie's Max-Age); the user signs
  // in again with their token afterwards.
  std::chrono::seconds session_ttl{std::chrono::hours(8)};
};

class Server {
 public:
  // `logger` receives one key=value line per request; null_logger() for none.
  Server(ServerOptions options, Logger logger);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Opens (creating and migrating) the database and binds the listening socket.
  // Returns: kInvalidArgument / kInternal naming the data dir or the address when
  // the database cannot be opened or the address cannot be bound.
  Status start();
  // The port bound by start() (useful with port 0); 0 before start().
  int port() const { return port_; }
  // Serves requests until stop(). Returns false if it stopped because of an error.
  bool serve();
  // Makes serve() return; safe from any thread and idempotent.
  void stop();

  // The Ed25519 public key (base64) the hub signs pod policies with; pods pin it
  // (pod.yaml policy.signing_key). Kept in <data_dir>/hub.sign.key, made on the first
  // start. Empty before start().
  const std::string& signing_key() const { return signing_.public_key; }

  // The registry /metrics serves (never null).
  const std::shared_ptr<prometheus::Registry>& registry() const { return options_.registry; }

 private:
  struct Metrics;
  void routes();

  ServerOptions options_;
  Logger logger_;
  std::unique_ptr<detail::Store> store_;
  std::unique_ptr<Metrics> metrics_;
  std::unique_ptr<httplib::Server> http_;
  SigningKeyPair signing_;
  // Registration challenges: an answer is HMAC-SHA256(challenge_key_, username,
  // public key, expiry), sent encrypted to the public key, so only the holder of its
  // secret key can return it. Made at start(): challenges do not outlive the process.
  std::string challenge_key_;
  int port_ = 0;
};

}  // namespace fedpod::hub
