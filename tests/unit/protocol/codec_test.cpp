// Tests for fedpod/protocol: message encoding and decoding (zero-copy tensor frames,
// validation with its messages), the finite check, status code mapping, and a real
// DEALER/ROUTER round trip on loopback.
#include "fedpod/protocol/codec.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fedpod/protocol/socket.h"

#include "testutil.h"

namespace fedpod::protocol {
namespace {

using std::chrono::milliseconds;

// A Train request with `tensors` attached.
std::unique_ptr<Outgoing> train_message(std::vector<NamedTensor> tensors,
                                        std::shared_ptr<void> keepalive = nullptr) {
  auto out = std::make_unique<Outgoing>("job-1", 42);
  auto train = out->envelope().getBody().initTrain();
  train.setRound(3);
  train.setLocalEpochs(2);
  train.setBatchSize(32);
  auto infos = train.initTensors(static_cast<unsigned>(tensors.size()));
  out->attach(infos, std::move(tensors), std::move(keepalive));
  return out;
}

capnp::List<wire::TensorInfo>::Builder infos_of(Outgoing& out) {
  return out.envelope().getBody().getTrain().getTensors();
}

capnp::List<wire::TensorInfo>::Reader infos_of(const Incoming& in) {
  return in.envelope().getBody().getTrain().getTensors();
}

std::unique_ptr<Incoming> parse_ok(std::vector<zmq::message_t> frames,
                                   const Limits& limits = Limits()) {
  auto in = Incoming::parse(std::move(frames), limits);
  EXPECT_TRUE(in.ok()) << in.status().to_string();
  if (!in.ok()) return nullptr;
  return std::move(in.value());
}

Status parse_error(std::vector<zmq::message_t> frames, const Limits& limits = Limits()) {
  auto in = Incoming::parse(std::move(frames), limits);
  EXPECT_FALSE(in.ok());
  return in.status();
}

zmq::message_t copy_of(const void* data, size_t size) { return zmq::message_t(data, size); }

// `x` truncated to bfloat16 precision (its top 16 bits), as largest_magnitude reports.
float truncated16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  bits &= 0xffff0000u;
  std::memcpy(&x, &bits, sizeof bits);
  return x;
}

class CodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(301);
    w_ = torch::arange(6, torch::kFloat32).reshape({2, 3});
    b_ = torch::tensor({0.5f, -1.5f, 2.25f});
    c_ = torch::randn({4, 4});
  }

  std::vector<NamedTensor> tensors() const { return {{"w", w_}, {"b", b_}, {"c", c_}}; }
  std::vector<TensorSpec> specs() const { return {{"w", {2, 3}}, {"b", {3}}, {"c", {4, 4}}}; }

  // Expects take_tensors to refuse with `message`, and to have taken nothing: every
  // frame is still in the Incoming.
  void expect_take_rejected(Incoming& in, const std::vector<TensorSpec>& specs,
                            const std::string& message, bool check_finite = true) {
    const uint64_t bytes = in.bytes();
    const size_t frames = in.frame_count();
    auto r = in.take_tensors(infos_of(in), specs, check_finite);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kBadMessage);
    EXPECT_EQ(r.status().message(), message);
    EXPECT_EQ(in.bytes(), bytes);
    EXPECT_EQ(in.frame_count(), frames);
  }

  void expect_values(const std::vector<torch::Tensor>& got) {
    ASSERT_EQ(got.size(), 3u);
    EXPECT_TRUE(torch::equal(got[0], w_));
    EXPECT_TRUE(torch::equal(got[1], b_));
    EXPECT_TRUE(torch::equal(got[2], c_));
  }

  torch::Tensor w_, b_, c_;
};

// ---- Round trips ----------------------------------------------------------------------

TEST_F(CodecTest, RoundTripKeepsEnvelopeAndTensorsWithoutCopies) {
  auto out = train_message(tensors());
  EXPECT_EQ(out->payload_bytes(), (6 + 3 + 16) * 4u);
  auto frames = out->frames();
  ASSERT_EQ(frames.size(), 4u);
  // Tensor frames point at the tensors' storage.
  EXPECT_EQ(frames[1].data(), w_.data_ptr());
  EXPECT_EQ(frames[2].data(), b_.data_ptr());
  EXPECT_EQ(frames[3].data(), c_.data_ptr());
  const size_t envelope_bytes = frames[0].size();

  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(in->frame_count(), 4u);
  EXPECT_EQ(in->bytes(), envelope_bytes + out->payload_bytes());
  auto env = in->envelope();
  EXPECT_EQ(env.getProtocolVersion(), wire::PROTOCOL_VERSION);
  EXPECT_EQ(std::string(env.getJobId()), "job-1");
  EXPECT_EQ(env.getRequestId(), 42u);
  ASSERT_EQ(env.getBody().which(), wire::Envelope::Body::TRAIN);
  EXPECT_STREQ(body_name(env.getBody().which()), "train");
  auto train = env.getBody().getTrain();
  EXPECT_EQ(train.getRound(), 3u);
  EXPECT_EQ(train.getLocalEpochs(), 2u);
  EXPECT_EQ(train.getBatchSize(), 32u);
  auto infos = train.getTensors();
  ASSERT_EQ(infos.size(), 3u);
  EXPECT_EQ(std::string(infos[0].getName()), "w");
  EXPECT_EQ(infos[0].getDtype(), wire::DType::FLOAT32);
  EXPECT_EQ(infos[0].getShape().size(), 2u);
  EXPECT_EQ(infos[0].getShape()[1], 3);
  EXPECT_EQ(infos[0].getFrame(), 1u);
  EXPECT_EQ(infos[0].getBytes(), 24u);
  EXPECT_EQ(infos[2].getFrame(), 3u);
  EXPECT_EQ(infos[2].getBytes(), 64u);

  auto got = in->take_tensors(infos, specs());
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  expect_values(*got);
  // Received tensors view the frames, which still point at the senders' storage.
  EXPECT_EQ((*got)[0].data_ptr(), w_.data_ptr());
  EXPECT_EQ((*got)[1].data_ptr(), b_.data_ptr());
  EXPECT_EQ((*got)[2].data_ptr(), c_.data_ptr());
  EXPECT_EQ((*got)[0].sizes().vec(), (std::vector<int64_t>{2, 3}));
  // The Incoming may go; the tensors own their frames.
  in.reset();
  expect_values(*got);
}

