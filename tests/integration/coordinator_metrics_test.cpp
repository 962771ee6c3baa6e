// The coordinator's Prometheus metrics: a 3-round job on real `fedpod worker`
// processes (CURVE, as in round_test) read through Coordinator::registry() and over
// HTTP (metrics_listen), and `fedpod coordinator run --metrics-listen` as a user runs
// it. Every exposition is linted by the real `promtool check metrics`.
#include <gtest/gtest.h>
#include <httplib.h>
#include <prometheus/text_serializer.h>
#include <sys/wait.h>

#include <cmath>
#include <ctime>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <thread>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/metrics/metrics.h"
#include "fedpod/model/zoo.h"
#include "digits_job.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;


httplib::Result get(int port, const std::string& path) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(5);
  c.set_read_timeout(10);
  return c.Get(path.c_str());
}

class CoordinatorMetricsTest : public ::testing::Test {
 protected:
  // Starts one worker process per name, each with its digits share (as round_test).
  void start_pods(const std::vector<std::string>& names) {
    testing::start_digits_pods(dir_, id_, names, spec_, procs_);
  }

  void SetUp() override {
    spec_ = testing::digits_job_spec("metrics-test", (dir_.path() / "out").string(), id_.modeller_key_file);
  }

  // The parameters of the job's model, as the pods build it.
  int64_t parameters() {
    auto m = model::make_builtin("mlp");
    m->create_model({64}, 10, spec_.model.hyperparameters);
    return m->flat().numel();
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  std::vector<std::unique_ptr<testing::Process>> procs_;
  coordinator::JobSpec spec_;
};

TEST_F(CoordinatorMetricsTest, ThreeRoundJobIsCountedOnTheRegistryAndOverHttp) {
  const std::vector<std::string> names = {"pod-a", "pod-b"};
  start_pods(names);
  spec_.metrics_listen = "127.0.0.1:0";
  coordinator::validate(spec_, "test job");
  zmq::context_t ctx(1);
  std::ostringstream progress;
  coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
  const int port = c.metrics_port();
  ASSERT_GT(port, 0);

  // Before run(): alive, not ready (with the reason), and the job already named.
  auto r = get(port, "/healthz");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  r = get(port, "/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_CONTAINS(r->body, "no pod contacted yet");
  r = get(port, "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(testing::metric_value(r->body, "fedpod_coordinator_job_info{job_id=\"metrics-test\",model=\"mlp\"}"), 1) << r->body;
  EXPECT_EQ(testing::metric_value(r->body, "fedpod_coordinator_rounds_completed_total"), 0) << r->body;
  EXPECT_PROMTOOL_CLEAN(r->body);

  auto result = c.run();
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  ASSERT_EQ(result->rounds_completed, 3);

  const std::string text = prometheus::TextSerializer().Serialize(c.registry()->Collect());
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_rounds_completed_total"), 3) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_round_duration_seconds_count"), 3) << text;
  EXPECT_GT(testing::metric_value(text, "fedpod_coordinator_round_duration_seconds_sum"), 0) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_aggregation_seconds_count"), 3) << text;
  // Each pod: startJob, 3 train rounds, 3 validations (eval_every 1) and the test.
  for (const auto& pod : names) {
    EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_pod_responses_total{outcome=\"ok\",pod=\"" + pod + "\"}"), 1 + 3 + 3 + 1)
        << text;
  }
  EXPECT_EQ(text.find("outcome=\"timeout\""), std::string::npos) << text;
  EXPECT_EQ(text.find("outcome=\"error\""), std::string::npos) << text;
  // float32 parameters, to every pod and back from every pod, each round.
  const double update_bytes = static_cast<double>(parameters()) * 4 * names.size() * spec_.rounds;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_update_bytes_total{direction=\"sent\"}"), update_bytes) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_update_bytes_total{direction=\"received\"}"), update_bytes) << text;
  // The last evaluation of each split, as the run reports them.
  const double test_accuracy = testing::metric_value(text, "fedpod_coordinator_global_accuracy{split=\"test\"}");
  EXPECT_GE(test_accuracy, 0);
  EXPECT_LE(test_accuracy, 1);
  EXPECT_NEAR(test_accuracy, result->test_accuracy, 1e-9) << text;
  EXPECT_NEAR(testing::metric_value(text, "fedpod_coordinator_global_loss{split=\"test\"}"), result->test_loss, 1e-9) << text;
  const auto history = nlohmann::json::parse(testing::read_file(result->history_path));
  EXPECT_NEAR(testing::metric_value(text, "fedpod_coordinator_global_loss{split=\"validation\"}"),
              history["rounds"][2]["eval"]["loss"].get<double>(), 1e-9)
      << text;
  EXPECT_NEAR(testing::metric_value(text, "fedpod_coordinator_global_accuracy{split=\"validation\"}"),
              history["rounds"][2]["eval"]["accuracy"].get<double>(), 1e-9)
      << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_job_info{job_id=\"metrics-test\",model=\"mlp\"}"), 1) << text;

  // The endpoint serves the same registry, and stays ready once training started.
  r = get(port, "/readyz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = get(port, "/metrics");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(testing::metric_value(r->body, "fedpod_coordinator_rounds_completed_total"), 3) << r->body;
  EXPECT_EQ(testing::metric_value(r->body, "fedpod_coordinator_update_bytes_total{direction=\"sent\"}"), update_bytes);
  // Every message, not only parameters: envelopes, startJob, heartbeats on top, and
  // not much more (sealed frames add a header and a tag each).
  for (const char* dir : {"sent", "received"}) {
    const double all =
        testing::metric_value(r->body, std::string("fedpod_coordinator_bytes_total{direction=\"") + dir + "\"}");
    EXPECT_GT(all, update_bytes) << dir;
    EXPECT_LT(all, update_bytes * 1.1 + 1e6) << dir;
  }
  // The process metrics every fedpod process serves.
  EXPECT_GT(testing::metric_value(r->body, "process_resident_memory_bytes"), 10e6) << r->body;
  EXPECT_GT(testing::metric_value(r->body, "process_cpu_seconds_total"), 0) << r->body;
  EXPECT_GT(testing::metric_value(r->body, "process_open_fds"), 3) << r->body;
  EXPECT_GE(testing::metric_value(r->body, "process_max_fds"), testing::metric_value(r->body, "process_open_fds"));
  EXPECT_NEAR(testing::metric_value(r->body, "process_start_time_seconds"), static_cast<double>(std::time(nullptr)), 600);
  EXPECT_NE(r->body.find("fedpod_build_info{component=\""), std::string::npos) << r->body;
  EXPECT_PROMTOOL_CLEAN(r->body);
}

