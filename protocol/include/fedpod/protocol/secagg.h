// Secure aggregation: the coordinator learns the sum of the pods' updates, not one.
//
// The protocol is Bonawitz et al. (CCS 2017) on the sparse neighbour graph of
// SecAgg+ (Bell et al., CCS 2020); docs/privacy.md states what it protects and under
// which assumptions. One round, with U1 ⊇ U2 ⊇ U3 ⊇ U5 the pods still taking part
// after each step:
//
//   A. advertise   each pod makes two fresh X25519 key pairs (c: encrypts shares;
//                  s: pairwise masks) and a random self-mask seed b, and sends the
//                  public keys and a commitment to b (Client::keys()).           -> U1
//   B. share       the coordinator gives each pod its neighbours' keys (a Harary
//                  graph over U1, neighbour_graph()); the pod splits b and its s
//                  secret key with Shamir (t of k+1 shares: its neighbours and
//                  itself, libgfshare) and encrypts each neighbour's pair of shares to it
//                  (crypto_box; the coordinator only relays them).               -> U2
//   C. mask        the pod receives the shares addressed to it (from neighbours in
//                  U2), encodes its weighted update in fixed point modulo 2^32 or
//                  2^64 and adds a self mask PRG(b) and, for each neighbour j in
//                  U2, ±PRG(s_ij) (+ when its id is lower): ChaCha20 keystreams
//                  (RFC 8439, through OpenSSL; vectors up to 2^32 blocks of 64 bytes).
//                  The pairwise masks cancel in the sum.                          -> U3
//   D. unmask      given the survivors U3 and the dropped U2 \ U3, each pod reveals,
//                  for each neighbour, the share of b (a survivor) or the share of
//                  the s secret key (dropped): never both for one pod, once a
//                  round, and only when at least t survived.                     -> U5
//
// The coordinator (Server) rebuilds each survivor's b and each dropped pod's s
// secret key from t shares, checks them against the commitments and public keys of
// step A, and removes the masks: what is left is the sum of the survivors' encoded
// updates. Below t survivors the round fails and nothing is revealed.
//
// Numbers. A pod's update u (trained minus global parameters) is clipped to
// [-clip, clip] per coordinate and weighted at the pod by w = min(n, weight_scale) /
// weight_scale (n: its samples this round), then encoded as round(w·u·2^f) in the
// ring; one extra element carries round(w·2^f). The coordinator divides the two sums.
// fraction_bits() picks f so that the sum of K pods cannot wrap; the error of the
// decoded average is bounded by average_error_bound().
//
// Everything here is computation on bytes: no sockets. Messages are parsed and
// checked by the callers (protocol/fedpod.capnp carries them); every input that
// comes from a peer is checked here again and refused with a Status naming it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::protocol::secagg {

inline constexpr size_t kKeyBytes = 32;
inline constexpr size_t kSeedBytes = 32;
// crypto_box ciphertext of one share pair: header (owner, recipient, round, x) +
// b share + s share + MAC.
inline constexpr size_t kSharePlainBytes = 4 + 4 + 4 + 1 + kSeedBytes + kKeyBytes;
inline constexpr size_t kShareCipherBytes = kSharePlainBytes + 16;
inline constexpr uint32_t kMaxNeighbours = 254;  // Shamir x-coordinates are 1..255

// The job's settings, fixed for a round.
struct Settings {
  uint32_t threshold = 0;     // t: shares needed to rebuild a secret; also the fewest survivors
  uint32_t neighbours = 0;    // k: neighbours per pod (rounded up to even; >= pods-1: everyone)
  double clip = 10.0;         // each update coordinate clipped to [-clip, clip]
  uint32_t modulus_bits = 32; // 32 or 64
  uint32_t fraction_bits = 0; // f
  double weight_scale = 1.0;  // a pod's weight is min(samples, weight_scale) / weight_scale
};

// Refuses settings that cannot be run safely (names the setting).
Status validate(const Settings& s);

// The largest f for which K pods' encoded updates (each |w·u| <= clip, w <= 1) cannot
// wrap modulo 2^bits, with a bit of margin. 0 when even f = 0 would not fit.
uint32_t fraction_bits(uint32_t modulus_bits, double clip, size_t pods);

