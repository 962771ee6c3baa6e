// Whole rounds: real `fedpod worker` processes on loopback and an in-process
// Coordinator, including a worker killed with SIGKILL in the middle of a round.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/history.h"
#include "fedpod/model/zoo.h"
#include <prometheus/text_serializer.h>
#include "digits_job.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

class RoundTest : public ::testing::Test {
 protected:
  // Starts one worker process per name, each with its digits share.
  void start_pods(const std::vector<std::string>& names) {
    testing::start_digits_pods(dir_, id_, names, spec_, procs_);
  }

  void SetUp() override {
    spec_ = testing::digits_job_spec("round-test", (dir_.path() / "out").string(), id_.modeller_key_file);
  }

  StatusOr<coordinator::RunResult> run(std::ostream& progress) {
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
    return c.run();
  }

  nlohmann::json history() { return nlohmann::json::parse(testing::read_file(spec_.output_dir + "/history.json")); }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  std::vector<std::unique_ptr<testing::Process>> procs_;
  coordinator::JobSpec spec_;
};

TEST_F(RoundTest, ThreePodsThreeRoundsWriteHistoryAndModel) {
  start_pods({"pod-a", "pod-b", "pod-c"});
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  EXPECT_EQ(result->rounds_completed, 3);
  // Every pod's test split: floor(0.2 * rows) of 684, 562, 551.
  EXPECT_EQ(result->test_samples, 136 + 112 + 110);
  EXPECT_GT(result->test_accuracy, 0.3);  // chance is 0.1; the demo test checks >= 0.90
  EXPECT_NE(progress.str().find("round 3/3  pods 3/3"), std::string::npos) << progress.str();

  auto h = history();
  EXPECT_EQ(h["status"], "completed");
  ASSERT_EQ(h["rounds"].size(), 3u);
  for (const auto& r : h["rounds"]) {
    EXPECT_EQ(r["pods_answered"], 3);
    EXPECT_EQ(r["pods"]["pod-b"]["outcome"], "ok");
    EXPECT_EQ(r["pods"]["pod-b"]["num_samples"], 562 - 112 - 56);
    EXPECT_FALSE(r["eval"].is_null());
  }
  // Validation loss falls as rounds go by.
  EXPECT_LT(h["rounds"][2]["eval"]["loss"].get<double>(), h["rounds"][0]["eval"]["loss"].get<double>());

  const std::string report = testing::read_file(result->report_path);
  EXPECT_NE(report.find("aria-label='pod participation'"), std::string::npos);
  EXPECT_NE(report.find("pod-c round 3: ok"), std::string::npos);

  auto params = coordinator::load_parameters(result->model_path);
  auto m = model::make_builtin("mlp");
  m->create_model({64}, 10, spec_.model.hyperparameters);
  ASSERT_EQ(params.size(), m->flat().layout().size());
  for (const auto& p : m->flat().layout()) {
    ASSERT_TRUE(params.count(p.name)) << p.name;
    EXPECT_EQ(params[p.name].sizes().vec(), p.shape);
  }
}