TEST_F(CodecTest, FramesMayBeTakenManyTimes) {
  auto out = train_message(tensors());
  for (int copy = 0; copy < 3; ++copy) {
    SCOPED_TRACE(copy);
    auto in = parse_ok(out->frames());
    ASSERT_NE(in, nullptr);
    auto got = in->take_tensors(infos_of(*in), specs());
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    expect_values(*got);
  }
}

// With `magnitudes`, the finite check reports each tensor's largest absolute value
// in the expected order; nothing when it refuses.
TEST_F(CodecTest, TakeTensorsReportsEachTensorsLargestValue) {
  auto out = train_message(tensors());
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  std::vector<float> magnitudes = {42.0f};  // replaced, not appended to
  auto got = in->take_tensors(infos_of(*in), specs(), true, wire::DType::FLOAT32, &magnitudes);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  ASSERT_EQ(magnitudes.size(), 3u);
  EXPECT_EQ(magnitudes[0], 5.0f);  // arange(6)
  EXPECT_EQ(magnitudes[1], 2.25f);
  EXPECT_EQ(magnitudes[2], truncated16(c_.abs().max().item<float>()));

  b_[1] = std::numeric_limits<float>::infinity();
  auto bad = train_message(tensors());
  auto in2 = parse_ok(bad->frames());
  ASSERT_NE(in2, nullptr);
  EXPECT_FALSE(in2->take_tensors(infos_of(*in2), specs(), true, wire::DType::FLOAT32, &magnitudes).ok());
  EXPECT_TRUE(magnitudes.empty());
}

TEST_F(CodecTest, KeepaliveIsHeldUntilTheLastFrameIsReleased) {
  auto token = std::make_shared<int>(0);
  {
    auto out = train_message(tensors(), token);
    EXPECT_EQ(token.use_count(), 2);  // the Outgoing
    {
      auto frames = out->frames();
      EXPECT_EQ(token.use_count(), 5);  // + one per tensor frame
    }
    EXPECT_EQ(token.use_count(), 2);
    auto in = parse_ok(out->frames());
    ASSERT_NE(in, nullptr);
    auto got = in->take_tensors(infos_of(*in), specs());
    ASSERT_TRUE(got.ok());
    in.reset();
    EXPECT_EQ(token.use_count(), 5);  // the received tensors hold the frames
    got->pop_back();
    EXPECT_EQ(token.use_count(), 4);
    got->clear();
    EXPECT_EQ(token.use_count(), 2);
  }
  EXPECT_EQ(token.use_count(), 1);
}

TEST_F(CodecTest, MessageWithoutTensors) {
  Outgoing out("", 7);
  out.envelope().getBody().initHello();
  auto frames = out.frames();
  ASSERT_EQ(frames.size(), 1u);
  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(in->envelope().getBody().which(), wire::Envelope::Body::HELLO);
  EXPECT_EQ(in->envelope().getRequestId(), 7u);
  EXPECT_EQ(out.payload_bytes(), 0u);
}

TEST_F(CodecTest, RawBytesFrameIsZeroCopyAndChecked) {
  Outgoing out("job-1", 8);
  out.envelope().getBody().initStartJob();
  auto bytes = std::make_shared<const std::string>("artifact bytes");
  EXPECT_EQ(out.attach_bytes(bytes), 1u);
  auto frames = out.frames();
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[1].data(), static_cast<const void*>(bytes->data()));  // no copy
  EXPECT_EQ(out.payload_bytes(), bytes->size());
  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  auto view = in->raw_frame(1, bytes->size(), "artifact");
  ASSERT_TRUE(view.ok()) << view.status().to_string();
  EXPECT_EQ(*view, *bytes);
  auto wrong_len = in->raw_frame(1, 3, "artifact");
  EXPECT_EQ(wrong_len.status().code(), StatusCode::kBadMessage);
  EXPECT_NE(wrong_len.status().message().find("artifact frame has 14 bytes, its descriptor says 3"), std::string::npos);
  EXPECT_EQ(in->raw_frame(0, bytes->size(), "artifact").status().code(), StatusCode::kBadMessage);
  EXPECT_EQ(in->raw_frame(2, bytes->size(), "artifact").status().code(), StatusCode::kBadMessage);
}

