// Secure aggregation over real `fedpod worker` processes on loopback: five pods, the
// digits split five ways, an in-process Coordinator. Pods are killed between the
// protocol's steps (the coordinator's step observer) to drop out exactly where the
// protocol says it survives them, or does not.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <prometheus/text_serializer.h>
#include <sstream>

#include "digits_job.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/history.h"
#include "identity.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> kPods = {"pod-a", "pod-b", "pod-c", "pod-d", "pod-e"};

class SecureAggregationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = testing::digits_job_spec("secagg-test", (dir_.path() / "out").string(), id_.modeller_key_file);
    spec_.heartbeat_timeout = 4s;  // a killed pod is noticed quickly
    spec_.heartbeat_interval = 1s;
    spec_.round_timeout = 30s;
    // The digits, row i to pod i mod 5.
    std::ifstream in(testing::source_dir() + "/examples/digits/digits.csv");
    std::string header, line;
    std::getline(in, header);
    std::vector<std::string> shares(kPods.size(), header + "\n");
    for (size_t row = 0; std::getline(in, line); ++row) shares[row % kPods.size()] += line + "\n";
    for (size_t k = 0; k < kPods.size(); ++k) csv_[kPods[k]] = dir_.write(kPods[k] + ".csv", shares[k]);
  }

  void TearDown() override {
    if (!HasFailure()) return;
    for (const auto& name : kPods) {  // what the pods said, for the failure's reader
      const std::string log = testing::read_file((dir_.path() / (name + ".log")).string());
      std::cerr << "---- " << name << ".log (last 3000 bytes)\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
    }
  }

  void start_pods(const std::map<std::string, std::string>& extra_yaml = {}) {
    for (const auto& name : kPods) {
      auto it = extra_yaml.find(name);
      auto pod = testing::start_csv_pod(dir_, id_, name, csv_[name], "general-modeller",
                                        it == extra_yaml.end() ? "" : it->second);
      ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
      testing::add_pod(spec_, pod);
      procs_[name] = std::move(pod.process);
    }
  }

  void secure(uint32_t threshold = 3, uint32_t neighbours = 4) {
    spec_.secure_aggregation.enabled = true;
    spec_.secure_aggregation.threshold = threshold;
    spec_.secure_aggregation.neighbours = neighbours;
    spec_.secure_aggregation.clip = 10;
  }

  StatusOr<coordinator::RunResult> run(const std::string& job_id, std::ostringstream& progress,
                                       coordinator::Coordinator::StepObserver observer = nullptr,
                                       double* bytes_received = nullptr) {
    spec_.job_id = job_id;
    spec_.output_dir = (dir_.path() / ("out-" + job_id)).string();
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
    if (observer) c.set_step_observer(std::move(observer));
    auto r = c.run();
    if (bytes_received) {
      *bytes_received = testing::metric_value(prometheus::TextSerializer().Serialize(c.registry()->Collect()),
                                              "fedpod_coordinator_update_bytes_total{direction=\"received\"}");
    }
    return r;
  }

  nlohmann::json history() { return nlohmann::json::parse(testing::read_file(spec_.output_dir + "/history.json")); }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  std::map<std::string, std::string> csv_;
  std::map<std::string, std::unique_ptr<testing::Process>> procs_;
  coordinator::JobSpec spec_;
};

// The same job, plain (FedAvg folded in pod order) and secure: the models agree to
// the fixed-point encoding's precision after every round, and the coordinator
// received one ring vector per pod and round, never a pod's parameters.
TEST_F(SecureAggregationTest, MatchesPlainFedAvgOverAWholeJob) {
  ASSERT_NO_FATAL_FAILURE(start_pods());
  spec_.aggregation_order = "pod";
  std::ostringstream plain_progress, secure_progress;
  double plain_bytes = 0, secure_bytes = 0;
  auto plain = run("plain", plain_progress, nullptr, &plain_bytes);
  ASSERT_TRUE(plain.ok()) << plain.status().to_string() << plain_progress.str();
  secure();
  auto sec = run("secure", secure_progress, nullptr, &secure_bytes);
  ASSERT_TRUE(sec.ok()) << sec.status().to_string() << secure_progress.str();
  EXPECT_NE(secure_progress.str().find("secure aggregation: threshold 3, 4 neighbours"), std::string::npos)
      << secure_progress.str();

  auto h = history();
  EXPECT_EQ(h["secure_aggregation"]["threshold"], 3);
  EXPECT_EQ(h["secure_aggregation"]["modulus_bits"], 32);
  for (const auto& r : h["rounds"]) EXPECT_EQ(r["pods_answered"], 5);

  const auto a = coordinator::load_parameters(plain->model_path);
  const auto b = coordinator::load_parameters(sec->model_path);
  double worst = 0;
  for (const auto& [name, t] : a) worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  // One round's decoded average is within ~1e-7 of FedAvg's (average_error_bound:
  // 5 pods, clip 10, 24 fraction bits); three rounds of training keep the models
  // within 1e-4 of each other, where float32 summation order alone moves them 1e-7.
  EXPECT_LT(worst, 1e-4);
  EXPECT_NEAR(sec->test_accuracy, plain->test_accuracy, 0.01);
  // Each masked update is numParameters + 1 int32s: the same bytes as the plain
  // float32 parameters, plus 4 per pod and round.
  EXPECT_DOUBLE_EQ(secure_bytes, plain_bytes + 4.0 * 5 * spec_.rounds);
}

