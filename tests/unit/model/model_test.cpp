// Tests for fedpod/model: the built-in zoo, the flat parameter buffer (views, pins,
// re-homing), training and optimizer configuration.
#include "fedpod/model/model.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "fedpod/model/flat_parameters.h"
#include "fedpod/model/zoo.h"

#include "testutil.h"

namespace fedpod::model {
namespace {

using Shapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

Hyperparameters hp(const char* json) { return Hyperparameters(nlohmann::json::parse(json)); }

std::unique_ptr<Model> create(const std::string& name, const std::vector<int64_t>& input_shape,
                              int64_t classes, const Hyperparameters& h = Hyperparameters()) {
  torch::manual_seed(1234);
  auto m = make_builtin(name);
  if (!m) throw std::runtime_error("no builtin " + name);
  m->create_model(input_shape, classes, h);
  return m;
}

Shapes shapes_of(Model& m) {
  Shapes out;
  for (const auto& [name, p] : m.named_parameters()) out.emplace_back(name, p.sizes().vec());
  return out;
}

// Checks that the layout matches the parameters, tiles the buffer in order, and that
// every parameter is a view into the flat buffer at its offset.
void expect_views_into_flat(Model& m) {
  const auto& layout = m.flat().layout();
  auto params = m.named_parameters();
  ASSERT_EQ(layout.size(), params.size());
  const torch::Tensor& flat = m.flat().tensor();
  ASSERT_TRUE(flat.is_contiguous());
  EXPECT_EQ(flat.scalar_type(), torch::kFloat32);
  int64_t offset = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, p] = params[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(layout[i].name, name);
    EXPECT_EQ(layout[i].shape, p.sizes().vec());
    EXPECT_EQ(layout[i].offset, offset);
    EXPECT_EQ(layout[i].numel, p.numel());
    EXPECT_TRUE(p.is_alias_of(flat));
    EXPECT_EQ(p.data_ptr<float>(), flat.data_ptr<float>() + offset);
    EXPECT_TRUE(p.is_contiguous());
    offset += p.numel();
  }
  EXPECT_EQ(offset, m.flat().numel());
  EXPECT_EQ(m.flat().bytes(), offset * 4);
}

// ---- The zoo --------------------------------------------------------------------------

TEST(ZooTest, Names) {
  EXPECT_EQ(builtin_names(), (std::vector<std::string>{"logreg", "mlp", "cnn", "2nn", "mnist_cnn"}));
  for (const auto& n : builtin_names()) {
    EXPECT_TRUE(is_builtin(n));
    EXPECT_NE(make_builtin(n), nullptr) << n;
  }
  EXPECT_FALSE(is_builtin("nope"));
  EXPECT_FALSE(is_builtin(""));
  EXPECT_EQ(make_builtin("nope"), nullptr);
}

TEST(ZooTest, LogregLayout) {
  auto m = create("logreg", {64}, 10);
  EXPECT_EQ(shapes_of(*m), (Shapes{{"0.weight", {10, 64}}, {"0.bias", {10}}}));
  EXPECT_EQ(m->flat().numel(), 650);
  expect_views_into_flat(*m);
}

TEST(ZooTest, LogregFlattensImageInput) {
  auto m = create("logreg", {1, 8, 8}, 10);
  EXPECT_EQ(m->flat().numel(), 650);
  EXPECT_EQ(m->forward(torch::zeros({3, 1, 8, 8})).sizes().vec(), (std::vector<int64_t>{3, 10}));
}

TEST(ZooTest, MlpLayout) {
  auto m = create("mlp", {64}, 10, hp(R"({"hidden": [32, 16]})"));
  EXPECT_EQ(shapes_of(*m), (Shapes{{"0.weight", {32, 64}},
                                   {"0.bias", {32}},
                                   {"2.weight", {16, 32}},
                                   {"2.bias", {16}},
                                   {"4.weight", {10, 16}},
                                   {"4.bias", {10}}}));
  EXPECT_EQ(m->flat().numel(), 32 * 64 + 32 + 16 * 32 + 16 + 10 * 16 + 10);
  expect_views_into_flat(*m);
  EXPECT_EQ(m->forward(torch::zeros({5, 64})).sizes().vec(), (std::vector<int64_t>{5, 10}));
}

TEST(ZooTest, MlpDefaultHiddenAndDropout) {
  auto m = create("mlp", {4}, 3);
  EXPECT_EQ(m->flat().numel(), 64 * 4 + 64 + 3 * 64 + 3);
  auto d = create("mlp", {4}, 3, hp(R"({"hidden": [8], "dropout": 0.5})"));
  // ReLU and Dropout have no parameters: the output layer is module 3.
  EXPECT_EQ(shapes_of(*d),
            (Shapes{{"0.weight", {8, 4}}, {"0.bias", {8}}, {"3.weight", {3, 8}}, {"3.bias", {3}}}));
}

TEST(ZooTest, CnnLayout) {
  auto m = create("cnn", {1, 8, 8}, 10);
  EXPECT_EQ(shapes_of(*m), (Shapes{{"0.weight", {16, 1, 3, 3}},
                                   {"0.bias", {16}},
                                   {"2.weight", {32, 16, 3, 3}},
                                   {"2.bias", {32}},
                                   {"6.weight", {64, 32 * 4 * 4}},
                                   {"6.bias", {64}},
                                   {"8.weight", {10, 64}},
                                   {"8.bias", {10}}}));
  EXPECT_EQ(m->flat().numel(), 144 + 16 + 4608 + 32 + 32768 + 64 + 640 + 10);
  expect_views_into_flat(*m);
  EXPECT_EQ(m->forward(torch::zeros({2, 1, 8, 8})).sizes().vec(), (std::vector<int64_t>{2, 10}));
}

// McMahan et al. (2017), section 3, give both models' sizes on 28x28 MNIST.
TEST(ZooTest, McMahan2nnHas199210ParametersOnMnist) {
  auto m = create("2nn", {784}, 10);
  EXPECT_EQ(shapes_of(*m), (Shapes{{"0.weight", {200, 784}},
                                   {"0.bias", {200}},
                                   {"2.weight", {200, 200}},
                                   {"2.bias", {200}},
                                   {"4.weight", {10, 200}},
                                   {"4.bias", {10}}}));
  EXPECT_EQ(m->flat().numel(), 199210);
  expect_views_into_flat(*m);
  EXPECT_EQ(create("2nn", {1, 28, 28}, 10)->forward(torch::zeros({3, 1, 28, 28})).sizes().vec(),
            (std::vector<int64_t>{3, 10}));
}

TEST(ZooTest, McMahanCnnHas1663370ParametersOnMnist) {
  auto m = create("mnist_cnn", {1, 28, 28}, 10);
  EXPECT_EQ(shapes_of(*m), (Shapes{{"0.weight", {32, 1, 5, 5}},
                                   {"0.bias", {32}},
                                   {"3.weight", {64, 32, 5, 5}},
                                   {"3.bias", {64}},
                                   {"7.weight", {512, 64 * 7 * 7}},
                                   {"7.bias", {512}},
                                   {"9.weight", {10, 512}},
                                   {"9.bias", {10}}}));
  EXPECT_EQ(m->flat().numel(), 1663370);
  expect_views_into_flat(*m);
  EXPECT_EQ(m->forward(torch::zeros({2, 1, 28, 28})).sizes().vec(), (std::vector<int64_t>{2, 10}));
  EXPECT_CONTAINS(testing::config_error([] { create("mnist_cnn", {784}, 10); }),
                  "mnist_cnn needs an image input_shape");
}

TEST(ZooTest, CnnNeedsImageShape) {
  auto m = make_builtin("cnn");
  EXPECT_CONTAINS(testing::config_error([&] { m->create_model({64}, 10, {}); }),
                  "cnn needs an image input_shape [channels, height, width]");
}

TEST(ZooTest, BadHyperparametersAndShapes) {
  EXPECT_EQ(testing::config_error([] { create("mlp", {4}, 3, hp(R"({"dropout": 1.0})")); }),
            "hyperparameter 'dropout' must be in [0, 1)");
  EXPECT_EQ(testing::config_error([] { create("mlp", {4}, 3, hp(R"({"hidden": [8, 0]})")); }),
            "hyperparameter 'hidden' widths must be positive");
  EXPECT_EQ(testing::config_error([] { create("mlp", {4}, 3, hp(R"({"hidden": "wide"})")); }),
            "hyperparameter 'hidden' must be a list of integers, got \"wide\"");
  EXPECT_EQ(testing::config_error([] { create("logreg", {4}, 1); }), "num_classes must be at least 2");
  EXPECT_EQ(testing::config_error([] {
              create("logreg", {4, 0}, 3);
            }),
            "input shape dimensions must be positive");
}

// ---- Flat parameters ------------------------------------------------------------------

TEST(FlatParametersTest, WritingFlatChangesParametersAndViceVersa) {
  auto m = create("mlp", {6}, 3, hp(R"({"hidden": [5]})"));
  torch::NoGradGuard no_grad;
  m->flat().writable().fill_(0.25f);
  for (const auto& [name, p] : m->named_parameters()) {
    EXPECT_TRUE(torch::all(p == 0.25f).item<bool>()) << name;
  }
  // The model computes with the flat values: all-zero parameters give uniform logits.
  m->flat().writable().zero_();
  auto out = m->validation_step(torch::randn({4, 6}), torch::tensor({0, 1, 2, 0}));
  EXPECT_NEAR(out.loss.item<float>(), std::log(3.0f), 1e-6);

  auto params = m->named_parameters();
  params[2].second.fill_(-1.0f);  // "2.weight", the output layer's weight
  const ParamInfo& info = m->flat().layout()[2];
  ASSERT_EQ(info.name, "2.weight");
  torch::Tensor seg = m->flat().tensor().narrow(0, info.offset, info.numel);
  EXPECT_TRUE(torch::all(seg == -1.0f).item<bool>());
  EXPECT_EQ(m->flat().tensor().eq(-1.0f).sum().item<int64_t>(), info.numel);
}

TEST(FlatParametersTest, WritableWithoutPinKeepsTheBuffer) {
  auto m = create("logreg", {4}, 3);
  const void* before = m->flat().tensor().data_ptr();
  EXPECT_FALSE(m->flat().pinned());
  EXPECT_EQ(m->flat().writable().data_ptr(), before);
  {
    auto token = m->flat().pin();
    EXPECT_TRUE(m->flat().pinned());
  }
  EXPECT_FALSE(m->flat().pinned());  // released
  EXPECT_EQ(m->flat().writable().data_ptr(), before);
}

TEST(FlatParametersTest, WritableWhilePinnedRehomesAndLeavesPinnedBytesAlone) {
  auto m = create("mlp", {6}, 3, hp(R"({"hidden": [5]})"));
  torch::Tensor old = m->flat().tensor();  // what an in-flight send points at
  const torch::Tensor old_values = old.clone();
  auto token = m->flat().pin();

  torch::NoGradGuard no_grad;
  torch::Tensor& fresh = m->flat().writable();
  EXPECT_NE(fresh.data_ptr(), old.data_ptr());
  EXPECT_TRUE(torch::equal(fresh, old_values));  // values carried over
  fresh.fill_(3.0f);
  EXPECT_TRUE(torch::equal(old, old_values));  // the pinned bytes did not change
  expect_views_into_flat(*m);                  // parameters follow the new buffer
  for (const auto& [name, p] : m->named_parameters()) {
    EXPECT_FALSE(p.is_alias_of(old)) << name;
    EXPECT_TRUE(torch::all(p == 3.0f).item<bool>()) << name;
  }
  // The new buffer is not pinned: writing again keeps it.
  EXPECT_FALSE(m->flat().pinned());
  EXPECT_EQ(m->flat().writable().data_ptr(), fresh.data_ptr());
  token.reset();
}

TEST(FlatParametersTest, PinsCountAndMayBeReleasedFromAnotherThread) {
  auto m = create("logreg", {4}, 3);
  auto a = m->flat().pin();
  auto b = m->flat().pin();
  a.reset();
  EXPECT_TRUE(m->flat().pinned());
  std::thread([t = std::move(b)]() mutable { t.reset(); }).join();
  EXPECT_FALSE(m->flat().pinned());
  const void* before = m->flat().tensor().data_ptr();
  EXPECT_EQ(m->flat().writable().data_ptr(), before);
}

TEST(FlatParametersTest, OptimizerWritesTheNewBufferAfterRehome) {
  auto m = create("logreg", {2}, 2);
  auto opt = m->configure_optimizers(hp(R"({"lr": 0.5})"));
  torch::Tensor old = m->flat().tensor();
  const torch::Tensor old_values = old.clone();
  auto token = m->flat().pin();
  m->flat().writable();  // re-homes

  opt->zero_grad();
  auto out = m->training_step(torch::tensor({{1.0f, 2.0f}, {-1.0f, 0.5f}}), torch::tensor({0, 1}));
  out.loss.backward();
  opt->step();
  EXPECT_TRUE(torch::equal(old, old_values));
  EXPECT_FALSE(torch::equal(m->flat().tensor(), old_values));
  expect_views_into_flat(*m);
}

TEST(FlatParametersTest, AdoptRejectsNonFloatAndDuplicates) {
  FlatParameters flat;
  EXPECT_EQ(flat.numel(), 0);
  EXPECT_THROW(flat.adopt({{"a", torch::zeros({2}, torch::kFloat64)}}), std::invalid_argument);
  EXPECT_THROW(flat.adopt({{"a", torch::zeros({2})}, {"a", torch::zeros({3})}}),
               std::invalid_argument);
  torch::Tensor a = torch::arange(6, torch::kFloat32).reshape({2, 3});
  torch::Tensor b = torch::full({4}, 9.0f);
  flat.adopt({{"a", a}, {"b", b}});
  EXPECT_EQ(flat.numel(), 10);
  EXPECT_TRUE(torch::equal(flat.tensor(),
                           torch::tensor({0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 9.f, 9.f, 9.f, 9.f})));
  EXPECT_TRUE(a.is_alias_of(flat.tensor()));
  EXPECT_EQ(a.sizes().vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.data_ptr<float>(), flat.tensor().data_ptr<float>() + 6);
}

// ---- Buffers: batch-norm statistics travel in the flat buffer ---------------------------

TEST(FlatParametersTest, BatchNormBuffersFollowTheParametersInTheLayout) {
  auto m = create("mlp", {3}, 2, hp(R"({"hidden": [4], "batch_norm": true})"));
  const auto& layout = m->flat().layout();
  std::vector<std::string> names;
  for (const auto& info : layout) names.push_back(info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias",
                                             "1.running_mean", "1.running_var", "1.num_batches_tracked"}));
  EXPECT_EQ(m->flat().param_numel(), 4 * 3 + 4 + 4 + 4 + 2 * 4 + 2);
  EXPECT_EQ(m->flat().numel(), m->flat().param_numel() + 4 + 4 + 1);
  EXPECT_EQ(layout[6].kind, EntryKind::kBuffer);
  EXPECT_EQ(layout[8].kind, EntryKind::kMirroredBuffer);
  EXPECT_EQ(layout[8].dtype, torch::kInt64);
  EXPECT_TRUE(m->flat().has_mirrored_buffers());
  // A fresh BatchNorm: running_var is ones, running_mean zeros.
  EXPECT_TRUE(torch::equal(m->flat().tensor().narrow(0, layout[7].offset, 4), torch::ones({4})));
}

