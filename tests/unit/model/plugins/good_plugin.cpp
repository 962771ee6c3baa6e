// A well-formed plugin: a ModuleModel subclass (one hidden layer) registered with
// FEDPOD_REGISTER_MODEL. Its vtable inherits ModuleModel's and Model's methods,
// which resolve to the host's definitions at load time.
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "fedpod/model/plugin.h"

namespace {

class GoodModel : public fedpod::model::ModuleModel {
 protected:
  void build(const std::vector<int64_t>& in, int64_t classes,
             const fedpod::Hyperparameters& hp) override {
    int64_t inputs = 1;
    for (int64_t d : in) inputs *= d;
    const int64_t hidden = hp.integer("hidden", 16);
    torch::nn::Sequential seq(torch::nn::Linear(inputs, hidden), torch::nn::ReLU(),
                              torch::nn::Linear(hidden, classes));
    module_ = seq.ptr();
    forward_ = [seq](const torch::Tensor& x) mutable { return seq->forward(x.flatten(1)); };
  }
};

}  // namespace

FEDPOD_REGISTER_MODEL(GoodModel)
