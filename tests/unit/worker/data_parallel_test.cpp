// Tests for fedpod/worker/data_parallel.h: K cpu replicas train to the parameters one
// model reaches on the whole batches (sgd and adam, one and several steps, uneven
// last batches), the gradients live in one flat buffer, a replica that throws fails
// the round by name and the next round works, cancel stops every replica; and the
// `devices` setting (config.h).
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "fedpod/common/signing.h"
#include <torch/torch.h>

#include <atomic>
#include <stdexcept>

#include "fedpod/model/zoo.h"
#include "fedpod/worker/config.h"
#include "fedpod/worker/data_parallel.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

constexpr int64_t kFeatures = 8;
constexpr int64_t kClasses = 3;

// n samples whose labels a linear rule mostly decides, so training moves the loss.
data::Dataset synthetic(int64_t n, uint64_t seed = 5) {
  auto gen = at::detail::createCPUGenerator(seed);
  data::Dataset d;
  d.x = torch::randn({n, kFeatures}, gen);
  torch::Tensor w = torch::randn({kFeatures, kClasses}, gen);
  d.y = (d.x.matmul(w) + 0.5 * torch::randn({n, kClasses}, gen)).argmax(1);
  return d;
}

std::unique_ptr<model::Model> make_model(const std::string& ref, const Hyperparameters& hp) {
  auto m = model::make_builtin(ref);
  torch::manual_seed(11);
  m->create_model({kFeatures}, kClasses, hp);
  return m;
}

// K cpu replicas of `ref`; replica 0 is `primary`.
struct Replicas {
  std::unique_ptr<model::Model> primary;
  std::unique_ptr<DataParallel> dp;
};

Replicas make_replicas(int k, const Hyperparameters& hp, const std::string& ref = "mlp") {
  Replicas out;
  out.primary = make_model(ref, hp);
  std::vector<std::unique_ptr<model::Model>> others;
  for (int r = 1; r < k; ++r) others.push_back(make_model(ref, hp));
  auto dp =
      DataParallel::create(*out.primary, std::move(others), std::vector<std::string>(k, "cpu"));
  EXPECT_TRUE(dp.ok()) << dp.status().to_string();
  if (dp.ok()) out.dp = std::move(*dp);
  return out;
}

double relative_difference(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).norm().item<double>() / b.norm().item<double>();
}

struct Case {
  int replicas;
  std::string optimizer;
  int64_t steps;  // 0: epochs
  int64_t epochs;
  int64_t samples;
  int64_t batch;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  return "K" + std::to_string(c.replicas) + "_" + c.optimizer + "_" +
         (c.steps ? std::to_string(c.steps) + "steps" : std::to_string(c.epochs) + "epochs") +
         "_n" + std::to_string(c.samples) + "_b" + std::to_string(c.batch);
}

class EquivalenceTest : public ::testing::TestWithParam<Case> {};

