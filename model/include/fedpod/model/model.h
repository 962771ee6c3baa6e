// Model: the C++ counterpart of a PyTorch Lightning style module.
//
// A model is created for a per-sample input shape and a number of classes, trains
// with `training_step`, and is scored with `validation_step` / `test_step`. The
// worker's trainer drives these calls; the coordinator only creates the model to
// learn its parameter layout and initial values.
//
//   auto m = make_builtin("mlp");               // or a custom model loader
//   m->create_model({64}, 10, hp);               // builds layers, adopts flat params
//   auto opt = m->configure_optimizers(hp);      // "optimizer", "lr", ...
//   auto out = m->training_step(x, y);           // out.loss.backward(); opt->step()
//
// Parameters and buffers live in one flat float32 buffer (see FlatParameters), in
// the order of `named_parameters()` then `named_buffers()`; that order and the
// shapes are the model's wire layout. Both travel each round and are averaged:
// batch-norm running statistics are part of the global model.
//
// Threading: a Model is used by one thread at a time.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "fedpod/common/config_util.h"
#include "fedpod/model/abi_version.h"
#include "fedpod/model/flat_parameters.h"
#include "fedpod/model/hyperparameters.h"


namespace fedpod::model {

// The result of one step on a batch.
struct StepOutput {
  torch::Tensor loss;   // scalar; mean over the batch
  int64_t correct = 0;  // predictions equal to the label
  int64_t count = 0;    // samples in the batch
};

// Rows of `logits` [N, C] whose largest entry's index equals `y` [N] (int64), as
// logits.argmax(1).eq(y).sum() counts them: the first of equal maxima, a NaN counts
// as the largest. Contiguous float32 logits on the CPU are counted in one loop here;
// a training step is 0.1 ms for a small model, and the three operators plus the read
// of the result cost 10 % of it. Anything else goes through those operators.
int64_t count_correct(const torch::Tensor& logits, const torch::Tensor& y);

class Model {
 public:
  virtual ~Model() = default;
  Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Builds the layers for inputs of per-sample `input_shape` and `num_classes`
  // outputs, then moves the parameters into the flat buffer. Throws
  // ConfigError for hyperparameters or shapes the model cannot use.
  void create_model(const std::vector<int64_t>& input_shape, int64_t num_classes,
                    const Hyperparameters& hp);

  // The hyperparameters this model accepts (hyperparameters.h). A job whose
  // model.hyperparameters has a key outside them, or a value of the wrong type, stops
  // before any pod is contacted (and a pod refuses it). A model that keeps the default
  // configure_optimizers accepts common_hyperparameters() plus its own. nullopt: not
  // declared, so not checked (the default, for plugins written before this existed;
  // the coordinator says so when the job starts). May be called before create_model.
  virtual std::optional<HyperparameterSpec> hyperparameters() { return std::nullopt; }

  // The optimizer for local training. The default reads hyperparameters:
  // optimizer = sgd (default) | adam | adamw, lr (0.01 for sgd, 0.001 otherwise),
  // momentum (0), weight_decay (0). Throws ConfigError for an unknown optimizer.
  virtual std::unique_ptr<torch::optim::Optimizer> configure_optimizers(const Hyperparameters& hp);

  // Logits [batch, num_classes] for inputs [batch, *input_shape].
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;

  // Default for all three: cross-entropy of forward(x) against y, and accuracy counts.
  virtual StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y);
  virtual StepOutput validation_step(const torch::Tensor& x, const torch::Tensor& y);
  virtual StepOutput test_step(const torch::Tensor& x, const torch::Tensor& y);

  // The model's parameters, in a stable order with stable names.
  virtual std::vector<std::pair<std::string, torch::Tensor>> named_parameters() = 0;
  // The model's buffers (state that is not trained by the optimizer: batch-norm
  // running_mean, running_var, num_batches_tracked), in a stable order with names
  // distinct from the parameters'. float32, integer or bool; they travel with the
  // parameters (flat_parameters.h). Default: none.
  virtual std::vector<std::pair<std::string, torch::Tensor>> named_buffers() { return {}; }
  // Switches dropout / batch-norm style layers between training and evaluation.
  virtual void set_training(bool on) = 0;

  FlatParameters& flat() { return flat_; }
  const FlatParameters& flat() const { return flat_; }

  // Copies buffers the flat buffer does not alias (integer ones, or ones the model
  // replaced) into it: call after training, before the flat buffer is read or sent.
  void capture_buffers() { flat_.capture_buffers(named_buffers()); }
  // Copies them back out after the flat buffer was written (global parameters).
  void restore_buffers() { flat_.restore_buffers(named_buffers()); }

 protected:
  // Builds the layers (called by create_model).
  virtual void build(const std::vector<int64_t>& input_shape, int64_t num_classes,
                     const Hyperparameters& hp) = 0;
  StepOutput cross_entropy_step(const torch::Tensor& x, const torch::Tensor& y);

 private:
  FlatParameters flat_;
};

// A Model backed by a torch::nn::Module held in `module_`.
class ModuleModel : public Model {
 public:
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() override;
  std::vector<std::pair<std::string, torch::Tensor>> named_buffers() override;
  void set_training(bool on) override;

 protected:
  std::shared_ptr<torch::nn::Module> module_;  // shared: torch::nn's holder type
  std::function<torch::Tensor(const torch::Tensor&)> forward_;
};

// Implemented by built-in models that are one torch::nn::Sequential with the default
// cross-entropy steps: forward(x) is exactly layers()->forward(flattens_input() ?
// x.flatten(1) : x). DP-SGD's fast path (privacy/dp_sgd.h) computes per-example
// gradient norms from each Linear and Conv2d layer's inputs and output gradients
// instead of one backward pass per example. Found with dynamic_cast, so the Model
// interface (and the plugin ABI) is unchanged.
class SequentialLayers {
 public:
  virtual ~SequentialLayers() = default;
  virtual torch::nn::Sequential layers() const = 0;
  virtual bool flattens_input() const = 0;
};

}  // namespace fedpod::model
