// Custom models scripted from Python: archives made by Debian's python3-torch at test
// time (fixtures/make_torchscript_fixtures.py), loaded and trained through the Model
// interface, and every broken variant refused with its reason.
#include "fedpod/model/torchscript.h"
#include "fedpod/privacy/dp_sgd.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/torch.h>

#include <fstream>

#include "testutil.h"

namespace fedpod::model {
namespace {

using namespace std::chrono_literals;

class TorchScriptTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    const std::string log = (dir_->path() / "fixtures.log").string();
    testing::Process py({"/usr/bin/python3",
                         testing::source_dir() + "/tests/unit/model/fixtures/make_torchscript_fixtures.py",
                         dir_->path().string()},
                        log);
    const int status = py.wait(300s);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(log);
  }
  static void TearDownTestSuite() { delete dir_; }

  static std::string path(const std::string& name) { return (dir_->path() / name).string(); }

  static std::unique_ptr<Model> load(const std::string& name) {
    auto m = load_torchscript(path(name));
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    return m.ok() ? std::move(*m) : nullptr;
  }

  static testing::TempDir* dir_;
};
testing::TempDir* TorchScriptTest::dir_ = nullptr;

TEST_F(TorchScriptTest, ExampleModelCreatesAndTrains) {
  auto m = load("good.pt");
  ASSERT_NE(m, nullptr);
  m->create_model({1, 8, 8}, 10, Hyperparameters());
  std::vector<std::string> names;
  for (const auto& p : m->flat().layout()) names.push_back(p.name);
  EXPECT_EQ(names, (std::vector<std::string>{"conv.weight", "conv.bias", "head.weight", "head.bias"}));
  EXPECT_EQ(m->flat().numel(), 16 * 9 + 16 + 10 * 256 + 10);
  // Parameters are views of the flat buffer: writing it changes what forward sees.
  torch::Tensor x = torch::rand({4, 1, 8, 8});
  torch::Tensor before = m->forward(x).detach().clone();
  {
    torch::NoGradGuard g;
    m->flat().writable().zero_();
  }
  EXPECT_TRUE(torch::equal(m->forward(x), torch::zeros({4, 10})));
  EXPECT_FALSE(torch::equal(before, torch::zeros({4, 10})));

  // configure_optimizers from the module (adam, lr 0.01); the job may override.
  auto opt = m->configure_optimizers(Hyperparameters());
  auto* adam = dynamic_cast<torch::optim::Adam*>(opt.get());
  ASSERT_NE(adam, nullptr);
  EXPECT_DOUBLE_EQ(static_cast<torch::optim::AdamOptions&>(adam->param_groups()[0].options()).lr(), 0.01);
  auto sgd = m->configure_optimizers(Hyperparameters(nlohmann::json{{"optimizer", "sgd"}, {"lr", 0.2}}));
  EXPECT_NE(dynamic_cast<torch::optim::SGD*>(sgd.get()), nullptr);
}

TEST_F(TorchScriptTest, TrainingStepsLowerTheLoss) {
  auto m = load("good.pt");
  ASSERT_NE(m, nullptr);
  torch::manual_seed(3);
  m->create_model({1, 8, 8}, 10, Hyperparameters());
  {
    torch::NoGradGuard g;
    m->flat().writable().normal_(0, 0.1);
  }
  torch::Tensor x = torch::rand({32, 1, 8, 8});
  torch::Tensor y = torch::randint(0, 10, {32}, torch::kInt64);
  auto opt = m->configure_optimizers(Hyperparameters());
  m->set_training(true);
  const double first = m->training_step(x, y).loss.item<double>();
  for (int i = 0; i < 30; ++i) {
    opt->zero_grad();
    auto out = m->training_step(x, y);
    out.loss.backward();
    opt->step();
  }
  auto last = m->validation_step(x, y);
  EXPECT_LT(last.loss.item<double>(), first * 0.5);
  EXPECT_EQ(last.count, 32);
  EXPECT_GT(last.correct, 16);  // memorizes 32 samples
}

