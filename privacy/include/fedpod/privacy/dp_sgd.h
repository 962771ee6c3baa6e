// DP-SGD's per-example gradients (Abadi et al., "Deep Learning with Differential
// Privacy", 2016): each example's gradient is clipped to norm C and the clipped
// gradients are summed; the trainer then adds Gaussian noise of standard deviation
// σ·C to the sum and divides by the expected batch size (worker/trainer.h).
//
// Two ways to get per-example gradients, chosen per model:
//
//  - fast: built-in models that are one Sequential of Linear, Conv2d and layers
//    without parameters (model::SequentialLayers). One forward and one backward to
//    the layer outputs give each Linear/Conv2d layer's input activations A and output
//    gradients G; an example's weight gradient is G_iᵀ·A_i (Conv2d: over the unfolded
//    input patches), its norm is taken without forming it where possible
//    (‖g‖·‖a‖ for a Linear layer on one vector per example), and the clipped sum is
//    one matrix product per layer: Σ_i c_i G_iᵀ A_i.
//  - generic: every other model (TorchScript, plugins, custom steps): one
//    training_step and backward per example, on a batch of one. Exact for any model
//    whose examples do not interact; costs about a batch-size multiple of a step.
//
// Models with buffers (batch-norm running statistics) mix examples within a batch and
// are refused under DP (check_model); their per-example gradients are not defined.
//
// Not thread-safe; one per training loop.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fedpod/common/status.h"
#include "fedpod/model/model.h"

namespace fedpod::privacy {

// The DP-SGD settings of a job (job.yaml differential_privacy).
struct DpSgdOptions {
  bool on = false;
  double noise_multiplier = 0;  // σ (a job's is positive; 0 only in tests of clipping)
  double max_grad_norm = 1.0;   // C
  bool allow_fast = true;       // false: the generic path for every model (tests, benchmarks)
  bool enabled() const { return on; }
};

// Why `model` cannot train under DP-SGD, or OK: it has buffers (batch norm), or no
// parameters. The message names the buffer and what to use instead.
Status check_model(model::Model& model);

enum class GradientPath { kFast, kGeneric };
const char* to_string(GradientPath p);

class PerExampleGradients {
 public:
  // `allow_fast` false forces the generic path (tests and benchmarks compare both).
  explicit PerExampleGradients(model::Model& model, bool allow_fast = true);
  PerExampleGradients(const PerExampleGradients&) = delete;
  PerExampleGradients& operator=(const PerExampleGradients&) = delete;

  GradientPath path() const { return path_; }

  // Sets every parameter's gradient to Σ_i clip(g_i, C) over the examples of (x, y)
  // (zero for an empty batch). Returns the summed loss (not the mean) and the
  // correct count. Throws what the model throws (c10::Error), and std::runtime_error
  // when model code changed a parameter while its gradients were taken (generic path).
  model::StepOutput clipped_sum(const torch::Tensor& x, const torch::Tensor& y, double max_grad_norm);

  // The norms of the last batch's per-example gradients, before clipping (for tests).
  const torch::Tensor& last_norms() const { return norms_; }

 private:
  model::StepOutput fast(const torch::Tensor& x, const torch::Tensor& y, double c);
  model::StepOutput generic(const torch::Tensor& x, const torch::Tensor& y, double c);

  model::Model& model_;
  GradientPath path_ = GradientPath::kGeneric;
  torch::nn::Sequential layers_{nullptr};
  bool flatten_ = false;
  std::vector<torch::Tensor> params_;
  torch::Tensor norms_;
};

// Steps of one DP-SGD round: `steps`, or `epochs` passes of ceil(n / batch_size)
// Poisson-sampled batches each. The pod's accountant and its trainer both use it.
int64_t steps_per_round(int64_t epochs, int64_t steps, int64_t batch_size, int64_t n);

}  // namespace fedpod::privacy