TEST(FlatParametersTest, TrainingUpdatesRunningStatisticsInsideTheFlatBuffer) {
  auto m = create("mlp", {3}, 2, hp(R"({"hidden": [4], "batch_norm": true})"));
  const auto& layout = m->flat().layout();
  const ParamInfo& mean = layout[6];
  const ParamInfo& count = layout[8];
  m->set_training(true);
  torch::manual_seed(3);
  for (int step = 0; step < 3; ++step) m->training_step(torch::randn({8, 3}) * 5 + 2, torch::randint(2, {8}));
  // running_mean is a view: the flat buffer saw the update without a copy.
  EXPECT_GT(m->flat().tensor().narrow(0, mean.offset, mean.numel).abs().sum().item<float>(), 0.0f);
  // num_batches_tracked is an int64 of the model's own: the slot changes on capture.
  EXPECT_EQ(m->flat().tensor()[count.offset].item<float>(), 0.0f);
  m->capture_buffers();
  EXPECT_EQ(m->flat().tensor()[count.offset].item<float>(), 3.0f);
  // Global values written into the flat buffer reach the model after restore.
  m->flat().writable()[count.offset] = 41.0f;
  m->flat().writable().narrow(0, mean.offset, mean.numel).fill_(0.5f);
  m->restore_buffers();
  for (const auto& [name, b] : m->named_buffers()) {
    if (name == "1.num_batches_tracked") {
      EXPECT_EQ(b.item<int64_t>(), 41);
    }
    if (name == "1.running_mean") {
      EXPECT_TRUE(torch::equal(b, torch::full({4}, 0.5f)));
    }
  }
}

