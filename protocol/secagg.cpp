#include "fedpod/protocol/secagg.h"

#include <openssl/evp.h>
#include <sodium.h>

extern "C" {  // libgfshare's header declares C functions without saying so
#include <libgfshare.h>
}

#include <algorithm>
#include <array>
#include <atomic>
#include <functional>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

namespace fedpod::protocol::secagg {
namespace {

constexpr size_t kBlockBytes = 16 * 1024;            // keystream made and added per block
constexpr size_t kParallelBytes = size_t{8} << 20;  // below: one thread

void init_crypto() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (sodium_init() < 0) std::abort();
    // libgfshare draws its polynomial coefficients through this hook: the system CSPRNG.
    gfshare_fill_rand = [](unsigned char* buf, unsigned int n) { randombytes_buf(buf, n); };
  });
}

void put_u32(std::string& s, uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
uint32_t get_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// "fedpod-secagg-v1" | len(job) | job | round | label | ids...: every derived value
// names the job, the round and what it is for.
std::string context_bytes(const Context& c, std::string_view label, std::initializer_list<uint32_t> ids) {
  std::string s = "fedpod-secagg-v1";
  put_u32(s, static_cast<uint32_t>(c.job_id.size()));
  s += c.job_id;
  put_u32(s, c.round);
  s += label;
  for (uint32_t id : ids) put_u32(s, id);
  return s;
}

template <size_t N>
std::array<uint8_t, N> keyed_hash(const std::string& msg, const uint8_t* key, size_t key_len) {
  std::array<uint8_t, N> out{};
  crypto_generichash(out.data(), N, reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), key, key_len);
  return out;
}

std::string commit_of(const Context& c, uint32_t id, const uint8_t* b) {
  auto h = keyed_hash<32>(context_bytes(c, "commit", {id}), b, kSeedBytes);
  return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

std::array<uint8_t, 32> self_key(const Context& c, uint32_t id, const uint8_t* b) {
  return keyed_hash<32>(context_bytes(c, "self", {id}), b, kSeedBytes);
}

// The pairwise mask key of (a, b) from a's secret and b's public key; the same from
// b's side. nullopt for a public key that gives no shared secret (low order).
std::optional<std::array<uint8_t, 32>> pair_key(const Context& c, uint32_t a, const uint8_t* a_sk, uint32_t b,
                                                const std::string& b_pk, const std::string& a_pk) {
  uint8_t shared[crypto_scalarmult_BYTES];
  if (crypto_scalarmult(shared, a_sk, reinterpret_cast<const uint8_t*>(b_pk.data())) != 0) return std::nullopt;
  const uint32_t lo = std::min(a, b), hi = std::max(a, b);
  std::string msg = context_bytes(c, "pair", {lo, hi});
  msg += a < b ? a_pk + b_pk : b_pk + a_pk;
  auto k = keyed_hash<32>(msg, shared, sizeof shared);
  sodium_memzero(shared, sizeof shared);
  return k;
}

std::array<uint8_t, crypto_box_NONCEBYTES> share_nonce(const Context& c, uint32_t owner, uint32_t recipient) {
  std::array<uint8_t, crypto_box_NONCEBYTES> n{};
  const std::string msg = context_bytes(c, "share", {owner, recipient});
  crypto_generichash(n.data(), n.size(), reinterpret_cast<const uint8_t*>(msg.data()), msg.size(), nullptr, 0);
  return n;
}

// Shamir over GF(2^8) (libgfshare): `secret` (32 bytes) into shares for x = 1..count.
std::vector<std::array<uint8_t, 32>> split(const uint8_t* secret, uint32_t count, uint32_t threshold) {
  std::vector<uint8_t> nrs(count);
  std::iota(nrs.begin(), nrs.end(), uint8_t{1});
  gfshare_ctx* g = gfshare_ctx_init_enc(nrs.data(), count, static_cast<uint8_t>(threshold), 32);
  if (!g) throw std::runtime_error("gfshare_ctx_init_enc failed");
  std::array<uint8_t, 32> copy;
  std::memcpy(copy.data(), secret, 32);
  gfshare_ctx_enc_setsecret(g, copy.data());
  sodium_memzero(copy.data(), copy.size());
  std::vector<std::array<uint8_t, 32>> out(count);
  for (uint32_t i = 0; i < count; ++i) gfshare_ctx_enc_getshare(g, static_cast<uint8_t>(i), out[i].data());
  gfshare_ctx_free(g);  // wipes its coefficients
  return out;
}

std::array<uint8_t, 32> combine(const std::vector<std::pair<uint8_t, const std::string*>>& shares) {
  std::vector<uint8_t> nrs;
  for (const auto& [x, s] : shares) nrs.push_back(x);
  gfshare_ctx* g = gfshare_ctx_init_dec(nrs.data(), static_cast<unsigned>(nrs.size()), 32);
  if (!g) throw std::runtime_error("gfshare_ctx_init_dec failed");
  for (size_t i = 0; i < shares.size(); ++i) {
    std::array<uint8_t, 32> s;
    std::memcpy(s.data(), shares[i].second->data(), 32);
    gfshare_ctx_dec_giveshare(g, static_cast<uint8_t>(i), s.data());
  }
  std::array<uint8_t, 32> out{};
  gfshare_ctx_dec_extract(g, out.data());
  gfshare_ctx_free(g);
  return out;
}

struct Mask {
  std::array<uint8_t, 32> key;
  int sign;  // +1 or -1
};

// Adds every mask's keystream (times its sign) to elements [begin, end) of `vec`.
// The keystream is ChaCha20 (RFC 8439: 32-byte key, 96-bit zero nonce, 32-bit block
// counter), made by OpenSSL's EVP implementation, which runs about twice as fast as
// libsodium's crypto_stream_chacha20_ietf here and gives the same bytes (secagg_test
// checks). Byte offsets are multiples of 64 so each range starts on a block counter.
// Writes elements [at, at + n) before the masks are added to them (encoding fused
// into the masking pass, while the block is in cache); may be empty.
template <typename T>
using Fill = std::function<void(T* out, size_t at, size_t n)>;

template <typename T>
void apply_range(T* v, size_t begin, size_t end, const std::vector<Mask>& masks, const Fill<T>& fill) {
  alignas(64) static thread_local uint8_t zeros[kBlockBytes];
  alignas(64) static thread_local uint8_t stream[kBlockBytes];
  struct Ctx {
    EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
    ~Ctx() { EVP_CIPHER_CTX_free(c); }
  };
  std::vector<Ctx> ctx(masks.size());
  for (size_t m = 0; m < masks.size(); ++m) {
    // OpenSSL's ChaCha20 IV: the 32-bit block counter (little-endian), then the nonce.
    uint8_t iv[16] = {};
    const uint32_t counter = static_cast<uint32_t>(begin * sizeof(T) / 64);
    for (int b = 0; b < 4; ++b) iv[b] = static_cast<uint8_t>(counter >> (8 * b));
    if (!ctx[m].c || EVP_EncryptInit_ex(ctx[m].c, EVP_chacha20(), nullptr, masks[m].key.data(), iv) != 1) {
      throw std::runtime_error("secure aggregation: OpenSSL could not start ChaCha20");
    }
  }
  const size_t per_block = kBlockBytes / sizeof(T);
  for (size_t at = begin; at < end; at += per_block) {
    const size_t n = std::min(per_block, end - at);
    const int bytes = static_cast<int>(n * sizeof(T));
    if (fill) fill(v + at, at, n);
    for (size_t m = 0; m < masks.size(); ++m) {
      int len = 0;
      if (EVP_EncryptUpdate(ctx[m].c, stream, &len, zeros, bytes) != 1 || len != bytes) {
        throw std::runtime_error("secure aggregation: ChaCha20 keystream failed");
      }
      const T* ks = reinterpret_cast<const T*>(stream);
      T* out = v + at;
      if (masks[m].sign > 0) {
        for (size_t i = 0; i < n; ++i) out[i] += ks[i];
      } else {
        for (size_t i = 0; i < n; ++i) out[i] -= ks[i];
      }
    }
  }
}

template <typename T>
void apply_masks_t(T* v, size_t elements, const std::vector<Mask>& masks, const Fill<T>& fill = nullptr) {
  if ((masks.empty() && !fill) || elements == 0) return;
  const size_t bytes = elements * sizeof(T);
  unsigned threads = 1;
  if (bytes >= kParallelBytes) threads = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  if (threads <= 1) return apply_range(v, 0, elements, masks, fill);
  // Split on block boundaries (64-byte aligned counters).
  const size_t per_block = kBlockBytes / sizeof(T);
  const size_t blocks = (elements + per_block - 1) / per_block;
  const size_t share = (blocks + threads - 1) / threads;
  std::vector<std::thread> pool;
  std::exception_ptr failed;
  std::mutex mu;
  for (unsigned t = 1; t < threads; ++t) {
    const size_t b = std::min(elements, t * share * per_block), e = std::min(elements, (t + 1) * share * per_block);
    if (b < e) {
      pool.emplace_back([=, &masks, &fill, &failed, &mu] {
        try {
          apply_range(v, b, e, masks, fill);
        } catch (...) {
          std::lock_guard<std::mutex> lock(mu);
          failed = std::current_exception();
        }
      });
    }
  }
  try {
    apply_range(v, 0, std::min(elements, share * per_block), masks, fill);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu);
    failed = std::current_exception();
  }
  for (auto& th : pool) th.join();
  if (failed) std::rethrow_exception(failed);
}