// The replicas end where one model trained on the same (whole) batches ends.
TEST_P(EquivalenceTest, ReplicasMatchOneModelOnTheWholeBatch) {
  const Case& c = GetParam();
  const Hyperparameters hp(nlohmann::json{{"hidden", {16}},
                                          {"optimizer", c.optimizer},
                                          {"lr", c.optimizer == "sgd" ? 0.1 : 0.01},
                                          {"momentum", c.optimizer == "sgd" ? 0.9 : 0.0}});
  const data::Dataset data = synthetic(c.samples);
  TrainOptions opts;
  opts.steps = c.steps;
  opts.epochs = c.epochs;
  opts.batch_size = c.batch;
  opts.seed = 42;

  auto single = make_model("mlp", hp);
  auto expected = train_local(*single, data, opts, hp);
  ASSERT_TRUE(expected.ok()) << expected.status().to_string();

  Replicas reps = make_replicas(c.replicas, hp);
  ASSERT_NE(reps.dp, nullptr);
  ASSERT_TRUE(torch::equal(reps.primary->flat().tensor(), make_model("mlp", hp)->flat().tensor()));
  auto got = reps.dp->train(data, opts, hp);
  ASSERT_TRUE(got.ok()) << got.status().to_string();

  auto untrained = make_model("mlp", hp);
  ASSERT_GT(relative_difference(single->flat().tensor(), untrained->flat().tensor()), 1e-3)
      << "training did not move the parameters";
  EXPECT_LT(relative_difference(reps.primary->flat().tensor(), single->flat().tensor()), 1e-5);
  // The replicas stay identical: the all-reduce gives every one the same bits.
  for (int r = 1; r < c.replicas; ++r) {
    EXPECT_TRUE(torch::equal(reps.dp->replica(r).flat().tensor(), reps.primary->flat().tensor()))
        << "replica " << r;
  }
  EXPECT_EQ(got->steps, expected->steps);
  EXPECT_EQ(got->samples_seen, expected->samples_seen);
  EXPECT_NEAR(got->loss, expected->loss, 1e-5 * expected->loss);
  EXPECT_NEAR(got->accuracy, expected->accuracy,
              1.5 / expected->samples_seen);  // an argmax tie may flip
}

INSTANTIATE_TEST_SUITE_P(
    DataParallel, EquivalenceTest,
    ::testing::Values(
        // One step on a batch the replicas share evenly, and one they do not (16 / 3).
        Case{2, "sgd", 1, 0, 64, 16}, Case{3, "sgd", 1, 0, 64, 16}, Case{2, "adam", 1, 0, 64, 16},
        Case{3, "adam", 1, 0, 64, 16},
        // A few steps, into the second epoch (64 samples, batches of 24: 24, 24, 16).
        Case{2, "sgd", 6, 0, 64, 24}, Case{3, "sgd", 6, 0, 64, 24}, Case{2, "adam", 6, 0, 64, 24},
        Case{3, "adam", 6, 0, 64, 24},
        // Uneven last batches: 50 = 3 * 16 + 2, smaller than K = 3 (shards 1, 1, 0);
        // 49 = 3 * 16 + 1 (shards 1, 0); 47 = 3 * 15 + 2 with K = 2 (1, 1).
        Case{3, "sgd", 0, 2, 50, 16}, Case{3, "adam", 0, 2, 50, 16}, Case{2, "sgd", 0, 2, 49, 16},
        Case{2, "adam", 0, 2, 49, 16}, Case{2, "adam", 0, 1, 47, 15},
        // Four replicas, batch of 2: two replicas idle on every step.
        Case{4, "sgd", 0, 1, 20, 2}),
    case_name);

// Batch norm: each replica's running statistics see only its shard; what leaves the
// pod is their mean. After one step on an evenly split batch that is exactly what one
// model on the whole batch records for running_mean (the mean of the shards' means),
// and num_batches_tracked counts one step, not one per replica.
TEST(DataParallelTest, ReplicasAgreeOnBatchNormStatisticsBeforeTheUpdateLeaves) {
  const Hyperparameters hp(nlohmann::json{{"hidden", {16}}, {"lr", 0.1}, {"batch_norm", true}});
  const data::Dataset data = synthetic(64);
  TrainOptions opts;
  opts.steps = 1;
  opts.batch_size = 16;
  opts.seed = 42;
  auto single = make_model("mlp", hp);
  ASSERT_TRUE(train_local(*single, data, opts, hp).ok());
  Replicas reps = make_replicas(2, hp);
  ASSERT_NE(reps.dp, nullptr);
  ASSERT_TRUE(reps.dp->train(data, opts, hp).ok());

  const auto& layout = reps.primary->flat().layout();
  const model::ParamInfo* mean = nullptr;
  const model::ParamInfo* count = nullptr;
  for (const auto& info : layout) {
    if (info.name == "1.running_mean") mean = &info;
    if (info.name == "1.num_batches_tracked") count = &info;
  }
  ASSERT_NE(mean, nullptr);
  ASSERT_NE(count, nullptr);
  const torch::Tensor got = reps.primary->flat().tensor().narrow(0, mean->offset, mean->numel);
  const torch::Tensor want = single->flat().tensor().narrow(0, mean->offset, mean->numel);
  ASSERT_GT(want.abs().sum().item<double>(), 1e-3) << "the step did not move running_mean";
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << got << "\n" << want;
  // Replica 1 alone saw half the batch: its statistics differ from the agreed ones.
  const torch::Tensor other = reps.dp->replica(1).flat().tensor().narrow(0, mean->offset, mean->numel);
  EXPECT_FALSE(torch::allclose(other, want, 1e-5, 1e-6));
  EXPECT_EQ(reps.primary->flat().tensor()[count->offset].item<float>(), 1.0f);
  for (const auto& [name, b] : reps.primary->named_buffers()) {
    if (name == "1.num_batches_tracked") {
      EXPECT_EQ(b.item<int64_t>(), 1);
    }
  }
}

