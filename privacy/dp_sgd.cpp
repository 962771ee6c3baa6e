#include "fedpod/privacy/dp_sgd.h"

#include <torch/autograd.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/torch.h>

#include <c10/util/variant.h>

namespace fedpod::privacy {
namespace {

// The clip factor of each example: min(1, C / ‖g_i‖), with Opacus's 1e-6 guard.
torch::Tensor clip_factors(const torch::Tensor& norms, double c) {
  return (c / (norms + 1e-6)).clamp_max(1.0);
}

// A Conv2d the fast path handles: zero padding given as numbers, one group.
bool plain_conv(const torch::nn::Conv2dImpl& conv) {
  const auto& o = conv.options;
  return o.groups() == 1 && c10::holds_alternative<torch::ExpandingArray<2>>(o.padding()) &&
         c10::holds_alternative<torch::enumtype::kZeros>(o.padding_mode());
}

}  // namespace

const char* to_string(GradientPath p) { return p == GradientPath::kFast ? "fast" : "generic"; }

Status check_model(model::Model& model) {
  auto buffers = model.named_buffers();
  if (!buffers.empty()) {
    return Status::invalid("differential privacy: the model has buffer '" + buffers.front().first +
                           "' (batch-norm statistics), which mixes the examples of a batch, so an example's "
                           "influence is not bounded by clipping its gradient; train this model without "
                           "batch norm (e.g. batch_norm: false) or with a per-example normalization (GroupNorm, "
                           "LayerNorm)");
  }
  if (model.named_parameters().empty()) return Status::invalid("differential privacy: the model has no parameters");
  return Status();
}

int64_t steps_per_round(int64_t epochs, int64_t steps, int64_t batch_size, int64_t n) {
  if (steps > 0) return steps;
  if (batch_size <= 0 || n <= 0) return 0;
  return epochs * ((n + batch_size - 1) / batch_size);
}

PerExampleGradients::PerExampleGradients(model::Model& model, bool allow_fast) : model_(model) {
  for (auto& [name, p] : model.named_parameters()) {
    if (p.requires_grad()) params_.push_back(p);
  }
  auto* seq = allow_fast ? dynamic_cast<model::SequentialLayers*>(&model) : nullptr;
  if (!seq) return;
  torch::nn::Sequential layers = seq->layers();
  size_t covered = 0;
  for (const auto& child : layers->children()) {
    if (auto* lin = child->as<torch::nn::LinearImpl>()) {
      covered += lin->options.bias() ? 2 : 1;
    } else if (auto* conv = child->as<torch::nn::Conv2dImpl>()) {
      if (!plain_conv(*conv)) return;
      covered += conv->options.bias() ? 2 : 1;
    } else if (!child->parameters().empty() || !child->buffers().empty()) {
      return;  // a layer with its own state: the generic path
    }
  }
  if (covered != params_.size()) return;  // frozen or shared parameters: the generic path
  layers_ = layers;
  flatten_ = seq->flattens_input();
  path_ = GradientPath::kFast;
}

model::StepOutput PerExampleGradients::clipped_sum(const torch::Tensor& x, const torch::Tensor& y,
                                                   double max_grad_norm) {
  if (x.size(0) == 0) {
    for (auto& p : params_) p.mutable_grad() = torch::zeros_like(p);
    norms_ = torch::zeros({0});
    model::StepOutput out;
    out.loss = torch::zeros({});
    return out;
  }
  return path_ == GradientPath::kFast ? fast(x, y, max_grad_norm) : generic(x, y, max_grad_norm);
}

model::StepOutput PerExampleGradients::generic(const torch::Tensor& x, const torch::Tensor& y, double c) {
  const int64_t b = x.size(0);
  std::vector<torch::Tensor> sums;
  sums.reserve(params_.size());
  for (auto& p : params_) sums.push_back(torch::zeros_like(p));
  std::vector<double> norms(static_cast<size_t>(b));
  double loss_sum = 0;
  model::StepOutput out;
  // Model code (a scripted or plugin model) must not write its parameters while its
  // gradients are taken: anything written there would leave the pod unclipped and
  // without noise. Checked against a copy after the examples.
  std::vector<torch::Tensor> before;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : params_) before.push_back(p.detach().clone());
  }
  for (int64_t i = 0; i < b; ++i) {
    for (auto& p : params_) p.mutable_grad() = torch::Tensor();
    model::StepOutput one = model_.training_step(x.narrow(0, i, 1), y.narrow(0, i, 1));
    one.loss.backward();
    loss_sum += one.loss.item<double>();
    out.correct += one.correct;
    torch::NoGradGuard no_grad;
    double sq = 0;
    for (auto& p : params_) {
      if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
    }
    const double norm = std::sqrt(sq);
    norms[static_cast<size_t>(i)] = norm;
    const double factor = std::min(1.0, c / (norm + 1e-6));
    for (size_t k = 0; k < params_.size(); ++k) {
      if (params_[k].grad().defined()) sums[k].add_(params_[k].grad(), factor);
    }
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    if (!torch::equal(params_[k].detach(), before[k])) {
      throw std::runtime_error("differential privacy: the model changed its own parameters inside training_step; "
                               "under DP only the pod's optimizer step may change them (refused)");
    }
    params_[k].mutable_grad() = std::move(sums[k]);
  }
  norms_ = torch::tensor(norms, torch::kFloat64);
  out.loss = torch::tensor(loss_sum);
  out.count = b;
  return out;
}

