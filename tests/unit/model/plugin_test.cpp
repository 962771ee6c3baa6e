// Tests for fedpod/model/plugin.h: loading native model plugins built with
// cmake/FedpodModel.cmake (tests/unit/model/plugins/ and examples/plugin_model/),
// training them, and the error for each way a plugin can be broken.
#include "fedpod/model/plugin.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <string>
#include <vector>

#include "testutil.h"

namespace fedpod::model {
namespace {

Hyperparameters hp(const char* json) { return Hyperparameters(nlohmann::json::parse(json)); }

// Loads `path`, failing the test (and returning null) when that does not work.
std::unique_ptr<Model> load_ok(const std::string& path) {
  auto m = load_plugin(path);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return m.ok() ? std::move(m).value() : nullptr;
}

// The status of loading `path`, which must fail.
Status load_error(const std::string& path) {
  auto m = load_plugin(path);
  EXPECT_FALSE(m.ok()) << path << " loaded";
  return m.status();
}

// Every parameter is a view into the flat buffer at its layout offset.
void expect_views_into_flat(Model& m) {
  const torch::Tensor& flat = m.flat().tensor();
  const auto& layout = m.flat().layout();
  auto params = m.named_parameters();
  ASSERT_EQ(layout.size(), params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    SCOPED_TRACE(params[i].first);
    EXPECT_EQ(layout[i].name, params[i].first);
    EXPECT_TRUE(params[i].second.is_alias_of(flat));
    EXPECT_EQ(params[i].second.data_ptr<float>(), flat.data_ptr<float>() + layout[i].offset);
  }
}

// Runs `steps` optimizer steps on one batch; returns the training loss before and after.
std::pair<float, float> train(Model& m, const Hyperparameters& opt_hp, const torch::Tensor& x,
                              const torch::Tensor& y, int steps) {
  auto opt = m.configure_optimizers(opt_hp);
  m.set_training(true);
  float first = 0, last = 0;
  for (int step = 0; step < steps; ++step) {
    opt->zero_grad();
    StepOutput out = m.training_step(x, y);
    if (step == 0) first = out.loss.item<float>();
    out.loss.backward();
    opt->step();
  }
  m.set_training(false);
  torch::NoGradGuard no_grad;
  last = m.validation_step(x, y).loss.item<float>();
  return {first, last};
}

// ---- A good plugin ---------------------------------------------------------------------

TEST(PluginTest, GoodPluginCreatesAModelWhoseParametersAreViewsIntoFlat) {
  auto m = load_ok(FEDPOD_TEST_PLUGIN_GOOD);
  ASSERT_NE(m, nullptr);
  torch::manual_seed(1);
  m->create_model({2}, 3, hp(R"({"hidden": 5})"));
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& [name, p] : m->named_parameters()) shapes.emplace_back(name, p.sizes().vec());
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"0.weight", {5, 2}}, {"0.bias", {5}}, {"2.weight", {3, 5}}, {"2.bias", {3}}};
  EXPECT_EQ(shapes, expected);
  EXPECT_EQ(m->flat().numel(), 5 * 2 + 5 + 3 * 5 + 3);
  expect_views_into_flat(*m);

  // Writing the flat buffer changes what the plugin's forward computes.
  torch::NoGradGuard no_grad;
  m->flat().writable().zero_();
  EXPECT_TRUE(torch::equal(m->forward(torch::ones({4, 2})), torch::zeros({4, 3})));
}

TEST(PluginTest, GoodPluginTrains) {
  auto m = load_ok(FEDPOD_TEST_PLUGIN_GOOD);
  ASSERT_NE(m, nullptr);
  torch::manual_seed(7);
  m->create_model({2}, 2, hp(R"({"hidden": 8})"));
  const torch::Tensor initial = m->flat().tensor().clone();
  // Two Gaussian blobs around (+2, +2) and (-2, -2).
  torch::Tensor y =
      torch::cat({torch::zeros({32}, torch::kInt64), torch::ones({32}, torch::kInt64)});
  torch::Tensor x =
      torch::where(y.unsqueeze(1) == 0, torch::full({1}, 2.0f), torch::full({1}, -2.0f))
          .expand({64, 2}) +
      0.5f * torch::randn({64, 2});
  auto [first, last] = train(*m, hp(R"({"optimizer": "sgd", "lr": 0.1})"), x, y, 30);
  EXPECT_LT(last, 0.5f * first);
  torch::NoGradGuard no_grad;
  EXPECT_GE(m->test_step(x, y).correct, 62);
  EXPECT_FALSE(torch::equal(m->flat().tensor(), initial));
  expect_views_into_flat(*m);
}

