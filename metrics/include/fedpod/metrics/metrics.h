// fedpod/metrics: Prometheus metrics, liveness and readiness for every fedpod process.
//
// Each process builds one prometheus::Registry in main and injects it (no global
// registry): components define their metric families on it through the helpers
// below, and one MetricsServer serves it on a configurable host:port together with
// the health endpoints Kubernetes probes:
//
//   GET /metrics  the registry in the Prometheus text format 0.0.4
//   GET /healthz  200 "ok" while the process is alive (its serving thread runs)
//   GET /readyz   200 "ready", or 503 with the reason the readiness check returned
//   anything else 404 (405 for another method on one of the paths above)
//
// Why not prometheus::Exposer (prometheus-cpp's pull library): it serves only
// metrics paths, and every fedpod pod also needs /healthz and /readyz, on the same
// port so one Service port and one NetworkPolicy rule cover scraping and probes.
// Running a second HTTP server for two tiny endpoints would cost a port, a thread
// pool and a second bind error to handle; cpp-httplib (already used by the hub)
// serves all three, and prometheus-cpp's TextSerializer renders the registry.
//
// Typical use:
//
//   auto registry = std::make_shared<prometheus::Registry>();
//   auto& rejected = metrics::counter(*registry, "fedpod_updates_rejected_total",
//                                     "Updates rejected, by reason");
//   auto& stale = rejected.Add({{"reason", "stale_round"}});
//   metrics::MetricsServerOptions options;
//   FEDPOD_RETURN_IF_ERROR(metrics::parse_listen_address(flag, options.host, options.port));
//   options.readiness = [&] { return joined ? "" : "not joined to a job yet"; };
//   metrics::MetricsServer server(registry, options);
//   FEDPOD_RETURN_IF_ERROR(server.start());
//   stale.Increment();
//
// Threading: prometheus-cpp's registry, families and metrics are safe to use from
// any thread (atomics and internal mutexes); the server reads the registry on its
// own threads while components update it. MetricsServer's start(), stop() and
// destructor are called by its owner, not concurrently with each other.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/labels.h>
#include <prometheus/registry.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fedpod/common/status.h"

namespace httplib {
class Server;
}

namespace fedpod::metrics {

// ---- Listen addresses --------------------------------------------------------------

// Splits a listen address into host and port:
//   "127.0.0.1:9100" -> "127.0.0.1", 9100
//   ":9100"          -> "0.0.0.0", 9100   (every IPv4 interface, as in a pod)
//   "[::1]:9100"     -> "::1", 9100       (IPv6 literals in brackets)
//   "localhost:0"    -> "localhost", 0    (port 0: the server picks a free port)
// Returns: kInvalidArgument naming `text` when the port is missing, not a number or
// outside 0-65535, when an IPv6 literal lacks its brackets, or when the host is
// malformed. `host` and `port` are left untouched on error.
Status parse_listen_address(const std::string& text, std::string& host, int& port);

// The inverse: "127.0.0.1:9100", "[::1]:9100". For log lines and error messages.
std::string format_listen_address(const std::string& host, int port);

// ---- Metric definitions ------------------------------------------------------------
//
// Terse, conventional definitions. Each returns the family registered under `name`
// (the same family when called again with the same name and type), to which the
// caller adds labelled children: `family.Add({{"reason", "stale_round"}})`. The
// returned references stay valid as long as the registry lives.
//
// Names are checked against the Prometheus conventions that `promtool check metrics`
// lints, so a bad name fails at startup rather than in a scrape:
//   - snake_case: [a-z_][a-z0-9_]* (no camelCase, no ':' which is for recording rules);
//   - counters end in "_total", other types do not;
//   - no name ends in "_bucket", "_count" or "_sum" (histogram series names);
//   - base units only: "_seconds" and "_bytes", never "_milliseconds", "_ms", "_kb"...;
//   - no type in the name ("_counter", "_gauge", ...);
//   - `help` is not empty.
// Throws: std::invalid_argument naming the metric when a check fails, or when `name`
// is already registered with another type (prometheus-cpp's own check). A bad
// metric name is a bug in the program, not an expected outcome, hence the exception.

// `const_labels` are attached to every child (e.g. {{"pod", "pod-b"}}); prefer
// target labels added by Prometheus where possible.
prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& registry,
                                                 const std::string& name, const std::string& help,
                                                 const prometheus::Labels& const_labels = {});
prometheus::Family<prometheus::Gauge>& gauge(prometheus::Registry& registry,
                                             const std::string& name, const std::string& help,
                                             const prometheus::Labels& const_labels = {});