model::StepOutput PerExampleGradients::fast(const torch::Tensor& x, const torch::Tensor& y, double c) {
  struct Layer {
    torch::nn::LinearImpl* linear = nullptr;
    torch::nn::Conv2dImpl* conv = nullptr;
    torch::Tensor input;
    torch::Tensor per_example;  // [b, out, in·k·k] when materialized (conv, sequence inputs)
    torch::Tensor grad_out;     // [b, out] (linear) or [b, out, L] (conv)
  };
  std::vector<Layer> seen;
  std::vector<torch::Tensor> outputs;
  torch::Tensor h = flatten_ ? x.flatten(1) : x;
  for (auto& any : *layers_) {
    auto m = any.ptr();
    if (auto* lin = m->as<torch::nn::LinearImpl>()) {
      seen.push_back(Layer{lin, nullptr, h, {}, {}});
      h = lin->forward(h);
      outputs.push_back(h);
    } else if (auto* conv = m->as<torch::nn::Conv2dImpl>()) {
      seen.push_back(Layer{nullptr, conv, h, {}, {}});
      h = conv->forward(h);
      outputs.push_back(h);
    } else {
      h = any.forward(h);
    }
  }
  const torch::Tensor losses = torch::nn::functional::cross_entropy(
      h, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  model::StepOutput out;
  out.count = y.size(0);
  out.loss = losses.sum();
  // The gradient of the summed loss at each layer output: row i is example i's own,
  // since no layer mixes examples.
  std::vector<torch::Tensor> grads = torch::autograd::grad({out.loss}, outputs);
  torch::NoGradGuard no_grad;
  out.correct = h.argmax(1).eq(y).sum().item<int64_t>();
  out.loss = out.loss.detach();
  const int64_t b = x.size(0);
  torch::Tensor sq = torch::zeros({b}, x.options().dtype(torch::kFloat32));
  for (size_t l = 0; l < seen.size(); ++l) {
    Layer& L = seen[l];
    const torch::Tensor& g = grads[l];
    if (L.linear) {
      if (L.input.dim() == 2) {
        // ‖g aᵀ‖_F = ‖g‖·‖a‖: the weight gradient's norm without forming it.
        const torch::Tensor g2 = g.pow(2).sum(1);
        sq.add_(g2 * L.input.pow(2).sum(1));
        if (L.linear->options.bias()) sq.add_(g2);
        L.grad_out = g;
      } else {
        const torch::Tensor a = L.input.reshape({b, -1, L.input.size(-1)});
        const torch::Tensor gg = g.reshape({b, -1, g.size(-1)});
        L.per_example = torch::bmm(gg.transpose(1, 2), a);  // [b, out, in]
        sq.add_(L.per_example.pow(2).sum({1, 2}));
        L.grad_out = gg.sum(1);                              // the bias's per-example gradient
        if (L.linear->options.bias()) sq.add_(L.grad_out.pow(2).sum(1));
      }
    } else {
      const auto& o = L.conv->options;
      const auto& pad = c10::get<torch::ExpandingArray<2>>(o.padding());
      const torch::Tensor u = torch::nn::functional::unfold(
          L.input, torch::nn::functional::UnfoldFuncOptions(o.kernel_size()).dilation(o.dilation()).padding(*pad).stride(o.stride()));
      const torch::Tensor gm = g.reshape({b, g.size(1), -1});      // [b, out, L]
      L.per_example = torch::bmm(gm, u.transpose(1, 2));          // [b, out, in·kh·kw]
      sq.add_(L.per_example.pow(2).sum({1, 2}));
      L.grad_out = gm.sum(2);                                      // [b, out]
      if (o.bias()) sq.add_(L.grad_out.pow(2).sum(1));
    }
  }
  norms_ = sq.sqrt().to(torch::kFloat64);
  const torch::Tensor factor = clip_factors(sq.sqrt(), c);  // [b]
  for (Layer& L : seen) {
    torch::Tensor& weight = L.linear ? L.linear->weight : L.conv->weight;
    const bool bias = L.linear ? L.linear->options.bias() : L.conv->options.bias();
    if (L.per_example.defined()) {
      weight.mutable_grad() = (L.per_example * factor.view({b, 1, 1})).sum(0).reshape(weight.sizes());
    } else {
      weight.mutable_grad() = torch::mm((L.grad_out * factor.view({b, 1})).t(), L.input);
    }
    if (bias) {
      torch::Tensor& bias_t = L.linear ? L.linear->bias : L.conv->bias;
      bias_t.mutable_grad() = (L.grad_out * factor.view({b, 1})).sum(0);
    }
  }
  return out;
}

}  // namespace fedpod::privacy