// The plugin carries no copy of fedpod: Model's and ModuleModel's code and type info
// are undefined in it and bound to this (exporting) executable's.
TEST(PluginTest, FedpodSymbolsBindToTheHost) {
  auto m = load_ok(FEDPOD_TEST_PLUGIN_GOOD);
  ASSERT_NE(m, nullptr);
  EXPECT_NE(dynamic_cast<ModuleModel*>(m.get()), nullptr);

  void* plugin = dlopen(FEDPOD_TEST_PLUGIN_GOOD, RTLD_NOW | RTLD_NOLOAD);  // already loaded
  ASSERT_NE(plugin, nullptr) << dlerror();
  for (const char* sym : {"_ZTIN6fedpod5model11ModuleModelE",  // typeinfo for ModuleModel
                          "_ZTVN6fedpod5model11ModuleModelE",  // vtable for ModuleModel
                          "_ZN6fedpod5model11ModuleModel7forwardERKN2at6TensorE"}) {
    SCOPED_TRACE(sym);
    EXPECT_EQ(dlsym(plugin, sym), nullptr) << "the plugin defines its own copy";
    EXPECT_NE(dlsym(RTLD_DEFAULT, sym), nullptr) << "the host does not export it";
  }
  EXPECT_EQ(dlsym(RTLD_DEFAULT, "_ZTIN6fedpod5model11ModuleModelE"),
            static_cast<const void*>(&typeid(ModuleModel)));
  // The entry points are the plugin's own.
  EXPECT_NE(dlsym(plugin, "fedpod_create_model"), nullptr);
}

TEST(PluginTest, LoadingTheSamePathTwiceGivesIndependentModels) {
  auto a = load_ok(FEDPOD_TEST_PLUGIN_GOOD);
  auto b = load_ok(FEDPOD_TEST_PLUGIN_GOOD);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_NE(a.get(), b.get());
  a->create_model({4}, 2, Hyperparameters());
  b->create_model({4}, 2, Hyperparameters());
  torch::NoGradGuard no_grad;
  a->flat().writable().fill_(1.0f);
  b->flat().writable().fill_(2.0f);
  EXPECT_EQ(a->flat().tensor().sum().item<float>(), a->flat().numel() * 1.0f);
  EXPECT_EQ(b->flat().tensor().sum().item<float>(), b->flat().numel() * 2.0f);
  a.reset();  // deleting one model leaves the library, and the other model, working
  EXPECT_EQ(b->forward(torch::zeros({1, 4})).sizes().vec(), (std::vector<int64_t>{1, 2}));
}

TEST(PluginTest, PathWithoutDirectoryIsRelativeToTheWorkingDirectory) {
  const std::filesystem::path plugin(FEDPOD_TEST_PLUGIN_GOOD);
  const std::filesystem::path cwd = std::filesystem::current_path();
  std::filesystem::current_path(plugin.parent_path());
  auto m = load_plugin(plugin.filename().string());
  std::filesystem::current_path(cwd);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
}

// ---- Broken plugins and files that are not plugins -------------------------------------

TEST(PluginErrorsTest, MissingFile) {
  Status s = load_error("/nonexistent/dir/model.so");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model plugin '/nonexistent/dir/model.so': no such file");
}

TEST(PluginErrorsTest, Directory) {
  fedpod::testing::TempDir dir;
  Status s = load_error(dir.path().string());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "model plugin '" + dir.path().string() + "': is a directory");
}

TEST(PluginErrorsTest, NotAnElfFile) {
  fedpod::testing::TempDir dir;
  std::string garbage;  // longer than an ELF header, so the loader reads the magic
  for (int i = 0; i < 64; ++i) garbage += "not an ELF file, just text\n";
  const std::string path = dir.write("garbage.so", garbage);
  Status s = load_error(path);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(),
                  "model plugin '" + path + "': cannot be loaded as a shared library: ");
  // dlerror's reason, which names the file: "...: invalid ELF header" on glibc.
  EXPECT_CONTAINS(s.message(), "garbage.so: ");
  EXPECT_CONTAINS(s.message(), "ELF");
}

TEST(PluginErrorsTest, EmptyFile) {
  fedpod::testing::TempDir dir;
  const std::string path = dir.write("empty.so", "");
  Status s = load_error(path);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), "cannot be loaded as a shared library: ");
}

TEST(PluginErrorsTest, MissingFactory) {
  Status s = load_error(FEDPOD_TEST_PLUGIN_NO_FACTORY);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), std::string("model plugin '") + FEDPOD_TEST_PLUGIN_NO_FACTORY +
                             "': has no symbol fedpod_create_model; register the model class with "
                             "FEDPOD_REGISTER_MODEL(YourModel) from fedpod/model/plugin.h");
}

TEST(PluginErrorsTest, MissingVersion) {
  Status s = load_error(FEDPOD_TEST_PLUGIN_NO_VERSION);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(),
            std::string("model plugin '") + FEDPOD_TEST_PLUGIN_NO_VERSION +
                "': has no symbol fedpod_model_abi_version; is it a fedpod model plugin? "
                "Register the model class with FEDPOD_REGISTER_MODEL(YourModel) from "
                "fedpod/model/plugin.h");
}

