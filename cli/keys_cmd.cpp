// fedpod keys generate | show: CURVE key pairs for modellers and pods.
#include <iostream>

#include "commands.h"
#include "fedpod/common/signing.h"
#include "fedpod/protocol/curve.h"

namespace fedpod::cli {

void add_keys(CLI::App& app) {
  auto* keys = app.add_subcommand("keys", "CURVE key pairs that identify modellers and pods");
  keys->require_subcommand(1);

  struct GenArgs {
    std::string out;
    bool force = false;
  };
  auto g = std::make_shared<GenArgs>();
  auto* gen = keys->add_subcommand(
      "generate", "Write a new key pair: OUT.key (secret, mode 0600) and OUT.pub (public, register it on the hub)");
  gen->add_option("-o,--out", g->out, "path without extension, e.g. ~/.config/fedpod/alice")->required();
  gen->add_flag("--force", g->force, "overwrite existing files (the old identity is lost)");
  gen->callback([g] {
    auto pair = protocol::generate_curve_keypair();
    Status st = protocol::write_key_files(g->out, pair, g->force);
    if (!st.ok()) {
      std::cerr << "fedpod: " << st.message() << "\n";
      throw CommandExit{kExitFailed};
    }
    std::cout << "wrote " << g->out << ".key (secret, mode 0600) and " << g->out << ".pub\n"
              << "public key: " << pair.public_key << "\n";
  });

  auto sg = std::make_shared<GenArgs>();
  auto* gen_sign = keys->add_subcommand(
      "generate-signing",
      "Write a new Ed25519 signing key pair: OUT.sign.key (secret, mode 0600) and OUT.sign.pub (pin it in a pod's "
      "policy.signing_key); `fedpod policy sign` signs a pod's policy file with it");
  gen_sign->add_option("-o,--out", sg->out, "path without extension, e.g. ~/.config/fedpod/bob")->required();
  gen_sign->add_flag("--force", sg->force, "overwrite existing files (pods pinning the old key refuse new policies)");
  gen_sign->callback([sg] {
    auto pair = generate_signing_keypair();
    Status st = write_signing_key_files(sg->out, pair, sg->force);
    if (!st.ok()) {
      std::cerr << "fedpod: " << st.message() << "\n";
      throw CommandExit{kExitFailed};
    }
    std::cout << "wrote " << sg->out << ".sign.key (secret, mode 0600) and " << sg->out << ".sign.pub\n"
              << "signing key: " << pair.public_key << "\n";
  });

  auto path = std::make_shared<std::string>();
  auto* show = keys->add_subcommand("show", "Print the public key of a .key or .pub file (checking the file)");
  show->add_option("file", *path, "key file")->required();
  show->callback([path] {
    auto k = protocol::read_key_file(*path);
    if (!k.ok()) {
      std::cerr << "fedpod: " << k.status().message() << "\n";
      throw CommandExit{kExitFailed};
    }
    std::cout << k->public_key << "\n";
  });
}

}  // namespace fedpod::cli
