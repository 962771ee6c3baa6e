// Differential privacy enforced by real `fedpod worker` pods on the digits shares:
// DP-SGD jobs are accounted against each pod's budget before they start, a job the
// budget cannot pay for is refused, a pod killed mid-job restarts still charged for
// that job's whole plan, and the privacy limits refuse jobs that ask too little of
// the data. `fedpod privacy status` reads the ledgers as the pod owner would.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "digits_job.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/privacy/accountant.h"
#include "fedpod/privacy/dp_sgd.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

class DifferentialPrivacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_ = testing::digits_job_spec("dp-test", (dir_.path() / "out").string(), id_.modeller_key_file);
    spec_.rounds = 2;
    spec_.batch_size = 32;
    spec_.local_epochs = 1;
    spec_.heartbeat_interval = 1s;
    spec_.heartbeat_timeout = 4s;
    spec_.differential_privacy.noise_multiplier = 1.0;
    spec_.differential_privacy.max_grad_norm = 1.0;
  }

  void TearDown() override {
    if (!HasFailure()) return;
    for (const auto& [name, p] : pods_) {
      const std::string log = testing::read_file(p.log);
      std::cerr << "---- " << name << ".log (last 3000 bytes)\n" << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
    }
  }

  // The rows of a digits share's training split (the job's default split).
  static int64_t train_rows(const std::string& pod) {
    std::ifstream in(testing::source_dir() + "/examples/digits/" + pod + ".csv");
    std::string line;
    int64_t n = -1;  // the header
    while (std::getline(in, line)) n += !line.empty();
    const data::SplitSpec sp;
    return n - static_cast<int64_t>(std::floor(sp.test * n)) - static_cast<int64_t>(std::floor(sp.validation * n));
  }

  // The ε a job of `rounds` rounds of spec_'s shape spends on `pod`.
  double job_epsilon(const std::string& pod, int64_t rounds) {
    const int64_t n = train_rows(pod);
    const double q = static_cast<double>(spec_.batch_size) / static_cast<double>(n);
    const int64_t steps = rounds * privacy::steps_per_round(spec_.local_epochs, spec_.local_steps, spec_.batch_size, n);
    return privacy::dp_sgd_epsilon(q, spec_.differential_privacy.noise_multiplier, steps, 1e-5).epsilon;
  }

  std::string ledger(const std::string& pod) { return (dir_.path() / (pod + ".privacy.json")).string(); }

  std::string dp_yaml(const std::string& pod, double cap, const std::string& more = "") {
    return "privacy:\n" + more + "  differential_privacy: {epsilon: " + std::to_string(cap) +
           ", delta: 1e-5, ledger: " + ledger(pod) + "}\n";
  }

  void start_pod(const std::string& name, const std::string& extra_yaml) {
    if (auto it = pods_.find(name); it != pods_.end() && it->second.process) {  // one process per pod and audit log
      it->second.process->kill(SIGTERM);
      it->second.process->wait(20s);
    }
    auto pod = testing::start_digits_pod(dir_, id_, name, "general-modeller", extra_yaml,
                                         name + "." + std::to_string(starts_++) + ".log");
    ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
    spec_.pods.erase(std::remove_if(spec_.pods.begin(), spec_.pods.end(), [&](auto& p) { return p.name == name; }),
                     spec_.pods.end());
    testing::add_pod(spec_, pod);
    pods_[name] = std::move(pod);
  }

  StatusOr<coordinator::RunResult> run(const std::string& job_id, std::ostringstream& progress) {
    spec_.job_id = job_id;
    spec_.output_dir = (dir_.path() / ("out-" + job_id)).string();
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
    return c.run();
  }

  // `fedpod privacy status POD.yaml --json`, as the pod owner runs it.
  nlohmann::json privacy_status(const std::string& pod) {
    const std::string out = (dir_.path() / (pod + ".status.json")).string();
    testing::Process p({testing::fedpod_bin(), "privacy", "status", (dir_.path() / (pod + ".yaml")).string(), "--json"},
                       out);
    EXPECT_EQ(p.wait(30s), 0) << testing::read_file(out);
    return nlohmann::json::parse(testing::read_file(out));
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  coordinator::JobSpec spec_;
  std::map<std::string, testing::PodProcess> pods_;
  int starts_ = 0;
};

