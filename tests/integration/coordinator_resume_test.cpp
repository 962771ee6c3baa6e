// Coordinator checkpoint and --resume: a job whose `fedpod coordinator run` is killed
// with SIGKILL at random points, and resumed each time, ends with exactly the
// parameters of an uninterrupted run (fixed seed, deterministic local training, two
// real `fedpod worker` pods over CURVE on loopback, updates folded in pod order). Also: a job stopped because too
// few pods answered keeps its checkpoint and resumes once the pod is back; a
// checkpoint that does not belong to the job, or is damaged, is refused with the
// reason and left as it is.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <random>
#include <thread>

#include "fault_jobs.h"
#include "fedpod/coordinator/checkpoint.h"
#include "identity.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class CoordinatorResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pod_a_ = testing::start_digits_pod(dir_, id_, "pod-a");
    pod_b_ = testing::start_digits_pod(dir_, id_, "pod-b");
    ASSERT_FALSE(pod_a_.endpoint.empty()) << testing::read_file(pod_a_.log);
    ASSERT_FALSE(pod_b_.endpoint.empty()) << testing::read_file(pod_b_.log);
  }

  std::string out(const std::string& name) const { return (dir_.path() / name).string(); }

  std::string job_file(const std::string& name, const std::string& extra, bool batch_norm = false) {
    std::string yaml = testing::digits_job_yaml(id_, {&pod_a_, &pod_b_}, out(name), extra);
    if (batch_norm) yaml.replace(yaml.find("momentum: 0.9}"), 14, "momentum: 0.9, batch_norm: true}");
    return dir_.write(name + ".yaml", yaml);
  }

  // Runs the coordinator to the end; returns its exit status.
  int run(const std::string& job, bool resume, const std::string& log) {
    testing::Process c(testing::coordinator_argv(job, resume), log);
    return c.wait(240s);
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  testing::PodProcess pod_a_, pod_b_;
};

constexpr int kRounds = 8;
// Updates folded in pod order: the same float32 sums on every run.
const std::string kJob = "rounds: " + std::to_string(kRounds) + "\nround_timeout: 60s\naggregation_order: pod\n";

