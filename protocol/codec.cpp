#include "fedpod/protocol/codec.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include <kj/exception.h>

namespace fedpod::protocol {
namespace {

// Held by a zero-copy frame until ZeroMQ releases it.
struct FrameOwner {
  torch::Tensor tensor;
  std::shared_ptr<void> keepalive;
};

void release_frame(void* /*data*/, void* hint) { delete static_cast<FrameOwner*>(hint); }

std::optional<wire::DType> to_wire_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return wire::DType::FLOAT32;
    case torch::kFloat64: return wire::DType::FLOAT64;
    case torch::kInt64: return wire::DType::INT64;
    case torch::kInt32: return wire::DType::INT32;
    case torch::kBFloat16: return wire::DType::BFLOAT16;
    default: return std::nullopt;
  }
}

const char* dtype_name(wire::DType d) {
  switch (d) {
    case wire::DType::FLOAT32: return "float32";
    case wire::DType::FLOAT64: return "float64";
    case wire::DType::INT64: return "int64";
    case wire::DType::INT32: return "int32";
    case wire::DType::BFLOAT16: return "bfloat16";
  }
  return "unknown";
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

Outgoing::Outgoing(const std::string& job_id, uint64_t request_id)
    : root_(builder_.initRoot<wire::Envelope>()) {
  root_.setProtocolVersion(wire::PROTOCOL_VERSION);
  root_.setJobId(job_id);
  root_.setRequestId(request_id);
}

void Outgoing::attach(capnp::List<wire::TensorInfo>::Builder infos, std::vector<NamedTensor> tensors,
                      std::shared_ptr<void> keepalive) {
  if (infos.size() != tensors.size()) throw std::invalid_argument("attach: info list size mismatch");
  if (!tensors_.empty()) throw std::invalid_argument("attach: tensors already attached");
  if (!blobs_.empty()) throw std::invalid_argument("attach: call attach before attach_bytes");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const torch::Tensor& t = tensors[i].tensor;
    auto dtype = to_wire_dtype(t.scalar_type());
    if (!dtype || !t.is_contiguous() || !t.device().is_cpu()) {
      throw std::invalid_argument("attach: tensor '" + tensors[i].name +
                                  "' must be a contiguous CPU tensor of a supported dtype");
    }
    auto info = infos[i];
    info.setName(tensors[i].name);
    info.setDtype(*dtype);
    auto shape = info.initShape(t.dim());
    for (int64_t d = 0; d < t.dim(); ++d) shape.set(d, t.size(d));
    info.setFrame(static_cast<uint32_t>(i + 1));
    info.setBytes(t.nbytes());
    info.setEncoding(wire::Encoding::RAW);
    payload_bytes_ += t.nbytes();
  }
  tensors_ = std::move(tensors);
  keepalive_ = std::move(keepalive);
}

uint32_t Outgoing::attach_bytes(std::shared_ptr<const std::string> bytes) {
  if (!bytes) throw std::invalid_argument("attach_bytes: null");
  payload_bytes_ += bytes->size();
  blobs_.push_back(std::move(bytes));
  return static_cast<uint32_t>(tensors_.size() + blobs_.size());
}

namespace {
void release_blob(void* /*data*/, void* hint) { delete static_cast<std::shared_ptr<const std::string>*>(hint); }
}  // namespace

std::vector<zmq::message_t> Outgoing::frames() {
  std::vector<zmq::message_t> out;
  out.reserve(1 + tensors_.size() + blobs_.size());
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder_);
  auto bytes = words.asBytes();
  out.emplace_back(bytes.begin(), bytes.size());
  for (const auto& nt : tensors_) {
    auto* owner = new FrameOwner{nt.tensor, keepalive_};
    // zmq_msg_init_data does not copy: the frame points at the tensor's storage.
    out.emplace_back(const_cast<void*>(nt.tensor.data_ptr()), nt.tensor.nbytes(), &release_frame, owner);
  }
  for (const auto& b : blobs_) {
    auto* owner = new std::shared_ptr<const std::string>(b);
    out.emplace_back(const_cast<char*>(b->data()), b->size(), &release_blob, owner);
  }
  return out;
}