// Two pods with a budget between one job's ε and two jobs': the first job trains with
// DP-SGD and records each pod's ε in history.json; the second is refused by both.
TEST_F(DifferentialPrivacyTest, TheSecondJobIsRefusedOnceTheBudgetIsSpent) {
  std::map<std::string, double> one;
  for (const std::string name : {"pod-a", "pod-b"}) {
    one[name] = job_epsilon(name, 2);
    const double cap = (one[name] + job_epsilon(name, 4)) / 2;
    ASSERT_NO_FATAL_FAILURE(start_pod(name, dp_yaml(name, cap)));
  }
  std::ostringstream progress;
  auto first = run("dp-first", progress);
  ASSERT_TRUE(first.ok()) << first.status().to_string() << progress.str();
  EXPECT_NE(progress.str().find("privacy  pod-a ε"), std::string::npos) << progress.str();
  EXPECT_EQ(progress.str().find("train_loss"), std::string::npos) << progress.str();
  auto h = nlohmann::json::parse(testing::read_file(first->history_path));
  ASSERT_TRUE(h.contains("differential_privacy")) << h.dump(2);
  EXPECT_EQ(h["differential_privacy"]["noise_multiplier"], 1.0);
  for (const auto& [name, eps] : one) {
    EXPECT_NEAR(h["differential_privacy"]["epsilon"][name]["epsilon"].get<double>(), eps, 1e-9) << name;
    EXPECT_NEAR(h["rounds"][0]["pods"][name]["epsilon"].get<double>(), job_epsilon(name, 1), 1e-9) << name;
    // The training rows' exact loss and accuracy stay on the pod: outside DP-SGD's noise.
    for (const auto& rec : h["rounds"]) {
      EXPECT_FALSE(rec["pods"][name].contains("train_loss")) << rec.dump();
      EXPECT_FALSE(rec["pods"][name].contains("train_accuracy")) << rec.dump();
      EXPECT_FALSE(rec.contains("train_loss")) << rec.dump();
    }
    // The owner's view: one settled job, charged for what it trained.
    auto s = privacy_status(name);
    ASSERT_EQ(s["jobs"].size(), 1u) << s.dump(2);
    EXPECT_EQ(s["jobs"][0]["state"], "settled");
    EXPECT_EQ(s["jobs"][0]["steps_done"], s["jobs"][0]["steps_planned"]);
    EXPECT_NEAR(s["epsilon_spent"].get<double>(), eps, 1e-9);
    const std::string audit = testing::read_file(id_.audit_log(name));
    EXPECT_NE(audit.find("\"privacy_reserved\""), std::string::npos);
    EXPECT_NE(audit.find("\"privacy_settled\""), std::string::npos);
  }
  std::ostringstream progress2;
  auto second = run("dp-second", progress2);
  ASSERT_FALSE(second.ok()) << progress2.str();
  EXPECT_NE(second.status().message().find("privacy.differential_privacy.epsilon"), std::string::npos)
      << second.status().to_string();
  EXPECT_NE(testing::read_file(id_.audit_log("pod-a")).find("privacy_budget"), std::string::npos);
  // Refused before a step: nothing more is charged.
  EXPECT_EQ(privacy_status("pod-a")["jobs"].size(), 1u);
}

// A pod SIGKILLed while it trains a DP job restarts charged for the job's whole plan
// (the ledger was written before its first step), so a job that would only fit if
// the killed one were forgotten is refused.
TEST_F(DifferentialPrivacyTest, APodKilledMidJobStillShowsTheJobsBudget) {
  // RDP composes sub-additively: the cap sits between the long job alone and the long
  // job plus two rounds, far above two rounds alone.
  const double planned = job_epsilon("pod-a", 400);
  const double cap = (planned + job_epsilon("pod-a", 402)) / 2;
  ASSERT_LT(job_epsilon("pod-a", 2), cap);
  const std::string yaml = dp_yaml("pod-a", cap);
  ASSERT_NO_FATAL_FAILURE(start_pod("pod-a", yaml));
  spec_.rounds = 400;
  spec_.min_pods = 1;
  std::ostringstream progress;
  std::thread job([&] { (void)run("dp-long", progress); });
  // Wait for the reservation and a trained round, then kill the pod.
  const std::string audit = id_.audit_log("pod-a");
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (testing::read_file(pods_["pod-a"].log).find("event=trained") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  pods_["pod-a"].process->kill(SIGKILL);
  pods_["pod-a"].process->wait(10s);
  job.join();
  auto s = privacy_status("pod-a");
  ASSERT_EQ(s["jobs"].size(), 1u) << s.dump(2);
  EXPECT_EQ(s["jobs"][0]["state"], "reserved");
  EXPECT_EQ(s["jobs"][0]["job"], "dp-long");
  EXPECT_NEAR(s["epsilon_spent"].get<double>(), planned, 1e-9);
  // Restarted: a 2-round job would fit a fresh budget, not this one.
  ASSERT_NO_FATAL_FAILURE(start_pod("pod-a", yaml));
  EXPECT_NE(testing::read_file(pods_["pod-a"].log).find("unsettled=1"), std::string::npos);
  spec_.rounds = 2;
  std::ostringstream progress2;
  auto refused = run("dp-after-crash", progress2);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("budget"), std::string::npos) << refused.status().to_string();
}

// The limits without DP: a pod that wants batches of 64 refuses a job of 32 at
// startJob, naming the setting, and one that caps local steps refuses a longer round.
TEST_F(DifferentialPrivacyTest, PrivacyLimitsRefuseJobsThatAskTooLittleOfTheData) {
  spec_.differential_privacy = {};
  ASSERT_NO_FATAL_FAILURE(start_pod("pod-a", "privacy: {min_batch_size: 64}\n"));
  std::ostringstream progress;
  auto r = run("small-batches", progress);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("privacy.min_batch_size"), std::string::npos) << r.status().to_string();
  spec_.batch_size = 64;
  ASSERT_NO_FATAL_FAILURE(start_pod("pod-a", "privacy: {min_batch_size: 64, max_local_steps: 5}\n"));
  auto r2 = run("long-rounds", progress);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.status().message().find("privacy.max_local_steps"), std::string::npos) << r2.status().to_string();
  spec_.local_epochs = 0;
  spec_.local_steps = 5;
  auto r3 = run("within-limits", progress);
  EXPECT_TRUE(r3.ok()) << r3.status().to_string() << progress.str();
}

}  // namespace
}  // namespace fedpod
