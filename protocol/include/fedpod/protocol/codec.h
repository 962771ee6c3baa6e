// Encoding and decoding fedpod messages: a Cap'n Proto envelope in frame 0, raw
// tensor bytes in frames 1..n.
//
// Sending is zero-copy for tensors: each tensor frame points at the tensor's own
// storage and holds a reference to it (and to an optional keep-alive token) until
// ZeroMQ releases the frame. Only the small envelope is serialized and copied.
//
// Receiving validates before use, in this order: frame count, envelope size and
// alignment (a misaligned header is copied into aligned words: it is small), Cap'n
// Proto traversal and nesting limits, protocol version; then, for tensors, each
// descriptor against the shapes the job's model expects, byte lengths against the
// frames, and finite values. Received tensors are views into the received frames
// (no copy), except a frame misaligned for its dtype, which is copied once.
//
// Threading: an Outgoing is built by one thread; its frames() may be sent from the
// thread owning the socket. An Incoming belongs to one thread.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "fedpod/common/status.h"
#include "fedpod/protocol/fedpod.capnp.h"

namespace fedpod::protocol {

// Bounds applied to every received message before it is parsed.
struct Limits {
  // Envelope bytes. Envelopes carry names and shapes, never tensor data: 1 MiB is
  // far above any real one and keeps a hostile header cheap to reject.
  size_t max_envelope_bytes = 1 << 20;
  // Frames per message (envelope + one per tensor).
  size_t max_frames = 16384;
  // Cap'n Proto nesting depth; our schema nests fewer than 8 levels.
  int nesting_limit = 16;
};

// A tensor to send, by name. Must be contiguous and on the CPU.
struct NamedTensor {
  std::string name;
  torch::Tensor tensor;
};

// A tensor a receiver expects: float32 with this name and shape.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

class Outgoing {
 public:
  Outgoing(const std::string& job_id, uint64_t request_id);
  Outgoing(const Outgoing&) = delete;
  Outgoing& operator=(const Outgoing&) = delete;

  // The envelope to fill in (its version, job id and request id are set).
  wire::Envelope::Builder envelope() { return root_; }

  // Describes `tensors` in `infos` (a list initialized to tensors.size()) and
  // attaches them as frames 1..n. `keepalive` is held by every frame until ZeroMQ
  // releases it (e.g. a FlatParameters pin). Throws std::invalid_argument for a
  // tensor that is not contiguous, not on the CPU, or of an unsupported dtype.
  void attach(capnp::List<wire::TensorInfo>::Builder infos, std::vector<NamedTensor> tensors,
              std::shared_ptr<void> keepalive = nullptr);

  // Attaches `bytes` as one raw frame after the tensor frames (call attach first,
  // if at all) and returns its index. Zero-copy: every copy of the frame holds a
  // reference to `bytes` until ZeroMQ releases it. Used for a custom model's
  // artifact in startJob; the envelope describes it (ModelReference).
  uint32_t attach_bytes(std::shared_ptr<const std::string> bytes);

  // The message as ZeroMQ frames: a fresh copy of the envelope and zero-copy tensor
  // frames. May be called many times (one call per destination of a broadcast).
  std::vector<zmq::message_t> frames();

  // Bytes of tensor payload in one copy of the message.
  uint64_t payload_bytes() const { return payload_bytes_; }

 private:
  capnp::MallocMessageBuilder builder_;
  wire::Envelope::Builder root_;
  std::vector<NamedTensor> tensors_;
  std::vector<std::shared_ptr<const std::string>> blobs_;
  std::shared_ptr<void> keepalive_;
  uint64_t payload_bytes_ = 0;
};

// A received, envelope-validated message. Tensor frames stay untouched until
// take_tensors().
class Incoming {
 public:
  // Validates frame count, envelope size, Cap'n Proto limits and the protocol version.
  // Returns kBadMessage or kVersionMismatch with the reason.
  static StatusOr<std::unique_ptr<Incoming>> parse(std::vector<zmq::message_t> frames,
                                                   const Limits& limits = Limits());

  wire::Envelope::Reader envelope() const { return envelope_; }
  size_t frame_count() const { return frames_.size(); }
  uint64_t bytes() const;  // all frames