TEST(DataParallelTest, GradientsAreViewsOfOneFlatBuffer) {
  const Hyperparameters hp(nlohmann::json{{"hidden", {16, 8}}});
  Replicas reps = make_replicas(2, hp);
  TrainOptions opts;
  opts.steps = 2;
  opts.batch_size = 8;
  ASSERT_TRUE(reps.dp->train(synthetic(32), opts, hp).ok());
  for (int r = 0; r < 2; ++r) {
    model::Model& m = reps.dp->replica(r);
    const auto params = m.named_parameters();
    const auto& layout = m.flat().layout();
    ASSERT_EQ(params.size(), layout.size());
    const float* base = params[0].second.grad().data_ptr<float>();
    for (size_t i = 0; i < params.size(); ++i) {
      const torch::Tensor& g = params[i].second.grad();
      ASSERT_TRUE(g.defined()) << layout[i].name;
      EXPECT_EQ(g.data_ptr<float>(), base + layout[i].offset)
          << "replica " << r << " " << layout[i].name;
    }
  }
}

TEST(DataParallelTest, OneReplicaIsTrainLocal) {
  const Hyperparameters hp(nlohmann::json{{"hidden", {16}}});
  auto primary = make_model("mlp", hp);
  auto dp = DataParallel::create(*primary, {}, {"cpu"});
  ASSERT_TRUE(dp.ok()) << dp.status().to_string();
  auto single = make_model("mlp", hp);
  TrainOptions opts;
  opts.steps = 3;
  opts.batch_size = 8;
  const data::Dataset data = synthetic(40);
  auto got = (*dp)->train(data, opts, hp);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_TRUE(train_local(*single, data, opts, hp).ok());
  EXPECT_TRUE(torch::equal(primary->flat().tensor(), single->flat().tensor()));
}

// ---- error paths ----------------------------------------------------------

// A one-layer model whose training_step throws on its `throw_at`-th call (from 1;
// 0: never), or sets `*cancel` on its `cancel_at`-th call.
class TinyModel : public model::ModuleModel {
 public:
  explicit TinyModel(int throw_at = 0, std::atomic<bool>* cancel = nullptr, int cancel_at = 0)
      : throw_at_(throw_at), cancel_(cancel), cancel_at_(cancel_at) {}
  bool freeze_bias = false;

  model::StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
    ++calls_;
    if (calls_ == throw_at_)
      throw std::runtime_error("tiny model gives up at call " + std::to_string(calls_));
    if (cancel_ && calls_ == cancel_at_) cancel_->store(true);
    return Model::training_step(x, y);
  }
  int calls() const { return calls_; }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    torch::nn::Linear linear(in.at(0), classes);
    if (freeze_bias) linear->bias.set_requires_grad(false);
    module_ = linear.ptr();
    forward_ = [linear](const torch::Tensor& x) mutable { return linear->forward(x); };
  }

 private:
  int throw_at_;
  std::atomic<bool>* cancel_;
  int cancel_at_;
  int calls_ = 0;
};