// A model that replaces a buffer instead of updating it in place (Python's
// `self.ema = self.ema * 0.5 + x` in a scripted module) hands a new tensor to the
// next capture; the flat buffer takes its values in, and it becomes a view again.
TEST(FlatParametersTest, CaptureTakesInABufferTheModelReplaced) {
  FlatParameters flat;
  torch::Tensor w = torch::zeros({2});
  torch::Tensor ema = torch::zeros({3});
  torch::Tensor steps = torch::zeros({1}, torch::kInt32);
  flat.adopt({{"w", w}}, {{"ema", ema}, {"steps", steps}});
  ASSERT_TRUE(ema.is_alias_of(flat.tensor()));
  torch::Tensor replaced = torch::tensor({1.5f, -2.0f, 4.0f});  // not a view of anything
  steps += 7;
  flat.capture_buffers({{"ema", replaced}, {"steps", steps}});
  EXPECT_TRUE(torch::equal(flat.tensor(), torch::tensor({0.f, 0.f, 1.5f, -2.f, 4.f, 7.f})));
  EXPECT_TRUE(replaced.is_alias_of(flat.tensor()));
  // Training through the new handle writes into the flat buffer again.
  replaced.mul_(2);
  EXPECT_EQ(flat.tensor()[2].item<float>(), 3.0f);
  // A pinned buffer (a send in flight) is never written: capture re-homes first.
  auto token = flat.pin();
  const torch::Tensor in_flight = flat.tensor();
  torch::Tensor again = torch::tensor({9.f, 9.f, 9.f});
  flat.capture_buffers({{"ema", again}, {"steps", steps}});
  EXPECT_EQ(in_flight[2].item<float>(), 3.0f);
  EXPECT_EQ(flat.tensor()[2].item<float>(), 9.0f);
  EXPECT_TRUE(again.is_alias_of(flat.tensor()));
  EXPECT_TRUE(w.is_alias_of(flat.tensor()));
}

