// A federated job on pods with two cpu replicas each (`devices: [cpu, cpu]`,
// worker/data_parallel.h) against the same job on one-device pods: real `fedpod
// worker` processes on loopback and an in-process Coordinator. Data-parallel training
// computes the same gradients up to float rounding, so the two histories agree.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "fedpod/coordinator/coordinator.h"
#include "digits_job.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

class DataParallelRoundTest : public ::testing::Test {
 protected:
  // Starts one worker process per name, each with its digits share and `devices`.
  void start_pods(const std::vector<std::string>& names, const std::string& devices) {
    for (const auto& name : names) {
      auto pod = testing::start_digits_pod(dir_, id_, name, "general-modeller", "devices: " + devices + "\n",
                                           name + "." + std::to_string(run_) + ".log");
      ASSERT_FALSE(pod.endpoint.empty()) << "worker " << name << " did not start: " << testing::read_file(pod.log);
      testing::add_pod(spec_, pod);
      procs_.push_back(std::move(pod.process));
    }
  }

  void stop_pods() {
    for (auto& p : procs_) {
      p->kill(SIGTERM);
      const int status = p->wait(30s);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    procs_.clear();
    spec_.pods.clear();
  }

  // Runs the job on `devices` pods; returns its result and history.json.
  std::pair<coordinator::RunResult, nlohmann::json> run_on(const std::string& devices) {
    ++run_;
    start_pods({"pod-a", "pod-b", "pod-c"}, devices);
    spec_.output_dir = (dir_.path() / ("out" + std::to_string(run_))).string();
    coordinator::validate(spec_, "test job");
    std::ostringstream progress;
    StatusOr<coordinator::RunResult> result = Status::internal("not run");
    {
      zmq::context_t ctx(1);
      coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
      result = c.run();
    }
    stop_pods();
    EXPECT_TRUE(result.ok()) << result.status().to_string() << "\n" << progress.str();
    if (!result.ok()) return {};
    return {*result, nlohmann::json::parse(testing::read_file(spec_.output_dir + "/history.json"))};
  }

  // output_dir is set per run.
  void SetUp() override { spec_ = testing::digits_job_spec("data-parallel-round-test", "", id_.modeller_key_file); }

  void TearDown() override { procs_.clear(); }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  std::vector<std::unique_ptr<testing::Process>> procs_;
  coordinator::JobSpec spec_;
  int run_ = 0;
};

TEST_F(DataParallelRoundTest, TwoCpuReplicasPerPodMatchOneDevice) {
  const auto [one, one_history] = run_on("[cpu]");
  const auto [two, two_history] = run_on("[cpu, cpu]");
  ASSERT_EQ(one.rounds_completed, 3);
  ASSERT_EQ(two.rounds_completed, 3);
  EXPECT_EQ(two.test_samples, one.test_samples);
  EXPECT_GT(one.test_accuracy, 0.3);  // chance is 0.1
  EXPECT_NEAR(two.test_accuracy, one.test_accuracy, 0.02);
  EXPECT_NEAR(two.test_loss, one.test_loss, 1e-3 * one.test_loss);

  ASSERT_EQ(two_history["rounds"].size(), 3u);
  for (size_t r = 0; r < 3; ++r) {
    const auto& a = one_history["rounds"][r];
    const auto& b = two_history["rounds"][r];
    EXPECT_EQ(b["pods_answered"], 3);
    EXPECT_NEAR(b["eval"]["loss"].get<double>(), a["eval"]["loss"].get<double>(),
                1e-3 * a["eval"]["loss"].get<double>())
        << "round " << r + 1;
    for (const std::string pod : {"pod-a", "pod-b", "pod-c"}) {
      EXPECT_EQ(b["pods"][pod]["num_samples"], a["pods"][pod]["num_samples"]) << pod;
      EXPECT_EQ(b["pods"][pod]["samples_seen"], a["pods"][pod]["samples_seen"]) << pod;
      // Loss over the samples seen across both replicas, as one device reports it.
      EXPECT_NEAR(b["pods"][pod]["train_loss"].get<double>(),
                  a["pods"][pod]["train_loss"].get<double>(),
                  1e-3 * a["pods"][pod]["train_loss"].get<double>())
          << pod << " round " << r + 1;
    }
  }
  // The pods said how they trained.
  const std::string log = testing::read_file((dir_.path() / "pod-b.2.log").string());
  EXPECT_CONTAINS(log, "devices=cpu,cpu");
  EXPECT_CONTAINS(log, "replicas=2 allreduce=\"cpu\"");
}

}  // namespace
}  // namespace fedpod
