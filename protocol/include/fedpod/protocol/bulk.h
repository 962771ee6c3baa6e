// The bulk channel: a job's tensor-bearing messages, sealed with AES-256-GCM.
//
// Why. CURVE (XSalsa20-Poly1305 inside libzmq) runs at about 1 GB/s on one core, in
// the socket's I/O thread; AES-256-GCM through OpenSSL runs several times faster per
// core with AES-NI, and a message can be split over cores. So a pod offers a second,
// unencrypted ZeroMQ endpoint, and the messages that carry parameters (train,
// evaluate, fetchResult and their replies) travel there, sealed by this file. CURVE
// keeps identity, admission and every control message (docs/tensor-encryption.md).
//
// Keys. At startJob, over the CURVE-authenticated channel, the coordinator sends a
// fresh X25519 public key and the pod answers with its own (jobAccepted). Both
// derive libsodium's crypto_kx session keys and from them one AES-256 key per
// direction, keyed BLAKE2b over a label and the binding (the job id and the pod's
// CURVE public key, the server identity the CURVE handshake proved). Only the two
// ends of that CURVE session can compute them; every startJob (rejoins included)
// makes new ones.
//
// A sealed message (one ZeroMQ multipart message):
//   frame 0: header, 48 bytes, in the clear:
//     "FPB1" | kind u8 (1 sealed, 2 notice) | 3 zero bytes | session id [16] |
//     sequence u64 | round u32 | segment bytes u32 | frame count u32 | 4 zero bytes
//     (integers little-endian)
//   frames 1..n: the plaintext message's frames 0..n-1 (envelope, tensors), each as
//     ciphertext (same length) followed by one 16-byte tag per segment. A frame is
//     cut into segments of `segment bytes` (the last may be shorter; an empty frame
//     is one empty segment), each sealed on its own so cores can share a frame.
// Each segment's nonce is the sequence number and (frame index << 18 | segment
// index); its associated data is the header, the binding digest, the frame index,
// the segment index, the frame's plaintext length and a last-segment flag. So a
// frame cannot be moved, cut, reordered, or taken from another message, job, pod
// or direction without the tag failing. The receiver accepts only sequence
// numbers above the last one it opened (no replay, no reordering); the sender's
// counter starts at 1 for each new key and never repeats.
//
// A notice (kind 2: header only, no frames) says "I hold no session with this id"
// (a pod that restarted). It is not authenticated; the coordinator only treats it
// as "this pod lost the job" and rejoins it over CURVE.
//
// Threading: a BulkSession is used by one thread at a time; seal and open may run
// their segments on several threads of their own.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "fedpod/common/status.h"

namespace fedpod::protocol {

inline constexpr size_t kBulkPublicKeyBytes = 32;
inline constexpr size_t kBulkHeaderBytes = 48;
inline constexpr size_t kBulkTagBytes = 16;
inline constexpr uint32_t kBulkDefaultSegment = 1u << 20;

// An ephemeral X25519 key pair for one startJob. The secret is wiped on destruction.
class BulkKeyPair {
 public:
  BulkKeyPair();  // fresh keys (randombytes)
  ~BulkKeyPair();
  BulkKeyPair(const BulkKeyPair&) = delete;
  BulkKeyPair& operator=(const BulkKeyPair&) = delete;
  std::string public_key() const;  // 32 raw bytes
 private:
  friend class BulkSession;
  std::array<uint8_t, 32> pk_{}, sk_{};
};

// What the keys are bound to, besides the two key pairs.
struct BulkBinding {
  std::string job_id;
  std::string pod_key;  // the pod's CURVE public key (Z85): the server the handshake proved
};

enum class BulkRole { kCoordinator, kPod };

// Why open() refused a message (also the metric label).
enum class BulkRefusal { kNone, kMalformed, kUnknownSession, kReplay, kTampered };
const char* to_string(BulkRefusal r);

struct BulkHeader {
  uint8_t kind = 0;  // 1 sealed, 2 notice
  std::array<uint8_t, 16> session{};
  uint64_t sequence = 0;
  uint32_t round = 0;
  uint32_t segment_bytes = 0;
  uint32_t frames = 0;
};

// Parses frame 0 of a bulk message; kBadMessage naming what is wrong.
StatusOr<BulkHeader> parse_bulk_header(const zmq::message_t& frame);

// A notice for `session` (see above): one frame.
std::vector<zmq::message_t> bulk_notice(const std::array<uint8_t, 16>& session, uint64_t sequence);

class BulkSession {
 public:
  // Derives both directions' keys from this side's pair and the peer's public key
  // (32 bytes). kBadMessage for a key of the wrong size or a low-order point.
  static StatusOr<BulkSession> derive(BulkRole role, const BulkKeyPair& mine, std::string_view peer_public,
                                      const BulkBinding& binding);
  // No keys: open() refuses everything, seal() throws. Assign one from derive().
  BulkSession() = default;
  BulkSession(BulkSession&&) noexcept;
  BulkSession& operator=(BulkSession&&) noexcept;
  ~BulkSession();

  const std::array<uint8_t, 16>& id() const { return id_; }
  std::string id_hex() const;

  // Seals a fedpod message (its frames as Outgoing::frames() gives them) for the
  // peer; `round` is bound into the header. The input frames are released.
  // Throws std::length_error beyond the format's limits (16,384 frames, 2^18
  // segments per frame) and std::runtime_error if OpenSSL fails.
  std::vector<zmq::message_t> seal(std::vector<zmq::message_t> frames, uint32_t round,
                                   uint32_t segment_bytes = kBulkDefaultSegment);

  // Opens a sealed message from the peer into the plaintext frames (views of the
  // received buffers, decrypted in place: no copy). On error `refusal` says why and
  // nothing is returned; the sequence number is consumed only by a message that
  // opens. `round` receives the header's round.
  StatusOr<std::vector<zmq::message_t>> open(std::vector<zmq::message_t> frames, uint32_t* round,
                                             BulkRefusal* refusal);

  uint64_t last_received() const { return recv_seq_; }

  // Threads seal/open may use for one message (default: the machine's cores, at most 8).
  static void set_max_threads(unsigned n);
  // Sealed frames' buffers are kept for reuse once sent, up to this many bytes per
  // process (default 512 MiB; 0 frees each at once).
  static void set_buffer_pool_bytes(size_t n);
  // Bytes of sealed frames (from all sessions of this process) that ZeroMQ has not
  // released yet: what a sender bounds to keep a broadcast's copies from piling up.
  static size_t sealed_bytes_in_flight();

 private:
  bool valid_ = false;
  std::array<uint8_t, 16> id_{};
  std::array<uint8_t, 32> send_key_{}, recv_key_{};
  std::array<uint8_t, 32> binding_{};  // BLAKE2b-256 of the binding
  uint64_t send_seq_ = 0, recv_seq_ = 0;
};

}  // namespace fedpod::protocol
