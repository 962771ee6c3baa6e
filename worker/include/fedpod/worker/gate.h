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
//   worker -> gate: [routing id, frames...], sent on to that peer; a routing id that
//                   starts with kTensorRoute goes, without that byte, to the tensor
//                   endpoint.
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
// First byte of a reply address on the tensor channel. libzmq's generated ROUTER
// routing ids start with a zero byte, so the two never meet.
inline constexpr char kTensorRoute = 'T';

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
