// digits_mlp: an example native model plugin for the digits data (8x8 images, so 64
// inputs, and 10 classes): one hidden ReLU layer, with optional dropout, and label
// smoothing during training.
//
// Hyperparameters (job.yaml, model.hyperparameters):
//   hidden           width of the hidden layer (default 32)
//   dropout          dropout after the hidden layer, in [0, 1) (default 0)
//   label_smoothing  label smoothing of the training loss, in [0, 1) (default 0);
//                    validation and test report plain cross-entropy
// plus the optimizer keys of Model::configure_optimizers. hyperparameters() declares
// them all, so a job with an unknown or ill-typed one is refused before it starts.
//
// It derives from Model directly, to show every method a plugin provides; deriving
// from ModuleModel saves forward, named_parameters and set_training.
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>

#include <sstream>

#include "fedpod/model/plugin.h"

namespace {

std::string str(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// The layers. A torch::nn::Module, so that named_parameters and train() recurse.
struct DigitsMlpNet : torch::nn::Module {
  DigitsMlpNet(int64_t inputs, int64_t hidden, int64_t classes, double dropout_p)
      : fc1(register_module("fc1", torch::nn::Linear(inputs, hidden))),
        dropout(register_module("dropout", torch::nn::Dropout(dropout_p))),
        fc2(register_module("fc2", torch::nn::Linear(hidden, classes))) {}

  torch::Tensor forward(const torch::Tensor& x) {
    return fc2->forward(dropout->forward(torch::relu(fc1->forward(x.flatten(1)))));
  }

  torch::nn::Linear fc1;
  torch::nn::Dropout dropout;
  torch::nn::Linear fc2;
};

class DigitsMlp : public fedpod::model::Model {
 public:
  torch::Tensor forward(const torch::Tensor& x) override { return net_->forward(x); }

  fedpod::model::StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
    if (label_smoothing_ == 0.0) return cross_entropy_step(x, y);
    torch::Tensor logits = forward(x);
    fedpod::model::StepOutput out;
    out.loss = torch::nn::functional::cross_entropy(
        logits, y,
        torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing_));
    out.correct = logits.argmax(1).eq(y).sum().item<int64_t>();
    out.count = y.size(0);
    return out;
  }

  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& item : net_->named_parameters(/*recurse=*/true))
      out.emplace_back(item.key(), item.value());
    return out;
  }

  void set_training(bool on) override { net_->train(on); }

  // Declared, so that a job with `label_smothing: 0.1` or `hidden: wide` stops before
  // any pod is contacted, naming the key and these.
  std::optional<fedpod::model::HyperparameterSpec> hyperparameters() override {
    using fedpod::model::HyperparameterType;
    fedpod::model::HyperparameterSpec spec = fedpod::model::common_hyperparameters();
    spec.push_back({"hidden", HyperparameterType::kInteger, "width of the hidden layer (default 32)", {}});
    spec.push_back({"dropout", HyperparameterType::kNumber, "dropout after the hidden layer, in [0, 1)", {}});
    spec.push_back({"label_smoothing", HyperparameterType::kNumber, "label smoothing of the training loss", {}});
    return spec;
  }

 protected:
  void build(const std::vector<int64_t>& input_shape, int64_t num_classes,
             const fedpod::Hyperparameters& hp) override {
    int64_t inputs = 1;
    for (int64_t d : input_shape) inputs *= d;
    const int64_t hidden = hp.integer("hidden", 32);
    const double dropout = hp.number("dropout", 0.0);
    label_smoothing_ = hp.number("label_smoothing", 0.0);
    if (hidden <= 0) {
      throw fedpod::ConfigError("digits_mlp: hyperparameter 'hidden' must be positive, got " +
                                std::to_string(hidden));
    }
    if (dropout < 0 || dropout >= 1) {
      throw fedpod::ConfigError("digits_mlp: hyperparameter 'dropout' must be in [0, 1), got " +
                                str(dropout));
    }
    if (label_smoothing_ < 0 || label_smoothing_ >= 1) {
      throw fedpod::ConfigError(
          "digits_mlp: hyperparameter 'label_smoothing' must be in [0, 1), got " +
          str(label_smoothing_));
    }
    net_ = std::make_shared<DigitsMlpNet>(inputs, hidden, num_classes, dropout);
  }

 private:
  std::shared_ptr<DigitsMlpNet> net_;
  double label_smoothing_ = 0.0;
};

}  // namespace

FEDPOD_REGISTER_MODEL(DigitsMlp)
