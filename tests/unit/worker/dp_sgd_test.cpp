// DP-SGD at the pod (privacy/dp_sgd.h, worker/trainer.h): per-example gradients by
// the fast path equal those of one backward pass per example, clipping bounds what
// one record can do to the update, the noise has the promised size and does not come
// from the job's seed, and models that mix examples are refused.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <torch/optim/sgd.h>

#include <cmath>

#include "fedpod/model/zoo.h"
#include "fedpod/privacy/dp_sgd.h"
#include "fedpod/worker/trainer.h"

namespace fedpod::worker {
namespace {

std::unique_ptr<model::Model> make(const std::string& name, const std::vector<int64_t>& shape, nlohmann::json hp = {}) {
  torch::manual_seed(7);
  auto m = model::make_builtin(name);
  m->create_model(shape, 4, Hyperparameters(hp.is_null() ? nlohmann::json::object() : hp));
  return m;
}

data::Dataset random_data(int64_t n, const std::vector<int64_t>& shape, uint64_t seed) {
  torch::manual_seed(seed);
  std::vector<int64_t> full = {n};
  full.insert(full.end(), shape.begin(), shape.end());
  return data::Dataset{torch::randn(full), torch::randint(0, 4, {n}, torch::kInt64)};
}

std::vector<torch::Tensor> grads_of(model::Model& m) {
  std::vector<torch::Tensor> g;
  for (auto& [name, p] : m.named_parameters()) g.push_back(p.grad().clone());
  return g;
}

torch::Tensor flat_copy(model::Model& m) { return m.flat().tensor().clone(); }

// DP-SGD options: σ 1, C 1, `steps` steps (or, with steps 0, `epochs`) of `batch`.
TrainOptions dp_options(int64_t steps, int64_t batch, int64_t epochs = 1) {
  TrainOptions o;
  o.steps = steps;
  o.epochs = epochs;
  o.batch_size = batch;
  o.dp.on = true;
  o.dp.noise_multiplier = 1.0;
  return o;
}

// The fast path's clipped sums and norms are the generic path's (one backward per
// example), for the built-in mlp and cnn, with some examples clipped and some not.
TEST(DpSgd, FastPathEqualsOneBackwardPerExample) {
  struct Case {
    std::string name;
    std::vector<int64_t> shape;
    nlohmann::json hp;
  };
  for (const Case& c : {Case{"mlp", {12}, {{"hidden", {16, 8}}}}, Case{"logreg", {5}, {}},
                        Case{"cnn", {1, 8, 8}, {{"channels", {3, 4}}, {"hidden", 6}}}}) {
    auto m = make(c.name, c.shape, c.hp);
    data::Dataset d = random_data(9, c.shape, 3);
    privacy::PerExampleGradients fast(*m, true), generic(*m, false);
    ASSERT_EQ(fast.path(), privacy::GradientPath::kFast) << c.name;
    ASSERT_EQ(generic.path(), privacy::GradientPath::kGeneric);
    // A clipping norm between the smallest and largest example norm: both cases occur.
    (void)generic.clipped_sum(d.x, d.y, 1e9);
    const torch::Tensor raw = generic.last_norms();
    const double clip = raw.median().item<double>();
    auto out_g = generic.clipped_sum(d.x, d.y, clip);
    auto g_generic = grads_of(*m);
    auto out_f = fast.clipped_sum(d.x, d.y, clip);
    auto g_fast = grads_of(*m);
    EXPECT_TRUE(torch::allclose(fast.last_norms(), generic.last_norms(), 1e-4, 1e-6)) << c.name;
    ASSERT_EQ(g_fast.size(), g_generic.size());
    for (size_t i = 0; i < g_fast.size(); ++i) {
      EXPECT_TRUE(torch::allclose(g_fast[i], g_generic[i], 1e-4, 1e-6)) << c.name << " parameter " << i;
    }
    EXPECT_NEAR(out_f.loss.item<double>(), out_g.loss.item<double>(), 1e-4);
    EXPECT_EQ(out_f.correct, out_g.correct);
    EXPECT_EQ(out_f.count, 9);
    // Every example's contribution has norm at most C: so has the mean of them.
    double sq = 0;
    for (auto& g : g_fast) sq += g.pow(2).sum().item<double>();
    EXPECT_LE(std::sqrt(sq), 9 * clip * (1 + 1e-5)) << c.name;
  }
}

// Trains `m` on `d` with DP-SGD at sampling rate 1 (every row every step, so the
// batches are the same in every run) and returns the change of its parameters.
torch::Tensor dp_update(model::Model& m, const data::Dataset& d, double clip, double sigma, int64_t steps,
                        double lr, bool allow_fast, bool dp = true) {
  const torch::Tensor before = flat_copy(m);
  TrainOptions o;
  o.steps = steps;
  o.batch_size = d.size();
  o.seed = 1;
  o.dp.on = dp;
  o.dp.noise_multiplier = sigma;
  o.dp.max_grad_norm = clip;
  o.dp.allow_fast = allow_fast;
  auto stats = train_local(m, d, o, Hyperparameters(nlohmann::json{{"lr", lr}}));
  EXPECT_TRUE(stats.ok()) << stats.status().message();
  return flat_copy(m) - before;
}

// By construction: with C tiny and σ = 0, replacing one record by an extreme one moves
// the update by at most C·lr·steps; without DP the same record moves it far more.
TEST(DpSgd, OneRecordsInfluenceIsBoundedByClipping) {
  const double clip = 1e-4, lr = 0.5;
  const int64_t steps = 5;
  for (bool fast : {true, false}) {
    data::Dataset d = random_data(16, {6}, 11);
    data::Dataset outlier{d.x.clone(), d.y.clone()};
    outlier.x[0].fill_(1e3);
    outlier.y[0] = 3;
    auto m1 = make("mlp", {6}, {{"hidden", {8}}});
    auto m2 = make("mlp", {6}, {{"hidden", {8}}});
    const torch::Tensor u1 = dp_update(*m1, d, clip, 0.0, steps, lr, fast);
    const torch::Tensor u2 = dp_update(*m2, outlier, clip, 0.0, steps, lr, fast);
    const double influence = (u1 - u2).norm().item<double>();
    EXPECT_LE(influence, clip * lr * steps) << (fast ? "fast" : "generic");
    EXPECT_GT(influence, 0.0);
    auto m3 = make("mlp", {6}, {{"hidden", {8}}});
    auto m4 = make("mlp", {6}, {{"hidden", {8}}});
    const double plain = (dp_update(*m3, d, clip, 0, steps, lr, fast, false) -
                          dp_update(*m4, outlier, clip, 0, steps, lr, fast, false)).norm().item<double>();
    EXPECT_GT(plain, 100 * clip * lr * steps) << "without clipping the outlier should dominate";
  }
}

// The noise added to a step is N(0, (σ·C)²) per coordinate before the division by the
// expected batch size, and a second run with the same job seed draws other noise.
TEST(DpSgd, NoiseHasTheStatedSizeAndIsNotFromTheSeed) {
  data::Dataset d = random_data(20, {30}, 5);
  const double clip = 0.5, sigma = 2.0, lr = 1.0;
  auto base = make("mlp", {30}, {{"hidden", {32}}});
  const torch::Tensor clean = dp_update(*base, d, clip, 0.0, 1, lr, true);
  auto a = make("mlp", {30}, {{"hidden", {32}}});
  auto b = make("mlp", {30}, {{"hidden", {32}}});
  const torch::Tensor ua = dp_update(*a, d, clip, sigma, 1, lr, true);
  const torch::Tensor ub = dp_update(*b, d, clip, sigma, 1, lr, true);
  // update = -lr (clipped sum + noise) / n: the noise is (clean - update)·n/lr.
  const torch::Tensor noise = (clean - ua) * (d.size() / lr);
  const double std = noise.std().item<double>();
  // Bounds of five standard errors: the sample std's relative error is 1/sqrt(2N),
  // the mean's sigma·C/sqrt(N), over N = 1124 coordinates.
  const double n = static_cast<double>(noise.numel());
  EXPECT_NEAR(std, sigma * clip, 5 * sigma * clip / std::sqrt(2 * n)) << "over " << n << " coordinates";
  EXPECT_NEAR(noise.mean().item<double>(), 0.0, 5 * sigma * clip / std::sqrt(n));
  EXPECT_FALSE(torch::allclose(ua, ub)) << "two runs with the same seed drew the same noise";
}

TEST(DpSgd, BatchNormIsRefusedUnderDp) {
  auto m = make("mlp", {6}, {{"hidden", {8}}, {"batch_norm", true}});
  data::Dataset d = random_data(16, {6}, 2);
  TrainOptions o = dp_options(1, 8);
  auto stats = train_local(*m, d, o, Hyperparameters());
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.status().message().find("batch norm"), std::string::npos) << stats.status().message();
  EXPECT_FALSE(privacy::check_model(*m).ok());
}

// Model code that writes its own parameters while its gradients are taken (here:
// copies the first input row into the bias) would carry data past clipping and noise.
// Under DP the pod refuses it, and trains with its own optimizer, not the model's.
class LeakyLinear : public model::ModuleModel {
 public:
  model::StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
    {
      torch::NoGradGuard no_grad;
      auto bias = module_->named_parameters()["0.bias"];
      bias.copy_(x.flatten(1)[0].narrow(0, 0, bias.size(0)));
    }
    return Model::training_step(x, y);
  }
  std::unique_ptr<torch::optim::Optimizer> configure_optimizers(const Hyperparameters&) override {
    std::vector<torch::Tensor> ps;
    for (auto& [n, p] : named_parameters()) ps.push_back(p);
    return std::make_unique<torch::optim::SGD>(ps, torch::optim::SGDOptions(1e6));
  }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    torch::nn::Sequential seq(torch::nn::Linear(in.at(0), classes));
    module_ = seq.ptr();
    forward_ = [seq](const torch::Tensor& x) mutable { return seq->forward(x.flatten(1)); };
  }
};

