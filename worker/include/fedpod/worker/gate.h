// The pod's receiving process: the "gate" that owns the pod's public socket.
//
// Why a process. libzmq 4.3.4 bounds one frame (ZMQ_MAXMSGSIZE) but not one
// message: it holds every frame of a multipart message until the last one has
// arrived, and counts neither frames nor bytes against the high-water mark. An
// admitted peer could so make whatever process owns the pod's CURVE socket hold any
// amount of memory, one frame below the limit at a time. `fedpod worker` therefore
// keeps that socket in a child process whose data size the kernel bounds
// (RLIMIT_DATA: the gate's size once started, plus `transport_memory`). A peer that
// tries to go beyond it has its connection dropped (libzmq refuses the frame it
// cannot allocate) or ends the gate, which the worker restarts at once on the same
// endpoint (counted, logged and audited). Either way the worker process itself
// only ever receives whole, checked messages: at most `max_frames` frames and
// `max_message_bytes` bytes each, one at a time.
//
// What stays in the worker: every decision. The gate's ZAP handler asks the worker
// whether a client key may connect (the worker's policy, refusal audit and
// metrics), and handshake failures the gate's socket monitor sees are passed on.
//
// Wire between gate and worker: ZeroMQ PAIR over ipc:// in a private 0700
// directory, unencrypted (both ends are this pod's user):
//   gate -> worker: [kGateMessage, routing id, user, peer address, frames...]
//                   [kGateRefused, routing id, user, peer address, reason, detail]
//                   [kGateHandshake, event (uint16 + uint32, as a socket monitor
//                    sends), peer address]
//                   [kGateTensor, routing id, "", peer address, frames...] from the
//                    tensor endpoint (unauthenticated: the worker opens the sealed
//                    frames, protocol/bulk.h)
//                   [kGateTensorRefused, reason] a tensor-channel message refused
//                    for its size or frame count (dropped: nobody to answer)
//                   [kGateTensorShm, routing id, "", peer address, index, frames...]
//                    a tensor-channel message whose large frames wait in shared
//                    memory (below)
//   worker -> gate: [routing id, frames...], sent on to that peer; a routing id that
//                   starts with kTensorRoute goes, without that byte, to the tensor
//                   endpoint; one that starts with kTensorRouteShm goes there too,
//                   as [index, frames...] whose large frames wait in shared memory.
//
// Large frames in shared memory. Tensor-channel frames of kShmMinFrame bytes or
// more do not cross the ipc socket (two kernel copies and a fresh buffer): the
// worker maps a memfd with two rings (shm_ring.h) that the gate inherits as fd 3,
// one per direction. The sender copies such a frame into its ring and sends an
// empty frame in its place; the index frame lists (frame number, uint32 0, offset,
// size), little-endian u32 u32 u64 u64, for each. The receiver hands the block on
// as a zero-copy frame and releases it when that frame is freed. A frame that does
// not fit in the ring now crosses the socket as before. The gate holds the pod's
// CURVE key and sees every message in the clear anyway, so the shared rings give it
// nothing it did not have; the rings are not counted in its memory limit (shared
// mappings are not data), they are bounded by their own fixed size instead.
// ZAP questions travel on a second ipc socket: [id, key, address] -> [id, "1" user |
// "0"].
//
// Threading: a Gate is used by one thread (the worker's serving thread); its
// answering thread calls `authenticate`, which must be thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "fedpod/common/status.h"
#include "fedpod/protocol/curve.h"

namespace fedpod::worker {

inline constexpr char kGateMessage = 'M';
inline constexpr char kGateRefused = 'R';
inline constexpr char kGateHandshake = 'E';
inline constexpr char kGateTensor = 'T';
inline constexpr char kGateTensorRefused = 't';
inline constexpr char kGateTensorShm = 'U';
// First byte of a reply address on the tensor channel. libzmq's generated ROUTER
// routing ids start with a zero byte, so the two never meet.
inline constexpr char kTensorRoute = 'T';
inline constexpr char kTensorRouteShm = 'U';
// Frames from this size up cross between gate and worker through shared memory.
inline constexpr size_t kShmMinFrame = size_t{64} << 10;

struct GateOptions {
  std::vector<std::string> command;  // argv of the gate program, e.g. {fedpod, "gate"}
  std::string pod_name;
  std::string listen;      // the pod's public endpoint ("tcp://*:0" style allowed)
  std::string tensor_listen;  // the tensor channel's endpoint; "" = none
  std::string secret_key;  // the pod's CURVE secret key (Z85); sent on the gate's stdin
  int64_t max_frame_bytes = int64_t{2} << 30;
  int64_t max_message_bytes = int64_t{2} << 30;
  size_t max_frames = 16384;
  // The gate's data-size limit above its size once started; 0: no limit (the
  // sanitizer builds, whose shadow memory an rlimit forbids).
  int64_t memory_bytes = 0;
  // Each direction's shared-memory ring (bytes; 0: none, every frame crosses the ipc
  // socket). Pages are touched only as far as the largest messages in flight reach.
  int64_t shared_memory_bytes = int64_t{256} << 20;
  std::chrono::milliseconds start_timeout{30'000};
  // The worker's answer for a client key: a user id, or nullopt to refuse it.
  protocol::ZapHandler::Authenticator authenticate;
};

// How a gate process ended, and whether a new one took over.
struct GateEnded {
  std::string reason;  // "memory" (SIGABRT/SIGKILL/bad_alloc), "crashed", "exited"
  std::string detail;  // in words: the signal or exit code
  Status restarted;    // ok when a new gate listens on the same endpoint
};

class Gate {
 public:
  // Starts the gate process and waits until it listens. Errors name what failed
  // (the program, the endpoint, the gate's own message).
  static StatusOr<std::unique_ptr<Gate>> start(zmq::context_t& ctx, GateOptions opts);
  ~Gate();  // ends the gate process (SIGTERM, then SIGKILL) and the answering thread
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // Messages from the gate; replies to it. Replaced when the gate restarts.
  zmq::socket_t& socket();
  // Sends [routing id, frames...] to the gate: a tensor route's large frames through
  // shared memory when they fit. False when the gate did not take it.
  bool send(const zmq::message_t& routing, std::vector<zmq::message_t>& frames);
  // A kGateTensorShm message as received, turned into the kGateTensor message it
  // stands for (its large frames view shared memory until they are freed). False,
  // with `error` set, when its index names frames it cannot have.
  bool unwrap(std::vector<zmq::message_t>& frames, std::string& error);
  // Bytes that crossed through shared memory, and frames that could have but found
  // no room (they crossed the socket), since start; both directions.
  uint64_t shared_bytes() const;
  uint64_t shared_misses() const;
  // The bound public endpoint, with the real port.
  const std::string& endpoint() const;
  // The bound tensor endpoint, with the real port; "" when there is none.
  const std::string& tensor_endpoint() const;
  pid_t pid() const;
  // The gate's data-size limit in bytes as it set it (0: none), for logs and tests.
  int64_t memory_limit() const;
  // When the gate process has ended: how, after starting a new one on the same
  // endpoint (retried here on the next call while that fails). nullopt while running.
  std::optional<GateEnded> check();

 private:
  struct Impl;
  explicit Gate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `fedpod gate`: the gate process (not a command for people). Reads its options as
// JSON from stdin, answers "listening ENDPOINT LIMIT TENSOR_ENDPOINT" (TENSOR_ENDPOINT
// "-" for none) or "error MESSAGE" on stdout,
// then serves until SIGTERM or its parent goes away. Returns the exit code.
int gate_main(int argc, char** argv);

}  // namespace fedpod::worker