TEST(FlatParametersTest, AdoptRefusesBuffersItCannotCarry) {
  FlatParameters flat;
  torch::Tensor w = torch::zeros({2});
  try {
    flat.adopt({{"w", w}}, {{"stats", torch::zeros({2}, torch::kFloat64)}});
    FAIL() << "a float64 buffer was adopted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "buffer 'stats' is Double; buffers must be float32, integer or bool");
  }
  EXPECT_THROW(flat.adopt({{"w", w}}, {{"w", torch::zeros({1})}}), std::invalid_argument);  // name clash
  try {
    flat.adopt({{"w", w}}, {{"big", torch::full({1}, kMaxMirroredMagnitude + 1, torch::kInt64)}});
    FAIL() << "a value float32 cannot hold exactly was adopted";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "buffer 'big' holds 16777217, beyond the 16777216 that its float32 slot holds exactly");
  }
  // Bool and integer buffers round-trip through their slots.
  torch::Tensor mask = torch::tensor({true, false, true});
  torch::Tensor ids = torch::tensor({-3, 0, 7}, torch::kInt32);
  flat.adopt({{"w", w}}, {{"mask", mask}, {"ids", ids}});
  EXPECT_TRUE(torch::equal(flat.tensor(), torch::tensor({0.f, 0.f, 1.f, 0.f, 1.f, -3.f, 0.f, 7.f})));
  flat.writable().narrow(0, 2, 6).copy_(torch::tensor({0.f, 1.f, 1.f, 6.6f, -0.4f, 2.f}));
  flat.restore_buffers({{"mask", mask}, {"ids", ids}});
  EXPECT_TRUE(torch::equal(mask, torch::tensor({false, true, true})));
  EXPECT_TRUE(torch::equal(ids, torch::tensor({7, 0, 2}, torch::kInt32)));
  EXPECT_THROW(flat.restore_buffers({{"mask", mask}}), std::invalid_argument);  // a buffer went missing
}