void apply_masks(RingVector& vec, const std::vector<Mask>& masks) {
  if (vec.modulus_bits == 32) {
    apply_masks_t(reinterpret_cast<uint32_t*>(vec.bytes.data()), vec.size(), masks);
  } else {
    apply_masks_t(reinterpret_cast<uint64_t*>(vec.bytes.data()), vec.size(), masks);
  }
}

std::string key_str(const uint8_t* k, size_t n = 32) { return std::string(reinterpret_cast<const char*>(k), n); }

// Whether `pk` is an X25519 point of small order (the zero key among them): every
// secret key agrees with it on the all-zero secret, which crypto_box and
// crypto_scalarmult refuse. A pod advertising one would make each of its neighbours
// fail to share with it, and drop out of the round in its place. libsodium's
// crypto_scalarmult returns -1 exactly when the result is all zeros, and its clamped
// scalar is a multiple of the cofactor 8, so any fixed scalar tells.
bool small_order(const std::string& pk) {
  static const std::array<unsigned char, crypto_scalarmult_SCALARBYTES> kScalar = [] {
    std::array<unsigned char, crypto_scalarmult_SCALARBYTES> s{};
    s.fill(0x5a);
    return s;
  }();
  unsigned char out[crypto_scalarmult_BYTES];
  const bool zero = crypto_scalarmult(out, kScalar.data(), reinterpret_cast<const unsigned char*>(pk.data())) != 0;
  sodium_memzero(out, sizeof out);
  return zero;
}

Status check_keys(uint32_t id, const PublicKeys& k) {
  if (k.c_pk.size() != kKeyBytes || k.s_pk.size() != kKeyBytes || k.b_commit.size() != 32) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) +
                                                    "'s public keys are malformed (each must be 32 bytes)");
  }
  if (small_order(k.c_pk) || small_order(k.s_pk)) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) +
                                                    "'s public keys include a point of small order, which agrees "
                                                    "on the all-zero secret with every key");
  }
  return Status();
}

}  // namespace

