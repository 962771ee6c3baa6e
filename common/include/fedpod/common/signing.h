// Ed25519 signatures (libsodium) for documents a pod must be able to trust whatever
// path they took: a pod's access policy, served by the hub or carried to an
// air-gapped pod as a file.
//
//   SigningKeyPair k = generate_signing_keypair();
//   write_signing_key_files("owner", k, false);          // owner.sign.key (0600), owner.sign.pub
//   std::string doc = sign_document(payload_json, k);     // {"fedpod_signed": 1, "payload": "...", ...}
//   auto payload = verify_document(doc, k.public_key, "policy.json");
//
// A signed document is JSON: {"fedpod_signed": 1, "payload": "<JSON text>",
// "signature": "<base64 Ed25519 over the payload text's bytes>", "key": "<base64
// public key that signed it>"}. The payload is signed as the exact text carried, so
// no canonical form is needed. "key" only helps a human tell keys apart: a verifier
// uses the key it pinned, never the one in the document.
//
// Keys are base64 (standard alphabet, padded): 44 characters for a public key, 88 for
// a secret key (libsodium's 64-byte form, which holds the seed and the public key).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "fedpod/common/status.h"

namespace fedpod {

struct SigningKeyPair {
  std::string public_key;  // 44 base64 characters
  std::string secret_key;  // 88 base64 characters; empty when read from a .sign.pub file
};

SigningKeyPair generate_signing_keypair();

// True when `b64` is a well-formed Ed25519 public key in base64.
bool is_signing_public_key(const std::string& b64);

// Writes BASE.sign.key (both keys, mode 0600) and BASE.sign.pub (public key, 0644).
// kFailedPrecondition when either exists and !force.
Status write_signing_key_files(const std::string& base, const SigningKeyPair& keys, bool force);

// Reads a .sign.key (both keys, which must match; the file must not be readable by
// group or others) or a .sign.pub file. Errors name the file.
StatusOr<SigningKeyPair> read_signing_key_file(const std::string& path);

// `payload` as a signed document's text (see above). `keys` must hold a secret key.
std::string sign_document(const nlohmann::json& payload, const SigningKeyPair& keys);

// Checks a signed document against `public_key` and returns its payload. Errors
// (kInvalidArgument, starting with `where`): not a signed document ("not signed"),
// malformed, a signature that does not verify with that key ("altered, or signed by
// another key"), a payload that is not a JSON object.
StatusOr<nlohmann::json> verify_document(const nlohmann::json& document, const std::string& public_key,
                                         const std::string& where);

// True when `j` has the shape of a signed document (so a caller can tell "unsigned"
// from "signed but wrong").
bool is_signed_document(const nlohmann::json& j);

// Standard base64 (padded), as keys and signatures are written.
std::string base64_encode(std::string_view bytes);
// False for anything but well-formed base64.
bool base64_decode(const std::string& text, std::string& out);

}  // namespace fedpod