TEST_F(CoordinatorMetricsTest, WithoutMetricsListenThereIsNoServerButARegistry) {
  coordinator::JobSpec spec = spec_;
  spec.pods.push_back({"pod-a", "tcp://127.0.0.1:1", id_.pod_public_key("pod-a")});
  coordinator::validate(spec, "test job");
  zmq::context_t ctx(1);
  std::ostringstream progress;
  coordinator::Coordinator c(ctx, spec, null_logger(), progress);
  EXPECT_EQ(c.metrics_port(), 0);
  ASSERT_TRUE(c.registry());
  const std::string text = prometheus::TextSerializer().Serialize(c.registry()->Collect());
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_job_info{job_id=\"metrics-test\",model=\"mlp\"}"), 1) << text;
  EXPECT_EQ(testing::metric_value(text, "fedpod_coordinator_update_bytes_total{direction=\"sent\"}"), 0) << text;
}

TEST_F(CoordinatorMetricsTest, BadMetricsListenInTheJobIsAConfigError) {
  spec_.pods.push_back({"pod-a", "tcp://127.0.0.1:1", id_.pod_public_key("pod-a")});
  spec_.metrics_listen = "127.0.0.1:http";
  const std::string msg = testing::config_error([&] { coordinator::validate(spec_, "job.yaml"); });
  EXPECT_CONTAINS(msg, "job.yaml: metrics_listen: bad listen address '127.0.0.1:http'");
}

// ---- `fedpod coordinator run` ------------------------------------------------------

struct CliRun {
  int code;
  std::string output;
};