TEST(PluginErrorsTest, WrongAbiVersion) {
  Status s = load_error(FEDPOD_TEST_PLUGIN_WRONG_ABI);
  EXPECT_EQ(s.code(), StatusCode::kVersionMismatch);
  EXPECT_EQ(s.message(), std::string("model plugin '") + FEDPOD_TEST_PLUGIN_WRONG_ABI +
                             "': built for model ABI 7, this fedpod speaks " + std::to_string(FEDPOD_MODEL_ABI_VERSION) + "; rebuild the plugin "
                             "against this fedpod");
}

TEST(PluginErrorsTest, FactoryThrows) {
  Status s = load_error(FEDPOD_TEST_PLUGIN_THROWING);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            std::string("model plugin '") + FEDPOD_TEST_PLUGIN_THROWING +
                "': fedpod_create_model() threw: license file /opt/model.lic not found");
}

TEST(PluginErrorsTest, FactoryReturnsNull) {
  Status s = load_error(FEDPOD_TEST_PLUGIN_NULL);
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_EQ(s.message(), std::string("model plugin '") + FEDPOD_TEST_PLUGIN_NULL +
                             "': fedpod_create_model() returned null");
}

TEST(PluginErrorsTest, UndefinedSymbolIsRefusedAtLoadTime) {
  Status s = load_error(FEDPOD_TEST_PLUGIN_UNDEFINED_SYMBOL);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.message(), std::string("model plugin '") + FEDPOD_TEST_PLUGIN_UNDEFINED_SYMBOL +
                                   "': cannot be loaded as a shared library: ");
  EXPECT_CONTAINS(s.message(),
                  "undefined symbol: _ZN6fedpod5model34function_this_fedpod_does_not_haveEv");
  EXPECT_CONTAINS(s.message(), "build the host with ENABLE_EXPORTS");
}

// ---- The example plugin, examples/plugin_model/digits_mlp.cpp ---------------------------

TEST(ExamplePluginTest, DigitsMlpLayoutAndTrainingOnRandomData) {
  auto m = load_ok(FEDPOD_EXAMPLE_PLUGIN);
  ASSERT_NE(m, nullptr);
  torch::manual_seed(3);
  m->create_model({8, 8}, 10, hp(R"({"hidden": 24})"));
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& [name, p] : m->named_parameters()) shapes.emplace_back(name, p.sizes().vec());
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"fc1.weight", {24, 64}}, {"fc1.bias", {24}}, {"fc2.weight", {10, 24}}, {"fc2.bias", {10}}};
  EXPECT_EQ(shapes, expected);
  expect_views_into_flat(*m);

  // Random 8x8 "images" with random labels: a few Adam steps memorise the batch.
  torch::Tensor x = torch::rand({64, 8, 8});
  torch::Tensor y = torch::randint(0, 10, {64}, torch::kInt64);
  auto [first, last] = train(*m, hp(R"({"optimizer": "adam", "lr": 0.01})"), x, y, 40);
  EXPECT_LT(last, 0.7f * first);
  torch::NoGradGuard no_grad;
  StepOutput eval = m->test_step(x, y);
  EXPECT_EQ(eval.count, 64);
  EXPECT_GT(eval.correct, 20);  // chance is about 6
  expect_views_into_flat(*m);
}

TEST(ExamplePluginTest, LabelSmoothingChangesOnlyTheTrainingLoss) {
  auto m = load_ok(FEDPOD_EXAMPLE_PLUGIN);
  ASSERT_NE(m, nullptr);
  m->create_model({64}, 10, hp(R"({"label_smoothing": 0.2})"));
  m->set_training(false);  // no dropout either way
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::rand({16, 64});
  torch::Tensor y = torch::randint(0, 10, {16}, torch::kInt64);
  const float smoothed = m->training_step(x, y).loss.item<float>();
  const float plain = m->validation_step(x, y).loss.item<float>();
  const float expected =
      torch::nn::functional::cross_entropy(
          m->forward(x), y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.2))
          .item<float>();
  EXPECT_FLOAT_EQ(smoothed, expected);
  EXPECT_NE(smoothed, plain);
}

// A ConfigError thrown inside the plugin is caught as one in the host.
TEST(ExamplePluginTest, BadHyperparametersThrowConfigErrorAcrossTheBoundary) {
  auto m = load_ok(FEDPOD_EXAMPLE_PLUGIN);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(
      fedpod::testing::config_error([&] { m->create_model({64}, 10, hp(R"({"hidden": 0})")); }),
      "digits_mlp: hyperparameter 'hidden' must be positive, got 0");
  EXPECT_EQ(
      fedpod::testing::config_error([&] { m->create_model({64}, 10, hp(R"({"dropout": 1.5})")); }),
      "digits_mlp: hyperparameter 'dropout' must be in [0, 1), got 1.5");
  // Hyperparameters' own type check runs in the host, called from the plugin.
  EXPECT_CONTAINS(fedpod::testing::config_error(
                      [&] { m->create_model({64}, 10, hp(R"({"hidden": "wide"})")); }),
                  "hyperparameter 'hidden'");
}

}  // namespace
}  // namespace fedpod::model