StatusOr<std::unique_ptr<Incoming>> Incoming::parse(std::vector<zmq::message_t> frames,
                                                    const Limits& limits) {
  if (frames.empty()) return Status::bad_message("empty message");
  if (frames.size() > limits.max_frames) {
    return Status::bad_message("message has " + std::to_string(frames.size()) + " frames, limit is " +
                               std::to_string(limits.max_frames));
  }
  const zmq::message_t& head = frames[0];
  if (head.size() == 0 || head.size() % sizeof(capnp::word) != 0) {
    return Status::bad_message("envelope of " + std::to_string(head.size()) +
                               " bytes is not a whole number of 8-byte words");
  }
  if (head.size() > limits.max_envelope_bytes) {
    return Status::bad_message("envelope of " + std::to_string(head.size()) + " bytes exceeds the limit of " +
                               std::to_string(limits.max_envelope_bytes));
  }
  std::unique_ptr<Incoming> in(new Incoming());
  in->frames_ = std::move(frames);
  const size_t words = in->frames_[0].size() / sizeof(capnp::word);
  kj::ArrayPtr<const capnp::word> view;
  if (reinterpret_cast<uintptr_t>(in->frames_[0].data()) % alignof(capnp::word) == 0) {
    view = kj::arrayPtr(static_cast<const capnp::word*>(in->frames_[0].data()), words);
  } else {
    // Small frames point into ZeroMQ's receive buffer at any alignment.
    in->aligned_ = kj::heapArray<capnp::word>(words);
    std::memcpy(in->aligned_.begin(), in->frames_[0].data(), in->frames_[0].size());
    view = in->aligned_.asPtr();
  }
  capnp::ReaderOptions options;
  // A valid envelope is read a few times over by its handler; anything needing more
  // than 8x its own size plus slack is an amplification attempt.
  options.traversalLimitInWords = 8 * words + 65536;
  options.nestingLimit = limits.nesting_limit;
  try {
    in->reader_ = std::make_unique<capnp::FlatArrayMessageReader>(view, options);
    in->envelope_ = in->reader_->getRoot<wire::Envelope>();
    // Walks the whole message once: every pointer is bounds-checked here, before use.
    in->envelope_.totalSize();
    if (in->envelope_.getProtocolVersion() != wire::PROTOCOL_VERSION) {
      return Status(StatusCode::kVersionMismatch,
                    "protocol version " + std::to_string(in->envelope_.getProtocolVersion()) +
                        ", this build speaks " + std::to_string(wire::PROTOCOL_VERSION));
    }
    // An unknown union member (a newer peer) reads as a discriminant beyond our list.
    if (static_cast<unsigned>(in->envelope_.getBody().which()) > static_cast<unsigned>(wire::Envelope::Body::SEC_AGG_REVEAL)) {
      return Status::bad_message("unknown message kind " +
                                 std::to_string(static_cast<unsigned>(in->envelope_.getBody().which())));
    }
  } catch (const kj::Exception& e) {
    return Status::bad_message(std::string("malformed envelope: ") + e.getDescription().cStr());
  }
  return in;
}

uint64_t Incoming::bytes() const {
  uint64_t n = 0;
  for (const auto& f : frames_) n += f.size();
  return n;
}

StatusOr<std::string_view> Incoming::raw_frame(uint32_t index, uint64_t expected_bytes,
                                               const std::string& what) const {
  if (index == 0 || frames_.size() != static_cast<size_t>(index) + 1) {
    return Status::bad_message(what + " is described in frame " + std::to_string(index) + ", the message has " +
                               std::to_string(frames_.size() - 1) + " frame(s) after the envelope; it must be the last");
  }
  const auto& f = frames_[index];
  if (f.size() != expected_bytes) {
    return Status::bad_message(what + " frame has " + std::to_string(f.size()) + " bytes, its descriptor says " +
                               std::to_string(expected_bytes));
  }
  return std::string_view(static_cast<const char*>(f.data()), f.size());
}

