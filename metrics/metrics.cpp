#include "fedpod/metrics/metrics.h"

#include <httplib.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <utility>

namespace fedpod::metrics {

namespace {

constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";
constexpr char kTextContentType[] = "text/plain; charset=utf-8";
// Nothing served here takes a body; a small cap keeps a client from making a handler
// thread read megabytes it will ignore.
constexpr size_t kMaxRequestBodyBytes = 4096;
// Longer than any host name (253) plus brackets and a port; also bounds the error
// messages that quote the text.
constexpr size_t kMaxListenAddressChars = 300;
// How long start() waits for the serving thread to enter its accept loop. It takes
// microseconds; the bound only keeps a broken build from hanging start().
constexpr auto kStartTimeout = std::chrono::seconds(5);

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_snake_case(const std::string& name) {
  if (name.empty()) return false;
  if (!(std::islower(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::islower(u) || std::isdigit(u) || c == '_')) return false;
  }
  return true;
}

std::vector<std::string> split_underscores(const std::string& name) {
  std::vector<std::string> tokens;
  size_t begin = 0;
  while (begin <= name.size()) {
    size_t end = name.find('_', begin);
    if (end == std::string::npos) end = name.size();
    if (end > begin) tokens.push_back(name.substr(begin, end - begin));
    begin = end + 1;
  }
  return tokens;
}

// Why `token` is not a base unit, or "" when it is fine. The lists follow promtool's
// linter (client_golang's promlint: non-base units, SI prefixes, abbreviations).
std::string non_base_unit(const std::string& token) {
  static const char* const kAbbreviations[] = {"s",  "ms", "us", "ns", "sec", "b", "kb",
                                               "mb", "gb", "tb", "pb", "m",   "h", "d"};
  static const char* const kNonBase[] = {"minutes", "hours", "days", "weeks", "bits"};
  for (const char* a : kAbbreviations)
    if (token == a)
      return "abbreviated unit '" + token + "': spell out a base unit (seconds, bytes)";
  for (const char* n : kNonBase)
    if (token == n) return "non-base unit '" + token + "': use seconds or bytes";
  for (const char* base : {"seconds", "bytes"})
    if (ends_with(token, base) && token != base)
      return "non-base unit '" + token + "': use '" + base + "' and scale the value";
  return "";
}

// Throws std::invalid_argument unless `name` follows the conventions in metrics.h.
void check_definition(const std::string& type, const std::string& name, const std::string& help,
                      const prometheus::Labels& const_labels) {
  auto fail = [&](const std::string& why) {
    throw std::invalid_argument("metrics: " + type + " '" + name + "': " + why);
  };
  if (!is_snake_case(name)) fail("names are snake_case: lower-case letters, digits and '_'");
  const bool is_counter = type == "counter";
  if (is_counter && !ends_with(name, "_total")) fail("counter names end in '_total'");
  if (!is_counter && ends_with(name, "_total")) fail("only counter names end in '_total'");
  for (const char* reserved : {"_bucket", "_count", "_sum"})
    if (ends_with(name, reserved))
      fail(std::string("'") + reserved + "' is reserved for the series of histograms");
  for (const std::string& token : split_underscores(name)) {
    std::string why = non_base_unit(token);
    if (!why.empty()) fail(why);
    if (token == "counter" || token == "gauge" || token == "histogram" || token == "summary")
      fail("the type ('" + token + "') does not belong in the name");
  }
  if (help.empty()) fail("help text is required");
  for (const auto& label : const_labels)
    if (!is_snake_case(label.first) || label.first == "le" || label.first == "quantile")
      fail("bad label name '" + label.first + "'");
}

// Registers through prometheus-cpp's builder; its std::invalid_argument (a name taken
// by another type, an invalid label) is rethrown naming the metric.
template <typename Builder>
auto& register_family(Builder builder, const std::string& type, const std::string& name,
                      const std::string& help, const prometheus::Labels& const_labels,
                      prometheus::Registry& registry) {
  check_definition(type, name, help, const_labels);
  try {
    return builder.Name(name).Help(help).Labels(const_labels).Register(registry);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("metrics: " + type + " '" + name + "': " + e.what());
  }
}

bool is_ip_literal_char(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
}

bool is_host_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

}  // namespace

// ---- Listen addresses --------------------------------------------------------------

Status parse_listen_address(const std::string& text, std::string& host, int& port) {
  auto bad = [&](const std::string& why) {
    std::string shown = text.size() > kMaxListenAddressChars
                            ? text.substr(0, kMaxListenAddressChars) + "..."
                            : text;
    return Status::invalid("bad listen address '" + shown + "': " + why +
                           " (expected host:port, :port or [ipv6]:port)");
  };
  if (text.empty()) return bad("it is empty");
  if (text.size() > kMaxListenAddressChars)
    return bad("longer than " + std::to_string(kMaxListenAddressChars) + " characters");

  std::string parsed_host;
  std::string port_text;
  if (text[0] == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos) return bad("no ']' after the IPv6 address");
    parsed_host = text.substr(1, close - 1);
    if (parsed_host.empty()) return bad("the IPv6 address in brackets is empty");
    for (char c : parsed_host)
      if (!is_ip_literal_char(c)) return bad("'" + parsed_host + "' is not an IPv6 address");
    if (close + 1 >= text.size() || text[close + 1] != ':') return bad("no ':port' after ']'");
    port_text = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no ':port'");
    parsed_host = text.substr(0, colon);
    if (parsed_host.find(':') != std::string::npos)
      return bad("an IPv6 address needs brackets, as in [::1]:9100");
    for (char c : parsed_host)
      if (!is_host_char(c)) return bad("'" + parsed_host + "' is not a host name or address");
    if (parsed_host.empty()) parsed_host = "0.0.0.0";
    port_text = text.substr(colon + 1);
  }

