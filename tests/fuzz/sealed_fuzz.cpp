// libFuzzer target: a hostile message on the tensor channel (protocol/bulk.h), which
// anyone who can reach a pod's tensor port can send.
//
// The input is cut into frames as envelope_fuzz.h describes. Frame 0 goes through
// parse_bulk_header; then the whole message through BulkSession::open of a fixed
// session. For inputs whose last byte is odd, the header's session id is first set
// to that session's, so the layout checks (frame count, segment lengths, tags) run on
// fuzzed lengths instead of stopping at "unknown session". A message that opens is a
// finding (a forgery: the fuzzer holds no key). Then the frames are sealed with the
// session's peer and opened again: any frame shape must come back byte for byte.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "envelope_fuzz.h"
#include "fedpod/protocol/bulk.h"

namespace {

using namespace fedpod::protocol;

struct Pair {
  BulkSession coordinator, pod;
};

Pair& sessions() {
  static Pair* p = [] {
    BulkKeyPair c, q;
    auto* out = new Pair();
    out->coordinator = std::move(*BulkSession::derive(BulkRole::kCoordinator, c, q.public_key(), {"fuzz", "pod"}));
    out->pod = std::move(*BulkSession::derive(BulkRole::kPod, q, c.public_key(), {"fuzz", "pod"}));
    return out;
  }();
  return *p;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  BulkSession::set_max_threads(1);
  (void)sessions();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Pair& s = sessions();
  auto frames = fedpod::fuzz::decode_frames(data, size);
  if (frames.empty()) return 0;
  std::vector<std::string> plain;
  for (const auto& f : frames) plain.emplace_back(static_cast<const char*>(f.data()), f.size());
  (void)parse_bulk_header(frames[0]);
  if (size > 0 && (data[size - 1] & 1) && frames[0].size() == kBulkHeaderBytes) {
    std::memcpy(static_cast<uint8_t*>(frames[0].data()) + 8, s.pod.id().data(), 16);
  }
  BulkRefusal why = BulkRefusal::kNone;
  auto opened = s.pod.open(std::move(frames), nullptr, &why);
  if (opened.ok()) __builtin_trap();  // opened without the key
  if (why == BulkRefusal::kNone) __builtin_trap();

  // Round trip: the input's frames as a message, sealed and opened again.
  if (plain.size() > 16384) return 0;  // beyond the format's frame count (seal refuses)
  std::vector<zmq::message_t> msg;
  for (const auto& p : plain) msg.emplace_back(p.data(), p.size());
  auto back = s.pod.open(s.coordinator.seal(std::move(msg), 5, 4096), nullptr, &why);
  if (!back.ok() || back->size() != plain.size()) __builtin_trap();
  for (size_t i = 0; i < plain.size(); ++i) {
    const auto& f = (*back)[i];
    if (f.size() != plain[i].size() || std::memcmp(f.data(), plain[i].data(), f.size()) != 0) __builtin_trap();
  }
  return 0;
}