// update_precision: bfloat16: pods send their change to the round's parameters in
// bfloat16 (half the bytes), the coordinator adds it back in float32; with
// broadcast_precision: bfloat16 too, the parameters go out rounded to bfloat16 (half
// the bytes the other way) and the coordinator still keeps them in float32. The same
// job each way (pods folded in a fixed order) ends with parameters within bfloat16's
// rounding of float32's and the same test accuracy to a point.
TEST_F(RoundTest, BFloat16UpdatesAndBroadcastsHalveTheBytesAndTrainAsFloat32Does) {
  start_pods({"pod-a", "pod-b"});
  spec_.aggregation_order = "pod";
  struct Variant {
    std::string name, update, broadcast;
  };
  const std::vector<Variant> variants = {{"float32", "float32", "float32"},
                                         {"bf16-updates", "bfloat16", "float32"},
                                         {"bf16-both", "bfloat16", "bfloat16"}};
  std::map<std::string, std::map<std::string, torch::Tensor>> params;
  std::map<std::string, double> accuracy, received, sent;
  for (const auto& v : variants) {
    spec_.update_precision = v.update;
    spec_.broadcast_precision = v.broadcast;
    spec_.job_id = "round-test-" + v.name;
    spec_.output_dir = (dir_.path() / ("out-" + v.name)).string();
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    std::ostringstream progress;
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
    auto result = c.run();
    ASSERT_TRUE(result.ok()) << v.name << ": " << result.status().to_string() << progress.str();
    EXPECT_EQ(history()["update_precision"], v.update);
    EXPECT_EQ(history()["broadcast_precision"], v.broadcast);
    params[v.name] = coordinator::load_parameters(result->model_path);
    accuracy[v.name] = result->test_accuracy;
    const std::string metrics = prometheus::TextSerializer().Serialize(c.registry()->Collect());
    received[v.name] = testing::metric_value(metrics, "fedpod_coordinator_update_bytes_total{direction=\"received\"}");
    sent[v.name] = testing::metric_value(metrics, "fedpod_coordinator_update_bytes_total{direction=\"sent\"}");
  }
  EXPECT_DOUBLE_EQ(received["bf16-updates"] * 2, received["float32"]);
  EXPECT_DOUBLE_EQ(received["bf16-both"] * 2, received["float32"]);
  EXPECT_DOUBLE_EQ(sent["bf16-updates"], sent["float32"]);
  EXPECT_DOUBLE_EQ(sent["bf16-both"] * 2, sent["float32"]);
  for (const char* name : {"bf16-updates", "bf16-both"}) {
    EXPECT_NEAR(accuracy[name], accuracy["float32"], 0.01) << name;
    double worst = 0;
    for (const auto& [tensor, t] : params["float32"]) {
      const auto& b = params[name].at(tensor);
      worst = std::max(worst, (t - b).abs().max().item<double>());
    }
    EXPECT_GT(worst, 0.0) << name;   // the values really were rounded
    EXPECT_LT(worst, 0.02) << name;  // ... by bfloat16's step on values of this size, not more
  }
}

// When every pod of a round fits in max_concurrent_uploads, each is granted its
// upload with train and sends its parameters right after trainDone (no fetchResult);
// otherwise they are fetched. The same job both ways trains the same model: the
// updates are the same, only their order of arrival may differ.
TEST_F(RoundTest, UpdatesComeWithTrainWhenEveryPodFitsTheUploadWindow) {
  start_pods({"pod-a", "pod-b", "pod-c"});
  std::map<int, std::map<std::string, torch::Tensor>> params;
  for (int window : {3, 2}) {
    spec_.max_concurrent_uploads = window;
    spec_.job_id = "round-test-window-" + std::to_string(window);
    spec_.output_dir = (dir_.path() / ("out-" + std::to_string(window))).string();
    std::ostringstream progress;
    auto result = run(progress);
    ASSERT_TRUE(result.ok()) << window << ": " << result.status().to_string() << progress.str();
    auto h = history();
    ASSERT_EQ(h["rounds"].size(), 3u);
    for (const auto& r : h["rounds"]) {
      EXPECT_EQ(r["uploads"], window == 3 ? "with_train" : "fetched") << "window " << window;
      EXPECT_EQ(r["pods_answered"], 3);
      EXPECT_EQ(r["discarded_replies"], 0) << "window " << window;
    }
    params[window] = coordinator::load_parameters(result->model_path);
  }
  for (const auto& [name, t] : params[3]) {
    EXPECT_TRUE(torch::allclose(t, params[2].at(name), 1e-5, 1e-6)) << name;
  }
}

// The same grant with more pods than the coordinator sends sealed copies of a large
// model at once: the last pods' train requests wait for earlier copies to leave.
// Their upload slots were granted with train, so their updates must be read when
// they come, not discarded as unasked for (which left those pods unfetched until the
// round's deadline). Six pods, a 19 MB mlp: the copies' budget is four models' worth.
TEST_F(RoundTest, UpdatesComeWithTrainWhenTheBroadcastIsPaced) {
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    const std::string name = "pod-" + std::to_string(i);
    testing::PodProcess pod = testing::start_csv_pod(
        dir_, id_, name, testing::source_dir() + "/examples/digits/pod-" + std::string(1, "abc"[i % 3]) + ".csv");
    ASSERT_FALSE(pod.endpoint.empty()) << "worker " << name << " did not start: " << testing::read_file(pod.log);
    testing::add_pod(spec_, pod);
    procs_.push_back(std::move(pod.process));
  }
  // 64 inputs x 65536 hidden + 65536 x 10 outputs: 4.9M float32 parameters, 19 MB.
  spec_.model.hyperparameters = Hyperparameters(nlohmann::json{{"hidden", {65536}}, {"lr", 0.01}});
  spec_.rounds = 2;
  spec_.local_steps = 1;
  spec_.eval_every = 0;
  spec_.max_concurrent_uploads = 6;
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_TRUE(result.ok()) << result.status().to_string() << progress.str();
  auto h = history();
  ASSERT_EQ(h["rounds"].size(), 2u);
  for (const auto& r : h["rounds"]) {
    EXPECT_EQ(r["uploads"], "with_train");
    EXPECT_EQ(r["pods_answered"], 6);
    EXPECT_EQ(r["discarded_replies"], 0);
  }
}

