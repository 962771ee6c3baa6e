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
#include <set>
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
// Updates folded in pod order: the same float32 sums on every run. 1500 steps make a
// round last a few hundred milliseconds (one epoch of the digits share takes about 10
// ms with OpenBLAS): long enough that a test stopping the job after round N's
// checkpoint lands before the job's end.
const std::string kJob =
    "rounds: " + std::to_string(kRounds) + "\nround_timeout: 60s\naggregation_order: pod\nlocal_steps: 1500\n";

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

// Waits until `ckpt` holds round `round` or later, or `c` ended; true if it does.
bool wait_for_checkpoint(testing::Process& c, const std::string& ckpt, int round) {
  const auto by = std::chrono::steady_clock::now() + 120s;
  while (std::chrono::steady_clock::now() < by && c.running()) {
    auto saved = coordinator::read_checkpoint(ckpt);
    if (saved.ok() && saved->round >= round) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

// Seconds until `log` holds `count` lines with `word`, polled every millisecond; -1
// when `p` ended or `limit` passed first.
double seconds_until(const std::string& log, const std::string& word, int count, testing::Process& p,
                     std::chrono::seconds limit) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < limit) {
    const std::string text = testing::read_file(log);
    int n = 0;
    for (auto at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
    if (n >= count) return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!p.running()) return -1;
    std::this_thread::sleep_for(1ms);
  }
  return -1;
}

// Ctrl-C mid-job: the coordinator tells the pods to end the job, writes history.json
// as "stopped" and exits 130. The pods take another job at once: their
// job_idle_timeout is 10 minutes, so a pod still holding the stopped job would refuse
// it as busy. `--resume` then ends with exactly the uninterrupted run's parameters.
TEST_F(CoordinatorResumeTest, SigintStopsTheJobFreesThePodsAndResumeEndsBitIdentical) {
  const std::string reference = job_file("reference", kJob);
  ASSERT_EQ(run(reference, false, out("reference.log")), 0) << testing::read_file(out("reference.log"));

  const std::string job = job_file("stopped", kJob);
  const std::string ckpt = out("stopped") + "/checkpoint.bin";
  const std::string log = out("stopped-0.log");
  std::chrono::steady_clock::time_point stopped_at;
  {
    testing::Process c(testing::coordinator_argv(job), log);
    ASSERT_TRUE(wait_for_checkpoint(c, ckpt, 2)) << testing::read_file(log);
    std::this_thread::sleep_for(30ms);  // into round 3's training
    c.kill(SIGINT);
    const int status = c.wait(60s);
    stopped_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(WIFEXITED(status)) << testing::read_file(log);
    EXPECT_EQ(WEXITSTATUS(status), 130) << testing::read_file(log);
  }
  const std::string console = testing::read_file(log);
  EXPECT_CONTAINS(console, "stopping the job");
  EXPECT_CONTAINS(console, "stopped (SIGINT) after round");
  EXPECT_CONTAINS(console, "to continue it: fedpod coordinator run " + job + " --resume");
  auto history = testing::read_history(out("stopped"));
  EXPECT_EQ(history["status"], "stopped");
  EXPECT_EQ(history["stopped"]["signal"], "SIGINT");
  const int after = history["stopped"]["after_round"].get<int>();
  EXPECT_GE(after, 2);
  EXPECT_LT(after, kRounds);
  EXPECT_EQ(history["rounds"].size(), static_cast<size_t>(after));  // the round cut short is not recorded
  auto saved = coordinator::read_checkpoint(ckpt);
  ASSERT_TRUE(saved.ok()) << saved.status().to_string();
  EXPECT_EQ(saved->round, after);

  // Another job on the same pods, started right away, is accepted by both.
  const std::string other = dir_.write(
      "other.yaml", testing::digits_job_yaml(id_, {&pod_a_, &pod_b_}, out("other"), "rounds: 1\n", "other-job"));
  testing::Process o(testing::coordinator_argv(other), out("other.log"));
  const double accepted = seconds_until(out("other.log"), ": accepted", 2, o, 60s);
  const double since_stop =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  const int other_status = o.wait(120s);
  ASSERT_TRUE(WIFEXITED(other_status) && WEXITSTATUS(other_status) == 0) << testing::read_file(out("other.log"));
  EXPECT_GT(accepted, 0) << testing::read_file(out("other.log"));
  EXPECT_EQ(testing::read_history(out("other"))["status"], "completed");
  std::cout << "[ timing  ] both pods accepted a new job " << accepted << " s after its coordinator started, "
            << since_stop << " s after the stopped coordinator exited\n";

  // --resume continues from the checkpoint of the last completed round, bit for bit.
  ASSERT_EQ(run(job, true, out("stopped-1.log")), 0) << testing::read_file(out("stopped-1.log"));
  EXPECT_CONTAINS(testing::read_file(out("stopped-1.log")), "resumed job fault-test after round " + std::to_string(after));
  EXPECT_TRUE(testing::same_parameters(out("reference") + "/model.pt", out("stopped") + "/model.pt"));
  history = testing::read_history(out("stopped"));
  EXPECT_EQ(history["status"], "completed");
  ASSERT_EQ(history["rounds"].size(), static_cast<size_t>(kRounds));
  for (int r = 0; r < kRounds; ++r) EXPECT_EQ(history["rounds"][r]["round"], r + 1);
  testing::record_fault("coordinator", "SIGINT to the coordinator mid-round", 1,
                        "pods told to end the job (a new job accepted at once); history \"stopped\"; exit 130; "
                        "`--resume` gave the uninterrupted parameters",
                        "nothing (the round cut short was redone)");
}