  if (port_text.empty()) return bad("the port is missing");
  bool digits = port_text.size() <= 5;
  for (char c : port_text) digits = digits && std::isdigit(static_cast<unsigned char>(c));
  const int parsed_port = digits ? std::stoi(port_text) : -1;
  if (parsed_port < 0 || parsed_port > 65535)
    return bad("port '" + port_text + "' is not a number from 0 to 65535");

  host = std::move(parsed_host);
  port = parsed_port;
  return Status();
}

std::string format_listen_address(const std::string& host, int port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

// ---- Metric definitions ------------------------------------------------------------

prometheus::Family<prometheus::Counter>& counter(prometheus::Registry& registry,
                                                 const std::string& name, const std::string& help,
                                                 const prometheus::Labels& const_labels) {
  return register_family(prometheus::BuildCounter(), "counter", name, help, const_labels, registry);
}

prometheus::Family<prometheus::Gauge>& gauge(prometheus::Registry& registry,
                                             const std::string& name, const std::string& help,
                                             const prometheus::Labels& const_labels) {
  return register_family(prometheus::BuildGauge(), "gauge", name, help, const_labels, registry);
}

prometheus::Family<prometheus::Histogram>& histogram(prometheus::Registry& registry,
                                                     const std::string& name,
                                                     const std::string& help,
                                                     const prometheus::Labels& const_labels) {
  return register_family(prometheus::BuildHistogram(), "histogram", name, help, const_labels,
                         registry);
}

std::vector<double> buckets_exponential(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1 || count > 64 || !std::isfinite(start) ||
      !std::isfinite(factor))
    throw std::invalid_argument("metrics: buckets_exponential(start=" + std::to_string(start) +
                                ", factor=" + std::to_string(factor) +
                                ", count=" + std::to_string(count) +
                                "): needs start > 0, factor > 1 and 1 <= count <= 64");
  std::vector<double> bounds;
  bounds.reserve(count);
  // start * factor^i rather than repeated multiplication, so errors don't accumulate.
  for (int i = 0; i < count; ++i) bounds.push_back(start * std::pow(factor, i));
  if (!std::isfinite(bounds.back()))
    throw std::invalid_argument("metrics: buckets_exponential: the last bound overflows");
  return bounds;
}

std::vector<double> seconds_buckets() { return buckets_exponential(0.001, 2, 17); }

std::vector<double> bytes_buckets() { return buckets_exponential(1024, 4, 12); }

// ---- The server --------------------------------------------------------------------

MetricsServer::MetricsServer(std::shared_ptr<prometheus::Registry> registry,
                             MetricsServerOptions options)
    : registry_(std::move(registry)), options_(std::move(options)) {
  if (!registry_) throw std::invalid_argument("metrics: MetricsServer needs a registry, got null");
}

MetricsServer::~MetricsServer() { stop(); }