// ---- Training and optimizers ----------------------------------------------------------

TEST(TrainingTest, SgdStepsLowerTheLossOnSeparableData) {
  torch::manual_seed(7);
  // Two Gaussian blobs around (+2, +2) and (-2, -2).
  torch::Tensor y =
      torch::cat({torch::zeros({32}, torch::kInt64), torch::ones({32}, torch::kInt64)});
  torch::Tensor centers =
      torch::where(y.unsqueeze(1) == 0, torch::full({1}, 2.0f), torch::full({1}, -2.0f))
          .expand({64, 2});
  torch::Tensor x = centers + 0.5f * torch::randn({64, 2});

  for (const char* name : {"logreg", "mlp"}) {
    SCOPED_TRACE(name);
    auto m = create(name, {2}, 2, hp(R"({"hidden": [8]})"));
    const torch::Tensor initial = m->flat().tensor().clone();
    auto opt = m->configure_optimizers(hp(R"({"optimizer": "sgd", "lr": 0.1})"));
    m->set_training(true);
    const float first = m->training_step(x, y).loss.item<float>();
    for (int step = 0; step < 50; ++step) {
      opt->zero_grad();
      auto out = m->training_step(x, y);
      out.loss.backward();
      opt->step();
    }
    m->set_training(false);
    torch::NoGradGuard no_grad;
    auto eval = m->validation_step(x, y);
    EXPECT_LT(eval.loss.item<float>(), 0.5f * first);
    EXPECT_EQ(eval.count, 64);
    EXPECT_GE(eval.correct, 62);
    // Training moved the flat buffer itself.
    EXPECT_FALSE(torch::equal(m->flat().tensor(), initial));
    expect_views_into_flat(*m);
  }
}