// DP-SGD's generic path on a scripted model (no fast path: it is not a built-in
// Sequential). Unclipped, the per-example gradients add up to the batch size times the
// gradient of the batch's mean loss; clipped to C, each example adds at most C.
TEST_F(TorchScriptTest, DpSgdPerExampleGradientsOfAScriptedModel) {
  auto m = load("good.pt");
  ASSERT_NE(m, nullptr);
  torch::manual_seed(5);
  m->create_model({1, 8, 8}, 10, Hyperparameters());
  m->set_training(true);
  torch::Tensor x = torch::rand({6, 1, 8, 8});
  torch::Tensor y = torch::randint(0, 10, {6}, torch::kInt64);
  privacy::PerExampleGradients pe(*m);
  ASSERT_EQ(pe.path(), privacy::GradientPath::kGeneric);
  (void)pe.clipped_sum(x, y, 1e9);
  std::vector<torch::Tensor> summed;
  for (auto& [name, p] : m->named_parameters()) summed.push_back(p.grad().clone());
  for (auto& [name, p] : m->named_parameters()) p.mutable_grad() = torch::Tensor();
  m->training_step(x, y).loss.backward();
  size_t i = 0;
  for (auto& [name, p] : m->named_parameters()) {
    EXPECT_TRUE(torch::allclose(summed[i++], p.grad() * 6, 1e-4, 1e-6)) << name;
  }
  const double clip = pe.last_norms().min().item<double>() / 4;  // every example clipped
  (void)pe.clipped_sum(x, y, clip);
  double sq = 0;
  for (auto& [name, p] : m->named_parameters()) sq += p.grad().pow(2).sum().item<double>();
  EXPECT_LE(std::sqrt(sq), 6 * clip * (1 + 1e-5));
  EXPECT_GT(std::sqrt(sq), 0.0);
}

TEST_F(TorchScriptTest, LossOnlyStepsStillCountCorrectPredictions) {
  auto m = load("loss_only.pt");
  ASSERT_NE(m, nullptr);
  m->create_model({4}, 3, Hyperparameters());
  torch::Tensor x = torch::rand({10, 4});
  torch::Tensor logits = m->forward(x).detach();
  torch::Tensor y = logits.argmax(1);  // labels the model already predicts
  auto out = m->test_step(x, y);
  EXPECT_EQ(out.count, 10);
  EXPECT_EQ(out.correct, 10);
}

TEST_F(TorchScriptTest, ShapeMismatchWithTheJobIsNamed) {
  auto m = load("good.pt");
  ASSERT_NE(m, nullptr);
  try {
    m->create_model({1, 8, 8}, 5, Hyperparameters());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_CONTAINS(e.what(), "forward on an input of shape [2, 1, 8, 8] returned [2, 10], the job needs [2, 5]");
  }
  auto flat_input = load("good.pt");
  try {
    flat_input->create_model({64}, 10, Hyperparameters());
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_CONTAINS(e.what(), "forward fails on an input of shape [2, 64]");
  }
}

TEST_F(TorchScriptTest, MissingStepsAreNamed) {
  auto m = load_torchscript(path("no_steps.pt"));
  ASSERT_FALSE(m.ok());
  EXPECT_CONTAINS(m.status().message(), "lacks training_step, validation_step, test_step");
}

TEST_F(TorchScriptTest, Float64ParametersAreRefused) {
  auto m = load("float64.pt");
  ASSERT_NE(m, nullptr);
  EXPECT_CONTAINS(testing::config_error([&] { m->create_model({4}, 3, Hyperparameters()); }), "float32");
}

TEST_F(TorchScriptTest, BrokenArchivesAreRefused) {
  auto zip = load_torchscript(path("not_torchscript.pt"));
  ASSERT_FALSE(zip.ok());
  EXPECT_CONTAINS(zip.status().message(), "not_torchscript.pt: not a TorchScript archive");

  const std::string junk = dir_->write("junk.pt", std::string(1000, '\x17'));
  auto bad = load_torchscript(junk);
  ASSERT_FALSE(bad.ok());
  EXPECT_CONTAINS(bad.status().message(), "junk.pt: not a TorchScript archive");

  // A truncated copy of a good archive.
  const std::string good = testing::read_file(path("good.pt"));
  const std::string cut = dir_->write("cut.pt", good.substr(0, good.size() / 2));
  auto truncated = load_torchscript(cut);
  ASSERT_FALSE(truncated.ok());
  EXPECT_CONTAINS(truncated.status().message(), "not a TorchScript archive");

  auto missing = load_torchscript(path("nope.pt"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedpod::model