Status validate(const Settings& s) {
  auto bad = [](std::string m) { return Status(StatusCode::kInvalidArgument, "secure_aggregation: " + m); };
  if (s.modulus_bits != 32 && s.modulus_bits != 64) return bad("modulus_bits must be 32 or 64");
  if (s.threshold < 2) return bad("threshold must be at least 2 (one share would reveal a secret)");
  if (s.neighbours < s.threshold) {
    return bad("threshold " + std::to_string(s.threshold) + " exceeds neighbours " + std::to_string(s.neighbours) +
               ": a secret could never be rebuilt");
  }
  if (s.neighbours > kMaxNeighbours) return bad("neighbours must be at most " + std::to_string(kMaxNeighbours));
  if (2 * s.threshold <= s.neighbours + 1) {
    return bad("threshold " + std::to_string(s.threshold) + " must be more than half of a pod's share holders (" +
               std::to_string(s.neighbours) + " neighbours and itself)" +
               ": otherwise a coordinator that tells pods different survivor lists could collect both secrets of one pod");
  }
  if (!(s.clip > 0) || !std::isfinite(s.clip)) return bad("clip must be a positive number");
  if (s.fraction_bits == 0 || s.fraction_bits >= s.modulus_bits - 1) {
    return bad("fraction_bits " + std::to_string(s.fraction_bits) + " does not fit a " +
               std::to_string(s.modulus_bits) + "-bit ring (too many pods or too large a clip for it)");
  }
  if (!(s.weight_scale >= 1) || !std::isfinite(s.weight_scale)) return bad("weight_scale must be at least 1");
  return Status();
}

uint32_t fraction_bits(uint32_t modulus_bits, double clip, size_t pods) {
  // |sum| <= pods * max(clip, 1) (the weight element is <= pods): keep it below
  // 2^(bits-2), one bit short of the sign bit.
  const double magnitude = std::max(1.0, static_cast<double>(std::max<size_t>(pods, 1)) * std::max(clip, 1.0));
  const int need = static_cast<int>(std::ceil(std::log2(magnitude)));
  const int f = static_cast<int>(modulus_bits) - 2 - need;
  return f > 0 ? static_cast<uint32_t>(f) : 0;
}

uint32_t modulus_bits_for(double clip, size_t pods, uint32_t min_fraction) {
  return fraction_bits(32, clip, pods) >= min_fraction ? 32 : 64;
}

double average_error_bound(const Settings& s, size_t pods, double total_weight) {
  // Each pod rounds w·u and w by at most q = 2^-(f+1). With S = Σw·u + e1 and
  // W = Σw + e2 (|e1|, |e2| <= K·q), |S/W - Σw·u/Σw| <= (K·q + clip·K·q) / (Σw - K·q).
  const double q = std::ldexp(1.0, -static_cast<int>(s.fraction_bits) - 1);
  const double kq = static_cast<double>(pods) * q;
  if (total_weight <= kq) return std::numeric_limits<double>::infinity();
  return (kq + s.clip * kq) / (total_weight - kq);
}

uint32_t default_neighbours(size_t pods) {
  if (pods <= 1) return 0;
  const uint32_t lg = static_cast<uint32_t>(std::ceil(std::log2(static_cast<double>(pods))));
  return static_cast<uint32_t>(std::min<size_t>(pods - 1, std::max<uint32_t>(4, 2 * lg)));
}

uint32_t default_threshold(uint32_t neighbours) { return (neighbours + 1) / 2 + 1; }

std::map<uint32_t, std::vector<uint32_t>> neighbour_graph(const std::vector<uint32_t>& ids, uint32_t k,
                                                          uint64_t seed) {
  std::vector<uint32_t> ring(ids);
  std::sort(ring.begin(), ring.end());
  ring.erase(std::unique(ring.begin(), ring.end()), ring.end());
  std::mt19937_64 rng(seed);
  std::shuffle(ring.begin(), ring.end(), rng);
  const size_t n = ring.size();
  std::map<uint32_t, std::vector<uint32_t>> g;
  for (uint32_t id : ring) g[id];
  const size_t half = (static_cast<size_t>(k) + 1) / 2;
  for (size_t i = 0; i < n; ++i) {
    std::set<uint32_t> nb;
    if (k + 1 >= n) {
      for (uint32_t id : ring) nb.insert(id);
    } else {
      for (size_t d = 1; d <= half; ++d) {
        nb.insert(ring[(i + d) % n]);
        nb.insert(ring[(i + n - d) % n]);
      }
    }
    nb.erase(ring[i]);
    g[ring[i]].assign(nb.begin(), nb.end());
  }
  return g;
}

void add_prg(RingVector& vec, const uint8_t* key, int sign) {
  init_crypto();
  Mask m;
  std::memcpy(m.key.data(), key, 32);
  m.sign = sign;
  apply_masks(vec, {m});
}

// ---------------------------------------------------------------------------- Client

Client::Client(Settings settings, Context context, uint32_t id)
    : settings_(settings), context_(std::move(context)), id_(id) {
  init_crypto();
  uint8_t c_pk[crypto_box_PUBLICKEYBYTES], s_pk[crypto_box_PUBLICKEYBYTES];
  crypto_box_keypair(c_pk, c_sk_.data());
  crypto_box_keypair(s_pk, s_sk_.data());
  randombytes_buf(b_.data(), b_.size());
  keys_.c_pk = key_str(c_pk);
  keys_.s_pk = key_str(s_pk);
  keys_.b_commit = commit_of(context_, id_, b_.data());
}

