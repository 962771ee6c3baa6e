// Where the hub is and who you are, for the CLI commands that talk to a hub
// (hub_client_cmds.cpp: user, model, pod; access_cmds.cpp: access).
//
// --hub / --token, else FEDPOD_HUB / FEDPOD_TOKEN, else ~/.config/fedpod/config.yaml
// (keys `hub` and `token`; `user register --save` writes it with mode 0600).
// Output is a table for people, JSON with --json. A missing hub or token, or a
// malformed argument, is a ConfigError (exit 2); a call the hub refuses exits 1
// with the hub's message on stderr (check()).
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/hub_url.h"
#include "fedpod/coordinator/job_spec.h"
#include "fedpod/hub/client.h"

namespace fedpod::cli {

struct HubAccess {
  std::string hub;
  std::string hub_ca;
  std::string token;
  bool json = false;
};

inline std::filesystem::path config_path() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  std::filesystem::path base = xdg && *xdg ? std::filesystem::path(xdg)
                                           : std::filesystem::path(home ? home : ".") / ".config";
  return base / "fedpod" / "config.yaml";
}

// Fills what flags left empty from the environment, then the config file.
inline void resolve(HubAccess& a) {
  if (a.hub.empty() && std::getenv("FEDPOD_HUB")) a.hub = std::getenv("FEDPOD_HUB");
  if (a.token.empty() && std::getenv("FEDPOD_TOKEN")) a.token = std::getenv("FEDPOD_TOKEN");
  if (a.hub_ca.empty() && std::getenv("FEDPOD_HUB_CA")) a.hub_ca = std::getenv("FEDPOD_HUB_CA");
  const std::filesystem::path cfg = config_path();
  if ((a.hub.empty() || a.token.empty() || a.hub_ca.empty()) && std::filesystem::exists(cfg)) {
    YAML::Node root = load_yaml_file(cfg.string());
    check_keys(root, {"hub", "token", "hub_ca"}, cfg.string());
    if (a.hub.empty() && root["hub"]) a.hub = root["hub"].as<std::string>();
    if (a.token.empty() && root["token"]) a.token = root["token"].as<std::string>();
    if (a.hub_ca.empty() && root["hub_ca"]) a.hub_ca = root["hub_ca"].as<std::string>();
  }
  if (a.hub.empty()) {
    throw ConfigError(
        "no hub given: use --hub https://HOST:PORT, set FEDPOD_HUB, or run `fedpod user register "
        "--save`");
  }
}

// For `coordinator run` and `job stop`: the saved hub, token and CA
// (`user register --save`) for a job that names none, after the job file and the
// environment. They become FEDPOD_HUB / FEDPOD_TOKEN / FEDPOD_HUB_CA where those are
// unset, which the job file loader reads.
inline void export_saved_hub_config() {
  const std::filesystem::path cfg = config_path();
  if (!std::filesystem::exists(cfg)) return;
  YAML::Node root = load_yaml_file(cfg.string());
  check_keys(root, {"hub", "token", "hub_ca"}, cfg.string());
  for (const auto& [key, var] : {std::pair{"hub", "FEDPOD_HUB"}, std::pair{"token", "FEDPOD_TOKEN"},
                                 std::pair{"hub_ca", "FEDPOD_HUB_CA"}}) {
    if (root[key] && !std::getenv(var)) ::setenv(var, root[key].as<std::string>().c_str(), 0);
  }
}

inline std::unique_ptr<hub::Client> connect(HubAccess& a) {
  resolve(a);
  HubUrl url = parse_hub_url(a.hub, "hub");
  url.ca_file = a.hub_ca;
  return std::make_unique<hub::Client>(url, a.token);
}

inline void require_token(const HubAccess& a) {
  if (a.token.empty())
    throw ConfigError(
        "this command needs a token: use --token, set FEDPOD_TOKEN, or `fedpod user register "
        "--save`");
}

// Exits 1 with the hub's message when `st` is an error.
inline void check(const Status& st, const std::string& what) {
  if (st.ok()) return;
  std::cerr << "fedpod: " << what << ": " << st.to_string() << "\n";
  throw CommandExit{kExitFailed};
}

// "alice/net" or "alice/net:3" (0 = latest).
struct ModelName {
  std::string user, ref;
  int64_t version = 0;
};
inline ModelName parse_model(const std::string& text) {
  ModelName m;
  std::string rest = text;
  auto colon = rest.find(':');
  if (colon != std::string::npos) {
    const std::string v = rest.substr(colon + 1);
    if (v != "latest") {
      try {
        size_t used = 0;
        m.version = std::stoll(v, &used);
        if (used != v.size() || m.version < 1) throw std::invalid_argument("");
      } catch (const std::exception&) {
        throw ConfigError("model: version must be a positive number or 'latest', got '" + v + "'");
      }
    }
    rest = rest.substr(0, colon);
  }
  auto slash = rest.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == rest.size()) {
    throw ConfigError("model: expected USER/REF[:VERSION], got '" + text + "'");
  }
  m.user = rest.substr(0, slash);
  m.ref = rest.substr(slash + 1);
  return m;
}

inline void add_access_options(CLI::App* cmd, HubAccess& a, bool json = true) {
  cmd->add_option("--hub", a.hub, "hub URL, https://HOST:PORT (env FEDPOD_HUB); http:// only on loopback");
  cmd->add_option("--hub-ca", a.hub_ca,
                  "PEM CA file the hub's certificate is verified against (env FEDPOD_HUB_CA; default: the system "
                  "store)");
  cmd->add_option("--token", a.token, "API token (env FEDPOD_TOKEN)");
  if (json) cmd->add_flag("--json", a.json, "print JSON instead of a table");
}

}  // namespace fedpod::cli