// With batch norm: the running statistics and num_batches_tracked are part of the
// checkpoint and of what pods load, so they resume bit for bit too.
TEST_F(CoordinatorResumeTest, KilledAtRandomPointsAndResumedEndsWithTheUninterruptedParameters) {
  // The reference: the same job, never interrupted.
  const std::string reference = job_file("reference", kJob, /*batch_norm=*/true);
  ASSERT_EQ(run(reference, false, out("reference.log")), 0) << testing::read_file(out("reference.log"));
  const auto ref_history = testing::read_history(out("reference"));

  // The interrupted run: each run is killed once it has checkpointed 0-2 more rounds
  // (0: during start-up) plus a random part of a round, so the kills land during
  // start-up, local training, uploads, aggregation and checkpoint writes; then the
  // job is resumed, until a run finishes on its own. Fixed seed.
  const std::string job = job_file("interrupted", kJob, /*batch_norm=*/true);
  const std::string ckpt = out("interrupted") + "/checkpoint.bin";
  double round_seconds = 0;
  for (const auto& r : ref_history["rounds"]) round_seconds += r["seconds"].get<double>() / kRounds;
  std::mt19937 rng(20261129);
  std::uniform_int_distribution<int> advance(0, 2);
  std::uniform_int_distribution<int> extra_ms(0, std::max(20, static_cast<int>(1500 * round_seconds)));
  auto checkpoint_round = [&] {
    auto saved = coordinator::read_checkpoint(ckpt);
    return saved.ok() ? saved->round : 0;
  };
  int kills = 0, runs = 0;
  std::vector<int> rounds_at_kill;
  bool finished = false;
  while (!finished && runs < 40) {
    const bool resume = fs::exists(ckpt);
    const std::string log = out("interrupted-" + std::to_string(runs++) + ".log");
    testing::Process c(testing::coordinator_argv(job, resume), log);
    if (kills < 6) {
      const int target = std::min(kRounds - 1, checkpoint_round() + advance(rng));
      const int extra = extra_ms(rng);
      const auto by = std::chrono::steady_clock::now() + 120s;
      while (c.running() && checkpoint_round() < target && std::chrono::steady_clock::now() < by) {
        std::this_thread::sleep_for(1ms);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(extra));
      if (c.running()) {
        c.kill(SIGKILL);
        c.wait(10s);
        ++kills;
        rounds_at_kill.push_back(checkpoint_round());
        continue;
      }
    }
    const int status = c.wait(240s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(log);
    finished = true;
  }
  ASSERT_TRUE(finished);
  ASSERT_GE(kills, 3) << "the job ran too fast for the kills to land";
  // Some kills must land mid-job (a checkpoint written), not all during start-up.
  EXPECT_GE(std::count_if(rounds_at_kill.begin(), rounds_at_kill.end(), [](int r) { return r > 0; }), 2);

  // Bit for bit the same global model, and a history of every round exactly once.
  EXPECT_TRUE(testing::same_parameters(out("reference") + "/model.pt", out("interrupted") + "/model.pt"));
  const auto final_state = coordinator::load_parameters(out("interrupted") + "/model.pt");
  ASSERT_TRUE(final_state.count("1.running_var"));
  ASSERT_TRUE(final_state.count("1.num_batches_tracked"));
  EXPECT_GT(final_state.at("1.num_batches_tracked").item<int64_t>(), 0);
  const auto history = testing::read_history(out("interrupted"));
  EXPECT_EQ(history["status"], "completed");
  ASSERT_EQ(history["rounds"].size(), static_cast<size_t>(kRounds));
  for (int r = 0; r < kRounds; ++r) EXPECT_EQ(history["rounds"][r]["round"], r + 1);
  EXPECT_EQ(history["test"]["accuracy"], ref_history["test"]["accuracy"]);
  // Each resume that found a checkpoint is recorded with the round it continued after.
  int resumes_expected = 0;
  for (int r : rounds_at_kill) resumes_expected += r > 0 ? 1 : 0;
  EXPECT_GE(history["resumed"].size(), static_cast<size_t>(std::min(resumes_expected, 1)));
  std::string where;
  for (int r : rounds_at_kill) where += (where.empty() ? "" : ", ") + std::to_string(r);
  testing::record_fault("coordinator", "coordinator SIGKILLed at random points (checkpoint at rounds " + where +
                                           "), then `--resume`",
                        kills, "final parameters bit-identical to an uninterrupted run; every round in history once",
                        "nothing (the round in progress at each kill was redone)");
}

TEST_F(CoordinatorResumeTest, TooFewPodsStopsTheJobWithItsCheckpointIntactAndResumeFinishesIt) {
  const std::string reference = job_file("reference", kJob);
  ASSERT_EQ(run(reference, false, out("reference.log")), 0) << testing::read_file(out("reference.log"));

  // pod-b dies for good after round 3 has been checkpointed: round 4 cannot reach
  // min_pods (2), so the job stops naming pod-b, and keeps round 3's checkpoint.
  const std::string job = job_file("stopped", kJob + "heartbeat_interval: 200ms\nheartbeat_timeout: 2s\n");
  const std::string ckpt = out("stopped") + "/checkpoint.bin";
  {
    testing::Process c(testing::coordinator_argv(job), out("stopped-0.log"));
    const auto by = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < by && c.running()) {
      auto saved = coordinator::read_checkpoint(ckpt);
      if (saved.ok() && saved->round >= 3) break;
      std::this_thread::sleep_for(5ms);
    }
    pod_b_.process->kill(SIGKILL);
    pod_b_.process->wait(10s);
    const int status = c.wait(120s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << testing::read_file(out("stopped-0.log"));
  }
  const std::string log = testing::read_file(out("stopped-0.log"));
  EXPECT_CONTAINS(log, "min_pods is 2");
  EXPECT_CONTAINS(log, "pod-b");
  EXPECT_CONTAINS(log, "--resume");
  auto history = testing::read_history(out("stopped"));
  EXPECT_EQ(history["status"], "failed");
  auto saved = coordinator::read_checkpoint(ckpt);
  ASSERT_TRUE(saved.ok()) << saved.status().to_string();
  const int stopped_after = saved->round;
  EXPECT_GE(stopped_after, 3);
  EXPECT_LT(stopped_after, kRounds);

  // pod-b is back: the resumed job finishes with the uninterrupted parameters.
  testing::restart_pod(dir_, pod_b_);
  ASSERT_EQ(run(job, true, out("stopped-1.log")), 0) << testing::read_file(out("stopped-1.log"));
  EXPECT_CONTAINS(testing::read_file(out("stopped-1.log")),
                  "resumed job fault-test after round " + std::to_string(stopped_after));
  EXPECT_TRUE(testing::same_parameters(out("reference") + "/model.pt", out("stopped") + "/model.pt"));
  history = testing::read_history(out("stopped"));
  EXPECT_EQ(history["status"], "completed");
  EXPECT_EQ(history["rounds"].size(), static_cast<size_t>(kRounds));
  testing::record_fault("coordinator", "fewer than min_pods pods answer a round (a pod killed for good)", 1,
                        "job stopped naming the pod; checkpoint of the last completed round intact; `--resume` "
                        "after the pod returned gave the uninterrupted parameters",
                        "nothing");
}

TEST_F(CoordinatorResumeTest, ACheckpointOfAnotherJobOrADamagedOneIsRefusedAndLeftAlone) {
  const std::string job = job_file("job", "rounds: 2\naggregation_order: pod\n");
  ASSERT_EQ(run(job, false, out("job-0.log")), 0) << testing::read_file(out("job-0.log"));
  const std::string ckpt = out("job") + "/checkpoint.bin";
  const std::string original = testing::read_file(ckpt);
  ASSERT_FALSE(original.empty());

  // --resume without a checkpoint says so; nothing is started, so it is a usage error (2).
  const std::string fresh = job_file("fresh", "rounds: 2\n");
  EXPECT_EQ(WEXITSTATUS(run(fresh, true, out("fresh.log"))), 2);
  EXPECT_CONTAINS(testing::read_file(out("fresh.log")), "no checkpoint at");

  // A different job: changed hyperparameters, named in the refusal.
  std::string changed = testing::digits_job_yaml(id_, {&pod_a_, &pod_b_}, out("job"), "rounds: 3\n");
  changed.replace(changed.find("lr: 0.1"), 7, "lr: 0.05");
  EXPECT_EQ(WEXITSTATUS(run(dir_.write("changed.yaml", changed), true, out("changed.log"))), 2);
  EXPECT_CONTAINS(testing::read_file(out("changed.log")), "model.hyperparameters.lr is 0.1 in the checkpoint, 0.05 now");
  EXPECT_EQ(testing::read_file(ckpt), original);

  // Damaged: one payload byte flipped, then the file cut short.
  std::string damaged = original;
  damaged[damaged.size() - 3] ^= 0x40;
  std::ofstream(ckpt, std::ios::binary | std::ios::trunc) << damaged;
  EXPECT_EQ(WEXITSTATUS(run(job, true, out("damaged.log"))), 2);
  EXPECT_CONTAINS(testing::read_file(out("damaged.log")), "do not match their sha256");
  std::ofstream(ckpt, std::ios::binary | std::ios::trunc) << original.substr(0, original.size() / 2);
  EXPECT_EQ(WEXITSTATUS(run(job, true, out("truncated.log"))), 2);
  EXPECT_CONTAINS(testing::read_file(out("truncated.log")), "truncated");

  // Restored, the finished job resumes for more rounds (rounds may grow).
  std::ofstream(ckpt, std::ios::binary | std::ios::trunc) << original;
  const std::string more = dir_.write("more.yaml", testing::digits_job_yaml(id_, {&pod_a_, &pod_b_}, out("job"), "rounds: 3\n"));
  ASSERT_EQ(run(more, true, out("more.log")), 0) << testing::read_file(out("more.log"));
  EXPECT_EQ(testing::read_history(out("job"))["rounds"].size(), 3u);
  testing::record_fault("coordinator", "--resume with a missing, foreign (changed job) or damaged checkpoint", 4,
                        "refused with the reason; the checkpoint left untouched", "nothing");
}

}  // namespace
}  // namespace fedpod