TEST(TrainingTest, StepOutputCounts) {
  auto m = create("logreg", {2}, 2);
  torch::NoGradGuard no_grad;
  m->flat().writable().zero_();
  auto params = m->named_parameters();
  params[0].second.copy_(torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}}));  // logit k = x_k
  auto out = m->test_step(torch::tensor({{2.0f, 1.0f}, {0.0f, 3.0f}, {5.0f, 4.0f}}),
                          torch::tensor({0, 0, 0}));
  EXPECT_EQ(out.count, 3);
  EXPECT_EQ(out.correct, 2);
  EXPECT_EQ(out.loss.dim(), 0);
}

// count_correct's loop must count what argmax(1).eq(y).sum() counts, ties and NaNs
// included, and hand everything it does not loop over to those operators.
TEST(TrainingTest, CountCorrectAgreesWithArgmax) {
  auto reference = [](const torch::Tensor& logits, const torch::Tensor& y) {
    return logits.argmax(1).eq(y).sum().item<int64_t>();
  };
  torch::manual_seed(3);
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t rows = 1 + trial % 37, cols = 1 + trial % 11;
    // Few distinct values, so rows tie; some NaNs, infinities and negative zeros.
    torch::Tensor logits = torch::randint(-2, 3, {rows, cols}).to(torch::kFloat32);
    torch::Tensor pick = torch::rand({rows, cols});
    logits.masked_fill_(pick < 0.05, std::nanf(""));
    logits.masked_fill_((pick >= 0.05) & (pick < 0.08), INFINITY);
    logits.masked_fill_((pick >= 0.08) & (pick < 0.1), -0.0f);
    torch::Tensor y = torch::randint(0, cols, {rows}, torch::kInt64);
    ASSERT_EQ(fedpod::model::count_correct(logits, y), reference(logits, y)) << logits << y;
  }
  // Not contiguous, another dtype, int32 labels: the operators' answer.
  torch::Tensor wide = torch::randn({16, 8});
  torch::Tensor y = torch::randint(0, 4, {16}, torch::kInt64);
  torch::Tensor strided = wide.narrow(1, 0, 4);
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_EQ(fedpod::model::count_correct(strided, y), reference(strided, y));
  EXPECT_EQ(fedpod::model::count_correct(strided.to(torch::kFloat64), y), reference(strided.to(torch::kFloat64), y));
  EXPECT_EQ(fedpod::model::count_correct(strided.contiguous(), y.to(torch::kInt32)),
            reference(strided.contiguous(), y.to(torch::kInt32)));
  // A logit tensor that requires grad (as in training) is read without a graph.
  torch::Tensor trained = strided.contiguous().requires_grad_(true);
  EXPECT_EQ(fedpod::model::count_correct(trained, y), reference(trained, y));
}

