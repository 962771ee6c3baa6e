#include "fedpod/protocol/bulk.h"

#include <openssl/evp.h>
#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

namespace fedpod::protocol {
namespace {

constexpr char kMagic[4] = {'F', 'P', 'B', '1'};
constexpr uint8_t kSealed = 1;
constexpr uint8_t kNotice = 2;
constexpr uint32_t kMaxFrames = 1u << 14;     // frame index: 14 bits of the nonce
constexpr uint64_t kMaxSegments = 1u << 18;   // segment index: 18 bits
constexpr uint32_t kMinSegment = 4096;
constexpr uint32_t kMaxSegment = 16u << 20;
// Below this many bytes a message is sealed on the calling thread alone.
constexpr uint64_t kParallelBytes = 2u << 20;

std::atomic<unsigned> g_max_threads{0};

unsigned max_threads() {
  unsigned n = g_max_threads.load();
  if (n == 0) n = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  return n;
}

void ensure_sodium() {
  static const int ok = sodium_init();
  if (ok < 0) throw std::runtime_error("libsodium failed to initialize");
}

void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::array<uint8_t, kBulkHeaderBytes> encode_header(const BulkHeader& h) {
  std::array<uint8_t, kBulkHeaderBytes> b{};
  std::memcpy(b.data(), kMagic, 4);
  b[4] = h.kind;
  std::memcpy(b.data() + 8, h.session.data(), 16);
  put64(b.data() + 24, h.sequence);
  put32(b.data() + 32, h.round);
  put32(b.data() + 36, h.segment_bytes);
  put32(b.data() + 40, h.frames);
  return b;
}

// A keyed BLAKE2b-256 of `label`: one direction's AES key.
std::array<uint8_t, 32> direction_key(const uint8_t* kx_key, const char* label, const std::array<uint8_t, 32>& binding) {
  std::array<uint8_t, 32> out{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, kx_key, crypto_kx_SESSIONKEYBYTES, out.size());
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(label), std::strlen(label) + 1);
  crypto_generichash_update(&st, binding.data(), binding.size());
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

void hash_field(crypto_generichash_state& st, const std::string& s) {
  uint8_t len[8];
  put64(len, s.size());
  crypto_generichash_update(&st, len, sizeof len);
  crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(s.data()), s.size());
}

struct CipherCtx {
  EVP_CIPHER_CTX* ctx;
  CipherCtx() : ctx(EVP_CIPHER_CTX_new()) {
    if (!ctx) throw std::runtime_error("EVP_CIPHER_CTX_new failed");
  }
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
  CipherCtx(const CipherCtx&) = delete;
  CipherCtx& operator=(const CipherCtx&) = delete;
};

// One segment's job: where its bytes are and what binds it.
struct Segment {
  uint32_t frame;    // plaintext frame index (0 = envelope)
  uint32_t index;    // segment index within the frame
  uint64_t length;   // plaintext length of the whole frame
  bool last;
  const uint8_t* in;
  uint8_t* out;      // may equal `in` (in place)
  size_t bytes;
  uint8_t* tag;
};

struct SegmentParams {
  const std::array<uint8_t, kBulkHeaderBytes>* header;
  const std::array<uint8_t, 32>* binding;
  const std::array<uint8_t, 32>* key;
  uint64_t sequence;
};

void nonce_of(const SegmentParams& p, const Segment& s, uint8_t iv[12]) {
  put64(iv, p.sequence);
  put32(iv + 8, (s.frame << 18) | s.index);
}

void ad_of(const SegmentParams& p, const Segment& s, uint8_t* ad) {
  std::memcpy(ad, p.header->data(), kBulkHeaderBytes);
  std::memcpy(ad + kBulkHeaderBytes, p.binding->data(), 32);
  uint8_t* q = ad + kBulkHeaderBytes + 32;
  put32(q, s.frame);
  put32(q + 4, s.index);
  put64(q + 8, s.length);
  q[16] = s.last ? 1 : 0;
}
constexpr size_t kAdBytes = kBulkHeaderBytes + 32 + 17;

// Runs segments [begin, end) with one context; false on any failure (open: a tag).
bool run_segments(bool encrypt, const SegmentParams& p, const std::vector<Segment>& segs, size_t begin, size_t end,
                  const std::atomic<bool>& failed) {
  CipherCtx c;
  const int init = encrypt ? EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, p.key->data(), nullptr)
                           : EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, p.key->data(), nullptr);
  if (init != 1) return false;
  uint8_t iv[12];
  uint8_t ad[kAdBytes];
  for (size_t k = begin; k < end; ++k) {
    if (failed.load(std::memory_order_relaxed)) return false;
    const Segment& s = segs[k];
    nonce_of(p, s, iv);
    ad_of(p, s, ad);
    int len = 0;
    if (encrypt) {
      if (EVP_EncryptInit_ex(c.ctx, nullptr, nullptr, nullptr, iv) != 1) return false;
      if (EVP_EncryptUpdate(c.ctx, nullptr, &len, ad, sizeof ad) != 1) return false;
      if (s.bytes > 0 && EVP_EncryptUpdate(c.ctx, s.out, &len, s.in, static_cast<int>(s.bytes)) != 1) return false;
      if (EVP_EncryptFinal_ex(c.ctx, s.out + s.bytes, &len) != 1) return false;
      if (EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, kBulkTagBytes, s.tag) != 1) return false;
    } else {
      if (EVP_DecryptInit_ex(c.ctx, nullptr, nullptr, nullptr, iv) != 1) return false;
      if (EVP_DecryptUpdate(c.ctx, nullptr, &len, ad, sizeof ad) != 1) return false;
      if (s.bytes > 0 && EVP_DecryptUpdate(c.ctx, s.out, &len, s.in, static_cast<int>(s.bytes)) != 1) return false;
      if (EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, kBulkTagBytes, s.tag) != 1) return false;
      if (EVP_DecryptFinal_ex(c.ctx, s.out + s.bytes, &len) != 1) return false;  // the tag did not match
    }
  }
  return true;
}