Client::~Client() {
  sodium_memzero(c_sk_.data(), c_sk_.size());
  sodium_memzero(s_sk_.data(), s_sk_.size());
  sodium_memzero(b_.data(), b_.size());
  for (auto& [k, v] : b_shares_) sodium_memzero(v.data(), v.size());
  for (auto& [k, v] : s_shares_) sodium_memzero(v.data(), v.size());
  sodium_memzero(own_b_share_.data(), own_b_share_.size());
}

StatusOr<std::vector<EncryptedShare>> Client::share(const std::map<uint32_t, PublicKeys>& neighbours) {
  if (Status st = validate(settings_); !st.ok()) return st;
  if (shared_) return Status(StatusCode::kFailedPrecondition, "secure aggregation: shares were already made this round");
  if (neighbours.size() + 1 < settings_.threshold) {
    return Status(StatusCode::kFailedPrecondition,
                  "secure aggregation: " + std::to_string(neighbours.size()) + " neighbours and this pod, fewer than the threshold " +
                      std::to_string(settings_.threshold) + ": this pod's secrets could not be rebuilt");
  }
  if (neighbours.size() > kMaxNeighbours) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: more than " + std::to_string(kMaxNeighbours) +
                                                    " neighbours");
  }
  for (const auto& [id, k] : neighbours) {
    if (id == id_) return Status(StatusCode::kInvalidArgument, "secure aggregation: this pod is listed as its own neighbour");
    if (Status st = check_keys(id, k); !st.ok()) return st;
  }
  shared_ = true;
  neighbours_ = neighbours;
  // Shares go to the neighbours and to this pod itself (Bonawitz et al. share among
  // U1, the owner included): a survivor's own share of b counts in step D, so t
  // shares exist even when one neighbour dropped before and one after masking.
  std::vector<uint32_t> holders;
  for (const auto& [id, k] : neighbours) holders.push_back(id);
  holders.push_back(id_);
  std::sort(holders.begin(), holders.end());
  const uint32_t count = static_cast<uint32_t>(holders.size());
  auto b_sh = split(b_.data(), count, settings_.threshold);
  auto s_sh = split(s_sk_.data(), count, settings_.threshold);
  std::vector<EncryptedShare> out;
  for (uint32_t p = 0; p < count; ++p) {
    const uint32_t id = holders[p];
    if (id == id_) {
      own_x_ = static_cast<uint8_t>(p + 1);
      own_b_share_ = b_sh[p];
      continue;
    }
    std::string plain;
    put_u32(plain, id_);
    put_u32(plain, id);
    put_u32(plain, context_.round);
    plain.push_back(static_cast<char>(p + 1));
    plain.append(reinterpret_cast<const char*>(b_sh[p].data()), 32);
    plain.append(reinterpret_cast<const char*>(s_sh[p].data()), 32);
    EncryptedShare e{id_, id, std::string(kShareCipherBytes, '\0')};
    const auto nonce = share_nonce(context_, id_, id);
    const int rc =
        crypto_box_easy(reinterpret_cast<uint8_t*>(e.ciphertext.data()), reinterpret_cast<const uint8_t*>(plain.data()),
                        plain.size(), nonce.data(), reinterpret_cast<const uint8_t*>(neighbours.at(id).c_pk.data()),
                        c_sk_.data());
    sodium_memzero(plain.data(), plain.size());
    if (rc != 0) {
      return Status(StatusCode::kInvalidArgument,
                    "secure aggregation: pod " + std::to_string(id) + "'s public key gives no shared secret");
    }
    out.push_back(std::move(e));
  }
  for (auto& s : b_sh) sodium_memzero(s.data(), s.size());
  for (auto& s : s_sh) sodium_memzero(s.data(), s.size());
  return out;
}

Status Client::receive(const std::vector<EncryptedShare>& shares) {
  auto bad = [](std::string m) { return Status(StatusCode::kInvalidArgument, "secure aggregation: " + m); };
  if (!shared_) return Status(StatusCode::kFailedPrecondition, "secure aggregation: shares arrived before keys were shared");
  if (received_) return Status(StatusCode::kFailedPrecondition, "secure aggregation: shares were already received this round");
  std::set<uint32_t> seen;
  for (const auto& e : shares) {
    const std::string from = "the share from pod " + std::to_string(e.owner);
    if (e.recipient != id_) return bad(from + " is addressed to pod " + std::to_string(e.recipient));
    auto nb = neighbours_.find(e.owner);
    if (nb == neighbours_.end()) return bad(from + ": not a neighbour of this pod");
    if (!seen.insert(e.owner).second) return bad(from + " came twice");
    if (e.ciphertext.size() != kShareCipherBytes) return bad(from + " has " + std::to_string(e.ciphertext.size()) + " bytes");
    std::array<uint8_t, kSharePlainBytes> plain{};
    const auto nonce = share_nonce(context_, e.owner, id_);
    if (crypto_box_open_easy(plain.data(), reinterpret_cast<const uint8_t*>(e.ciphertext.data()), e.ciphertext.size(),
                             nonce.data(), reinterpret_cast<const uint8_t*>(nb->second.c_pk.data()), c_sk_.data()) != 0) {
      return bad(from + " failed authentication (altered, or not encrypted by that pod for this one)");
    }
    if (get_u32(plain.data()) != e.owner || get_u32(plain.data() + 4) != id_ || get_u32(plain.data() + 8) != context_.round ||
        plain[12] == 0) {
      sodium_memzero(plain.data(), plain.size());
      return bad(from + " names another pod, round or share number");
    }
    share_x_[e.owner] = plain[12];
    std::memcpy(b_shares_[e.owner].data(), plain.data() + 13, 32);
    std::memcpy(s_shares_[e.owner].data(), plain.data() + 45, 32);
    sodium_memzero(plain.data(), plain.size());
  }
  if (seen.size() + 1 < settings_.threshold) {
    return Status(StatusCode::kFailedPrecondition,
                  "secure aggregation: shares from " + std::to_string(seen.size()) + " neighbours and this pod, fewer than the threshold " +
                      std::to_string(settings_.threshold));
  }
  in_u2_ = seen;
  received_ = true;
  return Status();
}