// Buckets are chosen per child: `family.Add({}, seconds_buckets())`.
prometheus::Family<prometheus::Histogram>& histogram(prometheus::Registry& registry,
                                                     const std::string& name,
                                                     const std::string& help,
                                                     const prometheus::Labels& const_labels = {});

// What every fedpod process exports beside its own metrics, computed at each scrape
// (Linux /proc/self): process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds (the names Prometheus' client libraries use), and
// fedpod_build_info{version, component, zeromq, curve, tls} = 1. MetricsServer and
// the hub append these to the registry's families; `component` names the process
// (set once at start: worker, coordinator, hub).
std::vector<prometheus::MetricFamily> process_families();
void set_component(const std::string& component);

// `count` upper bounds start, start*factor, start*factor^2, ... (the +Inf bucket is
// implicit), like client_golang's ExponentialBuckets.
// Throws: std::invalid_argument unless start > 0, factor > 1 and 1 <= count <= 64
// (each bucket is one more time series on every scrape, so 64 is already generous).
std::vector<double> buckets_exponential(double start, double factor, int count);

// Durations in seconds: 1 ms doubling up to ~65.5 s (17 buckets). Covers a
// message round trip on loopback through a training step to a whole round.
std::vector<double> seconds_buckets();

// Sizes in bytes: 1 KiB, x4 up to 4 GiB (12 buckets). Covers a capnp header through
// a model update of a billion float parameters.
std::vector<double> bytes_buckets();

// ---- The server --------------------------------------------------------------------

struct MetricsServerOptions {
  // Where to listen. Port 0 picks a free port; MetricsServer::port() tells which.
  // Loopback by default, so nothing is exposed unless asked; a pod listens on
  // ":9100" (parse_listen_address gives "0.0.0.0").
  std::string host = "127.0.0.1";
  int port = 0;

  // Returns "" when the process is ready for work, otherwise why not ("loading the
  // dataset", "coordinator unreachable"), which /readyz returns with a 503. Called on
  // the server's threads, possibly concurrently, on every probe: it must be
  // thread-safe and quick (read an atomic or a mutex-guarded flag; no I/O). An
  // exception it throws is answered as a 503 naming it. Empty: always ready.
  std::function<std::string()> readiness;

  // Threads handling connections. A scrape, a liveness and a readiness probe can be
  // in flight together, plus one spare; an idle keep-alive connection holds a
  // thread for up to `io_timeout`.
  int threads = 4;

  // Read, write and idle keep-alive timeout per connection: a client that stalls
  // holds a thread at most this long, and stop() waits at most about this long for
  // open connections.
  std::chrono::seconds io_timeout{5};
};

// Serves a registry over HTTP on its own thread (plus options.threads handlers).
//
// Ownership: the registry is shared (shared_ptr) because prometheus-cpp's API is
// built around shared ownership of collectables, and the server's threads read it
// until stop() returns, while the components that define metrics on it may be torn
// down in any order relative to the server; sharing keeps it alive for both.
class MetricsServer {
 public:
  MetricsServer(std::shared_ptr<prometheus::Registry> registry, MetricsServerOptions options);
  // Stops the server (see stop()).
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds host:port and starts serving on a new thread; returns once requests are
  // being accepted. Another process (or server) listening on the port makes it fail:
  // the socket is bound without SO_REUSEPORT.
  // Returns: kInvalidArgument naming the address ("metrics: cannot listen on
  // 127.0.0.1:9100: Address already in use") when it cannot bind;
  // kFailedPrecondition when already started.
  Status start();

  // Stops accepting, waits for in-flight requests and joins the serving thread.
  // Idempotent; start() may be called again afterwards.
  void stop();

  // The port bound by start() (useful with port 0); 0 when not started.
  int port() const { return port_; }
  // "host:port" as bound, e.g. "127.0.0.1:41233".
  std::string address() const { return format_listen_address(options_.host, port_); }

  // OK while serving and after a clean stop(). An error when the serving loop died on
  // its own (accept failed): /healthz no longer answers then, so a liveness probe
  // restarts the pod; this tells the process why. Safe from any thread.
  Status status() const;

 private:
  void routes();

  std::shared_ptr<prometheus::Registry> registry_;
  MetricsServerOptions options_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::atomic<bool> loop_exited_{false};
  int port_ = 0;
  mutable std::mutex mutex_;
  Status serve_error_;  // guarded by mutex_
};

}  // namespace fedpod::metrics
