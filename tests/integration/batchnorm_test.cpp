// Batch-norm models under FedAvg, end to end: three `fedpod worker` pods on the
// label-skewed digits shares, an in-process hub and coordinator, and a reference
// FedAvg in plain PyTorch (tests/integration/fedavg_reference.py, run with
// /usr/bin/python3) on the same splits, initial state, batches and schedule, which
// averages the running statistics too. fedpod must land within one accuracy point of
// it; before buffers travelled, each pod kept its own statistics and the global model
// evaluated with none of them.
//
// Also: model.pt loads into the Python module the TorchScript model was scripted
// from with load_state_dict(strict=True), num_batches_tracked comes back as int64
// holding the maximum over the pods, and the loaded module scores what the pods
// reported.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/history.h"
#include "fedpod/hub/client.h"
#include "fedpod/model/zoo.h"
#include "digits_job.h"
#include "identity.h"
#include "running_hub.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

class BatchNormTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub::ServerOptions opt;
    opt.data_dir = (dir_.path() / "hub").string();
    hub_ = std::make_unique<testing::RunningHub>(opt, testing::RunningHub::Tls::kOn);
    hub::Client c(hub_->hub_url());
    auto token = c.register_user("alice", id_.modeller.public_key, id_.modeller.secret_key);
    ASSERT_TRUE(token.ok()) << token.status().to_string();
    token_ = *token;
    spec_ = testing::digits_job_spec("bn-test", (dir_.path() / "out").string(), id_.modeller_key_file);
    spec_.rounds = kRounds;
    spec_.eval_every = 0;
    spec_.aggregation_order = "pod";
  }

  // Runs fedavg_reference.py with `args`; returns the JSON it wrote to --out.
  nlohmann::json python(const std::string& args, const std::string& name) {
    const std::string out = (dir_.path() / (name + ".json")).string();
    const std::string log = (dir_.path() / (name + ".log")).string();
    const std::string cmd = "/usr/bin/python3 " + script_ + " " + args + " --out " + out + " > " + log + " 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << cmd << "\n" << testing::read_file(log);
      return nlohmann::json::object();
    }
    return nlohmann::json::parse(testing::read_file(out));
  }

  std::string pods_args() const {
    std::string s = " --pods";
    for (const char* p : {"pod-a", "pod-b", "pod-c"}) s += " " + testing::source_dir() + "/examples/digits/" + p + ".csv";
    return s + " --scale 0.0625";
  }
  std::string schedule_args(double lr) const {
    return pods_args() + " --rounds " + std::to_string(kRounds) + " --epochs 1 --batch-size 32 --lr " +
           std::to_string(lr) + " --job-seed 0";
  }

  StatusOr<coordinator::RunResult> run(std::ostringstream& progress) {
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress);
    return c.run();
  }

  static constexpr int kRounds = 10;
  const std::string script_ = testing::source_dir() + "/tests/integration/fedavg_reference.py";
  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path(), "alice"};
  std::unique_ptr<testing::RunningHub> hub_;
  std::string token_;
  std::vector<std::unique_ptr<testing::Process>> procs_;
  coordinator::JobSpec spec_;
};