TEST_F(CodecTest, MisalignedEnvelopeStillParses) {
  auto out = train_message(tensors());
  auto frames = out->frames();
  // Rebuild frame 0 over a buffer at an odd address (zero-copy, so it stays there).
  std::vector<char> buf(frames[0].size() + 1);
  char* odd = buf.data() + 1;
  std::memcpy(odd, frames[0].data(), frames[0].size());
  frames[0] = zmq::message_t(odd, frames[0].size(), nullptr);
  ASSERT_NE(reinterpret_cast<uintptr_t>(frames[0].data()) % alignof(capnp::word), 0u);

  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(std::string(in->envelope().getJobId()), "job-1");
  EXPECT_EQ(in->envelope().getBody().getTrain().getRound(), 3u);
  auto got = in->take_tensors(infos_of(*in), specs());
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  expect_values(*got);
}

TEST_F(CodecTest, MisalignedTensorFrameIsCopiedOnce) {
  auto out = train_message(tensors());
  auto frames = out->frames();
  std::vector<char> buf(frames[3].size() + 1);
  char* odd = buf.data() + 1;
  std::memcpy(odd, frames[3].data(), frames[3].size());
  frames[3] = zmq::message_t(odd, frames[3].size(), nullptr);

  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  auto got = in->take_tensors(infos_of(*in), specs());
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  expect_values(*got);
  EXPECT_NE((*got)[2].data_ptr(), static_cast<void*>(odd));
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*got)[2].data_ptr()) % alignof(float), 0u);
  std::memset(buf.data(), 0, buf.size());  // the copy does not depend on the frame
  EXPECT_TRUE(torch::equal((*got)[2], c_));
}

TEST_F(CodecTest, AttachRejectsUnsupportedTensors) {
  Outgoing out("job", 1);
  auto train = out.envelope().getBody().initTrain();
  torch::Tensor strided = torch::ones({4, 4}).t();
  EXPECT_THROW(out.attach(train.initTensors(1), {{"t", strided}}), std::invalid_argument);
  EXPECT_THROW(out.attach(train.initTensors(1), {{"h", torch::ones({2}, torch::kFloat16)}}),
               std::invalid_argument);
  EXPECT_THROW(out.attach(train.initTensors(2), {{"a", torch::ones({2})}}), std::invalid_argument);
  out.attach(train.initTensors(1), {{"a", torch::ones({2})}});
  EXPECT_THROW(out.attach(train.initTensors(1), {{"a", torch::ones({2})}}),
               std::invalid_argument);  // already attached
}

// ---- Envelope rejections --------------------------------------------------------------

TEST_F(CodecTest, EmptyMessage) {
  Status s = parse_error({});
  EXPECT_EQ(s.code(), StatusCode::kBadMessage);
  EXPECT_EQ(s.message(), "empty message");
}

TEST_F(CodecTest, EnvelopeNotWholeWords) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(std::string(12, '\0'));
  Status s = parse_error(std::move(frames));
  EXPECT_EQ(s.code(), StatusCode::kBadMessage);
  EXPECT_EQ(s.message(), "envelope of 12 bytes is not a whole number of 8-byte words");

  frames.clear();
  frames.emplace_back();
  EXPECT_EQ(parse_error(std::move(frames)).message(),
            "envelope of 0 bytes is not a whole number of 8-byte words");
}

TEST_F(CodecTest, EnvelopeOverLimit) {
  auto out = std::make_unique<Outgoing>(std::string(300, 'j'), 1);
  out->envelope().getBody().initHello();
  auto frames = out->frames();
  const size_t size = frames[0].size();
  Limits limits;
  limits.max_envelope_bytes = 256;
  ASSERT_GT(size, limits.max_envelope_bytes);
  Status s = parse_error(std::move(frames), limits);
  EXPECT_EQ(s.code(), StatusCode::kBadMessage);
  EXPECT_EQ(s.message(), "envelope of " + std::to_string(size) + " bytes exceeds the limit of 256");
  limits.max_envelope_bytes = size;
  EXPECT_NE(parse_ok(out->frames(), limits), nullptr);
}

TEST_F(CodecTest, TooManyFrames) {
  auto out = train_message(tensors());
  Limits limits;
  limits.max_frames = 3;
  Status s = parse_error(out->frames(), limits);
  EXPECT_EQ(s.code(), StatusCode::kBadMessage);
  EXPECT_EQ(s.message(), "message has 4 frames, limit is 3");
  limits.max_frames = 4;
  EXPECT_NE(parse_ok(out->frames(), limits), nullptr);
}

TEST_F(CodecTest, RandomGarbageIsMalformed) {
  std::mt19937 rng(301);
  for (int trial = 0; trial < 200; ++trial) {
    SCOPED_TRACE(trial);
    std::vector<uint8_t> bytes(8 * (1 + rng() % 32));
    for (auto& byte : bytes) byte = static_cast<uint8_t>(rng());
    std::vector<zmq::message_t> frames;
    frames.push_back(copy_of(bytes.data(), bytes.size()));
    Status s = parse_error(std::move(frames));
    EXPECT_EQ(s.code(), StatusCode::kBadMessage);
    EXPECT_EQ(s.message().rfind("malformed envelope: ", 0), 0u) << s.message();
  }
}

