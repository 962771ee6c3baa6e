#include "fedpod/model/flat_parameters.h"

#include <set>
#include <stdexcept>

namespace fedpod::model {

void FlatParameters::adopt(const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  layout_.clear();
  params_.clear();
  std::set<std::string> names;
  int64_t total = 0;
  const torch::Device device = params.empty() ? torch::Device(torch::kCPU) : params.front().second.device();
  for (const auto& [name, p] : params) {
    if (p.device() != device) {
      throw std::invalid_argument("parameter '" + name + "' is on " + p.device().str() + ", the first on " +
                                  device.str() + "; flat parameters live on one device");
    }
    if (p.scalar_type() != torch::kFloat32) {
      throw std::invalid_argument("parameter '" + name + "' is " +
                                  std::string(c10::toString(p.scalar_type())) +
                                  "; flat parameters hold float32 only");
    }
    if (!names.insert(name).second) throw std::invalid_argument("duplicate parameter '" + name + "'");
    layout_.push_back({name, p.sizes().vec(), total, p.numel()});
    params_.push_back(p);
    total += p.numel();
  }
  flat_ = torch::empty({total}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  pins_ = std::make_shared<std::atomic<int>>(0);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor view = flat_.narrow(0, layout_[i].offset, layout_[i].numel).view(layout_[i].shape);
    view.copy_(params_[i]);
    params_[i].set_data(view);
  }
}

void FlatParameters::rehome() {
  torch::Tensor fresh = flat_.clone();
  pins_ = std::make_shared<std::atomic<int>>(0);
  flat_ = fresh;
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].set_data(flat_.narrow(0, layout_[i].offset, layout_[i].numel).view(layout_[i].shape));
  }
}

torch::Tensor& FlatParameters::writable() {
  if (pinned()) rehome();
  return flat_;
}

std::shared_ptr<void> FlatParameters::pin() {
  auto counter = pins_;
  counter->fetch_add(1);
  return std::shared_ptr<void>(nullptr, [counter](void*) { counter->fetch_sub(1); });
}

}  // namespace fedpod::model