TEST(DpSgd, ModelCodeThatWritesItsParametersIsRefused) {
  LeakyLinear m;
  m.create_model({6}, 4, Hyperparameters());
  data::Dataset d = random_data(16, {6}, 4);
  TrainOptions o = dp_options(1, 8);
  auto stats = train_local(m, d, o, Hyperparameters());
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.status().message().find("changed its own parameters"), std::string::npos) << stats.status().message();
}

// Under DP the optimizer is the pod's (lr from the hyperparameters), not the model's
// configure_optimizers (here lr 1e6): the change stays within lr·C.
TEST(DpSgd, TheOptimizerIsThePodsNotTheModels) {
  class BigStep : public LeakyLinear {
   public:
    model::StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
      return Model::training_step(x, y);
    }
  } m;
  m.create_model({6}, 4, Hyperparameters());
  data::Dataset d = random_data(16, {6}, 4);
  const torch::Tensor u = dp_update(m, d, 0.1, 0.0, 1, 0.01, true);
  EXPECT_LE(u.norm().item<double>(), 0.01 * 0.1 * (1 + 1e-5));
}

// Poisson sampling: the batches vary in size around the expected one, and an epoch is
// ceil(n / batch_size) steps.
TEST(DpSgd, PoissonBatchesAndStepsPerRound) {
  EXPECT_EQ(privacy::steps_per_round(2, 0, 32, 100), 8);
  EXPECT_EQ(privacy::steps_per_round(0, 7, 32, 100), 7);
  auto m = make("mlp", {6}, {{"hidden", {8}}});
  data::Dataset d = random_data(400, {6}, 9);
  TrainOptions o = dp_options(0, 40, 5);
  auto stats = train_local(*m, d, o, Hyperparameters());
  ASSERT_TRUE(stats.ok()) << stats.status().message();
  EXPECT_EQ(stats->steps, 50);
  EXPECT_STREQ(stats->dp_path, "fast");
  // 50 steps of Binomial(400, 0.1): mean 2000 samples, sd about 19.
  EXPECT_NEAR(static_cast<double>(stats->samples_seen), 2000.0, 150.0);
}

}  // namespace
}  // namespace fedpod::worker