TEST_F(CodecTest, GarbageAfterAValidSegmentTableIsRejected) {
  // One segment of the right size, then random words: every pointer is bounds-checked.
  std::mt19937 rng(302);
  int malformed = 0;
  for (int trial = 0; trial < 200; ++trial) {
    SCOPED_TRACE(trial);
    const uint32_t words = 1 + rng() % 16;
    std::vector<uint32_t> data(2 + 2 * words);
    data[0] = 0;      // segment count - 1
    data[1] = words;  // segment size in words
    for (size_t i = 2; i < data.size(); ++i) data[i] = rng();
    std::vector<zmq::message_t> frames;
    frames.push_back(copy_of(data.data(), data.size() * 4));
    auto in = Incoming::parse(std::move(frames));
    // Random words may happen to form a struct, but never one of this version.
    ASSERT_FALSE(in.ok());
    if (in.status().message().rfind("malformed envelope: ", 0) == 0) ++malformed;
  }
  EXPECT_GT(malformed, 100);
}

TEST_F(CodecTest, NestingLimit) {
  Outgoing out("job", 1);
  auto reply = out.envelope().getBody().initHelloReply();
  auto columns = reply.initSchema().initColumns(1);
  columns[0].setName("city");
  columns[0].initCategories(1).set(0, "paris");
  Limits limits;
  limits.nesting_limit = 3;
  Status s = parse_error(out.frames(), limits);
  EXPECT_EQ(s.code(), StatusCode::kBadMessage);
  EXPECT_CONTAINS(s.message(), "malformed envelope: ");
  EXPECT_NE(parse_ok(out.frames()), nullptr);  // the default limit is enough
}

TEST_F(CodecTest, WrongProtocolVersion) {
  auto out = train_message(tensors());
  out->envelope().setProtocolVersion(2);
  Status s = parse_error(out->frames());
  EXPECT_EQ(s.code(), StatusCode::kVersionMismatch);
  EXPECT_EQ(s.message(), "protocol version 2, this build speaks 1");
  out->envelope().setProtocolVersion(0);
  EXPECT_EQ(parse_error(out->frames()).code(), StatusCode::kVersionMismatch);
}

TEST_F(CodecTest, UnknownMessageKind) {
  Outgoing out("", 1);
  out.envelope().getBody().initHeartbeat();
  auto frames = out.frames();
  // Flat layout: segment table (8 bytes), root pointer (8), then the Envelope's data
  // section, whose 16-bit element 1 is the body discriminant.
  uint16_t which;
  std::vector<char> bytes(static_cast<const char*>(frames[0].data()),
                          static_cast<const char*>(frames[0].data()) + frames[0].size());
  std::memcpy(&which, bytes.data() + 18, 2);
  ASSERT_EQ(which, static_cast<uint16_t>(wire::Envelope::Body::HEARTBEAT));
  which = 99;  // a member a newer peer might send
  std::memcpy(bytes.data() + 18, &which, 2);
  frames[0] = copy_of(bytes.data(), bytes.size());
  Status s = parse_error(std::move(frames));
  EXPECT_EQ(s.code(), StatusCode::kBadMessage);
  EXPECT_EQ(s.message(), "unknown message kind 99");
}

// ---- Tensor rejections ----------------------------------------------------------------

TEST_F(CodecTest, TensorCountMismatch) {
  auto out = train_message(tensors());
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, {{"w", {2, 3}}, {"b", {3}}},
                       "message describes 3 tensors, the model has 2");
  auto got = in->take_tensors(infos_of(*in), specs());  // nothing was taken
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  expect_values(*got);
}

TEST_F(CodecTest, MissingTensorFrame) {
  auto out = train_message(tensors());
  auto frames = out->frames();
  frames.pop_back();
  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "message has 2 tensor frames for 3 tensors");
}

TEST_F(CodecTest, WrongName) {
  auto out = train_message(tensors());
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, {{"w", {2, 3}}, {"bias", {3}}, {"c", {4, 4}}},
                       "tensor 1 is 'b', expected 'bias'");
  ASSERT_TRUE(in->take_tensors(infos_of(*in), specs()).ok());
}

TEST_F(CodecTest, WrongShape) {
  auto out = train_message(tensors());
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, {{"w", {3, 2}}, {"b", {3}}, {"c", {4, 4}}},
                       "tensor 'w' has shape [2, 3], expected [3, 2]");
  expect_take_rejected(*in, {{"w", {2, 3}}, {"b", {3}}, {"c", {16}}},
                       "tensor 'c' has shape [4, 4], expected [16]");
  ASSERT_TRUE(in->take_tensors(infos_of(*in), specs()).ok());
}

TEST_F(CodecTest, WrongDtype) {
  // A float64 tensor sent as such...
  auto out = train_message({{"w", w_.to(torch::kFloat64)}, {"b", b_}, {"c", c_}});
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "tensor 'w' has dtype float64, expected float32");

  // ...float32 bytes whose descriptor claims float64...
  auto lie = train_message(tensors());
  infos_of(*lie)[2].setDtype(wire::DType::FLOAT64);
  in = parse_ok(lie->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "tensor 'c' has dtype float64, expected float32");

  // ...and an int32 tensor.
  auto ints = train_message({{"w", w_}, {"b", b_.to(torch::kInt32)}, {"c", c_}});
  in = parse_ok(ints->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "tensor 'b' has dtype int32, expected float32");
}