std::unique_ptr<TinyModel> tiny(int throw_at = 0, std::atomic<bool>* cancel = nullptr,
                                int cancel_at = 0, bool freeze_bias = false) {
  auto m = std::make_unique<TinyModel>(throw_at, cancel, cancel_at);
  m->freeze_bias = freeze_bias;
  torch::manual_seed(3);
  m->create_model({kFeatures}, kClasses, Hyperparameters());
  return m;
}

// Replica 1 throws on its third step, while replica 0 waits in the all-reduce: the
// round fails naming replica 1, replica 0 is woken, and the next round trains.
TEST(DataParallelTest, ReplicaThatThrowsFailsTheRoundByNameAndTheNextRoundWorks) {
  auto primary = tiny();
  std::vector<std::unique_ptr<model::Model>> others;
  others.push_back(tiny(/*throw_at=*/3));
  auto* thrower = static_cast<TinyModel*>(others[0].get());
  auto dp = DataParallel::create(*primary, std::move(others), {"cpu", "cpu"});
  ASSERT_TRUE(dp.ok()) << dp.status().to_string();
  const data::Dataset data = synthetic(64);
  TrainOptions opts;
  opts.steps = 5;
  opts.batch_size = 8;
  auto failed = (*dp)->train(data, opts, Hyperparameters());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kInternal);
  EXPECT_EQ(failed.status().message(),
            "replica 1 (cpu): model failed while training: tiny model gives up at call 3");
  EXPECT_EQ(primary->calls(), 3);  // it trained step 3 and was woken from that step's all-reduce

  auto next = (*dp)->train(data, opts, Hyperparameters());
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  EXPECT_EQ(next->steps, 5);
  EXPECT_EQ(next->samples_seen, 5 * 8);
  EXPECT_EQ(thrower->calls(), 3 + 5);
  EXPECT_TRUE(torch::equal((*dp)->replica(1).flat().tensor(), primary->flat().tensor()));
}

TEST(DataParallelTest, ReplicaThatThrowsOnItsFirstStepFailsTheRound) {
  auto primary = tiny();
  std::vector<std::unique_ptr<model::Model>> others;
  others.push_back(tiny());
  others.push_back(tiny(/*throw_at=*/1));
  auto dp = DataParallel::create(*primary, std::move(others), {"cpu", "cpu", "cpu"});
  ASSERT_TRUE(dp.ok()) << dp.status().to_string();
  TrainOptions opts;
  opts.epochs = 1;
  opts.batch_size = 9;
  auto failed = (*dp)->train(synthetic(30), opts, Hyperparameters());
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().message(),
            "replica 2 (cpu): model failed while training: tiny model gives up at call 1");
}

