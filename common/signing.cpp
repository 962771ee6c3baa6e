#include "fedpod/common/signing.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace fedpod {
namespace {

void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot initialise");
}

std::string to_base64(const unsigned char* data, size_t n) {
  std::string out(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), data, n, sodium_base64_VARIANT_ORIGINAL);
  out.resize(std::strlen(out.c_str()));
  return out;
}

// Decodes exactly `n` bytes of base64; false for anything else.
bool from_base64(const std::string& b64, unsigned char* out, size_t n) {
  size_t got = 0;
  if (sodium_base642bin(out, n, b64.data(), b64.size(), nullptr, &got, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return false;
  }
  return got == n;
}

Status write_text(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return Status::invalid("cannot write " + tmp + ": " + std::strerror(errno));
    out << text;
    if (!out.flush()) return Status::invalid("cannot write " + tmp);
  }
  if (::chmod(tmp.c_str(), mode) != 0) return Status::invalid("cannot chmod " + tmp + ": " + std::strerror(errno));
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::invalid("cannot rename " + tmp + " to " + path + ": " + ec.message());
  return Status();
}

}  // namespace

SigningKeyPair generate_signing_keypair() {
  init_sodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
  crypto_sign_keypair(pk, sk);
  SigningKeyPair k{to_base64(pk, sizeof pk), to_base64(sk, sizeof sk)};
  sodium_memzero(sk, sizeof sk);
  return k;
}

bool is_signing_public_key(const std::string& b64) {
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  return b64.size() == 44 && from_base64(b64, pk, sizeof pk);
}

Status write_signing_key_files(const std::string& base, const SigningKeyPair& keys, bool force) {
  const std::string key_path = base + ".sign.key", pub_path = base + ".sign.pub";
  if (!force) {
    for (const auto& p : {key_path, pub_path}) {
      if (std::filesystem::exists(p)) {
        return Status::failed_precondition(p + " already exists; pass --force to overwrite it (whatever pins the "
                                               "old public key must then pin the new one)");
      }
    }
  }
  FEDPOD_RETURN_IF_ERROR(write_text(key_path,
                                    "# fedpod Ed25519 signing key pair, written by `fedpod keys generate-signing`.\n"
                                    "# Whoever holds the secret key can sign policies for the pods that pin its "
                                    "public key: keep this file private (mode 0600).\npublic_key: \"" +
                                        keys.public_key + "\"\nsecret_key: \"" + keys.secret_key + "\"\n",
                                    0600));
  return write_text(pub_path,
                    "# fedpod Ed25519 signing public key: pin it in pod.yaml (policy.signing_key); safe to "
                    "share.\npublic_key: \"" + keys.public_key + "\"\n",
                    0644);
}

StatusOr<SigningKeyPair> read_signing_key_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::invalid("signing key file " + path + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Status::invalid("signing key file " + path + ": not a regular file");
  if (st.st_size > (64 << 10)) return Status::invalid("signing key file " + path + ": too large to be a key file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    return Status::invalid("signing key file " + path + ": not a fedpod signing key file: " + e.what());
  }
  if (!root.IsMap()) return Status::invalid("signing key file " + path + ": expected public_key (and secret_key)");
  SigningKeyPair k;
  for (const auto& kv : root) {
    const std::string name = kv.first.as<std::string>();
    if (name != "public_key" && name != "secret_key") {
      return Status::invalid("signing key file " + path + ": unknown key '" + name + "'");
    }
    if (!kv.second.IsScalar()) return Status::invalid("signing key file " + path + ": " + name + " must be a string");
    (name == "public_key" ? k.public_key : k.secret_key) = kv.second.as<std::string>();
  }
  if (!is_signing_public_key(k.public_key)) {
    return Status::invalid("signing key file " + path + ": public_key is not a base64 Ed25519 public key");
  }
  if (!k.secret_key.empty()) {
    if (st.st_mode & 077) {
      return Status::invalid("signing key file " + path + " holds a secret key and is readable by others: chmod 600 " +
                             path);
    }
    init_sodium();
    unsigned char sk[crypto_sign_SECRETKEYBYTES], pk[crypto_sign_PUBLICKEYBYTES];
    if (!from_base64(k.secret_key, sk, sizeof sk)) {
      return Status::invalid("signing key file " + path + ": secret_key is not a base64 Ed25519 secret key");
    }
    crypto_sign_ed25519_sk_to_pk(pk, sk);
    sodium_memzero(sk, sizeof sk);
    if (to_base64(pk, sizeof pk) != k.public_key) {
      return Status::invalid("signing key file " + path + ": public_key and secret_key do not belong together");
    }
  }
  return k;
}

