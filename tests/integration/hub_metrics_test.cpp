// The hub's operations endpoints on its API port: /metrics (requests counted by
// route pattern, database gauges, linted by the real `promtool check metrics`) and
// /readyz, over real HTTP on loopback against an in-process hub.
#include <gtest/gtest.h>
#include <httplib.h>
#include <prometheus/text_serializer.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fedpod/hub/client.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/hub/server.h"
#include "running_hub.h"
#include "testutil.h"

namespace fedpod::hub {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using fedpod::testing::TempDir;


std::string requests(const std::string& route, const std::string& method, int status) {
  return "fedpod_hub_http_requests_total{method=\"" + method + "\",route=\"" + route + "\",status=\"" +
         std::to_string(status) + "\"}";
}

std::string zip_bytes(const std::string& payload) {
  return std::string("PK\x03\x04", 4) + payload + std::string("PK\x05\x06", 4) + std::string(18, '\0');
}

class HubMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions opt;
    opt.data_dir = (dir_.path() / "data").string();
    opt.registry = registry_;
    hub_ = std::make_unique<testing::RunningHub>(opt);
  }

  httplib::Client raw() { return httplib::Client("127.0.0.1", hub_->port()); }
  Client client(const std::string& token = "") { return Client("127.0.0.1", hub_->port(), token); }

  std::string scrape() {
    auto r = raw().Get("/metrics");
    EXPECT_TRUE(r);
    if (!r) return "";
    EXPECT_EQ(r->status, 200);
    EXPECT_CONTAINS(r->get_header_value("Content-Type"), "text/plain; version=0.0.4");
    return r->body;
  }

  // Requests are counted once their response is written, which can be a moment
  // after the client has read it: scrapes until `ok` holds (or 5 s pass).
  std::string scrape_until(const std::function<bool(const std::string&)>& ok) {
    std::string text;
    for (int i = 0; i < 500; ++i) {
      text = scrape();
      if (ok(text)) break;
      std::this_thread::sleep_for(10ms);
    }
    return text;
  }

  // A key pair per name, made on first use (registration proves the secret key).
  static const protocol::CurveKeyPair& keys_of(const std::string& name) {
    static std::map<std::string, protocol::CurveKeyPair> keys;
    auto it = keys.find(name);
    if (it == keys.end()) it = keys.emplace(name, protocol::generate_curve_keypair()).first;
    return it->second;
  }
  static std::string key_of(const std::string& name) { return keys_of(name).public_key; }

  std::string user(const std::string& name) {
    auto t = client().register_user(name, keys_of(name).public_key, keys_of(name).secret_key);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? *t : "";
  }

  void push(const std::string& token, const std::string& user, const std::string& ref, const std::string& payload) {
    const std::string path = dir_.write("push/" + ref + "-" + payload + ".pt", zip_bytes(payload));
    auto v = client(token).push_model(user, ref, "torchscript", "a model", "", path, {});
    ASSERT_TRUE(v.ok()) << v.status().to_string();
  }

  TempDir dir_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::unique_ptr<testing::RunningHub> hub_;
};