StatusOr<std::vector<torch::Tensor>> Incoming::take_tensors(capnp::List<wire::TensorInfo>::Reader infos,
                                                            const std::vector<TensorSpec>& expected,
                                                            bool check_finite, wire::DType dtype,
                                                            std::vector<float>* magnitudes) {
  if (magnitudes) magnitudes->clear();
  const bool ints = dtype == wire::DType::INT32 || dtype == wire::DType::INT64;  // secure aggregation's ring
  if (dtype != wire::DType::FLOAT32 && dtype != wire::DType::BFLOAT16 && !ints) {
    return Status::invalid(std::string("take_tensors: dtype ") + dtype_name(dtype) +
                           " is not float32, bfloat16, int32 or int64");
  }
  if (ints) check_finite = false;  // every bit pattern is a ring element
  const bool bf16 = dtype == wire::DType::BFLOAT16;
  const size_t elem = bf16 ? 2 : dtype == wire::DType::INT64 ? 8 : 4;
  const size_t n = infos.size();
  if (n != expected.size()) {
    return Status::bad_message("message describes " + std::to_string(n) + " tensors, the model has " +
                               std::to_string(expected.size()));
  }
  if (frames_.size() != n + 1) {
    return Status::bad_message("message has " + std::to_string(frames_.size() - 1) +
                               " tensor frames for " + std::to_string(n) + " tensors");
  }
  std::vector<bool> used(frames_.size(), false);
  std::vector<size_t> frame_of(n);
  for (size_t i = 0; i < n; ++i) {
    auto info = infos[i];
    const TensorSpec& want = expected[i];
    const std::string name = info.getName();
    if (name != want.name) {
      return Status::bad_message("tensor " + std::to_string(i) + " is '" + name + "', expected '" +
                                 want.name + "'");
    }
    if (info.getDtype() != dtype) {
      return Status::bad_message("tensor '" + name + "' has dtype " + dtype_name(info.getDtype()) + ", expected " +
                                 dtype_name(dtype));
    }
    if (info.getEncoding() != wire::Encoding::RAW) {
      return Status::bad_message("tensor '" + name + "' has an unknown encoding");
    }
    std::vector<int64_t> shape;
    for (int64_t d : info.getShape()) shape.push_back(d);
    if (shape != want.shape) {
      return Status::bad_message("tensor '" + name + "' has shape " + shape_string(shape) + ", expected " +
                                 shape_string(want.shape));
    }
    int64_t numel = 1;
    for (int64_t d : want.shape) numel *= d;
    const uint64_t want_bytes = static_cast<uint64_t>(numel) * elem;
    if (info.getBytes() != want_bytes) {
      return Status::bad_message("tensor '" + name + "' declares " + std::to_string(info.getBytes()) +
                                 " bytes, its shape needs " + std::to_string(want_bytes));
    }
    const uint32_t f = info.getFrame();
    if (f == 0 || f >= frames_.size() || used[f]) {
      return Status::bad_message("tensor '" + name + "' names frame " + std::to_string(f) +
                                 ", which is out of range or already used");
    }
    used[f] = true;
    if (frames_[f].size() != want_bytes) {
      return Status::bad_message("tensor '" + name + "' frame has " + std::to_string(frames_[f].size()) +
                                 " bytes, expected " + std::to_string(want_bytes));
    }
    frame_of[i] = f;
  }
  if (check_finite) {
    for (size_t i = 0; i < n; ++i) {
      const auto& fr = frames_[frame_of[i]];
      // Finite check on the raw bytes works for any alignment (memcpy-free loads below
      // are done through an aligned copy only when needed).
      float largest;
      if (bf16) {
        std::vector<uint16_t> tmp;
        const uint16_t* p = static_cast<const uint16_t*>(fr.data());
        if (reinterpret_cast<uintptr_t>(fr.data()) % alignof(uint16_t) != 0) {
          tmp.resize(fr.size() / 2);
          std::memcpy(tmp.data(), fr.data(), fr.size());
          p = tmp.data();
        }
        largest = largest_magnitude_bf16(p, fr.size() / 2);
      } else if (reinterpret_cast<uintptr_t>(fr.data()) % alignof(float) == 0) {
        largest = largest_magnitude(static_cast<const float*>(fr.data()), fr.size() / sizeof(float));
      } else {
        std::vector<float> tmp(fr.size() / sizeof(float));
        std::memcpy(tmp.data(), fr.data(), fr.size());
        largest = largest_magnitude(tmp.data(), tmp.size());
      }
      if (!std::isfinite(largest)) {
        if (magnitudes) magnitudes->clear();
        return Status::bad_message("tensor '" + expected[i].name + "' contains NaN or infinity");
      }
      if (magnitudes) magnitudes->push_back(largest);
    }
  }
  // Everything checked: hand out views. Each frame moves into its tensor's deleter.
  std::vector<torch::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto* frame = new zmq::message_t(std::move(frames_[frame_of[i]]));
    const auto scalar = bf16                               ? torch::kBFloat16
                        : dtype == wire::DType::INT32 ? torch::kInt32
                        : dtype == wire::DType::INT64 ? torch::kInt64
                                                      : torch::kFloat32;
    if (reinterpret_cast<uintptr_t>(frame->data()) % elem == 0) {
      out.push_back(torch::from_blob(
          frame->data(), expected[i].shape, [frame](void*) { delete frame; },
          torch::TensorOptions().dtype(scalar)));
    } else {
      torch::Tensor t = torch::empty(expected[i].shape, scalar);
      std::memcpy(t.data_ptr(), frame->data(), frame->size());
      delete frame;
      out.push_back(t);
    }
  }
  return out;
}

