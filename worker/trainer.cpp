#include "fedpod/worker/trainer.h"

#include <c10/util/Exception.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <random>

namespace fedpod::worker {
namespace {

// Where the model's parameters live: the CPU, or the GPU a multi-device pod moved it
// to (data_parallel.h); batches are moved there.
torch::Device model_device(const model::Model& model) {
  const torch::Tensor& flat = model.flat().tensor();
  return flat.defined() ? flat.device() : torch::Device(torch::kCPU);
}

// Between rounds a pod holds its parameters, not their gradients: the next round's
// backward allocates them again. A model's worth of memory per pod, which adds up
// with a thousand simulated pods in one process.
void release_gradients(model::Model& model) {
  for (auto& [name, p] : model.named_parameters()) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
}

// 64 bits from the operating system's entropy (getrandom on Linux).
uint64_t secure_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

// DP-SGD: Poisson-sampled batches, clipped per-example gradients, Gaussian noise.
StatusOr<TrainStats> train_dp(model::Model& model, const data::Dataset& data, const TrainOptions& options,
                              const Hyperparameters& hp, const std::atomic<bool>* cancel) {
  FEDPOD_RETURN_IF_ERROR(privacy::check_model(model));
  const int64_t n = data.size();
  const double q = std::min(1.0, static_cast<double>(options.batch_size) / static_cast<double>(n));
  const double expected_batch = q * static_cast<double>(n);
  const int64_t total = privacy::steps_per_round(options.epochs, options.steps, options.batch_size, n);
  const double noise_std = options.dp.noise_multiplier * options.dp.max_grad_norm;
  TrainStats stats;
  model.set_training(true);
  // The pod's optimizer (optimizer, lr, momentum, weight_decay from the
  // hyperparameters), never the model's own configure_optimizers: an optimizer from
  // model code could write anything into the parameters after the noise was added.
  auto optimizer = model.model::Model::configure_optimizers(hp);
  privacy::PerExampleGradients per_example(model, options.dp.allow_fast);
  stats.dp_path = privacy::to_string(per_example.path());
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : model.named_parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(secure_seed());
  const torch::Device device = model_device(model);
  ProximalTerm proximal(model, options.proximal_mu);
  double loss_sum = 0;
  int64_t correct = 0;
  for (int64_t step = 0; step < total; ++step) {
    if (cancel && cancel->load()) return Status::failed_precondition("cancelled");
    const torch::Tensor chosen = (torch::rand({n}, gen) < q).nonzero().squeeze(1);
    torch::Tensor x = data.x.index_select(0, chosen), y = data.y.index_select(0, chosen);
    if (!device.is_cpu()) {
      x = x.to(device);
      y = y.to(device);
    }
    optimizer->zero_grad();
    model::StepOutput out = per_example.clipped_sum(x, y, options.dp.max_grad_norm);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : params) {
        torch::Tensor noise = at::randn(p.sizes(), gen, torch::TensorOptions().dtype(p.scalar_type()));
        if (!device.is_cpu()) noise = noise.to(device);
        p.mutable_grad().add_(noise, noise_std).div_(expected_batch);
      }
    }
    proximal.add_to_gradients();
    optimizer->step();
    const double loss = out.loss.item<double>();
    if (!std::isfinite(loss)) {
      return Status::invalid("training loss became " + std::to_string(loss) + " at step " + std::to_string(step) +
                             "; lower the learning rate");
    }
    loss_sum += loss;
    correct += out.correct;
    stats.samples_seen += out.count;
    ++stats.steps;
  }
  if (stats.samples_seen > 0) {
    stats.loss = loss_sum / static_cast<double>(stats.samples_seen);
    stats.accuracy = static_cast<double>(correct) / static_cast<double>(stats.samples_seen);
  }
  model.capture_buffers();
  release_gradients(model);
  return stats;
}

}  // namespace

ProximalTerm::ProximalTerm(model::Model& model, double mu) : mu_(mu) {
  if (mu_ <= 0) return;
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : model.named_parameters()) {
    if (!p.requires_grad()) continue;
    params_.push_back(p);
    start_.push_back(p.detach().clone());
  }
}

