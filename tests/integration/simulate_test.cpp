// `fedpod simulate` end to end, as a user runs it: the digits set split among tens of
// virtual pods (real Workers on inproc:// endpoints, each with its key, signed policy
// and audit log, training on one shared pool), client sampling, the held-out test set
// scored at every evaluation, resume, FedProx's μ reaching the pods, and bad
// simulation files named.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "testutil.h"

namespace fedpod::testing {
namespace {
namespace fs = std::filesystem;

struct CliRun {
  int code = -1;
  std::string output;
};

CliRun fedpod(const std::string& args) {
  CliRun r;
  const std::string cmd = "timeout 240 " + fedpod_bin() + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

// A simulation of the digits set (1,797 rows of 8x8 images): `pods` virtual pods, the
// test set pod-c.csv held out (551 rows), `extra` YAML lines appended.
std::string sim_yaml(const TempDir& dir, const std::string& out, int pods, const std::string& partition,
                     const std::string& extra = "") {
  const std::string digits = source_dir() + "/examples/digits/";
  return "job_id: sim-digits\n"
         "model: {ref: mlp, hyperparameters: {hidden: [32], optimizer: sgd, lr: 0.1}}\n"
         "datastructure: {target: label, num_classes: 10, scale: 0.0625}\n"
         "rounds: 4\nlocal_epochs: 1\nbatch_size: 10\nseed: 3\naggregation_order: pod\n"
         "output_dir: " + (dir.path() / out).string() + "\n" + extra +
         "simulation:\n"
         "  pods: " + std::to_string(pods) + "\n"
         "  data: {format: csv, train: " + digits + "digits.csv, test: " + digits + "pod-c.csv}\n"
         "  partition: " + partition + "\n"
         "  threads: 2\n";
}

TEST(SimulateTest, FortyPodsOfLabelShardsSampleTenARoundAndScoreTheWholeTestSet) {
  TempDir dir;
  const std::string file = dir.write(
      "sim.yaml", sim_yaml(dir, "out", 40, "{method: shards, shards_per_pod: 2}",
                           "sample: {count: 10}\nmin_pods: 10\n"));
  const CliRun r = fedpod("simulate " + file);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("simulating 40 pods"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("split shards"), std::string::npos) << r.output;

  const auto history = read_json(dir.path() / "out" / "history.json");
  EXPECT_EQ(history["status"], "completed");
  ASSERT_EQ(history["rounds"].size(), 4u);
  std::set<std::string> trained;
  for (const auto& round : history["rounds"]) {
    ASSERT_EQ(round["sampled"].size(), 10u);
    EXPECT_EQ(round["pods_answered"], 10);
    for (const auto& p : round["sampled"]) trained.insert(p.get<std::string>());
    // Every evaluation scores all 551 held-out rows, spread over the 40 pods.
    EXPECT_EQ(round["eval"]["num_samples"], 551);
  }
  EXPECT_GT(trained.size(), 10u) << "the same pods were sampled every round";
  // Each virtual pod is a real Worker: it decided the job by its policy and logged it.
  for (int i : {1, 17, 40}) {
    char name[16];
    std::snprintf(name, sizeof name, "pod-%03d", i);
    const std::string log = read_file((dir.path() / "out" / "simulation" / (std::string(name) + ".audit.log")).string());
    EXPECT_NE(log.find("simulator"), std::string::npos) << name << ": " << log;
  }
  const auto summary = read_json(dir.path() / "out" / "simulation.json");
  EXPECT_EQ(summary["pods"], 40);
  EXPECT_EQ(summary["sampled_per_round"], 10);
  EXPECT_EQ(summary["partition"]["method"], "shards");
  EXPECT_EQ(summary["rounds"], 4);
  // The shared pool bounds what trains at once, whatever the number of pods.
  EXPECT_GE(summary["peak_concurrent_tasks"].get<int>(), 1);
  EXPECT_LE(summary["peak_concurrent_tasks"].get<int>(), 2);
  // Two digits per pod and 4 rounds: accuracy is low; it only has to be a real score.
  EXPECT_GE(summary["test_accuracy"].get<double>(), 0.0);
  EXPECT_LE(summary["test_accuracy"].get<double>(), 1.0);
  EXPECT_GT(summary["peak_rss_bytes"].get<double>(), 0);
}

TEST(SimulateTest, ResumeContinuesTheSameRunAndRefusesAnotherPartition) {
  TempDir dir;
  const std::string file = dir.write("sim.yaml", sim_yaml(dir, "out", 12, "iid"));
  CliRun first = fedpod("simulate " + file + " --rounds 2 -q");
  ASSERT_EQ(first.code, 0) << first.output;
  CliRun resumed = fedpod("simulate " + file + " --rounds 4 --resume -q");
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  const auto history = read_json(dir.path() / "out" / "history.json");
  ASSERT_EQ(history["rounds"].size(), 4u);
  EXPECT_EQ(history["rounds"][2]["round"], 3);

  // The same job over an uninterrupted run ends with the same test loss, bit for bit
  // (aggregation_order: pod, seeded training).
  const std::string straight = dir.write("straight.yaml", sim_yaml(dir, "straight", 12, "iid"));
  CliRun whole = fedpod("simulate " + straight + " -q");
  ASSERT_EQ(whole.code, 0) << whole.output;
  const auto straight_history = read_json(dir.path() / "straight" / "history.json");
  EXPECT_EQ(straight_history["test"]["loss"], history["test"]["loss"]);
  // 12 pods of iid digits learn in 4 rounds (chance is 10 %).
  EXPECT_GT(straight_history["test"]["accuracy"].get<double>(), 0.5);

  const std::string other = dir.write("other.yaml", sim_yaml(dir, "out", 12, "{method: dirichlet, alpha: 0.5}"));
  CliRun refused = fedpod("simulate " + other + " --rounds 5 --resume -q");
  EXPECT_EQ(refused.code, 2) << refused.output;
  EXPECT_NE(refused.output.find("the simulation differs"), std::string::npos) << refused.output;
}

// Round files are written off the round's path and latest wins: rounds that end while
// the writer is busy or resting replace the files that waited, and the writer is handed
// only the rounds it has not seen. None may be lost: the checkpoint a resume starts
// from holds every round, each as history.json had it.
TEST(SimulateTest, ManyFastRoundsLeaveACheckpointWithEveryRound) {
  TempDir dir;
  const std::string file =
      dir.write("sim.yaml", sim_yaml(dir, "out", 4, "iid", "local_steps: 1\n"));
  CliRun first = fedpod("simulate " + file + " --rounds 80 -q");
  ASSERT_EQ(first.code, 0) << first.output;
  const auto before = read_json(dir.path() / "out" / "history.json");
  ASSERT_EQ(before["rounds"].size(), 80u);
  CliRun resumed = fedpod("simulate " + file + " --rounds 81 --resume -q");
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  const auto after = read_json(dir.path() / "out" / "history.json");
  ASSERT_EQ(after["rounds"].size(), 81u);
  ASSERT_EQ(after["resumed"].size(), 1u);
  EXPECT_EQ(after["resumed"][0]["after_round"], 80);
  for (size_t i = 0; i < 80; ++i) {
    ASSERT_EQ(after["rounds"][i], before["rounds"][i]) << "round " << i + 1;
  }
  EXPECT_EQ(after["rounds"][80]["round"], 81);
}

TEST(SimulateTest, FedProxSendsMuToThePods) {
  TempDir dir;
  auto loss = [&](const std::string& out, const std::string& strategy) {
    const std::string file = dir.write(out + ".yaml", sim_yaml(dir, out, 8, "iid", "strategy: " + strategy + "\n"));
    CliRun r = fedpod("simulate " + file + " --rounds 2 -q");
    EXPECT_EQ(r.code, 0) << r.output;
    return read_json(dir.path() / out / "history.json")["test"]["loss"].get<double>();
  };
  const double fedavg = loss("fedavg", "fedavg");
  // μ = 0 is FedAvg exactly; μ > 0 changes what the pods train.
  EXPECT_EQ(loss("prox0", "{name: fedprox, mu: 0}"), fedavg);
  EXPECT_NE(loss("prox", "{name: fedprox, mu: 1.0}"), fedavg);
}

TEST(SimulateTest, BadSimulationFilesAreNamed) {
  TempDir dir;
  auto error = [&](const std::string& name, const std::string& yaml) {
    CliRun r = fedpod("simulate " + dir.write(name, yaml));
    EXPECT_EQ(r.code, 2) << name << ": " << r.output;
    return r.output;
  };
  EXPECT_NE(error("method.yaml", sim_yaml(dir, "o1", 4, "random")).find("unknown method 'random'"), std::string::npos);
  EXPECT_NE(error("pods.yaml", sim_yaml(dir, "o2", 4, "iid", "pods: [a]\n")).find("pods: not used by fedpod simulate"),
            std::string::npos);
  EXPECT_NE(error("none.yaml", "job_id: x\nmodel: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\n")
                .find("simulation: required"),
            std::string::npos);
  std::string missing = sim_yaml(dir, "o3", 4, "iid");
  missing.replace(missing.find("digits.csv"), 10, "nowhere.csv");
  EXPECT_NE(error("missing.yaml", missing).find("nowhere.csv"), std::string::npos);
  EXPECT_NE(error("shards.yaml", sim_yaml(dir, "o4", 1000, "{method: shards, shards_per_pod: 2}"))
                .find("at least 2000 rows"),
            std::string::npos);
}

}  // namespace
}  // namespace fedpod::testing