// Round 2: pod-b is killed after it shared its keys but before it sent its masked
// update; pod-d after it sent its masked update, before it revealed its shares. The
// other pods rebuild pod-b's mask key and pod-d's self-mask seed: the round
// aggregates pod-a, c, d and e, and the job goes on with three pods.
TEST_F(SecureAggregationTest, OneDropBeforeMaskingAndOneAfterStillAggregate) {
  ASSERT_NO_FATAL_FAILURE(start_pods());
  secure();
  spec_.min_pods = 3;
  std::vector<std::string> steps;
  auto observer = [&](int round, const std::string& step, const std::vector<uint32_t>& ids) {
    steps.push_back(std::to_string(round) + ":" + step + ":" + std::to_string(ids.size()));
    if (round == 2 && step == "share") procs_["pod-b"]->kill(SIGKILL);
    if (round == 2 && step == "mask") procs_["pod-d"]->kill(SIGKILL);
  };
  std::ostringstream progress;
  auto r = run("dropouts", progress, observer);
  ASSERT_TRUE(r.ok()) << r.status().to_string() << progress.str();
  // Round 2: five shared; four sent masked updates (not pod-b); three revealed (not pod-d).
  EXPECT_NE(std::find(steps.begin(), steps.end(), "2:share:5"), steps.end());
  EXPECT_NE(std::find(steps.begin(), steps.end(), "2:mask:4"), steps.end());
  EXPECT_NE(std::find(steps.begin(), steps.end(), "2:unmask:3"), steps.end());
  auto h = history();
  const auto& r2 = h["rounds"][1];
  EXPECT_EQ(r2["pods_answered"], 4);
  EXPECT_NE(r2["pods"]["pod-b"]["outcome"], "ok");
  EXPECT_EQ(r2["pods"]["pod-d"]["outcome"], "ok");  // its update is in the sum
  EXPECT_EQ(h["rounds"][2]["pods_answered"], 3);
  EXPECT_EQ(h["status"], "completed");
  // The masks came off: parameters left masked decode to values up to 2^7 and the
  // validation loss would explode; it keeps falling instead.
  const double l1 = h["rounds"][0]["eval"]["loss"], l2 = r2["eval"]["loss"], l3 = h["rounds"][2]["eval"]["loss"];
  EXPECT_LT(l2, l1);
  EXPECT_LT(l3, l2);
}

// A straggler in round 2: pod-c is stopped (SIGSTOP, heartbeats off) before it trains,
// past round_timeout. Training ends at the deadline without it, and the steps after
// it (share, mask, unmask) each have their own round_timeout: the round aggregates the
// other four, as a plain round would. With one deadline for all four steps the
// straggler left the others no time after training: the round failed and the job
// with it. pod-c is woken during round 2 and trains again in round 3 (woken, it first
// answers the round-1 requests that waited for it; a round-3 train that comes while it
// still evaluates is refused as busy and asked again).
TEST_F(SecureAggregationTest, AStragglerPastTheDeadlineLeavesTheOthersTimeToAggregate) {
  ASSERT_NO_FATAL_FAILURE(start_pods());
  secure();
  spec_.min_pods = 3;
  spec_.heartbeat_timeout = std::chrono::milliseconds(0);  // off: only the deadline ends its wait
  spec_.round_timeout = 6s;
  std::vector<std::string> steps;
  auto observer = [&](int round, const std::string& step, const std::vector<uint32_t>& ids) {
    steps.push_back(std::to_string(round) + ":" + step + ":" + std::to_string(ids.size()));
    if (round == 1 && step == "unmask") procs_["pod-c"]->kill(SIGSTOP);
    if (round == 2 && step == "share") procs_["pod-c"]->kill(SIGCONT);
  };
  std::ostringstream progress;
  auto r = run("straggler", progress, observer);
  procs_["pod-c"]->kill(SIGCONT);  // whatever happened
  ASSERT_TRUE(r.ok()) << r.status().to_string() << progress.str();
  EXPECT_NE(std::find(steps.begin(), steps.end(), "2:advertise:4"), steps.end());
  EXPECT_NE(std::find(steps.begin(), steps.end(), "2:unmask:4"), steps.end());
  auto h = history();
  EXPECT_EQ(h["status"], "completed");
  const auto& r2 = h["rounds"][1];
  EXPECT_EQ(r2["pods_answered"], 4);
  EXPECT_EQ(r2["pods"]["pod-c"]["outcome"], "timeout");
  EXPECT_EQ(h["rounds"][2]["pods_answered"], 5);
  testing::record_fault("pods", "straggler under secure aggregation: pod stopped (SIGSTOP) past round_timeout before "
                        "training, heartbeats off", 1,
                        "training ended at the deadline without it; share, mask and unmask ran on their own "
                        "deadlines; the round aggregated the other 4; the pod trained again in round 3",
                        "the straggler's update for that round");
}

