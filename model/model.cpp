#include "fedpod/model/model.h"

#include <cmath>
#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace fedpod::model {

void Model::create_model(const std::vector<int64_t>& input_shape, int64_t num_classes,
                         const Hyperparameters& hp) {
  if (num_classes < 2) throw ConfigError("num_classes must be at least 2");
  for (int64_t d : input_shape) {
    if (d <= 0) throw ConfigError("input shape dimensions must be positive");
  }
  build(input_shape, num_classes, hp);
  try {
    flat_.adopt(named_parameters(), named_buffers());
  } catch (const std::logic_error& e) {
    throw ConfigError(e.what());  // e.g. a float64 parameter or buffer in a custom model
  }
}

std::unique_ptr<torch::optim::Optimizer> Model::configure_optimizers(const Hyperparameters& hp) {
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : named_parameters()) params.push_back(p);
  const std::string name = hp.string("optimizer", "sgd");
  const double weight_decay = hp.number("weight_decay", 0.0);
  if (name == "sgd") {
    double lr = hp.number("lr", 0.01);
    if (lr <= 0) throw ConfigError("hyperparameter 'lr' must be positive");
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(lr).momentum(hp.number("momentum", 0.0)).weight_decay(weight_decay));
  }
  if (name == "adam" || name == "adamw") {
    double lr = hp.number("lr", 0.001);
    if (lr <= 0) throw ConfigError("hyperparameter 'lr' must be positive");
    if (name == "adam") {
      return std::make_unique<torch::optim::Adam>(params,
                                                  torch::optim::AdamOptions(lr).weight_decay(weight_decay));
    }
    return std::make_unique<torch::optim::AdamW>(params,
                                                 torch::optim::AdamWOptions(lr).weight_decay(weight_decay));
  }
  throw ConfigError("hyperparameter 'optimizer' must be sgd, adam or adamw, got \"" + name + "\"");
}

int64_t count_correct(const torch::Tensor& logits, const torch::Tensor& y) {
  if (logits.dim() == 2 && logits.device().is_cpu() && y.device().is_cpu() &&
      logits.scalar_type() == torch::kFloat32 && logits.is_contiguous() && y.scalar_type() == torch::kInt64 &&
      y.dim() == 1 && y.is_contiguous() && y.size(0) == logits.size(0) && logits.size(1) > 0) {
    const int64_t rows = logits.size(0), cols = logits.size(1);
    const float* v = logits.data_ptr<float>();
    const int64_t* labels = y.data_ptr<int64_t>();
    int64_t correct = 0;
    for (int64_t r = 0; r < rows; ++r, v += cols) {
      int64_t best = 0;
      if (!std::isnan(v[0])) {
        for (int64_t c = 1; c < cols; ++c) {
          if (std::isnan(v[c])) {
            best = c;
            break;
          }
          if (v[c] > v[best]) best = c;
        }
      }
      correct += best == labels[r];
    }
    return correct;
  }
  return logits.argmax(1).eq(y).sum().item<int64_t>();
}

StepOutput Model::cross_entropy_step(const torch::Tensor& x, const torch::Tensor& y) {
  torch::Tensor logits = forward(x);
  StepOutput out;
  out.loss = torch::nn::functional::cross_entropy(logits, y);
  out.correct = count_correct(logits, y);
  out.count = y.size(0);
  return out;
}

StepOutput Model::training_step(const torch::Tensor& x, const torch::Tensor& y) {
  return cross_entropy_step(x, y);
}
StepOutput Model::validation_step(const torch::Tensor& x, const torch::Tensor& y) {
  return cross_entropy_step(x, y);
}
StepOutput Model::test_step(const torch::Tensor& x, const torch::Tensor& y) {
  return cross_entropy_step(x, y);
}

torch::Tensor ModuleModel::forward(const torch::Tensor& x) { return forward_(x); }

std::vector<std::pair<std::string, torch::Tensor>> ModuleModel::named_parameters() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    out.emplace_back(item.key(), item.value());
  }
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> ModuleModel::named_buffers() {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : module_->named_buffers(/*recurse=*/true)) {
    out.emplace_back(item.key(), item.value());
  }
  return out;
}

void ModuleModel::set_training(bool on) { module_->train(on); }

}  // namespace fedpod::model
