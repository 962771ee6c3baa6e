// FlatParameters: a model's state -- parameters and buffers -- as one contiguous
// float32 buffer.
//
// After `adopt`, every parameter tensor of the model is a view into one flat buffer,
// in a fixed order with a fixed layout. Loading global parameters is then one copy
// into the buffer, and sending them is a list of (offset, bytes) ranges of it - no
// per-parameter allocation and no packing.
//
// Buffers travel and are averaged with the parameters (batch-norm running
// statistics are part of the model a pod trains), so they sit in the same flat
// buffer, after every parameter:
//   - float32 buffers (running_mean, running_var) are views into it, like the
//     parameters, and are averaged like them (kBuffer);
//   - integer and bool buffers (num_batches_tracked, index or mask tables) keep
//     their own dtype in the model -- code that indexes with them must keep
//     working -- and are mirrored into float32 slots of the flat buffer
//     (kMirroredBuffer): `capture_buffers()` copies them in, `restore_buffers()`
//     copies the slots back (rounded). float32 holds every integer of magnitude up
//     to 2^24 exactly; capture refuses a larger value rather than send a wrong one.
//     Aggregation takes their maximum, not a weighted mean (aggregation/fedavg.h).
// Other buffer dtypes (float64, float16) are refused by adopt.
// The layout is: parameters [0, param_numel()), then buffers; so gradients cover
// only the prefix.
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

// What a range of the flat buffer holds.
enum class EntryKind : uint8_t {
  kParameter,       // trained by the optimizer; a view into the flat buffer
  kBuffer,          // a float32 buffer; a view into the flat buffer
  kMirroredBuffer,  // an integer or bool buffer, copied to and from its float32 slot
};

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0;  // in elements from the start of the flat buffer
  int64_t numel = 0;
  EntryKind kind = EntryKind::kParameter;
  // The dtype the model keeps it in (float32 except for mirrored buffers); model.pt
  // and state_dicts store it with this dtype.
  torch::ScalarType dtype = torch::kFloat32;

  bool is_parameter() const { return kind == EntryKind::kParameter; }
};

// Integer values a float32 slot holds exactly: |v| <= 2^24.
inline constexpr int64_t kMaxMirroredMagnitude = int64_t{1} << 24;

// A float32 slot's values in the entry's own dtype: bool as "not zero", integers
// rounded to the nearest (the mean of integer values is not one), float32 as is.
// A new tensor unless the dtype is float32. Used by restore_buffers and by whatever
// writes a state_dict (model.pt).
torch::Tensor slot_to_dtype(const torch::Tensor& slot, torch::ScalarType dtype);

class FlatParameters {
 public:
  FlatParameters() = default;
  FlatParameters(const FlatParameters&) = delete;
  FlatParameters& operator=(const FlatParameters&) = delete;

  // Re-homes `params` (the model's own parameter tensors, in this order) and then
  // `buffers` into one new contiguous float32 buffer on their device, keeping their
  // values (see above for buffers). Every param must be float32, every buffer
  // float32, integer or bool, all on the same device (the CPU unless a pod moved
  // the model to a GPU, worker/data_parallel.h); names are unique across both.
  // Throws std::invalid_argument otherwise, naming the tensor.
  void adopt(const std::vector<std::pair<std::string, torch::Tensor>>& params,
             const std::vector<std::pair<std::string, torch::Tensor>>& buffers = {});

  const std::vector<ParamInfo>& layout() const { return layout_; }
  int64_t numel() const { return flat_.defined() ? flat_.numel() : 0; }
  int64_t bytes() const { return numel() * static_cast<int64_t>(sizeof(float)); }
  // Elements of the parameters, which come first in the layout.
  int64_t param_numel() const { return param_numel_; }
  bool has_mirrored_buffers() const { return has_mirrored_; }

  // Brings the flat buffer up to date with the model's buffers, given as the model
  // lists them now (`Model::named_buffers()`): copies the mirrored (integer/bool)
  // buffers into their float32 slots, and a float32 buffer the model replaced with
  // a tensor of its own (`self.b = self.b * 0.9 + x` rather than in place) into its
  // range, re-pointing it there. Call after training, before the buffer is sent or
  // read. Throws std::invalid_argument when the model's buffers no longer match the
  // layout, std::out_of_range naming the buffer when a mirrored value is beyond
  // kMaxMirroredMagnitude.
  void capture_buffers(const std::vector<std::pair<std::string, torch::Tensor>>& buffers);
  // The other way: copies the slots back into the mirrored buffers (rounded to
  // their dtype) and re-points a replaced float32 buffer at its range. Call after
  // writing the flat buffer (loading global parameters).
  void restore_buffers(const std::vector<std::pair<std::string, torch::Tensor>>& buffers);

  // The buffer, for reading (or sending: hold `pin()` while the bytes are in flight).
  const torch::Tensor& tensor() const { return flat_; }
  // The buffer, for writing; re-homes first if a pin is outstanding.
  torch::Tensor& writable();

  // Moves the buffer into `dst` (a CPU float32 tensor of numel() elements, e.g. a
  // shared-memory region): copies the values there and re-points every parameter and
  // float32 buffer at it, so that the model reads and trains in `dst` itself. The
  // caller keeps `dst`'s memory alive as long as the model. Throws
  // std::invalid_argument when `dst` does not fit.
  void rehome_into(const torch::Tensor& dst);

  // A token that marks the current buffer as in flight until it is destroyed.
  std::shared_ptr<void> pin();
  bool pinned() const { return pins_->load() > 0; }

 private:
  void rehome();
  // Makes `buffer` (same size, holding the values) the flat buffer: re-points the
  // parameters and float32 buffers at it, with no pins outstanding.
  void point_at(torch::Tensor buffer);

  std::vector<ParamInfo> layout_;
  // The model's tensor of each layout entry: parameters and float32 buffers are
  // views into flat_; mirrored buffers keep their own storage.
  std::vector<torch::Tensor> handles_;
  size_t first_buffer_ = 0;  // index in layout_ of the first buffer
  bool has_mirrored_ = false;
  int64_t param_numel_ = 0;
  torch::Tensor flat_;
  std::shared_ptr<std::atomic<int>> pins_ = std::make_shared<std::atomic<int>>(0);
};

}  // namespace fedpod::model