TEST(DataParallelTest, CancelStopsEveryReplica) {
  std::atomic<bool> cancel{false};
  auto primary = tiny(0, &cancel, /*cancel_at=*/4);
  std::vector<std::unique_ptr<model::Model>> others;
  others.push_back(tiny());
  auto dp = DataParallel::create(*primary, std::move(others), {"cpu", "cpu"});
  ASSERT_TRUE(dp.ok()) << dp.status().to_string();
  TrainOptions opts;
  opts.steps = 1'000'000;
  opts.batch_size = 8;
  const data::Dataset data = synthetic(64);
  auto stopped = (*dp)->train(data, opts, Hyperparameters(), &cancel);
  ASSERT_FALSE(stopped.ok());
  EXPECT_EQ(stopped.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(stopped.status().message(), "cancelled");
  EXPECT_LE(primary->calls(), 5);

  cancel = false;
  opts.steps = 2;
  auto next = (*dp)->train(data, opts, Hyperparameters(), &cancel);
  ASSERT_TRUE(next.ok()) << next.status().to_string();
  EXPECT_EQ(next->steps, 2);
}

TEST(DataParallelTest, NonFiniteLossFailsTheRound) {
  Replicas reps = make_replicas(2, Hyperparameters(nlohmann::json{{"hidden", {16}}}));
  const Hyperparameters hp(nlohmann::json{{"hidden", {16}}, {"lr", 1e38}});
  TrainOptions opts;
  opts.steps = 50;
  opts.batch_size = 8;
  auto r = reps.dp->train(synthetic(64), opts, hp);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(r.status().message(), "training loss became");
  EXPECT_CONTAINS(r.status().message(), "lower the learning rate");
}

TEST(DataParallelTest, ReplicasMustShareALayout) {
  auto primary = make_model("mlp", Hyperparameters(nlohmann::json{{"hidden", {16}}}));
  std::vector<std::unique_ptr<model::Model>> others;
  others.push_back(make_model("mlp", Hyperparameters(nlohmann::json{{"hidden", {8}}})));
  auto dp = DataParallel::create(*primary, std::move(others), {"cpu", "cpu"});
  ASSERT_FALSE(dp.ok());
  EXPECT_EQ(dp.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(
      dp.status().message(),
      "replica 1's parameter 0 is '0.weight' [8, 8], replica 0's is '0.weight' [16, 8]");

  auto again = DataParallel::create(*primary, {}, {"cpu", "cpu"});
  ASSERT_FALSE(again.ok());
  EXPECT_CONTAINS(again.status().message(), "one device per replica: 2 devices for 1 replicas");
}

TEST(DataParallelTest, AGpuThatThisBuildCannotUseIsAnError) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this libtorch has CUDA";
  auto m = make_model("logreg", Hyperparameters());
  Status st = move_to_device(*m, "cuda:0");
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.message(), "cannot move the model to cuda:0");
  EXPECT_TRUE(move_to_device(*m, "cpu").ok());
}

// A frozen parameter gets no gradient and stays put (weight decay included), as on
// one device.
TEST(DataParallelTest, FrozenParametersStayFrozen) {
  const Hyperparameters hp(nlohmann::json{{"lr", 0.1}, {"weight_decay", 0.1}, {"momentum", 0.5}});
  auto primary = tiny(0, nullptr, 0, /*freeze_bias=*/true);
  std::vector<std::unique_ptr<model::Model>> others;
  others.push_back(tiny(0, nullptr, 0, true));
  auto dp = DataParallel::create(*primary, std::move(others), {"cpu", "cpu"});
  ASSERT_TRUE(dp.ok()) << dp.status().to_string();
  auto single = tiny(0, nullptr, 0, true);
  const torch::Tensor bias = single->named_parameters()[1].second.clone();
  TrainOptions opts;
  opts.steps = 4;
  opts.batch_size = 10;
  const data::Dataset data = synthetic(40);
  ASSERT_TRUE((*dp)->train(data, opts, hp).ok());
  ASSERT_TRUE(train_local(*single, data, opts, hp).ok());
  EXPECT_TRUE(torch::equal(primary->named_parameters()[1].second, bias));
  EXPECT_LT(relative_difference(primary->flat().tensor(), single->flat().tensor()), 1e-5);
}

// ---- the devices setting --------------------------------------------------

TEST(DevicesConfigTest, AutoIsEveryGpuElseCpu) {
  EXPECT_EQ(resolve_devices({"auto"}, 0), (std::vector<std::string>{"cpu"}));
  EXPECT_EQ(resolve_devices({}, 0), (std::vector<std::string>{"cpu"}));
  EXPECT_EQ(resolve_devices({"auto"}, 2), (std::vector<std::string>{"cuda:0", "cuda:1"}));
  if (torch::cuda::device_count() == 0) {  // this machine
    EXPECT_EQ(resolve_devices({"auto"}), (std::vector<std::string>{"cpu"}));
  }
}