namespace {
// A float's upper 16 bits (sign, exponent, 7 mantissa bits: its bfloat16 truncation)
// with the sign cleared order as the magnitudes do, and those of infinity and NaN,
// 0x7f80 and above, lie above every finite one's. Reducing them with a 16-bit signed
// max (one SSE2 instruction per 4 floats, a float's lower half masked to zero) is
// several times faster than a 32-bit max, which SSE2 lacks, and as fast as memory.
constexpr int16_t kNotFinite16 = 0x7f80;
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the lane masks below assume little-endian floats");
using Lanes16 = int16_t __attribute__((vector_size(16)));

// The largest of `count` 16-bit lanes at `bytes`, each ANDed with `mask`'s lane (the
// mask repeats every 8 lanes). memcpy loads: any alignment, any underlying type.
int16_t largest_masked_lane(const unsigned char* bytes, size_t count, const Lanes16& mask) {
  Lanes16 m0 = {}, m1 = {};
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    Lanes16 a, b;
    std::memcpy(&a, bytes + 2 * i, sizeof a);
    std::memcpy(&b, bytes + 2 * i + sizeof a, sizeof b);
    a &= mask;
    b &= mask;
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  m0 = m1 > m0 ? m1 : m0;
  int16_t m = 0;
  for (int k = 0; k < 8; ++k) m = std::max(m, m0[k]);
  for (; i < count; ++i) {
    int16_t lane;
    std::memcpy(&lane, bytes + 2 * i, sizeof lane);
    m = std::max(m, static_cast<int16_t>(lane & mask[i % 8]));
  }
  return m;
}

// A float's upper half is its odd 16-bit lane (little-endian).
int16_t chunk_largest_upper(const float* data, size_t n) {
  static const Lanes16 upper = {0, 0x7fff, 0, 0x7fff, 0, 0x7fff, 0, 0x7fff};
  return largest_masked_lane(reinterpret_cast<const unsigned char*>(data), 2 * n, upper);
}

float from_upper(int16_t upper) {
  const uint32_t bits = static_cast<uint32_t>(static_cast<uint16_t>(upper)) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
}  // namespace

namespace {
inline uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
}  // namespace

torch::Tensor bf16_delta(const torch::Tensor& trained, const torch::Tensor& base) {
  const bool bf16_base = base.scalar_type() == torch::kBFloat16;
  TORCH_CHECK(trained.scalar_type() == torch::kFloat32 && (base.scalar_type() == torch::kFloat32 || bf16_base) &&
                  trained.is_contiguous() && base.is_contiguous() && trained.numel() == base.numel(),
              "bf16_delta: a contiguous float32 tensor and a float32 or bfloat16 base of equal size");
  torch::Tensor out = torch::empty(base.sizes(), torch::kBFloat16);
  const float* a = trained.data_ptr<float>();
  auto* o = reinterpret_cast<uint16_t*>(out.data_ptr());
  if (bf16_base) {
    const auto* b = reinterpret_cast<const uint16_t*>(base.data_ptr());
    at::parallel_for(0, base.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) o[i] = to_bf16(a[i] - from_bf16(b[i]));
    });
    return out;
  }
  const float* b = base.data_ptr<float>();
  at::parallel_for(0, base.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) o[i] = to_bf16(a[i] - b[i]);
  });
  return out;
}

