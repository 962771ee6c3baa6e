// Tests for FedProx's proximal term at the pod (worker/trainer.h TrainOptions::
// proximal_mu): two SGD steps against the update written out by hand, μ = 0 leaving
// training exactly as it was, the pull towards the round's start growing with μ, and
// pods with several replicas applying the same term.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "fedpod/model/zoo.h"
#include "fedpod/worker/data_parallel.h"
#include "fedpod/worker/trainer.h"

namespace fedpod::worker {
namespace {

constexpr int64_t kFeatures = 6;
constexpr int64_t kClasses = 3;

data::Dataset synthetic(int64_t n) {
  auto gen = at::detail::createCPUGenerator(3);
  data::Dataset d;
  d.x = torch::randn({n, kFeatures}, gen);
  d.y = torch::randint(0, kClasses, {n}, gen);
  return d;
}

std::unique_ptr<model::Model> make_model(const std::string& ref, const Hyperparameters& hp) {
  auto m = model::make_builtin(ref);
  torch::manual_seed(7);
  m->create_model({kFeatures}, kClasses, hp);
  return m;
}

const Hyperparameters kSgd(nlohmann::json{{"optimizer", "sgd"}, {"lr", 0.5}, {"momentum", 0.0}, {"hidden", {8}}});

// The gradient of the model's own loss on the whole of `d` at its current parameters.
std::vector<torch::Tensor> data_gradient(model::Model& m, const data::Dataset& d) {
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : m.named_parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  m.set_training(true);
  m.training_step(d.x, d.y).loss.backward();
  std::vector<torch::Tensor> g;
  for (auto& p : params) g.push_back(p.grad().clone());
  return g;
}

TEST(ProximalTermTest, TwoSgdStepsMatchTheUpdateWrittenOut) {
  const double lr = 0.5, mu = 0.3;
  const data::Dataset d = synthetic(32);
  // By hand: w1 = w0 − η·∇L(w0) (the term is 0 at the start);
  //          w2 = w1 − η·(∇L(w1) + μ·(w1 − w0)).
  auto ref = make_model("logreg", kSgd);
  std::vector<torch::Tensor> params, w0;
  for (auto& [name, p] : ref->named_parameters()) {
    params.push_back(p);
    w0.push_back(p.detach().clone());
  }
  auto g0 = data_gradient(*ref, d);
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].sub_(g0[i] * lr);
  }
  auto g1 = data_gradient(*ref, d);
  {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params.size(); ++i) params[i].sub_((g1[i] + (params[i] - w0[i]) * mu) * lr);
  }

  auto trained = make_model("logreg", kSgd);
  TrainOptions o;
  o.steps = 2;
  o.batch_size = 32;  // the whole set each step: only the order within it is shuffled
  o.proximal_mu = mu;
  auto stats = train_local(*trained, d, o, kSgd);
  ASSERT_TRUE(stats.ok()) << stats.status().to_string();
  EXPECT_TRUE(torch::allclose(trained->flat().tensor(), ref->flat().tensor(), 1e-5, 1e-6))
      << "max difference " << (trained->flat().tensor() - ref->flat().tensor()).abs().max().item<double>();

  // Without the term the second step differs by η·μ·(w1 − w0), which is not small here.
  auto plain = make_model("logreg", kSgd);
  o.proximal_mu = 0;
  ASSERT_TRUE(train_local(*plain, d, o, kSgd).ok());
  EXPECT_GT((plain->flat().tensor() - ref->flat().tensor()).abs().max().item<double>(), 1e-3);
}

TEST(ProximalTermTest, ZeroMuIsBitForBitPlainTraining) {
  const data::Dataset d = synthetic(64);
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 8;
  o.seed = 9;
  auto a = make_model("mlp", kSgd), b = make_model("mlp", kSgd);
  ASSERT_TRUE(train_local(*a, d, o, kSgd).ok());
  o.proximal_mu = 0.0;
  ASSERT_TRUE(train_local(*b, d, o, kSgd).ok());
  EXPECT_TRUE(torch::equal(a->flat().tensor(), b->flat().tensor()));
}

// How far training moves the parameters, for a given μ.
double drift(double mu, int replicas) {
  const data::Dataset d = synthetic(96);
  TrainOptions o;
  o.epochs = 3;
  o.batch_size = 12;
  o.seed = 4;
  o.proximal_mu = mu;
  const Hyperparameters hp(nlohmann::json{{"optimizer", "sgd"}, {"lr", 0.1}, {"momentum", 0.0}, {"hidden", {8}}});
  auto m = make_model("mlp", hp);
  const torch::Tensor start = m->flat().tensor().clone();
  if (replicas == 1) {
    EXPECT_TRUE(train_local(*m, d, o, hp).ok());
  } else {
    std::vector<std::unique_ptr<model::Model>> others;
    for (int r = 1; r < replicas; ++r) others.push_back(make_model("mlp", hp));
    auto dp = DataParallel::create(*m, std::move(others), std::vector<std::string>(replicas, "cpu"));
    EXPECT_TRUE(dp.ok());
    if (!dp.ok()) return 0;
    auto st = (*dp)->train(d, o, hp);
    EXPECT_TRUE(st.ok()) << st.status().to_string();
  }
  return (m->flat().tensor() - start).norm().item<double>();
}

TEST(ProximalTermTest, ALargerMuKeepsTrainingCloserToTheRoundsStartOnOneOrSeveralReplicas) {
  for (int replicas : {1, 2}) {
    const double free = drift(0, replicas), some = drift(1, replicas), strong = drift(5, replicas);
    EXPECT_GT(free, 0.05) << replicas;
    EXPECT_LT(some, 0.9 * free) << replicas;
    EXPECT_LT(strong, 0.6 * some) << replicas;
  }
  // Two replicas apply the term after averaging their gradients: the same training as
  // one model on the whole batches, up to float rounding.
  EXPECT_NEAR(drift(1, 2), drift(1, 1), 1e-4 * drift(1, 1));
}

}  // namespace
}  // namespace fedpod::worker
