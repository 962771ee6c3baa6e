// A hub::Server on 127.0.0.1:<free port>, serving on its own thread, for tests that
// need a real hub. Header-only: include it from tests that link fedpod::hub.
#pragma once

#include <httplib.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "fedpod/hub/server.h"

namespace fedpod::testing {

class RunningHub {
 public:
  // Starts the server and waits until it answers /healthz (stop() only works once
  // serve() is listening). Throws std::runtime_error when it does not come up.
  explicit RunningHub(hub::ServerOptions opt) : server_(std::move(opt), null_logger()) {
    Status s = server_.start();
    if (!s.ok()) throw std::runtime_error(s.to_string());
    thread_ = std::thread([this] { server_.serve(); });
    httplib::Client c("127.0.0.1", port());
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
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }
  // The key the hub signs pod policies with (pods pin it: policy.signing_key).
  const std::string& signing_key() const { return server_.signing_key(); }

 private:
  hub::Server server_;
  std::thread thread_;
};

}  // namespace fedpod::testing
