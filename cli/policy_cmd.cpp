// fedpod policy sign | verify: signed access policies for air-gapped pods.
//
// A pod accepts only a policy signed by the key it pins (pod.yaml policy.signing_key).
// A hub-served policy is signed by the hub; an air-gapped pod's policy is written by
// hand (YAML, worker/policy.h) and signed here by its owner:
//
//   fedpod keys generate-signing -o ~/.config/fedpod/bob          # once: bob.sign.key, bob.sign.pub
//   fedpod policy sign --key ~/.config/fedpod/bob.sign.key policy.yaml -o policy.signed.json --expires 90d
//   fedpod policy verify --signing-key-file bob.sign.pub --pod pod-a policy.signed.json
#include <chrono>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/files.h"
#include "fedpod/common/signing.h"
#include "fedpod/worker/policy.h"

namespace fedpod::cli {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& message, int code = kExitFailed) {
  std::cerr << "fedpod: " << what << ": " << message << "\n";
  throw CommandExit{code};
}

}  // namespace

void add_policy(CLI::App& app) {
  auto* policy = app.add_subcommand(
      "policy", "Signed access policies: sign an air-gapped pod's policy file, or check one");
  policy->require_subcommand(1);

  struct SignArgs {
    std::string key, in, out, expires = "90d";
  };
  auto s = std::make_shared<SignArgs>();
  auto* sign = policy->add_subcommand(
      "sign",
      "Sign a policy file (YAML or JSON, docs/permissions.md) with your signing key: the pod pins your .sign.pub "
      "(policy.signing_key) and refuses the file if it is altered, for another pod, expired or older than one it "
      "already accepted");
  sign->add_option("file", s->in, "the policy to sign (YAML or JSON)")->required()->check(CLI::ExistingFile);
  sign->add_option("--key", s->key, "your signing key pair (.sign.key, from `fedpod keys generate-signing`)")
      ->required()
      ->check(CLI::ExistingFile);
  sign->add_option("-o,--output", s->out, "the signed policy to write (JSON, mode 0644)")->required();
  sign->add_option("--expires", s->expires,
                   "how long the pod may use it (e.g. 30d, 12h); sign a new one before then")
      ->capture_default_str();
  sign->callback([s] {
    auto keys = read_signing_key_file(s->key);
    if (!keys.ok()) fail("policy sign", keys.status().message());
    if (keys->secret_key.empty()) fail("policy sign", s->key + " holds only a public key; give the .sign.key file");
    auto p = worker::load_policy_file(s->in);
    if (!p.ok()) fail("policy sign", p.status().message());
    std::chrono::milliseconds ttl{0};
    try {
      ttl = parse_duration(s->expires, "--expires");
    } catch (const ConfigError& e) {
      fail("policy sign", e.what(), kExitConfig);
    }
    if (ttl.count() <= 0) fail("policy sign", "--expires must be positive", kExitConfig);
    const std::string text =
        worker::sign_policy(*p, *keys, std::chrono::duration_cast<std::chrono::seconds>(ttl));
    const std::string err = write_file_durably(s->out, text + "\n");
    if (!err.empty()) fail("policy sign", err);
    auto signed_policy = worker::verify_signed_policy(nlohmann::json::parse(text), keys->public_key, "", s->out);
    if (!signed_policy.ok()) fail("policy sign", signed_policy.status().message());
    std::cout << "wrote " << s->out << ": the policy of pod " << signed_policy->pod << ", version "
              << signed_policy->version << ", valid until " << worker::format_utc(*signed_policy->expires_at)
              << ", signed by " << keys->public_key << "\n";
  });

  struct VerifyArgs {
    std::string key, key_file, pod, in;
  };
  auto v = std::make_shared<VerifyArgs>();
  auto* verify = policy->add_subcommand(
      "verify", "Check a signed policy file as a pod would: signature, pod, issue and expiry times");
  verify->add_option("file", v->in, "the signed policy (JSON)")->required()->check(CLI::ExistingFile);
  auto* k = verify->add_option("--signing-key", v->key, "the public key the pod pins (44 base64 characters)");
  verify->add_option("--signing-key-file", v->key_file, "or the .sign.pub (or .sign.key) file holding it")
      ->excludes(k);
  verify->add_option("--pod", v->pod, "the pod it must be for (default: any)");
  verify->callback([v] {
    std::string key = v->key;
    if (!v->key_file.empty()) {
      auto kp = read_signing_key_file(v->key_file);
      if (!kp.ok()) fail("policy verify", kp.status().message());
      key = kp->public_key;
    }
    if (key.empty()) fail("policy verify", "give --signing-key or --signing-key-file", kExitConfig);
    auto p = worker::load_signed_policy_file(v->in, key, v->pod);
    if (!p.ok()) fail("policy verify", p.status().message());
    const bool expired = *p->expires_at <= std::chrono::system_clock::now();
    std::cout << v->in << ": signed by " << key << ", pod " << p->pod << ", version " << p->version << ", issued "
              << worker::format_utc(*p->issued_at) << ", expires " << worker::format_utc(*p->expires_at)
              << (expired ? " (EXPIRED)" : "") << "; " << p->users.size() << " users, " << p->grants.size()
              << " grants\n";
    if (expired) throw CommandExit{kExitFailed};
  });
}

}  // namespace fedpod::cli
