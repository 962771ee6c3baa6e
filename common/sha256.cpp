#include "fedpod/common/sha256.h"

#include <sodium.h>

#include <stdexcept>

namespace fedpod {
namespace {

void ensure_sodium() {
  static const int rc = sodium_init();  // thread-safe; idempotent
  if (rc < 0) throw std::runtime_error("libsodium failed to initialise");
}

}  // namespace

static_assert(sizeof(crypto_hash_sha256_state) <= 512, "Sha256 state buffer too small");

Sha256::Sha256() {
  ensure_sodium();
  crypto_hash_sha256_init(reinterpret_cast<crypto_hash_sha256_state*>(state_));
}

void Sha256::update(const char* data, size_t n) {
  crypto_hash_sha256_update(reinterpret_cast<crypto_hash_sha256_state*>(state_),
                            reinterpret_cast<const unsigned char*>(data), n);
}

std::string Sha256::hex() {
  unsigned char out[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_), out);
  static const char* digits = "0123456789abcdef";
  std::string hex(2 * sizeof out, '0');
  for (size_t i = 0; i < sizeof out; ++i) {
    hex[2 * i] = digits[out[i] >> 4];
    hex[2 * i + 1] = digits[out[i] & 15];
  }
  return hex;
}

std::string sha256_hex(std::string_view data) {
  Sha256 h;
  h.update(data.data(), data.size());
  return h.hex();
}

}  // namespace fedpod
