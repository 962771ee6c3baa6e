// A real Prometheus server scrapes a real job: two `fedpod worker` processes and a
// `fedpod coordinator run` process export /metrics on loopback; Prometheus (Debian's
// package, installed by scripts/bootstrap) runs with a temporary config that scrapes
// them every 250 ms; after the job its HTTP query API must hold the series the job
// produced, with values that match what the job did. Every process's exposition
// also passes `promtool check metrics` with no warnings.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <cstdio>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

// A TCP port free on 127.0.0.1 right now (the kernel's pick for port 0).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

// The full path of `program` on PATH ("" when missing): Process runs a path, not a name.
std::string which(const std::string& program) {
  std::string out;
  if (FILE* f = ::popen(("command -v " + program + " 2>/dev/null").c_str(), "r")) {
    char buf[512];
    while (std::fgets(buf, sizeof buf, f)) out += buf;
    ::pclose(f);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

std::string get(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2, 0);
  c.set_read_timeout(5, 0);
  auto r = c.Get(path);
  return r && r->status == 200 ? r->body : std::string();
}

class PrometheusScrapeTest : public ::testing::Test {
 protected:
  // The instant vector of `query` from Prometheus' HTTP API.
  json query(const std::string& q) {
    httplib::Client c("127.0.0.1", prometheus_port_);
    c.set_read_timeout(5, 0);
    auto r = c.Get("/api/v1/query", httplib::Params{{"query", q}}, httplib::Headers{});
    if (!r || r->status != 200) return json::array();
    json j = json::parse(r->body, nullptr, false);
    if (j.is_discarded() || j["status"] != "success") return json::array();
    return j["data"]["result"];
  }
  // The single value of `q`, or NaN when the result is not exactly one sample.
  // The coordinator is gone by the time the test asks, and Prometheus marks a vanished
  // target's series stale, so its series are read with last_over_time() (range
  // vectors skip staleness markers).
  double value(const std::string& q) {
    json r = query(q);
    if (r.size() != 1) return std::nan("");
    return std::stod(r[0]["value"][1].get<std::string>());
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  int prometheus_port_ = 0;
};

TEST_F(PrometheusScrapeTest, PrometheusCollectsTheJobsSeriesWithTheRightValues) {
  const std::string prometheus_bin = which("prometheus");
  ASSERT_FALSE(prometheus_bin.empty())
      << "the prometheus server is not installed; run scripts/bootstrap (Debian package 'prometheus')";
  const int rounds = 3;
  // Two pods, each with its metrics port.
  std::vector<std::unique_ptr<testing::Process>> procs;
  std::map<std::string, int> pod_metrics;
  std::map<std::string, std::string> endpoints;
  for (const std::string name : {"pod-a", "pod-b"}) {
    pod_metrics[name] = free_port();
    auto pod = testing::start_digits_pod(dir_, id_, name, "general-modeller",
                                         "metrics_listen: 127.0.0.1:" + std::to_string(pod_metrics[name]) + "\n");
    ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
    endpoints[name] = pod.endpoint;
    procs.push_back(std::move(pod.process));
  }
  const int coordinator_metrics = free_port();

  // Prometheus, scraping all three every 250 ms.
  prometheus_port_ = free_port();
  std::string targets_pods = "'127.0.0.1:" + std::to_string(pod_metrics["pod-a"]) + "', '127.0.0.1:" +
                             std::to_string(pod_metrics["pod-b"]) + "'";
  const std::string prom_config = dir_.write(
      "prometheus.yml", "global: {scrape_interval: 250ms, scrape_timeout: 200ms}\nscrape_configs:\n"
                        "  - job_name: fedpod-pods\n    static_configs: [{targets: [" + targets_pods + "]}]\n"
                        "  - job_name: fedpod-coordinator\n    static_configs: [{targets: ['127.0.0.1:" +
                        std::to_string(coordinator_metrics) + "']}]\n");
  procs.push_back(std::make_unique<testing::Process>(
      std::vector<std::string>{prometheus_bin, "--config.file=" + prom_config,
                               "--storage.tsdb.path=" + (dir_.path() / "tsdb").string(),
                               "--web.listen-address=127.0.0.1:" + std::to_string(prometheus_port_),
                               "--log.level=warn"},
      (dir_.path() / "prometheus.log").string()));
  testing::Process& prometheus = *procs.back();
  const auto ready_by = std::chrono::steady_clock::now() + 60s;
  while (get(prometheus_port_, "/-/ready").empty() && std::chrono::steady_clock::now() < ready_by && prometheus.running()) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(get(prometheus_port_, "/-/ready").empty()) << testing::read_file((dir_.path() / "prometheus.log").string());
  // Ready is not yet scraping: target discovery is applied a few seconds later. Wait
  // until all three targets are known (the coordinator's is down until its job runs).
  auto targets = [&] {
    json t = json::parse(get(prometheus_port_, "/api/v1/targets"), nullptr, false);
    return t.is_discarded() ? size_t{0} : t["data"]["activeTargets"].size();
  };
  while (targets() < 3 && std::chrono::steady_clock::now() < ready_by) std::this_thread::sleep_for(200ms);
  ASSERT_EQ(targets(), 3u) << get(prometheus_port_, "/api/v1/targets");

  // The job, as a modeller runs it, lingering so the last values are scraped.
  std::string job = "job_id: scrape-test\nmodel: {ref: mlp, hyperparameters: {hidden: [32], lr: 0.1}}\n"
                    "datastructure: {target: label, num_classes: 10, scale: 0.0625}\n"
                    "key_file: " + id_.modeller_key_file + "\npods:\n";
  for (const auto& [name, ep] : endpoints) {
    job += "  - {name: " + name + ", address: \"" + ep + "\", public_key: \"" + id_.pod_public_key(name) + "\"}\n";
  }
  job += "rounds: " + std::to_string(rounds) + "\nlocal_epochs: 1\nbatch_size: 32\neval_every: 1\noutput_dir: " +
         (dir_.path() / "out").string() + "\n";
  const std::string job_file = dir_.write("job.yaml", job);
  const std::string coord_log = (dir_.path() / "coordinator.log").string();
  testing::Process coordinator({testing::fedpod_bin(), "coordinator", "run", job_file, "--metrics-listen",
                                "127.0.0.1:" + std::to_string(coordinator_metrics), "--metrics-linger", "4s"},
                               coord_log);
  // While it lingers: its exposition passes promtool, as do the pods'.
  ASSERT_FALSE(testing::wait_for_word(coord_log, 120s, &coordinator).empty());
  const auto linger_by = std::chrono::steady_clock::now() + 120s;
  while (testing::read_file(coord_log).find("serving the final metrics") == std::string::npos &&
         coordinator.running() && std::chrono::steady_clock::now() < linger_by) {
    std::this_thread::sleep_for(50ms);
  }
  const std::string coordinator_text = get(coordinator_metrics, "/metrics");
  ASSERT_FALSE(coordinator_text.empty()) << testing::read_file(coord_log);

  EXPECT_PROMTOOL_CLEAN(coordinator_text);
  for (const auto& [name, port] : pod_metrics) EXPECT_PROMTOOL_CLEAN(get(port, "/metrics"));

  // Prometheus has the final round count once a scrape lands during the linger.
  auto last = [](const std::string& series) { return "last_over_time(" + series + "[10m])"; };
  const auto scraped_by = std::chrono::steady_clock::now() + 20s;
  while (value(last("fedpod_coordinator_rounds_completed_total")) != rounds &&
         std::chrono::steady_clock::now() < scraped_by) {
    std::this_thread::sleep_for(200ms);
  }
  const int status = coordinator.wait(60s);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(coord_log);
  json history = json::parse(testing::read_file((dir_.path() / "out" / "history.json").string()));

  EXPECT_EQ(value(last("fedpod_coordinator_rounds_completed_total")), rounds)
      << "Prometheus' targets: " << get(prometheus_port_, "/api/v1/targets");
  EXPECT_EQ(value(last("fedpod_coordinator_round_duration_seconds_count")), rounds);
  EXPECT_EQ(value("sum(up{job=\"fedpod-pods\"})"), 2);
  EXPECT_EQ(value(last("fedpod_coordinator_job_info{job_id=\"scrape-test\",model=\"mlp\"}")), 1);
  EXPECT_NEAR(value(last("fedpod_coordinator_global_accuracy{split=\"test\"}")),
              history["test"]["accuracy"].get<double>(), 1e-9);
  for (const auto& [name, port] : pod_metrics) {
    const std::string instance = "instance=\"127.0.0.1:" + std::to_string(port) + "\"";
    // Every round, each pod trained one epoch over its train split.
    const double train_rows = history["pods"][name]["train_samples"].get<double>();
    EXPECT_EQ(value("fedpod_worker_train_samples_total{" + instance + "}"), train_rows * rounds) << name;
    EXPECT_EQ(value("fedpod_worker_train_seconds_count{" + instance + "}"), rounds) << name;
    EXPECT_EQ(value("fedpod_worker_jobs_total{outcome=\"accepted\"," + instance + "}"), 1) << name;
    // The process metrics and build info every process exports.
    EXPECT_EQ(value("fedpod_build_info{component=\"worker\"," + instance + "}"), 1) << name;
    EXPECT_GT(value("process_resident_memory_bytes{" + instance + "}"), 10e6) << name;
    EXPECT_GT(value("process_cpu_seconds_total{" + instance + "}"), 0) << name;
    EXPECT_GT(value("process_open_fds{" + instance + "}"), 3) << name;
    EXPECT_NEAR(value("process_start_time_seconds{" + instance + "}"), static_cast<double>(std::time(nullptr)), 600) << name;
    EXPECT_EQ(value(last("fedpod_coordinator_pod_responses_total{pod=\"" + name + "\",outcome=\"ok\"}")),
              1 + rounds + rounds + 1)  // startJob, training rounds, validations, the final test
        << name;
  }
  // The bytes the coordinator says it sent are the bytes the pods say they received, at least.
  EXPECT_LE(value(last("fedpod_coordinator_update_bytes_total{direction=\"sent\"}")),
            value("sum(fedpod_worker_bytes_total{direction=\"received\"})"));
  // Every message counts in bytes_total: more than the parameters alone.
  EXPECT_GT(value(last("fedpod_coordinator_bytes_total{direction=\"sent\"}")),
            value(last("fedpod_coordinator_update_bytes_total{direction=\"sent\"}")));
  EXPECT_GT(value(last("fedpod_coordinator_bytes_total{direction=\"received\"}")),
            value(last("fedpod_coordinator_update_bytes_total{direction=\"received\"}")));
  EXPECT_EQ(value(last("fedpod_build_info{component=\"coordinator\"}")), 1);
  for (auto& p : procs) p->kill(SIGTERM);
}

}  // namespace
}  // namespace fedpod