TEST(DevicesConfigTest, ListsAreKeptWhenEveryDeviceExists) {
  EXPECT_EQ(resolve_devices({"cpu", "cpu"}), (std::vector<std::string>{"cpu", "cpu"}));
  EXPECT_EQ(resolve_devices({"cpu"}), (std::vector<std::string>{"cpu"}));
  EXPECT_EQ(resolve_devices({"cuda:1", "cuda:0"}, 2),
            (std::vector<std::string>{"cuda:1", "cuda:0"}));
}

TEST(DevicesConfigTest, MissingUnknownRepeatedAndMixedDevicesAreNamed) {
  if (torch::cuda::device_count() == 0) {
    EXPECT_EQ(testing::config_error([] { resolve_devices({"cuda:0"}); }),
              "devices: 'cuda:0' does not exist on this machine; devices here: cpu (no CUDA device "
              "is visible to "
              "this pod)");
  }
  EXPECT_EQ(testing::config_error([] {
              resolve_devices({"cuda:0", "cuda:2"}, 2);
            }),
            "devices: 'cuda:2' does not exist on this machine; devices here: cpu, cuda:0, cuda:1");
  EXPECT_EQ(testing::config_error([] { resolve_devices({"tpu"}, 1); }),
            "devices: 'tpu' is not a device name (expected auto, cpu or cuda:N); devices here: "
            "cpu, cuda:0");
  EXPECT_EQ(testing::config_error([] { resolve_devices({"cuda:01"}, 2); }),
            "devices: 'cuda:01' is not a device name (expected auto, cpu or cuda:N); devices here: "
            "cpu, cuda:0, "
            "cuda:1");
  EXPECT_EQ(testing::config_error([] {
              resolve_devices({"cuda:0", "cuda:0"}, 2);
            }),
            "devices: 'cuda:0' is listed twice in [cuda:0, cuda:0]; one replica per GPU (several "
            "replicas are "
            "allowed only on cpu)");
  EXPECT_EQ(testing::config_error([] {
              resolve_devices({"cpu", "cuda:0"}, 2);
            }),
            "devices: [cpu, cuda:0] mixes cpu and cuda devices; the replicas of a pod train in "
            "step, so list only "
            "cuda devices (one replica per GPU) or only cpu");
  EXPECT_EQ(testing::config_error([] {
              resolve_devices({"cpu", "auto"}, 0);
            }),
            "devices: auto stands alone (devices: auto), not inside a list [cpu, auto]");
}

TEST(DevicesConfigTest, PodYamlDevices) {
  testing::TempDir dir;
  auto pod = [&](const std::string& devices) {
    return dir.write("pod.yaml",
                     "name: pod-a\nlisten: tcp://127.0.0.1:*\ndataset: {path: data.csv}\n" +
                         devices + "key_file: keys/pod-a.key\npolicy: {file: policy.signed.json, signing_key: "
                         "\"" + generate_signing_keypair().public_key + "\"}\n");
  };
  EXPECT_EQ(load_pod_config(pod("devices: [cpu, cpu]\n")).devices,
            (std::vector<std::string>{"cpu", "cpu"}));
  if (torch::cuda::device_count() == 0) {
    EXPECT_EQ(load_pod_config(pod("devices: auto\n")).devices, (std::vector<std::string>{"cpu"}));
    EXPECT_EQ(load_pod_config(pod("")).devices, (std::vector<std::string>{"cpu"}));
    const std::string path = pod("devices: [cuda:0]\n");
    EXPECT_EQ(testing::config_error([&] { load_pod_config(path); }),
              path +
                  ": devices: 'cuda:0' does not exist on this machine; devices here: cpu (no CUDA "
                  "device is "
                  "visible to this pod)");
  }
  const std::string empty = pod("devices: []\n");
  EXPECT_EQ(testing::config_error([&] { load_pod_config(empty); }),
            empty + ": devices: empty list; write auto or name the devices");
}

}  // namespace
}  // namespace fedpod::worker