StatusOr<RingVector> Client::mask(const float* update, size_t n, uint64_t samples) {
  return mask({{update, nullptr, 0, n}}, n, samples);
}

namespace {

// Fixed point of one block: out[i] = round(clip(now[i] - was[i]) * scale) in the
// ring, for the segments' elements in [at, at + n). Returns false on a value that is
// not finite; counts the clipped ones.
template <typename T>
bool encode_block(const std::vector<UpdateSegment>& segs, T* out, size_t at, size_t n, float clip, double scale,
                  uint64_t& clipped) {
  // The first segment that ends after `at` (segments tile [0, total) in order).
  auto seg = std::upper_bound(segs.begin(), segs.end(), at,
                              [](size_t a, const UpdateSegment& g) { return a < g.offset + g.n; });
  size_t done = 0;
  bool finite = true;
  uint64_t clips = 0;
  for (; done < n && seg != segs.end(); ++seg) {
    const size_t from = at + done - seg->offset;
    const size_t m = std::min(seg->n - from, n - done);
    const float* now = seg->now + from;
    const float* was = seg->was ? seg->was + from : nullptr;
    T* o = out + done;
    for (size_t i = 0; i < m; ++i) {
      const float x = was ? now[i] - was[i] : now[i];
      finite &= std::isfinite(x);
      const float c = std::min(std::max(x, -clip), clip);
      clips += c != x;
      if constexpr (sizeof(T) == 4) {
        // |c * scale| < 2^30 (fraction_bits keeps K of them below 2^30): round to
        // nearest even with the 1.5 * 2^52 trick, exact for |y| < 2^51, vectorizable.
        const double y = static_cast<double>(c) * scale + 6755399441055744.0;
        uint64_t bits;
        std::memcpy(&bits, &y, sizeof bits);
        o[i] = static_cast<T>(bits);
      } else {
        o[i] = static_cast<T>(static_cast<int64_t>(std::nearbyint(static_cast<double>(c) * scale)));
      }
    }
    done += m;
  }
  clipped += clips;
  return finite;
}

}  // namespace

StatusOr<RingVector> Client::mask(const std::vector<UpdateSegment>& update, size_t n, uint64_t samples) {
  if (!received_) return Status(StatusCode::kFailedPrecondition, "secure aggregation: masking before the shares arrived");
  if (masked_) return Status(StatusCode::kFailedPrecondition, "secure aggregation: this round's update was already masked");
  size_t expect = 0;
  for (const auto& g : update) {
    if (g.offset != expect || !g.now) {
      return Status(StatusCode::kInvalidArgument, "secure aggregation: update segments do not tile the parameters");
    }
    expect += g.n;
  }
  if (expect != n) return Status(StatusCode::kInvalidArgument, "secure aggregation: update segments do not tile the parameters");
  masked_ = true;
  RingVector v;
  v.modulus_bits = settings_.modulus_bits;
  v.bytes.resize((n + 1) * (settings_.modulus_bits / 8));
  const double w = std::min(static_cast<double>(samples), settings_.weight_scale) / settings_.weight_scale;
  const double scale = std::ldexp(w, static_cast<int>(settings_.fraction_bits));
  const float clip = static_cast<float>(settings_.clip);
  std::vector<Mask> masks;
  masks.push_back({self_key(context_, id_, b_.data()), +1});
  for (uint32_t j : in_u2_) {
    auto k = pair_key(context_, id_, s_sk_.data(), j, neighbours_.at(j).s_pk, keys_.s_pk);
    if (!k) return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(j) + "'s mask key is invalid");
    masks.push_back({*k, id_ < j ? +1 : -1});
  }
  std::atomic<bool> finite{true};
  std::atomic<uint64_t> clipped{0};
  auto run = [&](auto* out) {
    using T = std::remove_pointer_t<decltype(out)>;
    const int64_t weight = static_cast<int64_t>(std::llround(std::ldexp(w, static_cast<int>(settings_.fraction_bits))));
    Fill<T> fill = [&](T* o, size_t at, size_t count) {
      // The last element of the vector is the weight.
      const size_t values = at >= n ? 0 : std::min(count, n - at);
      uint64_t c = 0;
      if (values > 0 && !encode_block(update, o, at, values, clip, scale, c)) finite = false;
      if (values < count) o[values] = static_cast<T>(weight);
      clipped += c;
    };
    apply_masks_t(out, n + 1, masks, fill);
  };
  if (settings_.modulus_bits == 32) run(reinterpret_cast<uint32_t*>(v.bytes.data()));
  else run(reinterpret_cast<uint64_t*>(v.bytes.data()));
  for (auto& m : masks) sodium_memzero(m.key.data(), m.key.size());
  clipped_ = clipped;
  if (!finite) {
    sodium_memzero(v.bytes.data(), v.bytes.size());
    return Status(StatusCode::kInvalidArgument, "secure aggregation: the update has a value that is not finite");
  }
  return v;
}