// A coordinator that died leaves its job on the pods: a new job is refused as busy,
// with whose job it is and since when; `fedpod job stop` (the job's own key) ends it,
// and a modeller with another key cannot.
TEST_F(CoordinatorResumeTest, JobStopEndsTheJobOfADeadCoordinatorOnItsPods) {
  const std::string job = job_file("dead", kJob);
  const std::string ckpt = out("dead") + "/checkpoint.bin";
  {
    testing::Process c(testing::coordinator_argv(job), out("dead-0.log"));
    ASSERT_TRUE(wait_for_checkpoint(c, ckpt, 1)) << testing::read_file(out("dead-0.log"));
    // history.json follows the checkpoint (written by the same writer, after it).
    const auto by = std::chrono::steady_clock::now() + 60s;
    while (testing::read_history(out("dead")).is_discarded() && std::chrono::steady_clock::now() < by) {
      std::this_thread::sleep_for(2ms);
    }
    c.kill(SIGKILL);
    c.wait(10s);
  }
  EXPECT_EQ(testing::read_history(out("dead"))["status"], "running");
  const std::string other = dir_.write(
      "other.yaml", testing::digits_job_yaml(id_, {&pod_a_, &pod_b_}, out("other"), "rounds: 1\n", "other-job"));
  {
    testing::Process o(testing::coordinator_argv(other), out("other-0.log"));
    const int status = o.wait(120s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << testing::read_file(out("other-0.log"));
  }
  const std::string refused = testing::read_file(out("other-0.log"));
  EXPECT_CONTAINS(refused, "is running job 'fault-test' of user 'tester' since ");
  EXPECT_CONTAINS(refused, "fedpod job stop");

  // A key the pods do not know cannot end it: the pods refuse its handshake.
  const std::string mallory_keys = out("mallory");
  ASSERT_TRUE(protocol::write_key_files(mallory_keys, protocol::generate_curve_keypair(), true).ok());
  std::string mallory_job = testing::read_file(job);
  mallory_job.replace(mallory_job.find(id_.modeller_key_file), id_.modeller_key_file.size(), mallory_keys + ".key");
  mallory_job += "connect_timeout: 3s\n";
  const std::string mallory = dir_.write("mallory.yaml", mallory_job);
  {
    testing::Process s({testing::fedpod_bin(), "job", "stop", mallory}, out("stop-mallory.log"));
    const int status = s.wait(60s);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << testing::read_file(out("stop-mallory.log"));
  }
  EXPECT_EQ(testing::read_file(out("stop-mallory.log")).find("ended job"), std::string::npos)
      << testing::read_file(out("stop-mallory.log"));

  {
    testing::Process s({testing::fedpod_bin(), "job", "stop", job}, out("stop-0.log"));
    const int status = s.wait(60s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(out("stop-0.log"));
  }
  const std::string stop_log = testing::read_file(out("stop-0.log"));
  EXPECT_CONTAINS(stop_log, "pod-a: ended job fault-test");
  EXPECT_CONTAINS(stop_log, "pod-b: ended job fault-test");
  EXPECT_EQ(testing::read_history(out("dead"))["status"], "stopped");

  {
    testing::Process o(testing::coordinator_argv(other), out("other-1.log"));
    const int status = o.wait(120s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(out("other-1.log"));
  }
  // Nothing left to stop: said, and not an error.
  {
    testing::Process s({testing::fedpod_bin(), "job", "stop", job}, out("stop-1.log"));
    const int status = s.wait(60s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(out("stop-1.log"));
  }
  EXPECT_CONTAINS(testing::read_file(out("stop-1.log")), "pod-a: does not hold job fault-test (nothing to stop)");
  testing::record_fault("coordinator", "coordinator SIGKILLed; its job left on the pods", 1,
                        "a new job refused as busy naming the job, its owner and since when; `fedpod job stop` "
                        "with the job's key ended it (another user's key refused); the new job then ran",
                        "the killed run's round in progress");
}

// A server optimizer's moments and client sampling carry through a stop and
// `--resume`: FedAdam with one of the two pods sampled per round ends with the
// uninterrupted run's parameters, and each round sampled the same pod in both runs.
TEST_F(CoordinatorResumeTest, FedAdamWithClientSamplingResumesBitIdentical) {
  const std::string extra = kJob + "min_pods: 1\nsample: {count: 1}\nstrategy: {name: fedadam, server_lr: 0.05}\n";
  const std::string reference = job_file("reference", extra);
  ASSERT_EQ(run(reference, false, out("reference.log")), 0) << testing::read_file(out("reference.log"));
  const auto ref = testing::read_history(out("reference"));
  std::set<std::string> sampled;
  for (const auto& r : ref["rounds"]) {
    ASSERT_EQ(r["sampled"].size(), 1u) << r.dump();
    ASSERT_EQ(r["pods"].size(), 1u) << r.dump();  // only the sampled pod trained
    sampled.insert(r["sampled"][0].get<std::string>());
  }
  EXPECT_EQ(sampled.size(), 2u) << "over 8 rounds both pods should have been sampled";
  EXPECT_EQ(ref["strategy"], "fedadam");
  EXPECT_EQ(ref["strategy_options"]["server_lr"], 0.05);

  const std::string job = job_file("stopped", extra);
  {
    testing::Process c(testing::coordinator_argv(job), out("stopped-0.log"));
    ASSERT_TRUE(wait_for_checkpoint(c, out("stopped") + "/checkpoint.bin", 3)) << testing::read_file(out("stopped-0.log"));
    c.kill(SIGINT);
    const int status = c.wait(60s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 130) << testing::read_file(out("stopped-0.log"));
  }
  ASSERT_EQ(run(job, true, out("stopped-1.log")), 0) << testing::read_file(out("stopped-1.log"));
  EXPECT_TRUE(testing::same_parameters(out("reference") + "/model.pt", out("stopped") + "/model.pt"));
  const auto resumed = testing::read_history(out("stopped"));
  ASSERT_EQ(resumed["rounds"].size(), static_cast<size_t>(kRounds));
  for (int r = 0; r < kRounds; ++r) EXPECT_EQ(resumed["rounds"][r]["sampled"], ref["rounds"][r]["sampled"]) << r;

  // Another strategy, or other options, is another job: the checkpoint is refused.
  std::string other = testing::read_file(job);
  other.replace(other.find("server_lr: 0.05"), 15, "server_lr: 0.07");
  const std::string changed = dir_.write("changed.yaml", other);
  EXPECT_EQ(WEXITSTATUS(run(changed, true, out("changed.log"))), 2) << testing::read_file(out("changed.log"));
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