  // Validates `infos` against `expected` (same count, order, names, float32, shapes),
  // checks each descriptor's frame index (1..n, each used once, none left over), its
  // byte length against the frame, and (when `check_finite`) that every value is
  // finite; only then hands out tensors viewing the frames. On error nothing is taken.
  // A raw (non-tensor) frame, e.g. a custom model's artifact: checks that the
  // message has exactly `index + 1` frames (it is the last one), that `index` is at
  // least 1, and that the frame holds `expected_bytes`. The view lives as long as
  // this Incoming. Returns kBadMessage naming what was wrong; `what` names the frame.
  StatusOr<std::string_view> raw_frame(uint32_t index, uint64_t expected_bytes, const std::string& what) const;

  // `dtype` is the one dtype every tensor must have: float32 (default) or bfloat16.
  // With `check_finite` and `magnitudes`, the finite check also fills `magnitudes` with
  // each tensor's largest absolute value (the same pass), in `expected`'s order.
  StatusOr<std::vector<torch::Tensor>> take_tensors(capnp::List<wire::TensorInfo>::Reader infos,
                                                    const std::vector<TensorSpec>& expected,
                                                    bool check_finite = true,
                                                    wire::DType dtype = wire::DType::FLOAT32,
                                                    std::vector<float>* magnitudes = nullptr);

 private:
  Incoming() = default;
  std::vector<zmq::message_t> frames_;
  kj::Array<capnp::word> aligned_;  // copy of a misaligned envelope
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  wire::Envelope::Reader envelope_;
};

// The largest absolute value of `n` floats to bfloat16 precision: truncated to its top
// 8 significant bits, so at most 0.8 % (2^-7) below the exact one (a subnormal's may
// read as 0; 0 when n is 0);
// infinity or NaN when one of them is not finite. One vectorized pass at
// memory speed, on libtorch's intra-op threads for large n.
float largest_magnitude(const float* data, size_t n);
// True when all `n` floats are finite (no NaN, no infinity): the same pass.
bool all_finite(const float* data, size_t n);
// The same two for `n` bfloat16 values (raw 16-bit patterns; exact), on the calling
// thread.
float largest_magnitude_bf16(const uint16_t* data, size_t n);
bool all_finite_bf16(const uint16_t* data, size_t n);

// bfloat16 updates (Train.updateDtype): `trained - base`, rounded to bfloat16 (to
// nearest, ties to even, as torch rounds), in one pass; and `base + delta` back in
// float32. Both take contiguous float32 tensors of equal numel (`delta`: bfloat16;
// bf16_delta's `base` may also be bfloat16: the parameters a pod received as
// bfloat16, Train.paramsDtype) and return new contiguous tensors shaped as `base`.
torch::Tensor bf16_delta(const torch::Tensor& trained, const torch::Tensor& base);
// `x` (contiguous float32) rounded to bfloat16 the same way, in one pass: the
// parameters a coordinator broadcasts as bfloat16.
torch::Tensor round_to_bf16(const torch::Tensor& x);
torch::Tensor add_bf16_delta(const torch::Tensor& base, const torch::Tensor& delta);
// The same sum written into `out` (contiguous float32, base's numel), so a caller that
// widens one update after another reuses one buffer instead of faulting in a fresh
// one per update (10,000 pages for a 40 MB update).
void add_bf16_delta_into(const torch::Tensor& base, const torch::Tensor& delta, torch::Tensor& out);

wire::ErrorCode to_wire(StatusCode code);
StatusCode from_wire(wire::ErrorCode code);

// Fills `envelope` with an Error body carrying `status`.
void set_error(wire::Envelope::Builder envelope, const Status& status);

// The round a serialized envelope (frame 0 of a message) names: that of train,
// trainDone, fetchResult, trainResult, evaluate or evalResult; 0 for other kinds
// and for a frame that does not parse.
uint32_t round_of(const zmq::message_t& envelope_frame);

// The name of the envelope's body kind ("train", "helloReply", ...).
const char* body_name(wire::Envelope::Body::Which which);

}  // namespace fedpod::protocol