StatusOr<Reveal> Client::unmask(const std::vector<uint32_t>& survivors, const std::vector<uint32_t>& dropped) {
  auto refuse = [](std::string m) { return Status(StatusCode::kFailedPrecondition, "secure aggregation: " + m); };
  if (!masked_) return refuse("asked to unmask before this pod sent its masked update");
  if (revealed_) return refuse("asked to unmask a second time this round (refused: two answers could reveal both secrets of a pod)");
  revealed_ = true;  // whatever happens next, this round reveals at most once
  std::set<uint32_t> s(survivors.begin(), survivors.end()), d(dropped.begin(), dropped.end());
  if (s.size() != survivors.size() || d.size() != dropped.size()) return refuse("a pod is listed twice");
  if (s.size() < settings_.threshold) {
    return refuse("only " + std::to_string(s.size()) + " survivors, fewer than the threshold " +
                  std::to_string(settings_.threshold) + ": nothing is revealed");
  }
  if (!s.count(id_)) return refuse("this pod is not among the survivors it is asked to unmask for");
  for (uint32_t id : d) {
    if (s.count(id)) return refuse("pod " + std::to_string(id) + " is listed both as a survivor and as dropped");
  }
  Reveal r;
  r.self_mask.push_back({id_, own_x_, key_str(own_b_share_.data())});
  for (uint32_t owner : in_u2_) {
    const uint8_t x = share_x_.at(owner);
    if (s.count(owner)) r.self_mask.push_back({owner, x, key_str(b_shares_.at(owner).data())});
    else if (d.count(owner)) r.pair_key.push_back({owner, x, key_str(s_shares_.at(owner).data())});
  }
  return r;
}

// ---------------------------------------------------------------------------- Server

Server::Server(Settings settings, Context context, std::vector<uint32_t> ids, uint64_t graph_seed)
    : settings_(settings), context_(std::move(context)), ids_(std::move(ids)), graph_seed_(graph_seed) {
  init_crypto();
}

Status Server::add_keys(uint32_t id, PublicKeys keys) {
  if (step_ != Step::kAdvertise) return Status(StatusCode::kFailedPrecondition, "secure aggregation: keys after step A closed");
  if (std::find(ids_.begin(), ids_.end(), id) == ids_.end()) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: keys from pod " + std::to_string(id) + ", not in this round");
  }
  if (keys_.count(id)) return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) + " sent keys twice");
  if (Status st = check_keys(id, keys); !st.ok()) return st;
  keys_[id] = std::move(keys);
  return Status();
}

Status Server::close_advertise() {
  if (step_ != Step::kAdvertise) return Status(StatusCode::kFailedPrecondition, "secure aggregation: step A already closed");
  if (Status st = validate(settings_); !st.ok()) return st;
  if (keys_.size() < settings_.threshold) {
    return Status(StatusCode::kUnavailable, "secure aggregation: " + std::to_string(keys_.size()) +
                                                " pods finished training, fewer than the threshold " +
                                                std::to_string(settings_.threshold) + ": the round fails");
  }
  std::vector<uint32_t> u1;
  for (const auto& [id, k] : keys_) u1.push_back(id);
  graph_ = neighbour_graph(u1, settings_.neighbours, graph_seed_);
  for (const auto& [id, nb] : graph_) {
    if (nb.size() + 1 < settings_.threshold) {
      return Status(StatusCode::kUnavailable, "secure aggregation: with " + std::to_string(u1.size()) +
                                                  " pods each has " + std::to_string(nb.size()) +
                                                  " neighbours (and itself), fewer than the threshold " +
                                                  std::to_string(settings_.threshold) + ": the round fails");
    }
  }
  step_ = Step::kShare;
  return Status();
}

std::map<uint32_t, PublicKeys> Server::neighbours_of(uint32_t id) const {
  std::map<uint32_t, PublicKeys> out;
  auto it = graph_.find(id);
  if (it == graph_.end()) return out;
  for (uint32_t j : it->second) out[j] = keys_.at(j);
  return out;
}

Status Server::add_shares(uint32_t id, const std::vector<EncryptedShare>& shares) {
  auto bad = [&](std::string m) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) + "'s shares: " + m);
  };
  if (step_ != Step::kShare) return Status(StatusCode::kFailedPrecondition, "secure aggregation: shares outside step B");
  auto g = graph_.find(id);
  if (g == graph_.end()) return bad("the pod is not in this round's graph");
  if (u2_.count(id)) return bad("sent twice");
  if (shares.size() != g->second.size()) {
    return bad(std::to_string(shares.size()) + " shares for " + std::to_string(g->second.size()) + " neighbours");
  }
  std::set<uint32_t> to;
  for (const auto& e : shares) {
    if (e.owner != id) return bad("a share claims to be from pod " + std::to_string(e.owner));
    if (!std::binary_search(g->second.begin(), g->second.end(), e.recipient) || !to.insert(e.recipient).second) {
      return bad("a share for pod " + std::to_string(e.recipient) + ", not a neighbour or twice");
    }
    if (e.ciphertext.size() != kShareCipherBytes) return bad("a share of " + std::to_string(e.ciphertext.size()) + " bytes");
  }
  for (const auto& e : shares) outbox_[e.recipient].push_back(e);
  u2_.insert(id);
  return Status();
}

Status Server::close_share() {
  if (step_ != Step::kShare) return Status(StatusCode::kFailedPrecondition, "secure aggregation: step B not open");
  // Shares of a pod that did not finish step B are never delivered.
  for (auto& [to, list] : outbox_) {
    list.erase(std::remove_if(list.begin(), list.end(), [&](const EncryptedShare& e) { return !u2_.count(e.owner); }),
               list.end());
  }
  if (u2_.size() < settings_.threshold) {
    return Status(StatusCode::kUnavailable, "secure aggregation: " + std::to_string(u2_.size()) +
                                                " pods shared their keys, fewer than the threshold " +
                                                std::to_string(settings_.threshold) + ": the round fails");
  }
  step_ = Step::kMask;
  return Status();
}