// Three of five pods gone before masking: two survivors, below the threshold 3. The
// round fails, and the survivors are never asked to reveal anything.
TEST_F(SecureAggregationTest, TwoSurvivorsFailTheRoundAndNothingIsUnmasked) {
  ASSERT_NO_FATAL_FAILURE(start_pods());
  secure();
  spec_.min_pods = 2;
  std::vector<std::string> steps;
  auto observer = [&](int round, const std::string& step, const std::vector<uint32_t>& ids) {
    steps.push_back(step);
    if (round == 1 && step == "share") {
      for (const char* p : {"pod-a", "pod-c", "pod-e"}) procs_[p]->kill(SIGKILL);
    }
  };
  std::ostringstream progress;
  auto r = run("too-few", progress, observer);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("fewer than the threshold 3"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("nothing is unmasked"), std::string::npos) << r.status().message();
  EXPECT_EQ(std::find(steps.begin(), steps.end(), "unmask"), steps.end());
  for (const char* p : {"pod-b", "pod-d"}) {
    const std::string log = testing::read_file((dir_.path() / (std::string(p) + ".log")).string());
    EXPECT_EQ(log.find("secagg_unmask"), std::string::npos) << log;
  }
  auto h = history();
  EXPECT_EQ(h["rounds"][0]["pods"]["pod-b"]["outcome"], "secagg_failed");
}

// pod.yaml secure_aggregation: required refuses a plain job, and min_threshold a job
// whose threshold is lower; each refusal names the reason and is in the audit log.
TEST_F(SecureAggregationTest, APodThatRequiresItRefusesJobsWithoutIt) {
  ASSERT_NO_FATAL_FAILURE(start_pods({{"pod-a", "secure_aggregation: required\n"},
                                      {"pod-c", "secure_aggregation: {required: true, min_threshold: 4}\n"}}));
  spec_.min_pods = 3;
  spec_.rounds = 1;
  std::ostringstream plain_progress;
  auto plain = run("plain-refused", plain_progress);
  ASSERT_TRUE(plain.ok()) << plain.status().to_string() << plain_progress.str();
  auto h = history();
  EXPECT_EQ(h["pods"]["pod-a"]["outcome"], "refused");
  EXPECT_NE(h["pods"]["pod-a"]["error"].get<std::string>().find("requires secure aggregation"), std::string::npos);
  EXPECT_EQ(h["pods"]["pod-c"]["outcome"], "refused");
  EXPECT_EQ(h["pods"]["pod-b"]["outcome"], "ok");

  secure(3, 4);
  std::ostringstream low_progress;
  auto low = run("threshold-refused", low_progress);
  ASSERT_TRUE(low.ok()) << low.status().to_string() << low_progress.str();
  h = history();
  EXPECT_EQ(h["pods"]["pod-a"]["outcome"], "ok");
  EXPECT_EQ(h["pods"]["pod-c"]["outcome"], "refused");
  EXPECT_NE(h["pods"]["pod-c"]["error"].get<std::string>().find("threshold of at least 4"), std::string::npos);

  const std::string audit_a = testing::read_file(id_.audit_log("pod-a"));
  EXPECT_NE(audit_a.find("secure_aggregation_required"), std::string::npos) << audit_a;
  const std::string audit_c = testing::read_file(id_.audit_log("pod-c"));
  EXPECT_NE(audit_c.find("secure_aggregation_threshold"), std::string::npos) << audit_c;
}

}  // namespace
}  // namespace fedpod