TEST_F(HubMetricsTest, ReadyzAnswersOnceTheDatabaseIsOpen) {
  auto r = raw().Get("/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ready");
  r = raw().Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HubMetricsTest, RequestsAreCountedByRoutePatternNeverByRawPath) {
  for (int i = 0; i < 2; ++i) ASSERT_EQ(raw().Get("/healthz")->status, 200);
  ASSERT_TRUE(client().register_user("alice", keys_of("alice").public_key, keys_of("alice").secret_key).ok());
  ASSERT_EQ(raw().Get("/api/v1/models/alice/secret-net")->status, 404);
  ASSERT_EQ(raw().Get("/api/v1/models/bob/other-net/versions/7")->status, 404);
  ASSERT_EQ(raw().Get("/api/v1/pods/pod-zz/policy")->status, 401);
  ASSERT_EQ(raw().Post("/api/v1/access-requests/12/approve", "{}", "application/json")->status, 401);
  // No route: counted as "unmatched", whatever the path.
  ASSERT_EQ(raw().Get("/no/such/path")->status, 404);
  ASSERT_EQ(raw().Get("/api/v1/access-requests/12/frobnicate")->status, 404);
  // A known path with a method it does not serve: its route, that method.
  ASSERT_EQ(raw().Delete("/api/v1/models")->status, 404);

  // Every request asserted below, not only the last ones: each is counted on its own
  // server thread after its response is written, in no particular order (a run in a
  // loaded bare-Debian root scraped before the first POST had been counted).
  const std::string text = scrape_until([](const std::string& t) {
    return testing::metric_value(t, requests("/api/v1/models", "DELETE", 404)) == 1 &&
           testing::metric_value(t, requests("unmatched", "GET", 404)) == 2 &&
           testing::metric_value(t, requests("/healthz", "GET", 200)) >= 3 &&
           testing::metric_value(t, requests("/api/v1/users", "POST", 201)) == 1 &&
           testing::metric_value(t, requests("/api/v1/models/{user}/{ref}", "GET", 404)) == 1 &&
           testing::metric_value(t, requests("/api/v1/models/{user}/{ref}/versions/{version}", "GET", 404)) == 1 &&
           testing::metric_value(t, requests("/api/v1/pods/{pod}/policy", "GET", 401)) == 1 &&
           testing::metric_value(t, requests("/api/v1/access-requests/{id}/{action}", "POST", 401)) == 1;
  });
  // RunningHub polled /healthz until it answered: at least once before ours.
  EXPECT_GE(testing::metric_value(text, requests("/healthz", "GET", 200)), 3);
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/users", "POST", 201)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/models/{user}/{ref}", "GET", 404)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/models/{user}/{ref}/versions/{version}", "GET", 404)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/pods/{pod}/policy", "GET", 401)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/access-requests/{id}/{action}", "POST", 401)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, requests("unmatched", "GET", 404)), 2) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/models", "DELETE", 404)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_http_request_duration_seconds_count{route=\"/api/v1/users\"}"), 1) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_http_request_duration_seconds_count{route=\"unmatched\"}"), 2) << text;
  EXPECT_GE(testing::metric_value(text, "fedpod_hub_http_request_duration_seconds_sum{route=\"/api/v1/users\"}"), 0) << text;
  // Raw paths never become label values.
  for (const char* raw_part : {"secret-net", "other-net", "pod-zz", "/no/such/path", "frobnicate", "alice"}) {
    EXPECT_EQ(text.find(raw_part), std::string::npos) << raw_part << " leaked into:\n" << text;
  }
  // The registry passed in ServerOptions is the one served.
  const std::string injected = prometheus::TextSerializer().Serialize(registry_->Collect());
  EXPECT_EQ(testing::metric_value(injected, requests("/api/v1/users", "POST", 201)), 1);
  EXPECT_PROMTOOL_CLEAN(text);
}

TEST_F(HubMetricsTest, GaugesCountWhatTheDatabaseHolds) {
  std::string text = scrape();
  // The hub's /metrics carries the process metrics and build info too.
  EXPECT_GT(testing::metric_value(text, "process_resident_memory_bytes"), 1e6) << text;
  EXPECT_GT(testing::metric_value(text, "process_open_fds"), 3) << text;
  EXPECT_NE(text.find("fedpod_build_info{component=\""), std::string::npos) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_models"), 0) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_versions"), 0) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_pods"), 0) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_pending_requests"), 0) << text;

  const std::string alice = user("alice"), bob = user("bob");
  push(alice, "alice", "net", "v1");
  push(alice, "alice", "net", "v2");
  push(alice, "alice", "other", "v1");
  ASSERT_TRUE(client(bob).register_pod("pod-b", "tcp://10.0.0.2:5555", key_of("pod-b"), json{{"columns", json::array()}})
                  .ok());
  auto req = client(alice).request_access("alice", "net", 0, "pod-b", "digits study");
  ASSERT_TRUE(req.ok()) << req.status().to_string();
  auto req2 = client(alice).request_access("alice", "other", 0, "pod-b", "digits study");
  ASSERT_TRUE(req2.ok()) << req2.status().to_string();

  text = scrape();
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_models"), 2) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_versions"), 3) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_pods"), 1) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_pending_requests"), 2) << text;

  ASSERT_TRUE(client(bob).approve_access_request(req->id, "ok").ok());
  ASSERT_TRUE(client(bob).reject_access_request(req2->id, "no").ok());
  text = scrape_until([](const std::string& t) {
    return testing::metric_value(t, requests("/api/v1/models/{user}/{ref}/versions", "POST", 201)) == 3 &&
           testing::metric_value(t, requests("/api/v1/access-requests/{id}/{action}", "POST", 200)) == 2;
  });
  EXPECT_EQ(testing::metric_value(text, "fedpod_hub_pending_requests"), 0) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/models/{user}/{ref}/versions", "POST", 201)), 3) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/pods", "POST", 201)), 1) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/access-requests", "POST", 201)), 2) << text;
  EXPECT_EQ(testing::metric_value(text, requests("/api/v1/access-requests/{id}/{action}", "POST", 200)), 2) << text;
  EXPECT_PROMTOOL_CLEAN(text);
}

}  // namespace
}  // namespace fedpod::hub