// The modulus a job with this clip and pod count needs for at least `min_fraction`
// fraction bits: 32 when it fits, else 64.
uint32_t modulus_bits_for(double clip, size_t pods, uint32_t min_fraction = 20);

// Bound on |decoded average - exact weighted average| per coordinate (before clipping
// effects): each pod's encoding rounds its coordinate and its weight by at most
// 2^-(f+1). `total_weight` is the sum of the pods' weights w (each <= 1).
double average_error_bound(const Settings& s, size_t pods, double total_weight);

// The default neighbour count and threshold for K pods: k = min(K-1, max(4, 2*ceil(log2 K)))
// and t = floor((k+1)/2) + 1 (a strict majority of a pod's share holders: its k
// neighbours and itself).
uint32_t default_neighbours(size_t pods);
uint32_t default_threshold(uint32_t neighbours);

// Neighbours of each id: the ids placed on a ring in an order drawn from `seed`,
// each joined to the ceil(k/2) nearest on either side (a Harary graph; everyone when
// k >= ids-1). Symmetric; sorted ascending.
std::map<uint32_t, std::vector<uint32_t>> neighbour_graph(const std::vector<uint32_t>& ids, uint32_t k,
                                                          uint64_t seed);

// What a pod sends in step A.
struct PublicKeys {
  std::string c_pk;      // 32 bytes: shares to this pod are encrypted to it
  std::string s_pk;      // 32 bytes: pairwise masks
  std::string b_commit;  // 32 bytes: BLAKE2b(context, b)
};

// One encrypted share pair, from `owner` to `recipient`.
struct EncryptedShare {
  uint32_t owner = 0;
  uint32_t recipient = 0;
  std::string ciphertext;  // kShareCipherBytes
};

// One revealed share in step D.
struct RevealedShare {
  uint32_t owner = 0;  // whose secret
  uint8_t x = 0;       // Shamir x-coordinate
  std::string share;   // 32 bytes
};

struct Reveal {
  std::vector<RevealedShare> self_mask;  // shares of survivors' b
  std::vector<RevealedShare> pair_key;   // shares of dropped pods' s secret keys
};

// Binds every key, nonce and mask to one job and round.
struct Context {
  std::string job_id;
  uint32_t round = 0;
};

// A ring vector: modulus_bits 32 → 4 bytes per element, 64 → 8 (little-endian).
struct RingVector {
  uint32_t modulus_bits = 32;
  std::vector<uint8_t> bytes;
  size_t size() const { return bytes.size() / (modulus_bits / 8); }
};

// Part of a pod's update: elements [offset, offset + n) are now[i] - was[i] (was
// null: now[i] itself). A pod's segments tile its parameters in order.
struct UpdateSegment {
  const float* now = nullptr;
  const float* was = nullptr;
  size_t offset = 0;
  size_t n = 0;
};

// The pod's side of one round. Not thread-safe; secrets wiped on destruction.
class Client {
 public:
  Client(Settings settings, Context context, uint32_t id);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const PublicKeys& keys() const { return keys_; }
  uint32_t id() const { return id_; }

  // Step B: the neighbours (id → their public keys). Refuses fewer than t
  // neighbours, itself, duplicates, malformed keys, or a second call.
  StatusOr<std::vector<EncryptedShare>> share(const std::map<uint32_t, PublicKeys>& neighbours);

  // Step C: the shares addressed to this pod (from neighbours that reached U2).
  // Refuses shares not from a neighbour, not to this pod, that fail decryption, or
  // fewer than t of them.
  Status receive(const std::vector<EncryptedShare>& shares);
  // The masked update (`n` float values plus the weight element). Encoding and
  // masking are one pass over the vector, on several threads when it is large.
  StatusOr<RingVector> mask(const float* update, size_t n, uint64_t samples);
  StatusOr<RingVector> mask(const std::vector<UpdateSegment>& update, size_t n, uint64_t samples);
  // How many coordinates mask() clipped.
  uint64_t clipped() const { return clipped_; }

  // Step D. Refuses fewer than t survivors, a list without this pod, a pod named in
  // both lists, or a second call.
  StatusOr<Reveal> unmask(const std::vector<uint32_t>& survivors, const std::vector<uint32_t>& dropped);