Status MetricsServer::start() {
  if (http_) return Status::failed_precondition("metrics: already serving on " + address());
  const std::string wanted = format_listen_address(options_.host, options_.port);
  if (options_.port < 0 || options_.port > 65535)
    return Status::invalid("metrics: cannot listen on " + wanted + ": port out of range");
  if (options_.threads < 1)
    return Status::invalid("metrics: threads = " + std::to_string(options_.threads) +
                           ", needs at least 1");

  auto http = std::make_unique<httplib::Server>();
  const int threads = options_.threads;
  http->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // httplib's default sets SO_REUSEPORT, which lets a second process bind the same
  // port and silently take half the scrapes. SO_REUSEADDR alone still allows a quick
  // restart over connections in TIME_WAIT, but not two listeners.
  http->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const auto io = static_cast<time_t>(options_.io_timeout.count());
  http->set_read_timeout(io, 0);
  http->set_write_timeout(io, 0);
  http->set_keep_alive_timeout(io);
  http->set_payload_max_length(kMaxRequestBodyBytes);
  http_ = std::move(http);
  routes();

  // httplib reports only failure; errno still holds bind()'s reason (EADDRINUSE,
  // EADDRNOTAVAIL, EACCES) since the close() that follows it succeeds.
  errno = 0;
  int bound = 0;
  if (options_.port == 0) {
    bound = std::max(0, http_->bind_to_any_port(options_.host));
  } else if (http_->bind_to_port(options_.host, options_.port)) {
    bound = options_.port;
  }
  if (bound == 0) {
    const int err = errno;
    http_.reset();
    return Status::invalid("metrics: cannot listen on " + wanted +
                           (err != 0 ? std::string(": ") + std::strerror(err) : std::string()));
  }
  port_ = bound;

  {
    std::lock_guard<std::mutex> lock(mutex_);
    serve_error_ = Status();
  }
  loop_exited_ = false;
  const std::string where = address();
  httplib::Server* server = http_.get();
  thread_ = std::thread([this, server, where] {
    // false only when accept() failed; a stop() makes it return true.
    if (!server->listen_after_bind()) {
      std::lock_guard<std::mutex> lock(mutex_);
      serve_error_ = Status::internal("metrics: serving on " + where + " stopped: accept failed");
    }
    loop_exited_ = true;
  });

  // httplib's stop() does nothing until the loop runs, so wait for it: a stop() right
  // after start() must not leave the thread accepting forever.
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  while (!server->is_running() && !loop_exited_) {
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!server->is_running()) {
    Status error = loop_exited_ ? status()
                                : Status::internal("metrics: serving thread for " + where +
                                                   " did not start within 5 s");
    if (error.ok()) error = Status::internal("metrics: serving on " + where + " ended at once");
    stop();
    return error;
  }
  return Status();
}

void MetricsServer::stop() {
  if (!http_) return;
  http_->stop();
  if (thread_.joinable()) thread_.join();
  http_.reset();
  port_ = 0;
}

Status MetricsServer::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return serve_error_;
}

void MetricsServer::routes() {
  using Req = const httplib::Request&;
  using Res = httplib::Response&;

  // registry_ and options_ outlive http_: stop() joins every handler thread first.
  http_->Get("/metrics", [this](Req, Res res) {
    auto families = registry_->Collect();
    for (auto& f : process_families()) families.push_back(std::move(f));
    res.set_content(prometheus::TextSerializer().Serialize(families), kMetricsContentType);
  });

  http_->Get("/healthz", [](Req, Res res) { res.set_content("ok", kTextContentType); });

  http_->Get("/readyz", [this](Req, Res res) {
    std::string reason;
    if (options_.readiness) {
      try {
        reason = options_.readiness();
      } catch (const std::exception& e) {
        reason = std::string("readiness check threw: ") + e.what();
      } catch (...) {
        reason = "readiness check threw a non-standard exception";
      }
    }
    if (reason.empty()) {
      res.set_content("ready", kTextContentType);
    } else {
      res.status = 503;
      res.set_content(reason, kTextContentType);
    }
  });

  // Another method on a known path is 405 (with Allow), anything else 404. HEAD is
  // answered by httplib from the GET handlers.
  auto other_method = [](Req req, Res res) {
    if (req.path == "/metrics" || req.path == "/healthz" || req.path == "/readyz") {
      res.status = 405;
      res.set_header("Allow", "GET, HEAD");
      res.set_content("method " + req.method + " not allowed on " + req.path, kTextContentType);
    } else {
      res.status = 404;
    }
  };
  http_->Post(".*", other_method);
  http_->Put(".*", other_method);
  http_->Patch(".*", other_method);
  http_->Delete(".*", other_method);
  http_->Options(".*", other_method);

  // Backstops: a body for httplib's own errors (unknown path, body over the limit).
  http_->set_error_handler([](Req req, Res res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 404
                          ? "no such path: " + req.path + " (serving /metrics, /healthz, /readyz)"
                      : res.status == 413 ? std::string("request body over the limit")
                                          : "HTTP " + std::to_string(res.status);
    res.set_content(msg, kTextContentType);
  });
  http_->set_exception_handler([](Req, Res res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    res.status = 500;
    res.set_content("internal error: " + what, kTextContentType);
  });
}

}  // namespace fedpod::metrics
