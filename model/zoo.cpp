#include "fedpod/model/zoo.h"

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/pooling.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/batchnorm.h>

namespace fedpod::model {
namespace {

int64_t product(const std::vector<int64_t>& shape) {
  int64_t p = 1;
  for (int64_t d : shape) p *= d;
  return p;
}

// Sequential networks: forward flattens or keeps the per-sample shape as needed.
class SequentialModel : public ModuleModel, public SequentialLayers {
 public:
  torch::nn::Sequential layers() const override { return seq_; }
  bool flattens_input() const override { return flatten_input_; }

 protected:
  void set_sequential(torch::nn::Sequential seq, bool flatten_input) {
    seq_ = seq;
    flatten_input_ = flatten_input;
    module_ = seq.ptr();
    forward_ = [seq, flatten_input](const torch::Tensor& x) mutable {
      return seq->forward(flatten_input ? x.flatten(1) : x);
    };
  }

 private:
  torch::nn::Sequential seq_{nullptr};
  bool flatten_input_ = false;
};

class LogisticRegression : public SequentialModel {
 public:
  std::optional<HyperparameterSpec> hyperparameters() override { return common_hyperparameters(); }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    set_sequential(torch::nn::Sequential(torch::nn::Linear(product(in), classes)), true);
  }
};

class Mlp : public SequentialModel {
 public:
  std::optional<HyperparameterSpec> hyperparameters() override {
    HyperparameterSpec spec = common_hyperparameters();
    spec.push_back({"hidden", HyperparameterType::kIntegerList, "hidden layer widths (default [64])", {}});
    spec.push_back({"dropout", HyperparameterType::kNumber, "dropout after each hidden layer, in [0, 1)", {}});
    spec.push_back({"batch_norm", HyperparameterType::kBoolean, "BatchNorm1d after each hidden layer", {}});
    return spec;
  }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters& hp) override {
    auto hidden = hp.integers("hidden", {64});
    double dropout = hp.number("dropout", 0.0);
    const bool batch_norm = hp.boolean("batch_norm", false);
    if (dropout < 0 || dropout >= 1) throw ConfigError("hyperparameter 'dropout' must be in [0, 1)");
    torch::nn::Sequential seq;
    int64_t width = product(in);
    for (int64_t h : hidden) {
      if (h <= 0) throw ConfigError("hyperparameter 'hidden' widths must be positive");
      seq->push_back(torch::nn::Linear(width, h));
      if (batch_norm) seq->push_back(torch::nn::BatchNorm1d(h));
      seq->push_back(torch::nn::ReLU());
      if (dropout > 0) seq->push_back(torch::nn::Dropout(dropout));
      width = h;
    }
    seq->push_back(torch::nn::Linear(width, classes));
    set_sequential(seq, true);
  }
};

class SmallCnn : public SequentialModel {
 public:
  std::optional<HyperparameterSpec> hyperparameters() override {
    HyperparameterSpec spec = common_hyperparameters();
    spec.push_back({"channels", HyperparameterType::kIntegerList, "channels of each 3x3 conv (default [16, 32])", {}});
    spec.push_back({"hidden", HyperparameterType::kInteger, "width of the dense layer (default 64)", {}});
    spec.push_back({"batch_norm", HyperparameterType::kBoolean, "BatchNorm2d after each conv", {}});
    return spec;
  }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters& hp) override {
    if (in.size() != 3) {
      throw ConfigError("cnn needs an image input_shape [channels, height, width], e.g. [1, 8, 8]");
    }
    auto channels = hp.integers("channels", {16, 32});
    int64_t hidden = hp.integer("hidden", 64);
    const bool batch_norm = hp.boolean("batch_norm", false);
    if (channels.empty() || hidden <= 0) throw ConfigError("cnn: channels and hidden must be positive");
    torch::nn::Sequential seq;
    int64_t c = in[0], h = in[1], w = in[2];
    for (size_t i = 0; i < channels.size(); ++i) {
      if (channels[i] <= 0) throw ConfigError("cnn: channels must be positive");
      seq->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(c, channels[i], 3).padding(1)));
      if (batch_norm) seq->push_back(torch::nn::BatchNorm2d(channels[i]));
      seq->push_back(torch::nn::ReLU());
      c = channels[i];
    }
    if (h >= 2 && w >= 2) {
      seq->push_back(torch::nn::MaxPool2d(2));
      h /= 2;
      w /= 2;
    }
    seq->push_back(torch::nn::Flatten());
    seq->push_back(torch::nn::Linear(c * h * w, hidden));
    seq->push_back(torch::nn::ReLU());
    seq->push_back(torch::nn::Linear(hidden, classes));
    set_sequential(seq, false);
  }
};

// McMahan et al., "Communication-Efficient Learning of Deep Networks from
// Decentralized Data" (AISTATS 2017), section 3: the "2NN", a multilayer perceptron
// with two hidden layers of 200 ReLU units (199,210 parameters on 28x28 MNIST).
class McMahan2nn : public SequentialModel {
 public:
  std::optional<HyperparameterSpec> hyperparameters() override { return common_hyperparameters(); }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    torch::nn::Sequential seq(torch::nn::Linear(product(in), 200), torch::nn::ReLU(), torch::nn::Linear(200, 200),
                              torch::nn::ReLU(), torch::nn::Linear(200, classes));
    set_sequential(seq, true);
  }
};

// The same paper's CNN: two 5x5 convolutions of 32 and 64 channels ("same" padding),
// each followed by ReLU and 2x2 max pooling, a fully connected layer of 512 ReLU units
// and a softmax output (1,663,370 parameters on 28x28 MNIST).
class McMahanCnn : public SequentialModel {
 public:
  std::optional<HyperparameterSpec> hyperparameters() override { return common_hyperparameters(); }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    if (in.size() != 3 || in[1] < 4 || in[2] < 4) {
      throw ConfigError("mnist_cnn needs an image input_shape [channels, height, width] of at least 4x4, e.g. "
                        "[1, 28, 28]");
    }
    const int64_t h = in[1] / 2 / 2, w = in[2] / 2 / 2;
    torch::nn::Sequential seq(torch::nn::Conv2d(torch::nn::Conv2dOptions(in[0], 32, 5).padding(2)), torch::nn::ReLU(),
                              torch::nn::MaxPool2d(2),
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 64, 5).padding(2)), torch::nn::ReLU(),
                              torch::nn::MaxPool2d(2), torch::nn::Flatten(), torch::nn::Linear(64 * h * w, 512),
                              torch::nn::ReLU(), torch::nn::Linear(512, classes));
    set_sequential(seq, false);
  }
};

}  // namespace

const std::vector<std::string>& builtin_names() {
  static const std::vector<std::string> names = {"logreg", "mlp", "cnn", "2nn", "mnist_cnn"};
  return names;
}

bool is_builtin(const std::string& name) {
  for (const auto& n : builtin_names()) {
    if (n == name) return true;
  }
  return false;
}

std::unique_ptr<Model> make_builtin(const std::string& name) {
  if (name == "logreg") return std::make_unique<LogisticRegression>();
  if (name == "mlp") return std::make_unique<Mlp>();
  if (name == "cnn") return std::make_unique<SmallCnn>();
  if (name == "2nn") return std::make_unique<McMahan2nn>();
  if (name == "mnist_cnn") return std::make_unique<McMahanCnn>();
  return nullptr;
}

}  // namespace fedpod::model