TEST_F(BatchNormTest, TorchScriptModelMatchesPyTorchFedAvgAndModelPtLoadsStrictly) {
  const std::string pt = (dir_.path() / "bn_net.pt").string();
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script_ + " script --seed 0 --out " + pt).c_str()), 0);
  hub::Client c(hub_->hub_url(), token_);
  auto v = c.push_model("alice", "bn-net", "torchscript", "batch-norm digits net", "", pt, {script_});
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  ASSERT_NO_FATAL_FAILURE(testing::start_digits_pods(dir_, id_, {"pod-a", "pod-b", "pod-c"}, spec_, procs_,
                                                     "super-modeller"));
  spec_.model.username = "alice";
  spec_.model.ref = "bn-net";
  spec_.model.hyperparameters = Hyperparameters(nlohmann::json{{"optimizer", "sgd"}, {"lr", 0.1}});
  spec_.hub_token = token_;
  spec_.hub_url = hub_->url();
    spec_.hub_ca = hub_->ca_file();
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << progress.str();

  const nlohmann::json ref = python("train --model torchscript:" + pt + schedule_args(0.1), "reference");
  ASSERT_TRUE(ref.contains("test_accuracy"));
  std::cout << "[ compare  ] TorchScript BnNet: fedpod test accuracy " << result->test_accuracy
            << ", PyTorch FedAvg " << ref["test_accuracy"] << std::endl;
  EXPECT_EQ(ref["test_samples"], result->test_samples);
  EXPECT_NEAR(result->test_accuracy, ref["test_accuracy"].get<double>(), 0.01)
      << "fedpod " << result->test_accuracy << ", PyTorch FedAvg " << ref["test_accuracy"] << "\n"
      << progress.str();

  // model.pt: every parameter and buffer, with the module's dtypes, loads strictly.
  const nlohmann::json loaded = python("strict-load --model-pt " + result->model_path + pods_args(), "strict-load");
  ASSERT_TRUE(loaded.contains("keys"));
  EXPECT_EQ(loaded["keys"], nlohmann::json({"bn1.bias", "bn1.num_batches_tracked", "bn1.running_mean",
                                            "bn1.running_var", "bn1.weight", "fc1.bias", "fc1.weight", "fc2.bias",
                                            "fc2.weight", "norm.bias", "norm.num_batches_tracked",
                                            "norm.running_mean", "norm.running_var", "norm.weight"}));
  EXPECT_EQ(loaded["dtypes"]["norm.num_batches_tracked"], "torch.int64");
  EXPECT_EQ(loaded["dtypes"]["norm.running_var"], "torch.float32");
  // The module Python loaded is the one the pods evaluated: same test accuracy (one
  // sample of float-rounding leeway).
  EXPECT_NEAR(loaded["test_accuracy"].get<double>(), result->test_accuracy, 1.0 / 358 + 1e-9);

  // num_batches_tracked: the maximum over the pods each round. Training rows per pod
  // (684, 562, 551 rows less 20% test and 10% validation) are 480, 394 and 386, so
  // 15, 13 and 13 batches of 32 a round: 15 a round wins.
  auto params = coordinator::load_parameters(result->model_path);
  ASSERT_TRUE(params.count("norm.num_batches_tracked"));
  EXPECT_EQ(params["norm.num_batches_tracked"].scalar_type(), torch::kInt64);
  EXPECT_EQ(params["norm.num_batches_tracked"].item<int64_t>(), 15 * kRounds);
  // The input's running mean is the data's (pixels scaled to [0, 1]), not zeros: the
  // statistics came back from the pods.
  EXPECT_GT(params["norm.running_mean"].mean().item<double>(), 0.1);
}

TEST_F(BatchNormTest, BuiltinMlpWithBatchNormMatchesPyTorchFedAvg) {
  const Hyperparameters hp(nlohmann::json{{"hidden", {32}}, {"lr", 0.1}, {"batch_norm", true}});
  spec_.model.hyperparameters = hp;
  // The initial state the coordinator makes (seeded with the job's seed), for the
  // reference to start from.
  const std::string init = (dir_.path() / "init.pt").string();
  {
    torch::manual_seed(spec_.seed);
    auto m = model::make_builtin("mlp");
    m->create_model({64}, 10, hp);
    coordinator::save_parameters(init, m->flat().tensor(), m->flat().layout());
  }
  ASSERT_NO_FATAL_FAILURE(testing::start_digits_pods(dir_, id_, {"pod-a", "pod-b", "pod-c"}, spec_, procs_));
  std::ostringstream progress;
  auto result = run(progress);
  ASSERT_TRUE(result.ok()) << result.status().to_string() << "\n" << progress.str();
  const nlohmann::json ref = python("train --model mlp:" + init + " --hidden 32" + schedule_args(0.1), "reference");
  ASSERT_TRUE(ref.contains("test_accuracy"));
  std::cout << "[ compare  ] mlp with batch_norm: fedpod test accuracy " << result->test_accuracy
            << ", PyTorch FedAvg " << ref["test_accuracy"] << std::endl;
  EXPECT_NEAR(result->test_accuracy, ref["test_accuracy"].get<double>(), 0.01)
      << "fedpod " << result->test_accuracy << ", PyTorch FedAvg " << ref["test_accuracy"] << "\n"
      << progress.str();
  auto params = coordinator::load_parameters(result->model_path);
  ASSERT_TRUE(params.count("1.running_var"));
  EXPECT_EQ(params["1.num_batches_tracked"].item<int64_t>(), 15 * kRounds);
}

}  // namespace
}  // namespace fedpod