TEST(OptimizerTest, KnownOptimizers) {
  auto m = create("logreg", {2}, 2);
  EXPECT_NE(dynamic_cast<torch::optim::SGD*>(m->configure_optimizers({}).get()), nullptr);
  EXPECT_NE(dynamic_cast<torch::optim::Adam*>(
                m->configure_optimizers(hp(R"({"optimizer": "adam"})")).get()),
            nullptr);
  EXPECT_NE(dynamic_cast<torch::optim::AdamW*>(
                m->configure_optimizers(hp(R"({"optimizer": "adamw", "lr": 0.01})")).get()),
            nullptr);
  auto sgd = m->configure_optimizers(hp(R"({"lr": 0.2, "momentum": 0.9})"));
  auto& options = static_cast<torch::optim::SGDOptions&>(sgd->param_groups()[0].options());
  EXPECT_DOUBLE_EQ(options.lr(), 0.2);
  EXPECT_DOUBLE_EQ(options.momentum(), 0.9);
  EXPECT_EQ(sgd->param_groups()[0].params().size(), 2u);
}

TEST(OptimizerTest, UnknownOptimizerIsNamed) {
  auto m = create("logreg", {2}, 2);
  EXPECT_EQ(testing::config_error([&] { m->configure_optimizers(hp(R"({"optimizer": "rmsprop"})")); }),
            "hyperparameter 'optimizer' must be sgd, adam or adamw, got \"rmsprop\"");
  EXPECT_EQ(testing::config_error([&] { m->configure_optimizers(hp(R"({"lr": 0})")); }),
            "hyperparameter 'lr' must be positive");
  EXPECT_EQ(testing::config_error([&] { m->configure_optimizers(hp(R"({"lr": "big"})")); }),
            "hyperparameter 'lr' must be a number, got \"big\"");
}

}  // namespace
}  // namespace fedpod::model