torch::Tensor round_to_bf16(const torch::Tensor& x) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "round_to_bf16: a contiguous float32 tensor");
  torch::Tensor out = torch::empty(x.sizes(), torch::kBFloat16);
  const float* a = x.data_ptr<float>();
  auto* o = reinterpret_cast<uint16_t*>(out.data_ptr());
  at::parallel_for(0, x.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) o[i] = to_bf16(a[i]);
  });
  return out;
}

void add_bf16_delta_into(const torch::Tensor& base, const torch::Tensor& delta, torch::Tensor& out) {
  TORCH_CHECK(base.scalar_type() == torch::kFloat32 && delta.scalar_type() == torch::kBFloat16 &&
                  base.is_contiguous() && delta.is_contiguous() && base.numel() == delta.numel(),
              "add_bf16_delta: a contiguous float32 and a bfloat16 tensor of equal size");
  TORCH_CHECK(out.scalar_type() == torch::kFloat32 && out.is_contiguous() && out.numel() == base.numel(),
              "add_bf16_delta_into: out must be a contiguous float32 tensor of base's size");
  const float* b = base.data_ptr<float>();
  const auto* d = reinterpret_cast<const uint16_t*>(delta.data_ptr());
  float* o = out.data_ptr<float>();
  at::parallel_for(0, base.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) o[i] = b[i] + from_bf16(d[i]);
  });
}

torch::Tensor add_bf16_delta(const torch::Tensor& base, const torch::Tensor& delta) {
  torch::Tensor out = torch::empty(base.sizes(), torch::kFloat32);
  add_bf16_delta_into(base, delta, out);
  return out;
}

float largest_magnitude(const float* data, size_t n) {
  // Large tensors are scanned on libtorch's intra-op threads, in chunks; a chunk that
  // is not finite ends the scan.
  constexpr int64_t kChunk = 1 << 16;
  std::atomic<int16_t> largest{0};
  at::parallel_for(0, static_cast<int64_t>(n), kChunk, [&](int64_t begin, int64_t end) {
    int16_t m = 0;
    for (int64_t start = begin;
         start < end && m < kNotFinite16 && largest.load(std::memory_order_relaxed) < kNotFinite16;
         start += kChunk) {
      const int64_t stop = std::min(end, start + kChunk);
      m = std::max(m, chunk_largest_upper(data + start, static_cast<size_t>(stop - start)));
    }
    int16_t cur = largest.load(std::memory_order_relaxed);
    while (m > cur && !largest.compare_exchange_weak(cur, m, std::memory_order_relaxed)) {
    }
  });
  return from_upper(largest.load());
}

bool all_finite(const float* data, size_t n) { return std::isfinite(largest_magnitude(data, n)); }

float largest_magnitude_bf16(const uint16_t* data, size_t n) {
  // bfloat16 is float32's upper half: the same order, every lane used.
  static const Lanes16 magnitude = {0x7fff, 0x7fff, 0x7fff, 0x7fff, 0x7fff, 0x7fff, 0x7fff, 0x7fff};
  return from_upper(largest_masked_lane(reinterpret_cast<const unsigned char*>(data), n, magnitude));
}

bool all_finite_bf16(const uint16_t* data, size_t n) { return std::isfinite(largest_magnitude_bf16(data, n)); }

wire::ErrorCode to_wire(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return wire::ErrorCode::OK;
    case StatusCode::kInvalidArgument: return wire::ErrorCode::INVALID_ARGUMENT;
    case StatusCode::kBadMessage: return wire::ErrorCode::BAD_MESSAGE;
    case StatusCode::kNotFound: return wire::ErrorCode::NOT_FOUND;
    case StatusCode::kBusy: return wire::ErrorCode::BUSY;
    case StatusCode::kFailedPrecondition: return wire::ErrorCode::FAILED_PRECONDITION;
    case StatusCode::kPermissionDenied: return wire::ErrorCode::PERMISSION_DENIED;
    case StatusCode::kVersionMismatch: return wire::ErrorCode::VERSION_MISMATCH;
    case StatusCode::kSchemaMismatch: return wire::ErrorCode::SCHEMA_MISMATCH;
    case StatusCode::kDeadlineExceeded: return wire::ErrorCode::DEADLINE_EXCEEDED;
    case StatusCode::kUnavailable: return wire::ErrorCode::UNAVAILABLE;
    case StatusCode::kInternal: return wire::ErrorCode::INTERNAL;
  }
  return wire::ErrorCode::INTERNAL;
}

