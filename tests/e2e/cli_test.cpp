// The fedpod binary's user-facing errors: wrong input gets a message that names the
// file, key or line, and a distinct exit code.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

struct Run {
  int code;
  std::string output;
};

Run fedpod(const testing::TempDir& dir, std::vector<std::string> args) {
  args.insert(args.begin(), testing::fedpod_bin());
  const std::string log = (dir.path() / "cli.log").string();
  testing::Process p(args, log);
  int status = p.wait(60s);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, testing::read_file(log)};
}

TEST(CliTest, HelpListsSubcommands) {
  testing::TempDir dir;
  auto r = fedpod(dir, {"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* sub : {"worker", "coordinator", "demo", "version"}) {
    EXPECT_NE(r.output.find(sub), std::string::npos) << r.output;
  }
}

// fedpod privacy epsilon: TF Privacy's compute_dp_sgd_privacy example (N 60000, batch
// 256, σ 1.1, ceil(60·60000/256) = 14063 steps, δ 1e-5; 3.01 under the 2017
// conversion, 2.597 under the 2020 one fedpod uses), from the command line; with
// --epochs an epoch is ceil(rows / batch) steps. Status on a pod without a budget is
// a configuration error.
TEST(CliTest, PrivacyEpsilonAndStatus) {
  testing::TempDir dir;
  auto r = fedpod(dir, {"privacy", "epsilon", "--rows", "60000", "--batch-size", "256", "--noise-multiplier", "1.1",
                        "--steps", "14063"});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("epsilon 2.59"), std::string::npos) << r.output;
  auto e = fedpod(dir, {"privacy", "epsilon", "--rows", "60000", "--batch-size", "256", "--noise-multiplier", "1.1",
                        "--epochs", "60"});
  EXPECT_NE(e.output.find("14100 steps"), std::string::npos) << e.output;  // 60 × ceil(60000 / 256)
  auto bad = fedpod(dir, {"privacy", "epsilon", "--rows", "0", "--batch-size", "256", "--noise-multiplier", "1.1"});
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("--rows"), std::string::npos) << bad.output;
  testing::TestIdentity id(dir.path());
  auto pod = dir.write("pod.yaml", "name: pod-a\nlisten: tcp://127.0.0.1:0\ndataset: {path: pod.csv}\n" +
                                       id.pod_yaml("pod-a"));
  auto s = fedpod(dir, {"privacy", "status", pod});
  EXPECT_EQ(s.code, 2);
  EXPECT_NE(s.output.find("sets no privacy.differential_privacy"), std::string::npos) << s.output;
}

TEST(CliTest, UnknownJobKeyIsNamed) {
  testing::TempDir dir;
  auto job = dir.write("job.yaml",
                       "model: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\n"
                       "pods: [{name: a, address: 'tcp://127.0.0.1:5555'}]\nmin_pod: 1\n");
  auto r = fedpod(dir, {"coordinator", "run", job});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("job.yaml: unknown key 'min_pod'"), std::string::npos) << r.output;
}

TEST(CliTest, MinPodsAboveNumberOfPodsIsRefused) {
  testing::TempDir dir;
  auto job = dir.write("job.yaml",
                       "model: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\n"
                       "pods: [{name: a, address: 'tcp://127.0.0.1:5555'}]\nmin_pods: 3\n");
  auto r = fedpod(dir, {"coordinator", "run", job});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("min_pods: must be between 1 and the number of pods (1)"), std::string::npos) << r.output;
}

TEST(CliTest, BarePodNameNeedsAHub) {
  testing::TempDir dir;
  auto job = dir.write("job.yaml",
                       "model: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\npods: [pod-a]\n");
  unsetenv("FEDPOD_HUB");
  auto r = fedpod(dir, {"coordinator", "run", job});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("pods: 'pod-a' has no address: give one, or set hub:"), std::string::npos) << r.output;
}