void ProximalTerm::add_to_gradients() {
  if (mu_ <= 0) return;
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    p.mutable_grad().add_(p.detach() - start_[i], mu_);
  }
}

StatusOr<TrainStats> train_local(model::Model& model, const data::Dataset& data,
                                 const TrainOptions& options, const Hyperparameters& hp,
                                 const std::atomic<bool>* cancel) {
  if (data.size() == 0) return Status::failed_precondition("the training split is empty");
  if (options.batch_size <= 0) return Status::invalid("batch_size must be positive");
  if (options.steps <= 0 && options.epochs <= 0) return Status::invalid("train for at least one epoch or step");
  TrainStats stats;
  try {
    if (options.dp.enabled()) return train_dp(model, data, options, hp, cancel);
    model.set_training(true);
    auto optimizer = model.configure_optimizers(hp);
    ProximalTerm proximal(model, options.proximal_mu);
    data::BatchIterator batches(data, options.batch_size, /*shuffle=*/true, options.seed);
    double loss_sum = 0;
    int64_t correct = 0;
    torch::Tensor x, y;
    const torch::Device device = model_device(model);
    const bool by_steps = options.steps > 0;
    int64_t epoch = 0;
    while (by_steps ? stats.steps < options.steps : epoch < options.epochs) {
      if (!batches.next(x, y)) {
        ++epoch;
        batches.reset();
        continue;
      }
      if (cancel && cancel->load()) return Status::failed_precondition("cancelled");
      if (!device.is_cpu()) {
        x = x.to(device);
        y = y.to(device);
      }
      optimizer->zero_grad();
      model::StepOutput out = model.training_step(x, y);
      out.loss.backward();
      proximal.add_to_gradients();
      optimizer->step();
      const double loss = out.loss.item<double>();
      if (!std::isfinite(loss)) {
        return Status::invalid("training loss became " + std::to_string(loss) + " at step " +
                               std::to_string(stats.steps) + "; lower the learning rate");
      }
      loss_sum += loss * out.count;
      correct += out.correct;
      stats.samples_seen += out.count;
      ++stats.steps;
    }
    if (stats.samples_seen > 0) {
      stats.loss = loss_sum / stats.samples_seen;
      stats.accuracy = static_cast<double>(correct) / stats.samples_seen;
    }
    // Buffers the flat buffer does not alias (integer ones, replaced ones) go in too:
    // they leave the pod with the parameters.
    model.capture_buffers();
    release_gradients(model);
  } catch (const ConfigError& e) {
    return Status::invalid(e.what());
  } catch (const c10::Error& e) {
    return Status::internal(std::string("model failed while training: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {  // e.g. an error raised inside a scripted model
    return Status::internal(std::string("model failed while training: ") + e.what());
  }
  return stats;
}

StatusOr<EvalStats> evaluate(model::Model& model, const data::Dataset& data, int64_t batch_size,
                             bool test) {
  EvalStats stats;
  if (data.size() == 0) return stats;
  if (batch_size <= 0) return Status::invalid("batch_size must be positive");
  try {
    torch::NoGradGuard no_grad;
    model.set_training(false);
    data::BatchIterator batches(data, batch_size, /*shuffle=*/false, 0);
    double loss_sum = 0;
    int64_t correct = 0;
    torch::Tensor x, y;
    const torch::Device device = model_device(model);
    while (batches.next(x, y)) {
      if (!device.is_cpu()) {
        x = x.to(device);
        y = y.to(device);
      }
      model::StepOutput out = test ? model.test_step(x, y) : model.validation_step(x, y);
      loss_sum += out.loss.item<double>() * out.count;
      correct += out.correct;
      stats.samples += out.count;
    }
    stats.loss = loss_sum / stats.samples;
    stats.accuracy = static_cast<double>(correct) / stats.samples;
  } catch (const c10::Error& e) {
    return Status::internal(std::string("model failed while evaluating: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::internal(std::string("model failed while evaluating: ") + e.what());
  }
  return stats;
}

}  // namespace fedpod::worker
