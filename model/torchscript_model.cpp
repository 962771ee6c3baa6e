#include "fedpod/model/torchscript.h"

#include <torch/nn/functional/loss.h>
#include <torch/script.h>

#include <filesystem>

namespace fedpod::model {
namespace {

std::string shape_string(c10::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

class TorchScriptModel : public Model {
 public:
  TorchScriptModel(torch::jit::Module module, std::string path)
      : module_(std::move(module)), path_(std::move(path)) {
    has_configure_ = module_.find_method("configure_optimizers").has_value();
  }

  torch::Tensor forward(const torch::Tensor& x) override { return module_.forward({x}).toTensor(); }

  StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
    return step("training_step", x, y);
  }
  StepOutput validation_step(const torch::Tensor& x, const torch::Tensor& y) override {
    return step("validation_step", x, y);
  }
  StepOutput test_step(const torch::Tensor& x, const torch::Tensor& y) override {
    return step("test_step", x, y);
  }

  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) out.emplace_back(p.name, p.value);
    return out;
  }

  std::vector<std::pair<std::string, torch::Tensor>> named_buffers() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& b : module_.named_buffers(/*recurse=*/true)) out.emplace_back(b.name, b.value);
    return out;
  }

  void set_training(bool on) override { module_.train(on); }

  // A scripted module reads no hyperparameters itself: the job's reach only the
  // optimizer (configure_optimizers' defaults, overridden key by key) and the pod's
  // trainer. So it accepts the common keys and any setting its configure_optimizers
  // returns, and nothing else.
  std::optional<HyperparameterSpec> hyperparameters() override {
    HyperparameterSpec spec = common_hyperparameters();
    if (!has_configure_) return spec;
    try {
      const nlohmann::json settings = scripted_optimizer();  // items() must not outlive it
      for (const auto& [k, v] : settings.items()) {
        if (k == "optimizer") continue;
        spec.push_back({k, HyperparameterType::kNumber, "a setting of the model's configure_optimizers", {}});
      }
    } catch (const ConfigError&) {
      // configure_optimizers is broken: reported when the pod trains.
    }
    return spec;
  }

  std::unique_ptr<torch::optim::Optimizer> configure_optimizers(const Hyperparameters& hp) override {
    if (!has_configure_) return Model::configure_optimizers(hp);
    nlohmann::json merged = scripted_optimizer();
    for (const auto& [k, v] : hp.json().items()) merged[k] = v;  // the job's choice wins
    return Model::configure_optimizers(Hyperparameters(merged));
  }

 private:
  // configure_optimizers() of the module: {"optimizer": name, setting: value, ...}.
  nlohmann::json scripted_optimizer() {
    nlohmann::json merged = nlohmann::json::object();
    try {
      auto result = module_.get_method("configure_optimizers")({});
      auto tuple = result.toTuple();
      TORCH_CHECK(tuple->elements().size() == 2, "expected two elements");
      merged["optimizer"] = tuple->elements()[0].toStringRef();
      for (const auto& item : tuple->elements()[1].toGenericDict()) {
        merged[item.key().toStringRef()] = item.value().toDouble();
      }
    } catch (const c10::Error&) {
      throw ConfigError(path_ + ": configure_optimizers must return (name, {setting: float})");
    }
    return merged;
  }

 protected:
  void build(const std::vector<int64_t>& input_shape, int64_t num_classes, const Hyperparameters&) override {
    for (const auto& [name, p] : named_parameters()) {
      if (p.scalar_type() != torch::kFloat32) {
        throw ConfigError(path_ + ": parameter '" + name + "' is " + c10::toString(p.scalar_type()) +
                          "; parameters must be float32");
      }
    }
    std::vector<int64_t> batch_shape = {2};
    batch_shape.insert(batch_shape.end(), input_shape.begin(), input_shape.end());
    torch::Tensor out;
    try {
      torch::NoGradGuard no_grad;
      module_.eval();
      out = forward(torch::zeros(batch_shape));
    } catch (const c10::Error& e) {
      throw ConfigError(path_ + ": forward fails on an input of shape " + shape_string(batch_shape) + ": " +
                        e.what_without_backtrace());
    } catch (const std::exception& e) {  // errors raised by the scripted code itself
      throw ConfigError(path_ + ": forward fails on an input of shape " + shape_string(batch_shape) + ": " +
                        e.what());
    }
    if (out.dim() != 2 || out.size(0) != 2 || out.size(1) != num_classes) {
      throw ConfigError(path_ + ": forward on an input of shape " + shape_string(batch_shape) + " returned " +
                        shape_string(out.sizes()) + ", the job needs [2, " + std::to_string(num_classes) + "]");
    }
    if (named_parameters().empty()) throw ConfigError(path_ + ": the model has no parameters to train");
  }

 private:
  StepOutput step(const char* method, const torch::Tensor& x, const torch::Tensor& y) {
    c10::IValue result = module_.get_method(method)({x, y});
    StepOutput out;
    torch::Tensor logits;
    if (result.isTensor()) {
      out.loss = result.toTensor();
    } else if (result.isTuple() && result.toTuple()->elements().size() == 2) {
      out.loss = result.toTuple()->elements()[0].toTensor();
      logits = result.toTuple()->elements()[1].toTensor();
    } else {
      throw ConfigError(path_ + ": " + method + " must return the loss or (loss, logits)");
    }
    if (out.loss.numel() != 1) {
      throw ConfigError(path_ + ": " + method + " returned a loss of shape " + shape_string(out.loss.sizes()) +
                        ", expected a scalar");
    }
    if (!logits.defined()) {
      torch::NoGradGuard no_grad;
      logits = forward(x);
    }
    out.correct = count_correct(logits, y);
    out.count = y.size(0);
    return out;
  }

  torch::jit::Module module_;
  std::string path_;
  bool has_configure_ = false;
};

}  // namespace

StatusOr<std::unique_ptr<Model>> load_torchscript(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) return Status::not_found(path + ": no such file");
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    return Status::invalid(path + ": not a TorchScript archive (" + e.what_without_backtrace() + ")");
  } catch (const std::exception& e) {
    return Status::invalid(path + ": not a TorchScript archive (" + e.what() + ")");
  }
  std::string missing;
  for (const char* m : {"forward", "training_step", "validation_step", "test_step"}) {
    if (!module.find_method(m)) missing += (missing.empty() ? "" : ", ") + std::string(m);
  }
  if (!missing.empty()) {
    return Status::invalid(path + ": the scripted module lacks " + missing +
                           " (export steps with @torch.jit.export)");
  }
  return std::unique_ptr<Model>(new TorchScriptModel(std::move(module), path));
}

}  // namespace fedpod::model