TEST_F(RoundTest, SchemaMismatchNamesPodAndColumn) {
  start_pods({"pod-a", "pod-b"});
  spec_.datastructure.target = "digit";
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kSchemaMismatch);
  EXPECT_NE(result.status().message().find("pod pod-a: no column 'digit' (the target)"), std::string::npos)
      << result.status().message();
}

TEST_F(RoundTest, UnreachablePodIsSkippedWhenMinPodsAllows) {
  start_pods({"pod-a", "pod-b"});
  spec_.pods.push_back({"pod-ghost", "tcp://127.0.0.1:1", id_.pod_public_key("pod-ghost")});  // nothing listens on port 1
  spec_.min_pods = 2;
  spec_.connect_timeout = 2s;
  spec_.rounds = 1;
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_TRUE(result.ok()) << result.status().to_string();
  // Never took the job, and recorded with why: nothing listens on its port.
  const auto ghost = history()["pods"]["pod-ghost"];
  EXPECT_EQ(ghost["outcome"], "unreachable") << ghost.dump();
  EXPECT_EQ(ghost["cause"], "connection_refused") << ghost.dump();
  EXPECT_EQ(ghost["phase"], "hello") << ghost.dump();
  EXPECT_EQ(history()["pods"]["pod-a"]["outcome"], "ok");
  EXPECT_CONTAINS(progress.str(), "pod-ghost: left out: unreachable (connection_refused)");
}

class KillTest : public RoundTest, public ::testing::WithParamInterface<int> {};

// pod-c is killed with SIGKILL while round 2 trains. With min_pods 2 the job finishes
// on the two others; with min_pods 3 it fails naming pod-c.
TEST_P(KillTest, WorkerKilledMidRound) {
  const int min_pods = GetParam();
  start_pods({"pod-a", "pod-b", "pod-c"});
  spec_.min_pods = min_pods;
  spec_.rounds = 4;
  spec_.local_steps = 400;  // long enough rounds to land the kill inside one
  spec_.local_epochs = 0;
  spec_.model.hyperparameters = Hyperparameters(nlohmann::json{{"hidden", {256, 256}}, {"lr", 0.05}});
  std::ostringstream progress;
  StatusOr<coordinator::RunResult> result = Status::internal("not run");
  std::thread coordinator([&] { result = run(progress); });
  // Wait for round 1 to be recorded; round 2 starts right after.
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto text = testing::read_file(spec_.output_dir + "/history.json");
    if (text.find("\"round\": 1") != std::string::npos) break;
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(20ms);
  procs_[2]->kill(SIGKILL);
  coordinator.join();
  auto h = history();
  if (min_pods == 2) {
    ASSERT_TRUE(result.ok()) << result.status().to_string();
    EXPECT_EQ(result->rounds_completed, 4);
    EXPECT_EQ(h["status"], "completed");
    const auto& last = h["rounds"][3];
    EXPECT_EQ(last["pods_answered"], 2);
    const std::string outcome = last["pods"]["pod-c"]["outcome"];
    EXPECT_TRUE(outcome == "unreachable" || outcome == "disconnected") << outcome;
    // The pod that died is reported in the round it died in, not silently dropped.
    int rounds_with_two = 0;
    for (const auto& r : h["rounds"]) rounds_with_two += r["pods_answered"] == 2;
    EXPECT_GE(rounds_with_two, 2);
  } else {
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
    const std::string msg = result.status().message();
    EXPECT_NE(msg.find("2 of 3 pods answered, min_pods is 3: pod-c"), std::string::npos) << msg;
    EXPECT_EQ(h["status"], "failed");
  }
  // Either way the survivors are free again for the next job.
  for (int i = 0; i < 2; ++i) EXPECT_TRUE(procs_[i]->running());
}

INSTANTIATE_TEST_SUITE_P(MinPods, KillTest, ::testing::Values(2, 3));

}  // namespace
}  // namespace fedpod
