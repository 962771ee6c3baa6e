// sha256 (libsodium), as lowercase hex: the content hash of model artifacts, shared
// by the hub (which records it), the coordinator and pods (which re-check it).
// Stateless functions and a small incremental hasher; safe from any thread (sodium
// is initialised on first use).
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
  void update(const char* data, size_t n);
  std::string hex();  // finishes; call once

 private:
  alignas(64) unsigned char state_[512];
};

}  // namespace fedpod
