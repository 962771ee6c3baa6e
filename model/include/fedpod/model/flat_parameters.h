// FlatParameters: a model's parameters as one contiguous float32 buffer.
//
// After `adopt`, every parameter tensor of the model is a view into one flat buffer,
// in a fixed order with a fixed layout. Loading global parameters is then one copy
// into the buffer, and sending them is a list of (offset, bytes) ranges of it - no
// per-parameter allocation and no packing.
//
// Zero-copy sends keep pointers into the buffer until the transport releases them.
// `pin()` hands out a token the sender holds for as long as its frames live;
// `writable()` moves the parameters into a fresh buffer first when a token is still
// out, so a write never races an in-flight send.
//
// Threading: not thread-safe, except that pin tokens may be released from any thread.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fedpod::model {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in elements from the start of the flat buffer
  int64_t numel = 0;
};

class FlatParameters {
 public:
  FlatParameters() = default;
  FlatParameters(const FlatParameters&) = delete;
  FlatParameters& operator=(const FlatParameters&) = delete;

  // Re-homes `params` (the model's own parameter tensors, in this order) into one
  // new contiguous float32 buffer on their device, keeping their values. Every param
  // must be float32 and on the same device (the CPU unless a pod moved the model to
  // a GPU, worker/data_parallel.h). Throws std::invalid_argument otherwise or for
  // duplicate names.
  void adopt(const std::vector<std::pair<std::string, torch::Tensor>>& params);

  const std::vector<ParamInfo>& layout() const { return layout_; }
  int64_t numel() const { return flat_.defined() ? flat_.numel() : 0; }
  int64_t bytes() const { return numel() * static_cast<int64_t>(sizeof(float)); }

  // The buffer, for reading (or sending: hold `pin()` while the bytes are in flight).
  const torch::Tensor& tensor() const { return flat_; }
  // The buffer, for writing; re-homes first if a pin is outstanding.
  torch::Tensor& writable();

  // A token that marks the current buffer as in flight until it is destroyed.
  std::shared_ptr<void> pin();
  bool pinned() const { return pins_->load() > 0; }

 private:
  void rehome();

  std::vector<ParamInfo> layout_;
  std::vector<torch::Tensor> params_;  // the model's parameters (views into flat_)
  torch::Tensor flat_;
  std::shared_ptr<std::atomic<int>> pins_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace fedpod::model
