#include "fedpod/worker/trainer.h"

#include <c10/util/Exception.h>
#include <torch/torch.h>

namespace fedpod::worker {
namespace {

// Where the model's parameters live: the CPU, or the GPU a multi-device pod moved it
// to (data_parallel.h); batches are moved there.
torch::Device model_device(const model::Model& model) {
  const torch::Tensor& flat = model.flat().tensor();
  return flat.defined() ? flat.device() : torch::Device(torch::kCPU);
}

}  // namespace

StatusOr<TrainStats> train_local(model::Model& model, const data::Dataset& data,
                                 const TrainOptions& options, const Hyperparameters& hp,
                                 const std::atomic<bool>* cancel) {
  if (data.size() == 0) return Status::failed_precondition("the training split is empty");
  if (options.batch_size <= 0) return Status::invalid("batch_size must be positive");
  if (options.steps <= 0 && options.epochs <= 0) return Status::invalid("train for at least one epoch or step");
  TrainStats stats;
  try {
    model.set_training(true);
    auto optimizer = model.configure_optimizers(hp);
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
