#include "bench_model.h"

#include <torch/torch.h>

namespace fedpod::bench {
namespace {

class BenchModel : public model::Model {
 public:
  torch::Tensor forward(const torch::Tensor& x) override { return torch::zeros({x.size(0), classes_}); }
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() override { return params_; }
  void set_training(bool) override {}

 protected:
  void build(const std::vector<int64_t>&, int64_t classes, const Hyperparameters& hp) override {
    classes_ = classes;
    const int64_t total = hp.integer("params", 1'000'000);
    const int64_t tensors = hp.integer("tensors", 8);
    if (total < tensors || tensors < 1) throw ConfigError("bench-params: need params >= tensors >= 1");
    for (int64_t i = 0; i < tensors; ++i) {
      const int64_t n = total / tensors + (i < total % tensors ? 1 : 0);
      params_.emplace_back("layer" + std::to_string(i) + ".weight", torch::randn({n}).set_requires_grad(true));
    }
  }

 private:
  int64_t classes_ = 2;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
};

}  // namespace

std::unique_ptr<model::Model> make_bench_model(const std::string& ref) {
  if (ref == "bench-params") return std::make_unique<BenchModel>();
  return nullptr;
}

worker::Runtime echo_runtime() {
  worker::Runtime rt;
  rt.make_model = make_bench_model;
  rt.train = [](model::Model&, const data::Dataset& data, const worker::TrainOptions&, const Hyperparameters&,
                const std::atomic<bool>*) -> StatusOr<worker::TrainStats> {
    worker::TrainStats stats;
    stats.samples_seen = data.size();
    return stats;
  };
  return rt;
}

}  // namespace fedpod::bench