// All segments, on up to max_threads() threads (this one included).
bool run_all(bool encrypt, const SegmentParams& p, const std::vector<Segment>& segs, uint64_t total_bytes) {
  std::atomic<bool> failed{false};
  unsigned threads = total_bytes >= kParallelBytes ? std::min<size_t>(max_threads(), segs.size()) : 1;
  if (threads <= 1) return run_segments(encrypt, p, segs, 0, segs.size(), failed);
  // Contiguous ranges of roughly equal bytes.
  std::vector<size_t> cut{0};
  const uint64_t share = (total_bytes + threads - 1) / threads;
  uint64_t acc = 0;
  for (size_t k = 0; k < segs.size(); ++k) {
    acc += segs[k].bytes;
    if (acc >= share * cut.size() && cut.size() < threads && k + 1 < segs.size()) cut.push_back(k + 1);
  }
  cut.push_back(segs.size());
  std::vector<std::thread> pool;
  for (size_t t = 1; t + 1 < cut.size(); ++t) {
    pool.emplace_back([&, t] {
      if (!run_segments(encrypt, p, segs, cut[t], cut[t + 1], failed)) failed = true;
    });
  }
  if (!run_segments(encrypt, p, segs, cut[0], cut[1], failed)) failed = true;
  for (auto& th : pool) th.join();
  return !failed.load();
}

// Sealed frames' buffers, kept for reuse once ZeroMQ has sent them. A round seals
// frames of the same sizes every time; a fresh 40 MB buffer costs 10,000 page faults
// (more than the encryption itself), a reused one none. Bounded: buffers beyond
// `cap` bytes are freed at once.
class BufferPool {
 public:
  uint8_t* get(size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(n);
      if (it != free_.end() && it->first <= n + n / 8) {
        uint8_t* p = it->second;
        bytes_ -= it->first;
        free_.erase(it);
        sizes_[p] = n;
        outstanding_ += n;
        return p;
      }
    }
    auto* p = static_cast<uint8_t*>(std::malloc(n));
    if (p) {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = n;
      outstanding_ += n;
    }
    return p;
  }
  // Called by ZeroMQ (any thread) when a sealed frame is sent.
  void put(uint8_t* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sizes_.find(p);
    const size_t n = it == sizes_.end() ? 0 : it->second;
    if (it != sizes_.end()) sizes_.erase(it);
    outstanding_ -= n;
    if (n < kMinPooled || bytes_ + n > cap_.load()) {
      std::free(p);
      return;
    }
    free_.emplace(n, p);
    bytes_ += n;
  }
  size_t outstanding() const { return outstanding_.load(); }
  void set_cap(size_t cap) {
    cap_ = cap;
    std::lock_guard<std::mutex> lock(mu_);
    while (bytes_ > cap && !free_.empty()) {
      auto it = std::prev(free_.end());
      bytes_ -= it->first;
      std::free(it->second);
      free_.erase(it);
    }
  }

 private:
  static constexpr size_t kMinPooled = 64 << 10;  // smaller ones come from malloc's own bins
  std::mutex mu_;
  std::multimap<size_t, uint8_t*> free_;
  std::unordered_map<uint8_t*, size_t> sizes_;  // buffers out, by address
  size_t bytes_ = 0;
  std::atomic<size_t> outstanding_{0};  // sealed and not yet released by ZeroMQ
  std::atomic<size_t> cap_{size_t{512} << 20};
};