 private:
  Settings settings_;
  Context context_;
  uint32_t id_;
  PublicKeys keys_;
  std::array<uint8_t, kKeyBytes> c_sk_{}, s_sk_{};
  std::array<uint8_t, kSeedBytes> b_{};
  std::map<uint32_t, PublicKeys> neighbours_;
  std::map<uint32_t, std::array<uint8_t, kSeedBytes>> b_shares_;  // from owner
  std::map<uint32_t, std::array<uint8_t, kKeyBytes>> s_shares_;
  std::map<uint32_t, uint8_t> share_x_;                          // my x in owner's sharing
  std::array<uint8_t, kSeedBytes> own_b_share_{};                 // this pod's share of its own b
  uint8_t own_x_ = 0;
  std::set<uint32_t> in_u2_;                                      // neighbours whose shares arrived
  bool shared_ = false, received_ = false, masked_ = false, revealed_ = false;
  uint64_t clipped_ = 0;
};

// The coordinator's side of one round. Not thread-safe.
class Server {
 public:
  // `ids`: the pods asked to train this round.
  Server(Settings settings, Context context, std::vector<uint32_t> ids, uint64_t graph_seed);

  // Step A.
  Status add_keys(uint32_t id, PublicKeys keys);
  // After step A: fixes U1 and the graph over it. Fails below t pods.
  Status close_advertise();
  // Step B's request for `id`: its neighbours in U1 with their keys.
  std::map<uint32_t, PublicKeys> neighbours_of(uint32_t id) const;
  // Step B's reply from `id`: one share for each of its neighbours.
  Status add_shares(uint32_t id, const std::vector<EncryptedShare>& shares);
  // After step B: fixes U2. Fails below t.
  Status close_share();
  // Step C's request for `id`: the shares addressed to it (from U2).
  std::vector<EncryptedShare> shares_for(uint32_t id) const;
  // Step C's reply: adds `id`'s masked vector to the sum.
  Status add_masked(uint32_t id, const void* data, size_t bytes);
  // After step C: fixes U3. Fails below t (nothing is asked to be revealed).
  Status close_mask();
  const std::vector<uint32_t>& survivors() const { return u3_; }
  std::vector<uint32_t> dropped() const;  // U2 \ U3
  // Step D's reply from `id`.
  Status add_reveal(uint32_t id, const Reveal& reveal);
  // Removes the masks; the decoded sums: n update coordinates, then the total weight.
  // Either this or add_average_to, once.
  StatusOr<std::vector<double>> finish();
  // Removes the masks and adds the weighted average update (sum / total weight) to
  // `params` (n values) in one pass; returns the total weight.
  StatusOr<double> add_average_to(float* params, size_t n);

  const std::map<uint32_t, std::vector<uint32_t>>& graph() const { return graph_; }
  const Settings& settings() const { return settings_; }

 private:
  Status unmask_sum();
  Settings settings_;
  Context context_;
  std::vector<uint32_t> ids_;
  uint64_t graph_seed_;
  std::map<uint32_t, PublicKeys> keys_;                        // U1
  std::map<uint32_t, std::vector<uint32_t>> graph_;            // over U1
  std::map<uint32_t, std::vector<EncryptedShare>> outbox_;     // by recipient
  std::set<uint32_t> u2_;
  std::set<uint32_t> masked_;
  std::vector<uint32_t> u3_;
  std::vector<uint8_t> sum_;                                    // ring elements
  size_t elements_ = 0;
  std::map<uint32_t, std::map<uint8_t, std::string>> b_shares_, s_shares_;  // owner -> x -> share
  std::set<uint32_t> revealed_;
  enum class Step { kAdvertise, kShare, kMask, kUnmask, kDone } step_ = Step::kAdvertise;
};

// Adds the ChaCha20 keystream of `key` (32 bytes), read as ring elements, to
// `vec` times `sign` (+1 or -1). Several threads for large vectors. Exposed for the
// benchmark.
void add_prg(RingVector& vec, const uint8_t* key, int sign);

}  // namespace fedpod::protocol::secagg