std::string sign_document(const nlohmann::json& payload, const SigningKeyPair& keys) {
  init_sodium();
  unsigned char sk[crypto_sign_SECRETKEYBYTES];
  if (!from_base64(keys.secret_key, sk, sizeof sk)) throw std::invalid_argument("sign_document: no valid secret key");
  const std::string text = payload.dump();
  unsigned char sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr, reinterpret_cast<const unsigned char*>(text.data()), text.size(), sk);
  sodium_memzero(sk, sizeof sk);
  return nlohmann::json{{"fedpod_signed", 1},
                        {"payload", text},
                        {"signature", to_base64(sig, sizeof sig)},
                        {"key", keys.public_key}}
      .dump();
}

std::string base64_encode(std::string_view bytes) {
  init_sodium();
  return to_base64(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}

bool base64_decode(const std::string& text, std::string& out) {
  init_sodium();
  out.assign(text.size() * 3 / 4 + 3, '\0');
  size_t got = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(), text.size(), nullptr,
                        &got, nullptr, sodium_base64_VARIANT_ORIGINAL) != 0) {
    return false;
  }
  out.resize(got);
  return true;
}

bool is_signed_document(const nlohmann::json& j) {
  return j.is_object() && j.contains("fedpod_signed") && j.contains("payload") && j.contains("signature");
}

StatusOr<nlohmann::json> verify_document(const nlohmann::json& doc, const std::string& public_key,
                                         const std::string& where) {
  if (!is_signed_document(doc)) {
    return Status::invalid(where + ": not signed: expected a signed document {fedpod_signed, payload, signature}");
  }
  if (!doc["fedpod_signed"].is_number_integer() || doc["fedpod_signed"].get<int64_t>() != 1) {
    return Status::invalid(where + ": fedpod_signed: version " + doc["fedpod_signed"].dump() + " is not 1");
  }
  if (!doc["payload"].is_string() || !doc["signature"].is_string()) {
    return Status::invalid(where + ": payload and signature must be strings");
  }
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() != "fedpod_signed" && it.key() != "payload" && it.key() != "signature" && it.key() != "key") {
      return Status::invalid(where + ": unknown key '" + it.key() + "' in a signed document");
    }
  }
  init_sodium();
  unsigned char pk[crypto_sign_PUBLICKEYBYTES], sig[crypto_sign_BYTES];
  if (!from_base64(public_key, pk, sizeof pk)) return Status::invalid(where + ": the pinned key is not a signing key");
  if (!from_base64(doc["signature"].get<std::string>(), sig, sizeof sig)) {
    return Status::invalid(where + ": signature is not a base64 Ed25519 signature");
  }
  const std::string& text = doc["payload"].get_ref<const std::string&>();
  if (crypto_sign_verify_detached(sig, reinterpret_cast<const unsigned char*>(text.data()), text.size(), pk) != 0) {
    std::string signer;
    if (doc.contains("key") && doc["key"].is_string()) signer = doc["key"].get<std::string>();
    return Status::invalid(where + ": the signature does not verify with the pinned key " + public_key +
                           ": the document was altered, or signed by another key" +
                           (signer.empty() || signer == public_key ? std::string() : " (it names " + signer + ")"));
  }
  nlohmann::json payload = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (payload.is_discarded() || !payload.is_object()) {
    return Status::invalid(where + ": the signed payload is not a JSON object");
  }
  return payload;
}

}  // namespace fedpod