BufferPool& pool() {
  static BufferPool* p = new BufferPool();  // never destroyed: ZeroMQ may free frames during exit
  return *p;
}

void free_buffer(void* data, void* /*hint*/) { pool().put(static_cast<uint8_t*>(data)); }

void free_parent(void* /*data*/, void* hint) { delete static_cast<zmq::message_t*>(hint); }

uint64_t segments_for(uint64_t length, uint32_t segment) {
  return length == 0 ? 1 : (length + segment - 1) / segment;
}

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += d[p[i] >> 4];
    s += d[p[i] & 15];
  }
  return s;
}

}  // namespace

const char* to_string(BulkRefusal r) {
  switch (r) {
    case BulkRefusal::kNone: return "none";
    case BulkRefusal::kMalformed: return "malformed";
    case BulkRefusal::kUnknownSession: return "unknown_session";
    case BulkRefusal::kReplay: return "replay";
    case BulkRefusal::kTampered: return "tampered";
  }
  return "unknown";
}

BulkKeyPair::BulkKeyPair() {
  ensure_sodium();
  crypto_kx_keypair(pk_.data(), sk_.data());
}
BulkKeyPair::~BulkKeyPair() { sodium_memzero(sk_.data(), sk_.size()); }
std::string BulkKeyPair::public_key() const { return std::string(reinterpret_cast<const char*>(pk_.data()), pk_.size()); }

StatusOr<BulkHeader> parse_bulk_header(const zmq::message_t& frame) {
  if (frame.size() != kBulkHeaderBytes) {
    return Status::bad_message("bulk header of " + std::to_string(frame.size()) + " bytes, expected " +
                               std::to_string(kBulkHeaderBytes));
  }
  const auto* b = static_cast<const uint8_t*>(frame.data());
  if (std::memcmp(b, kMagic, 4) != 0) return Status::bad_message("bulk header does not start with FPB1");
  BulkHeader h;
  h.kind = b[4];
  if (h.kind != kSealed && h.kind != kNotice) {
    return Status::bad_message("bulk header of unknown kind " + std::to_string(h.kind));
  }
  std::memcpy(h.session.data(), b + 8, 16);
  h.sequence = get64(b + 24);
  h.round = get32(b + 32);
  h.segment_bytes = get32(b + 36);
  h.frames = get32(b + 40);
  if (h.kind == kSealed && (h.segment_bytes < kMinSegment || h.segment_bytes > kMaxSegment)) {
    return Status::bad_message("bulk segment size " + std::to_string(h.segment_bytes) + " is outside [" +
                               std::to_string(kMinSegment) + ", " + std::to_string(kMaxSegment) + "]");
  }
  if (h.kind == kSealed && (h.frames == 0 || h.frames > kMaxFrames)) {
    return Status::bad_message("bulk header names " + std::to_string(h.frames) + " frames");
  }
  return h;
}

std::vector<zmq::message_t> bulk_notice(const std::array<uint8_t, 16>& session, uint64_t sequence) {
  BulkHeader h;
  h.kind = kNotice;
  h.session = session;
  h.sequence = sequence;
  auto b = encode_header(h);
  std::vector<zmq::message_t> out;
  out.emplace_back(b.data(), b.size());
  return out;
}