StatusCode from_wire(wire::ErrorCode code) {
  switch (code) {
    case wire::ErrorCode::OK: return StatusCode::kOk;
    case wire::ErrorCode::INVALID_ARGUMENT: return StatusCode::kInvalidArgument;
    case wire::ErrorCode::BAD_MESSAGE: return StatusCode::kBadMessage;
    case wire::ErrorCode::NOT_FOUND: return StatusCode::kNotFound;
    case wire::ErrorCode::BUSY: return StatusCode::kBusy;
    case wire::ErrorCode::FAILED_PRECONDITION: return StatusCode::kFailedPrecondition;
    case wire::ErrorCode::PERMISSION_DENIED: return StatusCode::kPermissionDenied;
    case wire::ErrorCode::VERSION_MISMATCH: return StatusCode::kVersionMismatch;
    case wire::ErrorCode::SCHEMA_MISMATCH: return StatusCode::kSchemaMismatch;
    case wire::ErrorCode::DEADLINE_EXCEEDED: return StatusCode::kDeadlineExceeded;
    case wire::ErrorCode::UNAVAILABLE: return StatusCode::kUnavailable;
    case wire::ErrorCode::INTERNAL: return StatusCode::kInternal;
  }
  return StatusCode::kInternal;
}

void set_error(wire::Envelope::Builder envelope, const Status& status) {
  auto err = envelope.getBody().initError();
  err.setCode(to_wire(status.code()));
  err.setMessage(status.message());
}

const char* body_name(wire::Envelope::Body::Which which) {
  using W = wire::Envelope::Body::Which;
  switch (which) {
    case W::HELLO: return "hello";
    case W::HELLO_REPLY: return "helloReply";
    case W::START_JOB: return "startJob";
    case W::JOB_ACCEPTED: return "jobAccepted";
    case W::TRAIN: return "train";
    case W::TRAIN_RESULT: return "trainResult";
    case W::EVALUATE: return "evaluate";
    case W::EVAL_RESULT: return "evalResult";
    case W::END_JOB: return "endJob";
    case W::JOB_ENDED: return "jobEnded";
    case W::ERROR: return "error";
    case W::HEARTBEAT: return "heartbeat";
    case W::TRAIN_DONE: return "trainDone";
    case W::FETCH_RESULT: return "fetchResult";
    case W::SEC_AGG_SHARE: return "secAggShare";
    case W::SEC_AGG_SHARES: return "secAggShares";
    case W::SEC_AGG_MASK: return "secAggMask";
    case W::SEC_AGG_MASKED: return "secAggMasked";
    case W::SEC_AGG_UNMASK: return "secAggUnmask";
    case W::SEC_AGG_REVEAL: return "secAggReveal";
  }
  return "unknown";
}

uint32_t round_of(const zmq::message_t& envelope_frame) {
  std::vector<zmq::message_t> one;
  one.emplace_back(envelope_frame.data(), envelope_frame.size());
  auto in = Incoming::parse(std::move(one));
  if (!in.ok()) return 0;
  try {
    auto body = (*in)->envelope().getBody();
    using W = wire::Envelope::Body::Which;
    switch (body.which()) {
      case W::TRAIN: return body.getTrain().getRound();
      case W::TRAIN_DONE: return body.getTrainDone().getRound();
      case W::FETCH_RESULT: return body.getFetchResult().getRound();
      case W::TRAIN_RESULT: return body.getTrainResult().getRound();
      case W::EVALUATE: return body.getEvaluate().getRound();
      case W::EVAL_RESULT: return body.getEvalResult().getRound();
      case W::SEC_AGG_SHARE: return body.getSecAggShare().getRound();
      case W::SEC_AGG_SHARES: return body.getSecAggShares().getRound();
      case W::SEC_AGG_MASK: return body.getSecAggMask().getRound();
      case W::SEC_AGG_MASKED: return body.getSecAggMasked().getRound();
      case W::SEC_AGG_UNMASK: return body.getSecAggUnmask().getRound();
      case W::SEC_AGG_REVEAL: return body.getSecAggReveal().getRound();
      default: return 0;
    }
  } catch (const kj::Exception&) {
    return 0;
  }
}

}  // namespace fedpod::protocol
