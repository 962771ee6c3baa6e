// sha256_hex and the incremental Sha256 against the FIPS 180-2 test vectors: the hub
// records these hashes and the coordinator and pods re-check them, so a change of
// implementation must give the same digests.
#include "fedpod/common/sha256.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace {

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(fedpod::sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(fedpod::sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(fedpod::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(fedpod::sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, IncrementalUpdatesGiveTheOneShotDigest) {
  std::string data;
  for (int i = 0; i < 100000; ++i) data += static_cast<char>(i * 131 + (i >> 7));
  const std::string expected = fedpod::sha256_hex(data);
  for (size_t piece : {1u, 63u, 64u, 65u, 4096u, 99999u}) {
    fedpod::Sha256 h;
    for (size_t at = 0; at < data.size(); at += piece) {
      h.update(data.data() + at, std::min(piece, data.size() - at));
    }
    h.update(data.data(), 0);  // an empty update changes nothing
    EXPECT_EQ(h.hex(), expected) << "pieces of " << piece;
  }
  EXPECT_NE(fedpod::sha256_hex(data.substr(1)), expected);
}

}  // namespace