StatusOr<BulkSession> BulkSession::derive(BulkRole role, const BulkKeyPair& mine, std::string_view peer_public,
                                          const BulkBinding& binding) {
  ensure_sodium();
  if (peer_public.size() != kBulkPublicKeyBytes) {
    return Status::bad_message("bulk key of " + std::to_string(peer_public.size()) + " bytes, expected " +
                               std::to_string(kBulkPublicKeyBytes));
  }
  const auto* peer = reinterpret_cast<const unsigned char*>(peer_public.data());
  uint8_t rx[crypto_kx_SESSIONKEYBYTES], tx[crypto_kx_SESSIONKEYBYTES];
  const int rc = role == BulkRole::kCoordinator
                     ? crypto_kx_client_session_keys(rx, tx, mine.pk_.data(), mine.sk_.data(), peer)
                     : crypto_kx_server_session_keys(rx, tx, mine.pk_.data(), mine.sk_.data(), peer);
  if (rc != 0) return Status::bad_message("bulk key is not a usable X25519 public key");
  BulkSession s;
  s.valid_ = true;
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, s.binding_.size());
  hash_field(st, "fedpod bulk binding v1");
  hash_field(st, binding.job_id);
  hash_field(st, binding.pod_key);
  crypto_generichash_final(&st, s.binding_.data(), s.binding_.size());
  // Coordinator -> pod is the client's tx (the server's rx); pod -> coordinator the reverse.
  const uint8_t* c2s = role == BulkRole::kCoordinator ? tx : rx;
  const uint8_t* s2c = role == BulkRole::kCoordinator ? rx : tx;
  auto k_c2s = direction_key(c2s, "fedpod bulk coordinator->pod v1", s.binding_);
  auto k_s2c = direction_key(s2c, "fedpod bulk pod->coordinator v1", s.binding_);
  s.send_key_ = role == BulkRole::kCoordinator ? k_c2s : k_s2c;
  s.recv_key_ = role == BulkRole::kCoordinator ? k_s2c : k_c2s;
  sodium_memzero(k_c2s.data(), k_c2s.size());
  sodium_memzero(k_s2c.data(), k_s2c.size());
  sodium_memzero(rx, sizeof rx);
  sodium_memzero(tx, sizeof tx);
  // The session id names the pair of public keys (both sides compute the same).
  const uint8_t* client_pk = role == BulkRole::kCoordinator ? mine.pk_.data() : peer;
  const uint8_t* server_pk = role == BulkRole::kCoordinator ? peer : mine.pk_.data();
  crypto_generichash_init(&st, nullptr, 0, s.id_.size());
  crypto_generichash_update(&st, client_pk, 32);
  crypto_generichash_update(&st, server_pk, 32);
  crypto_generichash_final(&st, s.id_.data(), s.id_.size());
  return s;
}

BulkSession::BulkSession(BulkSession&& o) noexcept { *this = std::move(o); }
BulkSession& BulkSession::operator=(BulkSession&& o) noexcept {
  if (this == &o) return *this;
  valid_ = o.valid_;
  o.valid_ = false;
  id_ = o.id_;
  send_key_ = o.send_key_;
  recv_key_ = o.recv_key_;
  binding_ = o.binding_;
  send_seq_ = o.send_seq_;
  recv_seq_ = o.recv_seq_;
  sodium_memzero(o.send_key_.data(), o.send_key_.size());
  sodium_memzero(o.recv_key_.data(), o.recv_key_.size());
  return *this;
}
BulkSession::~BulkSession() {
  sodium_memzero(send_key_.data(), send_key_.size());
  sodium_memzero(recv_key_.data(), recv_key_.size());
}

std::string BulkSession::id_hex() const { return hex(id_.data(), id_.size()); }

void BulkSession::set_max_threads(unsigned n) { g_max_threads = n; }
void BulkSession::set_buffer_pool_bytes(size_t n) { pool().set_cap(n); }
size_t BulkSession::sealed_bytes_in_flight() { return pool().outstanding(); }

std::vector<zmq::message_t> BulkSession::seal(std::vector<zmq::message_t> frames, uint32_t round,
                                              uint32_t segment_bytes) {
  if (frames.empty() || frames.size() > kMaxFrames) {
    throw std::length_error("bulk: a sealed message has 1 to " + std::to_string(kMaxFrames) + " frames, not " +
                            std::to_string(frames.size()));
  }
  if (!valid_) throw std::logic_error("bulk: seal on a session without keys");
  if (segment_bytes < kMinSegment || segment_bytes > kMaxSegment) throw std::length_error("bulk: bad segment size");
  BulkHeader h;
  h.kind = kSealed;
  h.session = id_;
  h.sequence = ++send_seq_;
  h.round = round;
  h.segment_bytes = segment_bytes;
  h.frames = static_cast<uint32_t>(frames.size());
  const auto header = encode_header(h);
  std::vector<zmq::message_t> out;
  out.reserve(frames.size() + 1);
  out.emplace_back(header.data(), header.size());
  std::vector<Segment> segs;
  uint64_t total = 0;
  for (uint32_t f = 0; f < frames.size(); ++f) {
    const uint64_t len = frames[f].size();
    const uint64_t n = segments_for(len, segment_bytes);
    if (n > kMaxSegments) throw std::length_error("bulk: frame " + std::to_string(f) + " is too large to seal");
    const size_t sealed = len + n * kBulkTagBytes;
    auto* buf = pool().get(sealed);
    if (!buf) throw std::bad_alloc();
    out.emplace_back(buf, sealed, &free_buffer, nullptr);
    const auto* in = static_cast<const uint8_t*>(frames[f].data());
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t off = k * segment_bytes;
      const size_t bytes = static_cast<size_t>(std::min<uint64_t>(segment_bytes, len - std::min(len, off)));
      segs.push_back({f, static_cast<uint32_t>(k), len, k + 1 == n, in + off, buf + off, bytes,
                      buf + len + k * kBulkTagBytes});
    }
    total += len;
  }
  SegmentParams p{&header, &binding_, &send_key_, h.sequence};
  if (!run_all(true, p, segs, total)) throw std::runtime_error("bulk: AES-256-GCM encryption failed (OpenSSL)");
  return out;  // `frames` (and any tensor they pinned) are released here
}

