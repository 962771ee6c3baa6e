#include "fedpod/model/flat_parameters.h"

#include <set>
#include <stdexcept>

namespace fedpod::model {
namespace {

bool is_mirrorable(torch::ScalarType t) {
  return t == torch::kBool || c10::isIntegralType(t, /*includeBool=*/false);
}

// Matches `buffers` against the layout's buffer entries [first, end); calls fn(i, tensor).
template <typename Fn>
void for_each_buffer(const std::vector<ParamInfo>& layout, size_t first,
                     const std::vector<std::pair<std::string, torch::Tensor>>& buffers, Fn fn) {
  if (buffers.size() != layout.size() - first) {
    throw std::invalid_argument("the model lists " + std::to_string(buffers.size()) + " buffers, its layout " +
                                std::to_string(layout.size() - first) + "; a model must not add or drop buffers");
  }
  for (size_t k = 0; k < buffers.size(); ++k) {
    const ParamInfo& info = layout[first + k];
    const auto& [name, t] = buffers[k];
    if (name != info.name || !t.defined() || t.sizes().vec() != info.shape || t.scalar_type() != info.dtype) {
      throw std::invalid_argument("buffer '" + name + "' no longer matches the layout's '" + info.name +
                                  "' (name, shape or dtype changed); a model must keep its buffers as created");
    }
    fn(first + k, t);
  }
}

}  // namespace

void FlatParameters::adopt(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                           const std::vector<std::pair<std::string, torch::Tensor>>& buffers) {
  std::vector<ParamInfo> layout;
  std::vector<torch::Tensor> handles;
  std::set<std::string> names;
  int64_t total = 0;
  const torch::Device device = !params.empty()    ? params.front().second.device()
                               : !buffers.empty() ? buffers.front().second.device()
                                                  : torch::Device(torch::kCPU);
  auto add = [&](const std::string& what, const std::string& name, const torch::Tensor& t, bool is_param) {
    if (!t.defined()) throw std::invalid_argument(what + " '" + name + "' is undefined");
    if (t.device() != device) {
      throw std::invalid_argument(what + " '" + name + "' is on " + t.device().str() + ", the first on " +
                                  device.str() + "; flat parameters live on one device");
    }
    const torch::ScalarType dtype = t.scalar_type();
    EntryKind kind = is_param ? EntryKind::kParameter : EntryKind::kBuffer;
    if (dtype != torch::kFloat32) {
      if (is_param || !is_mirrorable(dtype)) {
        throw std::invalid_argument(what + " '" + name + "' is " + std::string(c10::toString(dtype)) +
                                    (is_param ? "; flat parameters hold float32 only"
                                              : "; buffers must be float32, integer or bool"));
      }
      kind = EntryKind::kMirroredBuffer;
    }
    if (!names.insert(name).second) throw std::invalid_argument("duplicate " + what + " '" + name + "'");
    layout.push_back({name, t.sizes().vec(), total, t.numel(), kind, dtype});
    handles.push_back(t);
    total += t.numel();
  };
  for (const auto& [name, p] : params) add("parameter", name, p, true);
  const int64_t param_total = total;
  for (const auto& [name, b] : buffers) add("buffer", name, b, false);

  layout_ = std::move(layout);
  handles_ = std::move(handles);
  first_buffer_ = params.size();
  has_mirrored_ = false;
  param_numel_ = param_total;
  flat_ = torch::empty({total}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  pins_ = std::make_shared<std::atomic<int>>(0);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layout_.size(); ++i) {
    const ParamInfo& info = layout_[i];
    if (info.kind == EntryKind::kMirroredBuffer) {
      has_mirrored_ = true;
      continue;
    }
    torch::Tensor view = flat_.narrow(0, info.offset, info.numel).view(info.shape);
    view.copy_(handles_[i]);
    handles_[i].set_data(view);
  }
  capture_buffers(buffers);  // the mirrored ones' values, checked
}

void FlatParameters::capture_buffers(const std::vector<std::pair<std::string, torch::Tensor>>& buffers) {
  torch::NoGradGuard no_grad;
  for_each_buffer(layout_, first_buffer_, buffers, [&](size_t i, const torch::Tensor& t) {
    const ParamInfo& info = layout_[i];
    if (info.kind == EntryKind::kBuffer) {
      if (info.numel == 0 || t.data_ptr() == flat_.narrow(0, info.offset, info.numel).data_ptr()) {
        handles_[i] = t;  // still our view
        return;
      }
      // The model replaced it. writable() first: a re-home re-points the handles it
      // knows, and the new tensor must keep its values until they are copied.
      torch::Tensor view = writable().narrow(0, info.offset, info.numel).view(info.shape);
      view.copy_(t);
      handles_[i] = t;  // the model's tensor now
      handles_[i].set_data(view);
      return;
    }
    handles_[i] = t;
    if (info.numel == 0) return;
    if (info.dtype != torch::kBool) {
      const int64_t biggest = t.abs().max().item<int64_t>();
      if (biggest > kMaxMirroredMagnitude) {
        throw std::out_of_range("buffer '" + info.name + "' holds " + std::to_string(biggest) + ", beyond the " +
                                std::to_string(kMaxMirroredMagnitude) + " that its float32 slot holds exactly");
      }
    }
    writable().narrow(0, info.offset, info.numel).copy_(t.reshape({-1}).to(torch::kFloat32));
  });
}

torch::Tensor slot_to_dtype(const torch::Tensor& slot, torch::ScalarType dtype) {
  if (dtype == torch::kFloat32) return slot;
  if (dtype == torch::kBool) return slot.ne(0);
  return slot.round().to(dtype);
}

void FlatParameters::restore_buffers(const std::vector<std::pair<std::string, torch::Tensor>>& buffers) {
  torch::NoGradGuard no_grad;
  for_each_buffer(layout_, first_buffer_, buffers, [&](size_t i, const torch::Tensor& t) {
    const ParamInfo& info = layout_[i];
    handles_[i] = t;
    if (info.numel == 0) return;
    torch::Tensor slot = flat_.narrow(0, info.offset, info.numel).view(info.shape);
    if (info.kind == EntryKind::kBuffer) {
      if (t.data_ptr() != slot.data_ptr()) handles_[i].set_data(slot);
      return;
    }
    handles_[i].copy_(slot_to_dtype(slot, info.dtype));
  });
}

void FlatParameters::rehome() { point_at(flat_.clone()); }

void FlatParameters::point_at(torch::Tensor buffer) {
  pins_ = std::make_shared<std::atomic<int>>(0);
  flat_ = std::move(buffer);
  for (size_t i = 0; i < layout_.size(); ++i) {
    const ParamInfo& info = layout_[i];
    if (info.kind == EntryKind::kMirroredBuffer) continue;
    handles_[i].set_data(flat_.narrow(0, info.offset, info.numel).view(info.shape));
  }
}

void FlatParameters::rehome_into(const torch::Tensor& dst) {
  if (!dst.defined() || !dst.is_cpu() || dst.scalar_type() != torch::kFloat32 || !dst.is_contiguous() ||
      dst.dim() != 1 || dst.numel() != flat_.numel() || !flat_.is_cpu()) {
    throw std::invalid_argument("rehome_into: needs a contiguous CPU float32 vector of " +
                                std::to_string(flat_.numel()) + " elements, and a buffer on the CPU");
  }
  torch::NoGradGuard no_grad;
  torch::Tensor target = dst;
  target.copy_(flat_);
  point_at(target);
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
