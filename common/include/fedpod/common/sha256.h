// sha256 (OpenSSL's EVP interface, which uses the CPU's SHA extensions: 1.4 GB/s
// on the development machine, where libsodium's portable code ran at 0.3 GB/s), as
// lowercase hex: the content hash of model artifacts and coordinator checkpoints,
// shared by the hub (which records it), the coordinator and pods (which re-check
// it). Stateless functions and a small incremental hasher; safe from any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fedpod {

// Lowercase hex sha256 of `data`.
std::string sha256_hex(std::string_view data);

// Incremental sha256 for streamed data.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const char* data, size_t n);
  std::string hex();  // finishes; call once

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace fedpod