TEST_F(CodecTest, DeclaredBytesMismatch) {
  auto out = train_message(tensors());
  infos_of(*out)[1].setBytes(10);
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "tensor 'b' declares 10 bytes, its shape needs 12");
}

TEST_F(CodecTest, TruncatedTensorFrame) {
  auto out = train_message(tensors());
  auto frames = out->frames();
  frames[1] = copy_of(w_.data_ptr(), 20);  // 5 of 6 floats
  auto in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "tensor 'w' frame has 20 bytes, expected 24");

  frames = out->frames();
  std::vector<float> longer(17, 1.0f);  // one float more than declared
  frames[3] = copy_of(longer.data(), longer.size() * sizeof(float));
  in = parse_ok(std::move(frames));
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(), "tensor 'c' frame has 68 bytes, expected 64");
}

TEST_F(CodecTest, FrameIndexOutOfRangeOrDuplicate) {
  for (uint32_t bad : {0u, 4u, 1000u}) {
    SCOPED_TRACE(bad);
    auto out = train_message(tensors());
    infos_of(*out)[1].setFrame(bad);
    auto in = parse_ok(out->frames());
    ASSERT_NE(in, nullptr);
    expect_take_rejected(*in, specs(),
                         "tensor 'b' names frame " + std::to_string(bad) +
                             ", which is out of range or already used");
  }
  auto out = train_message(tensors());
  infos_of(*out)[2].setFrame(1);  // 'w' already uses frame 1
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  expect_take_rejected(*in, specs(),
                       "tensor 'c' names frame 1, which is out of range or already used");
}

TEST_F(CodecTest, FramesMayBeListedOutOfOrder) {
  // Descriptors may name frames in any order as long as each is used once.
  auto out = train_message({{"x", torch::full({2}, 1.0f)}, {"y", torch::full({2}, 2.0f)}});
  infos_of(*out)[0].setFrame(2);
  infos_of(*out)[1].setFrame(1);
  auto in = parse_ok(out->frames());
  ASSERT_NE(in, nullptr);
  auto got = in->take_tensors(infos_of(*in), {{"x", {2}}, {"y", {2}}});
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_TRUE(torch::equal((*got)[0], torch::full({2}, 2.0f)));  // x reads frame 2
  EXPECT_TRUE(torch::equal((*got)[1], torch::full({2}, 1.0f)));
}

TEST_F(CodecTest, NonFiniteValuesAreRejected) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    int64_t index;
    float value;
  };
  const int64_t n = 100'003;  // several finite-check chunks and a ragged tail
  for (const Case& c :
       {Case{54'321, nan}, Case{n - 1, nan}, Case{0, inf}, Case{n - 1, inf}, Case{16'384, -inf}}) {
    SCOPED_TRACE(::testing::Message() << "index " << c.index << " value " << c.value);
    torch::Tensor big = torch::randn({n});
    big[c.index] = c.value;
    auto out = train_message({{"w", w_}, {"big", big}});
    auto in = parse_ok(out->frames());
    ASSERT_NE(in, nullptr);
    std::vector<TensorSpec> want = {{"w", {2, 3}}, {"big", {n}}};
    expect_take_rejected(*in, want, "tensor 'big' contains NaN or infinity");
    // Without the check the same frames are taken as they are.
    auto got = in->take_tensors(infos_of(*in), want, /*check_finite=*/false);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ((*got)[1].data_ptr(), big.data_ptr());
  }
}

// ---- all_finite -----------------------------------------------------------------------

