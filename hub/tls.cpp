#include "fedpod/hub/tls.h"

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>

namespace fedpod::hub {
namespace {

namespace fs = std::filesystem;

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(std::FILE* p) const { std::fclose(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;

Status add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Free> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return Status::invalid("tls: cannot add the certificate extension '" + value + "'");
  }
  return Status();
}

// A certificate for `key`, signed by `issuer_key` (self-signed when issuer is null).
StatusOr<Cert> make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, long days,
                         bool ca, const std::string& san) {
  Cert cert(X509_new());
  if (!cert) return Status::internal("tls: out of memory");
  X509_set_version(cert.get(), 2);
  std::unique_ptr<BIGNUM, Free> serial(BN_new());
  if (!serial || BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      !BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()))) {
    return Status::internal("tls: cannot draw a serial number");
  }
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300);  // tolerate a clock a little behind
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), days * 86400L);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("fedpod development"), -1,
                             -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  Status st;
  if (ca) {
    for (auto [nid, v] : {std::pair{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                          std::pair{NID_key_usage, "critical,keyCertSign,cRLSign"},
                          std::pair{NID_subject_key_identifier, "hash"}}) {
      if (!(st = add_ext(cert.get(), signer, nid, v)).ok()) return st;
    }
  } else {
    for (auto [nid, v] : {std::pair{NID_basic_constraints, "critical,CA:FALSE"},
                          std::pair{NID_key_usage, "critical,digitalSignature"},
                          std::pair{NID_ext_key_usage, "serverAuth"},
                          std::pair{NID_subject_key_identifier, "hash"},
                          std::pair{NID_authority_key_identifier, "keyid:always"}}) {
      if (!(st = add_ext(cert.get(), signer, nid, v)).ok()) return st;
    }
    if (!(st = add_ext(cert.get(), signer, NID_subject_alt_name, san)).ok()) return st;
  }
  if (X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) == 0) {
    return Status::internal("tls: cannot sign the certificate for " + cn);
  }
  return cert;
}

// Writes `write(FILE*)` to `path` via a temporary file with `mode`, then renames.
template <typename F>
Status write_pem(const std::string& path, mode_t mode, F write) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  const mode_t old = ::umask(0077);
  std::unique_ptr<std::FILE, Free> f(std::fopen(tmp.c_str(), "wx"));
  ::umask(old);
  if (!f) return Status::invalid("tls: cannot write " + tmp);
  ::fchmod(fileno(f.get()), mode);
  if (write(f.get()) != 1 || std::fflush(f.get()) != 0 || ::fsync(fileno(f.get())) != 0) {
    return Status::invalid("tls: cannot write " + tmp);
  }
  f.reset();
  if (std::rename(tmp.c_str(), path.c_str()) != 0) return Status::invalid("tls: cannot write " + path);
  return Status();
}

}  // namespace

StatusOr<DevCaResult> make_dev_ca(const std::string& dir, const std::vector<std::string>& names, int days) {
  if (names.empty()) return Status::invalid("tls: give at least one host name or IP address for the certificate");
  if (days < 1 || days > 3650) return Status::invalid("tls: --days must be 1..3650, got " + std::to_string(days));
  std::string san;
  for (const auto& n : names) {
    in_addr v4{};
    in6_addr v6{};
    if (inet_pton(AF_INET, n.c_str(), &v4) == 1 || inet_pton(AF_INET6, n.c_str(), &v6) == 1) {
      san += (san.empty() ? "" : ",") + std::string("IP:") + n;
      continue;
    }
    const bool ok = !n.empty() && n.size() <= 253 && n.front() != '.' && n.front() != '-' &&
                    n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*") ==
                        std::string::npos;
    if (!ok) return Status::invalid("tls: '" + n + "' is neither a DNS name nor an IP address");
    san += (san.empty() ? "" : ",") + std::string("DNS:") + n;
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::invalid("tls: cannot create " + dir + ": " + ec.message());
  DevCaResult r;
  r.ca_cert = (fs::path(dir) / "ca.crt").string();
  r.ca_key = (fs::path(dir) / "ca.key").string();
  r.cert = (fs::path(dir) / "hub.crt").string();
  r.key = (fs::path(dir) / "hub.key").string();

  Key ca_key;
  Cert ca_cert;
  const bool have_cert = fs::exists(r.ca_cert), have_key = fs::exists(r.ca_key);
  if (have_cert != have_key) {
    return Status::invalid("tls: " + dir + " has only one of ca.crt and ca.key; remove it or restore the other");
  }
  if (have_cert) {
    std::unique_ptr<std::FILE, Free> fc(std::fopen(r.ca_cert.c_str(), "rb")), fk(std::fopen(r.ca_key.c_str(), "rb"));
    if (fc) ca_cert.reset(PEM_read_X509(fc.get(), nullptr, nullptr, nullptr));
    if (fk) ca_key.reset(PEM_read_PrivateKey(fk.get(), nullptr, nullptr, nullptr));
    if (!ca_cert || !ca_key) return Status::invalid("tls: cannot read the CA in " + dir + " (ca.crt, ca.key: PEM)");
    if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1) {
      return Status::invalid("tls: " + r.ca_key + " is not the key of " + r.ca_cert);
    }
  } else {
    ca_key.reset(EVP_EC_gen("P-256"));
    if (!ca_key) return Status::internal("tls: cannot generate the CA key");
    auto c = make_cert(ca_key.get(), "fedpod development CA", nullptr, nullptr, 3650, true, "");
    if (!c.ok()) return c.status();
    ca_cert = std::move(*c);
    Status st = write_pem(r.ca_key, 0600, [&](std::FILE* f) {
      return PEM_write_PrivateKey(f, ca_key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    });
    if (!st.ok()) return st;
    st = write_pem(r.ca_cert, 0644, [&](std::FILE* f) { return PEM_write_X509(f, ca_cert.get()); });
    if (!st.ok()) return st;
    r.created_ca = true;
  }
  Key key(EVP_EC_gen("P-256"));
  if (!key) return Status::internal("tls: cannot generate the hub key");
  auto cert = make_cert(key.get(), names.front(), ca_cert.get(), ca_key.get(), days, false, san);
  if (!cert.ok()) return cert.status();
  Status st = write_pem(r.key, 0600, [&](std::FILE* f) {
    return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  if (!st.ok()) return st;
  // The chain the hub presents: its certificate (the CA is what clients pin).
  st = write_pem(r.cert, 0644, [&](std::FILE* f) { return PEM_write_X509(f, cert->get()); });
  if (!st.ok()) return st;
  return r;
}

}  // namespace fedpod::hub