std::vector<EncryptedShare> Server::shares_for(uint32_t id) const {
  if (!u2_.count(id)) return {};
  auto it = outbox_.find(id);
  return it == outbox_.end() ? std::vector<EncryptedShare>{} : it->second;
}

Status Server::add_masked(uint32_t id, const void* data, size_t bytes) {
  if (step_ != Step::kMask) return Status(StatusCode::kFailedPrecondition, "secure aggregation: masked update outside step C");
  if (!u2_.count(id)) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: masked update from pod " + std::to_string(id) +
                                                    ", which did not share its keys");
  }
  if (masked_.count(id)) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) + " sent a second masked update");
  }
  const size_t width = settings_.modulus_bits / 8;
  if (bytes == 0 || bytes % width != 0 || (elements_ && bytes != elements_ * width)) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) + "'s masked update has " +
                                                    std::to_string(bytes) + " bytes, expected " +
                                                    std::to_string(elements_ * width));
  }
  if (!elements_) {
    elements_ = bytes / width;
    sum_.assign(bytes, 0);
  }
  auto add = [&](auto* acc, const auto* in) {
    for (size_t i = 0; i < elements_; ++i) acc[i] += in[i];
  };
  if (width == 4) add(reinterpret_cast<uint32_t*>(sum_.data()), static_cast<const uint32_t*>(data));
  else add(reinterpret_cast<uint64_t*>(sum_.data()), static_cast<const uint64_t*>(data));
  masked_.insert(id);
  return Status();
}

Status Server::close_mask() {
  if (step_ != Step::kMask) return Status(StatusCode::kFailedPrecondition, "secure aggregation: step C not open");
  u3_.assign(masked_.begin(), masked_.end());
  if (u3_.size() < settings_.threshold) {
    step_ = Step::kDone;
    sodium_memzero(sum_.data(), sum_.size());
    return Status(StatusCode::kUnavailable, "secure aggregation: " + std::to_string(u3_.size()) +
                                                " pods sent masked updates, fewer than the threshold " +
                                                std::to_string(settings_.threshold) +
                                                ": the round fails and nothing is unmasked");
  }
  step_ = Step::kUnmask;
  return Status();
}

std::vector<uint32_t> Server::dropped() const {
  std::vector<uint32_t> out;
  for (uint32_t id : u2_) {
    if (!masked_.count(id)) out.push_back(id);
  }
  return out;
}

Status Server::add_reveal(uint32_t id, const Reveal& reveal) {
  auto bad = [&](std::string m) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: pod " + std::to_string(id) + "'s reveal: " + m);
  };
  if (step_ != Step::kUnmask) return Status(StatusCode::kFailedPrecondition, "secure aggregation: reveal outside step D");
  if (!masked_.count(id)) return bad("the pod is not a survivor");
  if (!revealed_.insert(id).second) return bad("sent twice");
  const auto& mine = graph_.at(id);
  // Owner o's shares went to its neighbours and itself, in ascending id: x = place + 1.
  auto expected_x = [&](uint32_t owner) -> int {
    std::vector<uint32_t> holders = graph_.at(owner);
    holders.insert(std::upper_bound(holders.begin(), holders.end(), owner), owner);
    auto it = std::lower_bound(holders.begin(), holders.end(), id);
    return it != holders.end() && *it == id ? static_cast<int>(it - holders.begin()) + 1 : -1;
  };
  auto take = [&](const std::vector<RevealedShare>& list, bool survivor_secret,
                  std::map<uint32_t, std::map<uint8_t, std::string>>& into) -> Status {
    for (const auto& r : list) {
      // A pod holds shares of its neighbours' secrets and of its own self-mask seed.
      const bool own = r.owner == id && survivor_secret;
      if (!own && (!std::binary_search(mine.begin(), mine.end(), r.owner) || !u2_.count(r.owner))) {
        return bad("a share of pod " + std::to_string(r.owner) + ", which is not its neighbour in step B");
      }
      if (survivor_secret != static_cast<bool>(masked_.count(r.owner))) {
        return bad(std::string("a share of ") + (survivor_secret ? "the self mask" : "the mask key") + " of pod " +
                   std::to_string(r.owner) + ", which " + (survivor_secret ? "dropped" : "survived"));
      }
      if (r.share.size() != 32 || expected_x(r.owner) != r.x) return bad("a malformed share of pod " + std::to_string(r.owner));
      if (!into[r.owner].emplace(r.x, r.share).second) return bad("two shares of pod " + std::to_string(r.owner));
    }
    return Status();
  };
  if (Status st = take(reveal.self_mask, true, b_shares_); !st.ok()) return st;
  return take(reveal.pair_key, false, s_shares_);
}

StatusOr<std::vector<double>> Server::finish() {
  FEDPOD_RETURN_IF_ERROR(unmask_sum());
  std::vector<double> out(elements_);
  const double q = std::ldexp(1.0, -static_cast<int>(settings_.fraction_bits));
  if (settings_.modulus_bits == 32) {
    const auto* p = reinterpret_cast<const uint32_t*>(sum_.data());
    for (size_t i = 0; i < elements_; ++i) out[i] = static_cast<double>(static_cast<int32_t>(p[i])) * q;
  } else {
    const auto* p = reinterpret_cast<const uint64_t*>(sum_.data());
    for (size_t i = 0; i < elements_; ++i) out[i] = static_cast<double>(static_cast<int64_t>(p[i])) * q;
  }
  return out;
}