StatusOr<std::vector<zmq::message_t>> BulkSession::open(std::vector<zmq::message_t> frames, uint32_t* round,
                                                        BulkRefusal* refusal) {
  auto refuse = [&](BulkRefusal r, const std::string& why) {
    if (refusal) *refusal = r;
    return Status::bad_message("sealed message refused (" + std::string(to_string(r)) + "): " + why);
  };
  if (frames.empty()) return refuse(BulkRefusal::kMalformed, "no frames");
  auto parsed = parse_bulk_header(frames[0]);
  if (!parsed.ok()) return refuse(BulkRefusal::kMalformed, parsed.status().message());
  const BulkHeader& h = *parsed;
  if (!valid_ || h.session != id_) return refuse(BulkRefusal::kUnknownSession, "session " + hex(h.session.data(), 16));
  if (h.kind != kSealed) return refuse(BulkRefusal::kMalformed, "a notice, not a sealed message");
  if (h.frames != frames.size() - 1) {
    return refuse(BulkRefusal::kMalformed, "header names " + std::to_string(h.frames) + " frames, message has " +
                                               std::to_string(frames.size() - 1));
  }
  if (h.sequence <= recv_seq_) {
    return refuse(BulkRefusal::kReplay, "sequence " + std::to_string(h.sequence) + " is not above " +
                                            std::to_string(recv_seq_) + ", the last one opened");
  }
  const auto header = encode_header(h);  // equal to frame 0 byte for byte (reserved bytes zero)
  if (std::memcmp(header.data(), frames[0].data(), kBulkHeaderBytes) != 0) {
    return refuse(BulkRefusal::kMalformed, "reserved header bytes are not zero");
  }
  const uint64_t seg = h.segment_bytes;
  std::vector<Segment> segs;
  std::vector<uint64_t> lengths;
  uint64_t total = 0;
  for (uint32_t f = 0; f + 1 < frames.size(); ++f) {
    zmq::message_t& m = frames[f + 1];
    const uint64_t size = m.size();
    const uint64_t n = std::max<uint64_t>(1, (size + seg + kBulkTagBytes - 1) / (seg + kBulkTagBytes));
    if (size < n * kBulkTagBytes) return refuse(BulkRefusal::kMalformed, "frame " + std::to_string(f + 1) + " is too short");
    const uint64_t len = size - n * kBulkTagBytes;
    if (segments_for(len, h.segment_bytes) != n || n > kMaxSegments) {
      return refuse(BulkRefusal::kMalformed, "frame " + std::to_string(f + 1) + " has an impossible length");
    }
    auto* buf = static_cast<uint8_t*>(m.data());
    for (uint64_t k = 0; k < n; ++k) {
      const uint64_t off = k * seg;
      const size_t bytes = static_cast<size_t>(std::min<uint64_t>(seg, len - std::min(len, off)));
      segs.push_back({f, static_cast<uint32_t>(k), len, k + 1 == n, buf + off, buf + off, bytes,
                      buf + len + k * kBulkTagBytes});
    }
    lengths.push_back(len);
    total += len;
  }
  SegmentParams p{&header, &binding_, &recv_key_, h.sequence};
  if (!run_all(false, p, segs, total)) {
    return refuse(BulkRefusal::kTampered, "a segment's authentication tag does not match (altered, moved, or "
                                          "sealed with another key)");
  }
  recv_seq_ = h.sequence;
  if (round) *round = h.round;
  if (refusal) *refusal = BulkRefusal::kNone;
  std::vector<zmq::message_t> out;
  out.reserve(lengths.size());
  for (size_t f = 0; f < lengths.size(); ++f) {
    if (lengths[f] == 0) {
      out.emplace_back();
      continue;
    }
    // A view of the decrypted bytes that keeps the received frame alive.
    auto* parent = new zmq::message_t(std::move(frames[f + 1]));
    out.emplace_back(parent->data(), lengths[f], &free_parent, parent);
  }
  return out;
}

}  // namespace fedpod::protocol