// The three mistakes of the issue that made jobs run with defaults: a misspelled key,
// an ill-typed value, an optimizer that does not exist. Each is exit 2, naming the key.
TEST(CliTest, MisspelledOrIllTypedHyperparametersAreConfigErrors) {
  testing::TempDir dir;
  for (const auto& [hp, want] : std::vector<std::pair<std::string, std::string>>{
           {"{optimiser: sgd}", "unknown hyperparameter 'optimiser' (did you mean 'optimizer'?)"},
           {"{lr: fast}", "hyperparameter 'lr' must be a number, got \"fast\""},
           {"{optimizer: adagrad}", "hyperparameter 'optimizer' must be one of sgd, adam, adamw, got \"adagrad\""}}) {
    auto job = dir.write("job.yaml", "model: {ref: mlp, hyperparameters: " + hp +
                                         "}\ndatastructure: {target: label, num_classes: 10}\n"
                                         "pods: [{name: a, address: 'tcp://127.0.0.1:5555'}]\n");
    auto r = fedpod(dir, {"coordinator", "run", job});
    EXPECT_EQ(r.code, 2) << hp;
    EXPECT_NE(r.output.find("job.yaml: model.hyperparameters: model mlp: " + want), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("accepted: batch_norm, batch_size, dropout, hidden, lr"), std::string::npos) << r.output;
  }
}

TEST(CliTest, BadDurationIsNamed) {
  testing::TempDir dir;
  auto job = dir.write("job.yaml",
                       "model: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\n"
                       "pods: [{name: a, address: 'tcp://127.0.0.1:5555'}]\nround_timeout: soon\n");
  auto r = fedpod(dir, {"coordinator", "run", job});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("round_timeout: expected a duration such as 30s"), std::string::npos) << r.output;
}

TEST(CliTest, WorkerWithBadRowNamesFileAndLine) {
  testing::TempDir dir;
  auto csv = dir.write("data.csv", "a,b,label\n1,2,0\n3,x,1\n");
  testing::TestIdentity id(dir.path());
  // An inferred schema would make b categorical; a declared numeric one rejects the row.
  auto strict = dir.write("strict.yaml",
                          "name: pod-p\nlisten: tcp://127.0.0.1:*\ndataset:\n  path: data.csv\n  schema:\n"
                          "    - {name: a}\n    - {name: b}\n    - {name: label}\n" + id.pod_yaml("pod-p"));
  auto r = fedpod(dir, {"worker", "--config", strict});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find(csv + ":3: column 'b': \"x\" is not a number"), std::string::npos) << r.output;
}

TEST(CliTest, WorkerSkipsBadRowsWhenConfiguredAndKeepsServing) {
  testing::TempDir dir;
  dir.write("data.csv", "a,b,label\n1,2,0\n3,4\n5,6,1\n");
  testing::TestIdentity id(dir.path());
  auto config = dir.write("pod.yaml", "name: pod-p\nlisten: tcp://127.0.0.1:*\ndataset: {path: data.csv, on_bad_row: skip}\n" +
                                          id.pod_yaml("pod-p"));
  const std::string endpoint_file = (dir.path() / "ep").string();
  testing::Process w({testing::fedpod_bin(), "worker", "--config", config, "--endpoint-file", endpoint_file},
                     (dir.path() / "w.log").string());
  ASSERT_FALSE(testing::wait_for_word(endpoint_file, 60s).empty()) << testing::read_file((dir.path() / "w.log").string());
  w.kill(SIGTERM);
  int status = w.wait(30s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string log = testing::read_file((dir.path() / "w.log").string());
  EXPECT_NE(log.find("event=bad_rows_skipped pod=pod-p count=1"), std::string::npos) << log;
  EXPECT_NE(log.find("data.csv:3: expected 3 cells, got 2"), std::string::npos) << log;
}

TEST(CliTest, NonexistentDeviceIsAStartupError) {
  testing::TempDir dir;
  dir.write("data.csv", "a,label\n1,0\n");
  testing::TestIdentity id(dir.path());
  auto config = dir.write("pod.yaml", "name: pod-p\nlisten: tcp://127.0.0.1:*\ndataset: {path: data.csv}\ndevices: [cuda:3]\n" +
                                          id.pod_yaml("pod-p"));
  auto r = fedpod(dir, {"worker", "--config", config});
  EXPECT_EQ(r.code, 2);
  // Names the device and what the pod could use instead.
  EXPECT_NE(r.output.find("devices: 'cuda:3' does not exist on this machine; devices here: cpu"), std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace fedpod