class CoordinatorCliMetricsTest : public CoordinatorMetricsTest {
 protected:
  // A job on the pods started so far; `extra` is appended to job.yaml.
  std::string write_job(const std::string& extra = "") {
    std::string y = "job_id: cli-metrics\nmodel: {ref: mlp, hyperparameters: {hidden: [32], lr: 0.1}}\n"
                    "datastructure: {target: label, num_classes: 10, scale: 0.0625}\n"
                    "key_file: " + id_.modeller_key_file + "\noutput_dir: " + (dir_.path() / "cli-out").string() +
                    "\npods:\n";
    for (const auto& p : spec_.pods) {
      y += "  - {name: " + p.name + ", address: '" + p.address + "', public_key: '" + p.public_key + "'}\n";
    }
    return dir_.write("job.yaml", y + extra);
  }

  std::unique_ptr<testing::Process> start(const std::vector<std::string>& args, const std::string& log) {
    std::vector<std::string> argv = {testing::fedpod_bin(), "coordinator", "run"};
    argv.insert(argv.end(), args.begin(), args.end());
    return std::make_unique<testing::Process>(argv, log);
  }

  CliRun run_cli(const std::vector<std::string>& args) {
    const std::string log = (dir_.path() / ("cli-" + std::to_string(runs_++) + ".log")).string();
    auto p = start(args, log);
    const int status = p->wait(120s);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, testing::read_file(log)};
  }

  int runs_ = 0;
};

// The real binary serves /metrics while the job runs: a pod that never answers
// holds the job in hello for connect_timeout, long enough to scrape it unready.
TEST_F(CoordinatorCliMetricsTest, ServesMetricsWhileTheJobRuns) {
  start_pods({"pod-a"});
  spec_.pods.push_back({"pod-ghost", "tcp://127.0.0.1:1", id_.pod_public_key("pod-ghost")});
  const std::string job = write_job("rounds: 1\nmin_pods: 1\nconnect_timeout: 8s\n");
  const std::string log = (dir_.path() / "serve.log").string();
  auto p = start({job, "--metrics-listen", "127.0.0.1:0"}, log);

  // The address is logged once listening.
  const std::regex listening(R"(event=metrics_listening job=cli-metrics address=127\.0\.0\.1:(\d+))");
  int port = 0;
  for (int i = 0; i < 600 && port == 0 && p->running(); ++i) {
    std::smatch m;
    const std::string text = testing::read_file(log);
    if (std::regex_search(text, m, listening)) port = std::stoi(m[1]);
    else std::this_thread::sleep_for(50ms);
  }
  ASSERT_GT(port, 0) << testing::read_file(log);

  // Unready until training starts, saying why: first not started, then in hello.
  std::string reason;
  for (int i = 0; i < 100; ++i) {
    auto ready = get(port, "/readyz");
    ASSERT_TRUE(ready) << httplib::to_string(ready.error());
    ASSERT_EQ(ready->status, 503) << ready->body;
    reason = ready->body;
    if (reason.find("contacting the pods") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(reason, "contacting the pods (hello)");
  auto r = get(port, "/metrics");
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(testing::metric_value(r->body, "fedpod_coordinator_job_info{job_id=\"cli-metrics\",model=\"mlp\"}"), 1) << r->body;
  EXPECT_PROMTOOL_CLEAN(r->body);

  const int status = p->wait(120s);
  ASSERT_TRUE(WIFEXITED(status)) << testing::read_file(log);
  EXPECT_EQ(WEXITSTATUS(status), 0) << testing::read_file(log);
  EXPECT_CONTAINS(testing::read_file(log), "round 1/1  pods 1/1");
}

TEST_F(CoordinatorCliMetricsTest, TakenPortIsAConfigErrorNamingTheAddress) {
  spec_.pods.push_back({"pod-a", "tcp://127.0.0.1:1", id_.pod_public_key("pod-a")});
  const std::string job = write_job();
  metrics::MetricsServer taken(std::make_shared<prometheus::Registry>(), metrics::MetricsServerOptions{});
  ASSERT_TRUE(taken.start().ok());
  const std::string address = "127.0.0.1:" + std::to_string(taken.port());

  auto r = run_cli({job, "--metrics-listen", address});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "cannot listen on " + address);

  r = run_cli({job, "--metrics-listen", "localhost"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "--metrics-listen: bad listen address 'localhost'");

  // The job file's key, the same way.
  r = run_cli({write_job("metrics_listen: " + address + "\n")});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_CONTAINS(r.output, "metrics_listen: metrics: cannot listen on " + address);
}

}  // namespace
}  // namespace fedpod