TEST(AllFiniteTest, FiniteExtremesPass) {
  std::vector<float> v = {0.0f,     -0.0f,        1.0f,          -1.0f,  FLT_MAX, -FLT_MAX, FLT_MIN,
                          -FLT_MIN, FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-40f, -1e-40f /* denormals */};
  EXPECT_TRUE(all_finite(v.data(), v.size()));
  EXPECT_TRUE(all_finite(nullptr, 0));
  std::vector<float> big(50'000, FLT_MAX);
  EXPECT_TRUE(all_finite(big.data(), big.size()));
}

TEST(AllFiniteTest, AnyNanOrInfinityAnywhereFails) {
  const float bad_values[] = {
      std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
      std::numeric_limits<float>::signaling_NaN(), std::numeric_limits<float>::infinity(),
      -std::numeric_limits<float>::infinity()};
  const size_t n = 40'000;
  for (float bad : bad_values) {
    for (size_t pos : {size_t{0}, size_t{1}, size_t{16'383}, size_t{16'384}, size_t{16'385},
                       size_t{32'768}, n - 1}) {
      SCOPED_TRACE(::testing::Message() << "value " << bad << " at " << pos);
      std::vector<float> v(n, -FLT_MAX);
      v[pos] = bad;
      EXPECT_FALSE(all_finite(v.data(), v.size()));
      EXPECT_TRUE(all_finite(v.data(), pos));  // the prefix before it is fine
    }
    float one = bad;
    EXPECT_FALSE(all_finite(&one, 1));
  }
}

TEST(AllFiniteTest, NanPayloadsAreNotFinite) {
  // Every bit pattern with an all-ones exponent is NaN or infinity.
  std::vector<float> v(1);
  for (uint32_t mantissa : {0x000001u, 0x400000u, 0x7fffffu, 0x123456u}) {
    for (uint32_t sign : {0u, 0x80000000u}) {
      uint32_t bits = sign | 0x7f800000u | mantissa;
      std::memcpy(v.data(), &bits, 4);
      EXPECT_FALSE(all_finite(v.data(), 1)) << std::hex << bits;
    }
  }
  uint32_t largest_finite = 0x7f7fffffu;
  std::memcpy(v.data(), &largest_finite, 4);
  EXPECT_TRUE(all_finite(v.data(), 1));
}

// The finite check's pass also measures: the largest absolute value, whatever its
// sign and position, across chunks, threads and loop tails, to bfloat16 precision;
// infinity or NaN when one is there.
TEST(LargestMagnitudeTest, IsTheLargestAbsoluteValueToBFloat16PrecisionOrNotFinite) {
  EXPECT_EQ(largest_magnitude(nullptr, 0), 0.0f);
  const size_t n = 200'003;  // several chunks of 65,536 (so several threads), odd tails
  for (size_t pos : {size_t{0}, size_t{3}, size_t{65'535}, size_t{65'536}, size_t{131'073}, n - 1}) {
    for (float peak : {-3.0e38f, 2.5f, -1e-30f, FLT_MAX, 1.2345678f, -FLT_TRUE_MIN}) {
      SCOPED_TRACE(::testing::Message() << "peak " << peak << " at " << pos);
      std::vector<float> v(n);
      for (size_t i = 0; i < n; ++i) v[i] = (i % 2 ? -1.0f : 1.0f) * std::abs(peak) * (0.5f * float(i % 7) / 7.0f);
      v[pos] = peak;
      const float got = largest_magnitude(v.data(), n);
      EXPECT_EQ(got, truncated16(std::abs(peak)));
      EXPECT_LE(got, std::abs(peak));
      if (std::abs(peak) >= FLT_MIN) EXPECT_GE(got, std::abs(peak) * (1 - 1.0f / 128));  // subnormals: coarser
    }
  }
  std::vector<float> v(n, 1.0f);
  v[70'000] = -std::numeric_limits<float>::infinity();
  EXPECT_EQ(largest_magnitude(v.data(), n), std::numeric_limits<float>::infinity());
  for (uint32_t nan_bits : {0x7fc00000u, 0xffc00000u, 0x7f800001u}) {
    std::memcpy(&v[70'000], &nan_bits, 4);
    EXPECT_FALSE(std::isfinite(largest_magnitude(v.data(), n))) << std::hex << nan_bits;
    EXPECT_FALSE(all_finite(v.data(), n)) << std::hex << nan_bits;
  }
  EXPECT_EQ(largest_magnitude(v.data(), 70'000), 1.0f);  // the prefix before it

  // bfloat16: the same on 16 bits, exact.
  torch::Tensor b = torch::tensor({0.5f, 2.0f, -0.0f, 1.0f, 0.25f, 3.0f, -7.0f, 1.0f, -300.0f, 2.0f}).to(torch::kBFloat16);
  const auto* bits = reinterpret_cast<const uint16_t*>(b.data_ptr());
  EXPECT_EQ(largest_magnitude_bf16(bits, 10), 300.0f);  // in the tail after 8 lanes
  EXPECT_EQ(largest_magnitude_bf16(bits, 8), 7.0f);     // in the lanes
  EXPECT_EQ(largest_magnitude_bf16(bits, 1), 0.5f);
  EXPECT_EQ(largest_magnitude_bf16(bits, 0), 0.0f);
  const uint16_t inf_bits[] = {0x3f80, 0xff80};  // 1, -infinity
  EXPECT_FALSE(std::isfinite(largest_magnitude_bf16(inf_bits, 2)));
  EXPECT_FALSE(all_finite_bf16(inf_bits, 2));
  EXPECT_TRUE(all_finite_bf16(inf_bits, 1));
}

// ---- Status codes on the wire ---------------------------------------------------------

TEST(WireCodesTest, EveryStatusCodeRoundTrips) {
  const StatusCode codes[] = {StatusCode::kOk,
                              StatusCode::kInvalidArgument,
                              StatusCode::kBadMessage,
                              StatusCode::kNotFound,
                              StatusCode::kBusy,
                              StatusCode::kFailedPrecondition,
                              StatusCode::kPermissionDenied,
                              StatusCode::kVersionMismatch,
                              StatusCode::kSchemaMismatch,
                              StatusCode::kDeadlineExceeded,
                              StatusCode::kUnavailable,
                              StatusCode::kInternal};
  for (StatusCode c : codes) {
    SCOPED_TRACE(to_string(c));
    EXPECT_EQ(from_wire(to_wire(c)), c);
    // The enums mirror each other value for value.
    EXPECT_EQ(static_cast<int>(to_wire(c)), static_cast<int>(c));
  }
}

TEST(WireCodesTest, SetErrorCarriesCodeAndMessage) {
  Outgoing out("job-9", 5);
  set_error(out.envelope(), Status(StatusCode::kSchemaMismatch, "pod-b has no column 'label'"));
  auto in = parse_ok(out.frames());
  ASSERT_NE(in, nullptr);
  auto body = in->envelope().getBody();
  ASSERT_EQ(body.which(), wire::Envelope::Body::ERROR);
  EXPECT_STREQ(body_name(body.which()), "error");
  EXPECT_EQ(from_wire(body.getError().getCode()), StatusCode::kSchemaMismatch);
  EXPECT_EQ(std::string(body.getError().getMessage()), "pod-b has no column 'label'");
}

// ---- Sockets --------------------------------------------------------------------------

class SocketTest : public CodecTest {
 protected:
  void SetUp() override {
    CodecTest::SetUp();
    opts_.linger = milliseconds(0);
    router_ = make_router(ctx_, "tcp://127.0.0.1:*", opts_);
    endpoint_ = bound_endpoint(router_);
    dealer_ = make_dealer(ctx_, endpoint_, opts_);
  }
  void TearDown() override {
    dealer_.close();
    router_.close();
  }

  // Waits up to 5 s for a message on `s`.
  bool receive(zmq::socket_t& s, std::vector<zmq::message_t>& out, size_t max_frames,
               bool& too_many) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (recv_frames(s, out, max_frames, too_many)) return true;
      zmq::pollitem_t item = {s.handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, milliseconds(50));
    }
    return false;
  }

  static std::string text(const zmq::message_t& m) { return m.to_string(); }

  static std::vector<zmq::message_t> parts(std::initializer_list<const char*> texts) {
    std::vector<zmq::message_t> out;
    for (const char* t : texts) out.emplace_back(std::string(t));
    return out;
  }

  zmq::context_t ctx_;
  SocketOptions opts_;
  zmq::socket_t router_, dealer_;
  std::string endpoint_;
};

TEST_F(SocketTest, BoundEndpointHasTheRealPort) {
  EXPECT_EQ(endpoint_.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint_;
  EXPECT_EQ(endpoint_.find('*'), std::string::npos);
}

TEST_F(SocketTest, RequestAndReplyOverDealerRouter) {
  auto request = train_message(tensors());
  auto frames = request->frames();
  ASSERT_TRUE(send_frames(dealer_, frames));

  std::vector<zmq::message_t> got;
  bool too_many = true;
  ASSERT_TRUE(receive(router_, got, Limits().max_frames + 1, too_many));
  EXPECT_FALSE(too_many);
  ASSERT_EQ(got.size(), 5u);  // routing id + envelope + 3 tensors
  zmq::message_t routing_id = std::move(got.front());
  got.erase(got.begin());
  auto in = parse_ok(std::move(got));
  ASSERT_NE(in, nullptr);
  EXPECT_EQ(std::string(in->envelope().getJobId()), "job-1");
  auto tensors_in = in->take_tensors(infos_of(*in), specs());
  ASSERT_TRUE(tensors_in.ok()) << tensors_in.status().to_string();
  expect_values(*tensors_in);

  // The pod answers with an error that keeps its kind.
  Outgoing reply(std::string(in->envelope().getJobId()), in->envelope().getRequestId());
  set_error(reply.envelope(), Status::busy("pod-a is running job-0"));
  auto reply_frames = reply.frames();
  ASSERT_TRUE(send_frames(router_, reply_frames, &routing_id));

  ASSERT_TRUE(receive(dealer_, got, 16, too_many));
  auto answer = parse_ok(std::move(got));
  ASSERT_NE(answer, nullptr);
  EXPECT_EQ(answer->envelope().getRequestId(), 42u);
  auto err = answer->envelope().getBody().getError();
  EXPECT_EQ(from_wire(err.getCode()), StatusCode::kBusy);
  EXPECT_EQ(std::string(err.getMessage()), "pod-a is running job-0");
}

TEST_F(SocketTest, RecvFramesDropsExtraPartsAndNextMessageIsClean) {
  auto first = parts({"p0", "p1", "p2", "p3", "p4"});
  auto second = parts({"q0", "q1"});
  ASSERT_TRUE(send_frames(dealer_, first));
  ASSERT_TRUE(send_frames(dealer_, second));

  std::vector<zmq::message_t> got;
  bool too_many = false;
  ASSERT_TRUE(receive(router_, got, 3, too_many));
  EXPECT_TRUE(too_many);
  ASSERT_EQ(got.size(), 3u);  // routing id + the first two parts
  EXPECT_EQ(text(got[1]), "p0");
  EXPECT_EQ(text(got[2]), "p1");

  ASSERT_TRUE(receive(router_, got, 3, too_many));
  EXPECT_FALSE(too_many);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(text(got[1]), "q0");
  EXPECT_EQ(text(got[2]), "q1");

  EXPECT_FALSE(recv_frames(router_, got, 3, too_many));  // nothing else is waiting
  EXPECT_TRUE(got.empty());
}

TEST_F(SocketTest, RouterRefusesUnknownPeer) {
  zmq::message_t nobody(std::string("no-such-peer"));
  auto frames = parts({"hello"});
  EXPECT_FALSE(send_frames(router_, frames, &nobody));
}


TEST(CodecBFloat16, DeltaRoundsToNearestEvenAndAddsBack) {
  // 1 + 2^-8 lies halfway between two bfloat16 values (1 and 1 + 2^-7): to even, 1.
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to even, 1 + 2^-6.
  torch::Tensor base = torch::tensor({0.5f, 2.5f, 1.0f, 0.0f, 0.0f, 10.0f});
  torch::Tensor trained = torch::tensor({1.0f, 2.5f, -3.0f, 1.00390625f, 1.01171875f, 10.0f + 0.3f});
  torch::Tensor d = bf16_delta(trained, base);
  ASSERT_EQ(d.scalar_type(), torch::kBFloat16);
  const std::vector<float> want = {0.5f, 0.0f, -4.0f, 1.0f, 1.015625f, 0.30078125f};
  torch::Tensor df = d.to(torch::kFloat32);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(df[i].item<float>(), want[i]) << i;
  // torch's own rounding agrees.
  EXPECT_TRUE(torch::equal(d, (trained - base).to(torch::kBFloat16)));
  torch::Tensor back = add_bf16_delta(base, d);
  const std::vector<float> sum = {1.0f, 2.5f, -3.0f, 1.0f, 1.015625f, 10.0f + 0.30078125f};
  for (size_t i = 0; i < sum.size(); ++i) EXPECT_EQ(back[i].item<float>(), sum[i]) << i;
  // Into a reused buffer: the same values, over whatever it held.
  torch::Tensor into = torch::full({6}, 7.0f);
  add_bf16_delta_into(base, d, into);
  EXPECT_TRUE(torch::equal(into, back));
  torch::Tensor small = torch::empty({5});
  EXPECT_THROW(add_bf16_delta_into(base, d, small), c10::Error);
}

// The parameters a coordinator broadcasts as bfloat16 (broadcast_precision) round as
// torch rounds; a pod's change is then taken against those rounded values.
TEST(CodecBFloat16, BroadcastRoundsAsTorchAndTheDeltaIsAgainstTheRoundedBase) {
  torch::manual_seed(3);
  torch::Tensor x = torch::randn({1 << 17}) * 5;
  x[0] = 1.00390625f;  // halfway: to even, 1
  x[1] = 1.01171875f;  // halfway: to even, 1 + 2^-6
  x[2] = -0.0f;
  torch::Tensor r = round_to_bf16(x);
  ASSERT_EQ(r.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(r, x.to(torch::kBFloat16)));
  EXPECT_EQ(r[0].item<float>(), 1.0f);
  EXPECT_EQ(r[1].item<float>(), 1.015625f);
  EXPECT_THROW(round_to_bf16(x.to(torch::kFloat64)), c10::Error);

  torch::Tensor trained = r.to(torch::kFloat32) + torch::randn({1 << 17}) * 0.01;
  // The same change whether the base arrives as bfloat16 or already widened...
  EXPECT_TRUE(torch::equal(bf16_delta(trained, r), bf16_delta(trained, r.to(torch::kFloat32))));
  // ... and not the change from the unrounded values.
  EXPECT_FALSE(torch::equal(bf16_delta(trained, r), bf16_delta(trained, x)));
  EXPECT_THROW(bf16_delta(trained, r.to(torch::kFloat64)), c10::Error);
}

TEST(CodecBFloat16, TakeTensorsChecksDtypeSizeAndFiniteness) {
  auto send = [](torch::Tensor t) {
    Outgoing out("job", 1);
    auto r = out.envelope().getBody().initTrainResult();
    out.attach(r.initTensors(1), {{"w", t}});
    auto in = Incoming::parse(out.frames());
    EXPECT_TRUE(in.ok());
    return std::move(*in);
  };
  const std::vector<TensorSpec> spec = {{"w", {4}}};
  {
    auto in = send(torch::tensor({1.0f, -2.0f, 0.5f, 0.0f}).to(torch::kBFloat16));
    auto t = in->take_tensors(in->envelope().getBody().getTrainResult().getTensors(), spec, true, wire::DType::BFLOAT16);
    ASSERT_TRUE(t.ok()) << t.status().message();
    EXPECT_EQ((*t)[0].scalar_type(), torch::kBFloat16);
    EXPECT_EQ((*t)[0][1].item<float>(), -2.0f);
  }
  {  // float32 where bfloat16 was asked for, and the other way round
    auto in = send(torch::tensor({1.0f, -2.0f, 0.5f, 0.0f}));
    auto t = in->take_tensors(in->envelope().getBody().getTrainResult().getTensors(), spec, true, wire::DType::BFLOAT16);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("has dtype float32, expected bfloat16"), std::string::npos)
        << t.status().message();
    auto in2 = send(torch::tensor({1.0f, -2.0f, 0.5f, 0.0f}).to(torch::kBFloat16));
    auto t2 = in2->take_tensors(in2->envelope().getBody().getTrainResult().getTensors(), spec);
    ASSERT_FALSE(t2.ok());
    EXPECT_NE(t2.status().message().find("expected float32"), std::string::npos);
  }
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    auto in = send(torch::tensor({1.0f, bad, 0.5f, 0.0f}).to(torch::kBFloat16));
    auto t = in->take_tensors(in->envelope().getBody().getTrainResult().getTensors(), spec, true, wire::DType::BFLOAT16);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find("NaN or infinity"), std::string::npos);
  }
}

}  // namespace
}  // namespace fedpod::protocol
