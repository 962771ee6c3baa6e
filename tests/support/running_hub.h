// A hub::Server on 127.0.0.1:<free port>, serving on its own thread, for tests that
// need a real hub. Header-only: include it from tests that link fedpod::hub.
//
// With Tls::kOn the hub serves HTTPS with a certificate from a development CA made
// next to its data directory (DATA_DIR.tls/, reused by a later hub on the same
// directory, so clients holding ca_file() keep trusting a restarted hub); url(),
// hub_url() and client() then speak TLS and verify it, as pods and coordinators do.
#pragma once

#include <httplib.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "fedpod/common/hub_url.h"
#include "fedpod/hub/client.h"
#include "fedpod/hub/server.h"
#include "fedpod/hub/tls.h"

namespace fedpod::testing {

class RunningHub {
 public:
  enum class Tls { kOff, kOn };

  // Starts the server and waits until it answers /healthz (stop() only works once
  // serve() is listening). Throws std::runtime_error when it does not come up.
  explicit RunningHub(hub::ServerOptions opt, Tls tls = Tls::kOff) : server_(with_tls(opt, tls, ca_), null_logger()) {
    Status s = server_.start();
    if (!s.ok()) throw std::runtime_error(s.to_string());
    thread_ = std::thread([this] { server_.serve(); });
    httplib::Client c(url());
    if (!ca_.empty()) c.set_ca_cert_path(ca_);
    for (int i = 0; i < 200; ++i) {
      auto r = c.Get("/healthz");
      if (r && r->status == 200) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("hub did not come up");
  }
  ~RunningHub() {
    server_.stop();
    thread_.join();
  }
  RunningHub(const RunningHub&) = delete;
  RunningHub& operator=(const RunningHub&) = delete;

  int port() const { return server_.port(); }
  bool tls() const { return !ca_.empty(); }
  std::string url() const { return (tls() ? "https" : "http") + std::string("://127.0.0.1:") + std::to_string(port()); }
  // The CA clients verify the hub with ("" without TLS).
  const std::string& ca_file() const { return ca_; }
  HubUrl hub_url() const {
    HubUrl u = parse_hub_url(url(), "test hub");
    u.ca_file = ca_;
    return u;
  }
  std::unique_ptr<hub::Client> client(const std::string& token = "") const {
    return std::make_unique<hub::Client>(hub_url(), token);
  }
  // The key the hub signs pod policies with (pods pin it: policy.signing_key).
  const std::string& signing_key() const { return server_.signing_key(); }

 private:
  static hub::ServerOptions with_tls(hub::ServerOptions opt, Tls tls, std::string& ca) {
    if (tls == Tls::kOn) {
      auto files = hub::make_dev_ca(opt.data_dir + ".tls", {"127.0.0.1", "localhost"}, 30);
      if (!files.ok()) throw std::runtime_error(files.status().to_string());
      opt.tls_cert_file = files->cert;
      opt.tls_key_file = files->key;
      ca = files->ca_cert;
    }
    return opt;
  }

  std::string ca_;  // before server_: with_tls fills it while server_ is built
  hub::Server server_;
  std::thread thread_;
};

}  // namespace fedpod::testing
