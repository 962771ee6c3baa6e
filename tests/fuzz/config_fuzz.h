// What job_spec_fuzz.cpp and pod_config_fuzz.cpp share: a fixed folder the parsed
// file's relative paths resolve against, holding the files the committed seeds (the
// repo's examples) refer to, so the fuzzer gets past them; and an environment
// without FEDPOD_HUB / FEDPOD_TOKEN / FEDPOD_KEY_FILE, so runs do not depend on the
// shell they started in.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "fedpod/protocol/curve.h"

namespace fedpod::fuzz {

// The folder (created once per process under $TMPDIR or /tmp, removed at exit):
//   local/keys/{pod-a,pod-b,pod-c,modeller}.{key,pub}   CURVE key pairs
//   owner.token                                         a hub token
// HOME points at it too, so "~/..." paths stay inside.
inline const std::string& config_base_dir() {
  static const std::string* dir = [] {
    namespace fs = std::filesystem;
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/fedpod-fuzz-XXXXXX";
    if (!::mkdtemp(pattern.data())) std::abort();
    auto* d = new std::string(pattern);
    fs::create_directories(*d + "/local/keys");
    for (const char* name : {"pod-a", "pod-b", "pod-c", "modeller"}) {
      if (!protocol::write_key_files(*d + "/local/keys/" + name, protocol::generate_curve_keypair(),
                                     true)
               .ok()) {
        std::abort();
      }
    }
    std::ofstream(*d + "/owner.token") << "fuzz-token\n";
    ::unsetenv("FEDPOD_HUB");
    ::unsetenv("FEDPOD_TOKEN");
    ::unsetenv("FEDPOD_KEY_FILE");
    ::setenv("HOME", d->c_str(), 1);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(config_base_dir(), ec);
    });
    return d;
  }();
  return *dir;
}

}  // namespace fedpod::fuzz