StatusOr<double> Server::add_average_to(float* params, size_t n) {
  if (elements_ != n + 1) {
    return Status(StatusCode::kInvalidArgument, "secure aggregation: the sum has " + std::to_string(elements_) +
                                                    " elements, not " + std::to_string(n) + " parameters and the weight");
  }
  FEDPOD_RETURN_IF_ERROR(unmask_sum());
  const double q = std::ldexp(1.0, -static_cast<int>(settings_.fraction_bits));
  auto run = [&](const auto* p) -> StatusOr<double> {
    using S = std::make_signed_t<std::remove_const_t<std::remove_pointer_t<decltype(p)>>>;
    const double total = static_cast<double>(static_cast<S>(p[n])) * q;
    // What honest pods' masked updates sum to: weights min(n, W) / W, each at most 1,
    // and values clipped to ±clip, so a weighted average within ±clip (plus the
    // encoding's rounding). The coordinator cannot check one pod's masked vector, but
    // it can check their sum: one that is not a sum of such updates (a pod that sent
    // arbitrary ring values) fails the round, and nothing of it is applied.
    const size_t pods = u3_.size();
    const double slack = static_cast<double>(pods) * q;
    if (!(total > slack) || total > static_cast<double>(pods) + slack) {
      return Status(StatusCode::kBadMessage,
                    "secure aggregation: the summed weight is " + std::to_string(total) + ", not between 0 and " +
                        std::to_string(pods) + " (one at most per pod in the sum): a pod's masked update was "
                        "not a weighted update; the round fails and nothing of it is applied");
    }
    const double k = q / total;
    const double limit = settings_.clip + average_error_bound(settings_, pods, total);
    double largest = 0;
    for (size_t i = 0; i < n; ++i) largest = std::max(largest, std::abs(static_cast<double>(static_cast<S>(p[i])) * k));
    if (!(largest <= limit)) {
      return Status(StatusCode::kBadMessage,
                    "secure aggregation: the decoded average holds " + std::to_string(largest) +
                        ", beyond the clip " + std::to_string(settings_.clip) + " that bounds every pod's values: a "
                        "pod's masked update was not a clipped update; the round fails and nothing of it is applied");
    }
    for (size_t i = 0; i < n; ++i) params[i] += static_cast<float>(static_cast<double>(static_cast<S>(p[i])) * k);
    return total;
  };
  if (settings_.modulus_bits == 32) return run(reinterpret_cast<const uint32_t*>(sum_.data()));
  return run(reinterpret_cast<const uint64_t*>(sum_.data()));
}

Status Server::unmask_sum() {
  if (step_ != Step::kUnmask) return Status(StatusCode::kFailedPrecondition, "secure aggregation: finish before step D");
  step_ = Step::kDone;
  const uint32_t t = settings_.threshold;
  auto rebuild = [&](uint32_t owner, const std::map<uint8_t, std::string>& shares,
                     const char* what) -> StatusOr<std::array<uint8_t, 32>> {
    if (shares.size() < t) {
      return Status(StatusCode::kUnavailable, "secure aggregation: " + std::to_string(shares.size()) + " shares of pod " +
                                                  std::to_string(owner) + "'s " + what + ", fewer than the threshold " +
                                                  std::to_string(t) + ": the round fails");
    }
    std::vector<std::pair<uint8_t, const std::string*>> use;
    for (const auto& [x, s] : shares) {
      if (use.size() == t) break;
      use.push_back({x, &s});
    }
    return combine(use);
  };
  std::vector<Mask> masks;
  auto wipe = [&] {
    for (auto& m : masks) sodium_memzero(m.key.data(), m.key.size());
  };
  for (uint32_t i : u3_) {
    auto b = rebuild(i, b_shares_[i], "self-mask seed");
    if (!b.ok()) return wipe(), b.status();
    if (commit_of(context_, i, b->data()) != keys_.at(i).b_commit) {
      wipe();
      return Status(StatusCode::kBadMessage, "secure aggregation: pod " + std::to_string(i) +
                                               "'s rebuilt self-mask seed does not match its commitment: a pod revealed a "
                                               "wrong share; the round fails");
    }
    masks.push_back({self_key(context_, i, b->data()), -1});
    sodium_memzero(b->data(), b->size());
  }
  for (uint32_t d : dropped()) {
    auto sk = rebuild(d, s_shares_[d], "mask key");
    if (!sk.ok()) return wipe(), sk.status();
    uint8_t pk[32];
    crypto_scalarmult_base(pk, sk->data());
    if (key_str(pk) != keys_.at(d).s_pk) {
      wipe();
      return Status(StatusCode::kBadMessage, "secure aggregation: pod " + std::to_string(d) +
                                               "'s rebuilt mask key does not match its public key: a pod revealed a wrong "
                                               "share; the round fails");
    }
    // Each surviving neighbour j added sign(j, d)·PRG(s_jd); take it out.
    for (uint32_t j : graph_.at(d)) {
      if (!masked_.count(j)) continue;
      auto k = pair_key(context_, d, sk->data(), j, keys_.at(j).s_pk, keys_.at(d).s_pk);
      if (!k) return wipe(), Status(StatusCode::kInvalidArgument, "secure aggregation: invalid key of pod " + std::to_string(j));
      masks.push_back({*k, j < d ? -1 : +1});
    }
    sodium_memzero(sk->data(), sk->size());
  }
  if (settings_.modulus_bits == 32) apply_masks_t(reinterpret_cast<uint32_t*>(sum_.data()), elements_, masks);
  else apply_masks_t(reinterpret_cast<uint64_t*>(sum_.data()), elements_, masks);
  wipe();
  return Status();
}

}  // namespace fedpod::protocol::secagg
