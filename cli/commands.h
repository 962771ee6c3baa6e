// Subcommands of the fedpod binary. Each add_* registers its options and callback;
// callbacks throw CommandExit to end the process with a specific code.
#pragma once

#include <CLI/CLI.hpp>

#include <stdexcept>

namespace fedpod::cli {

// Exit codes: 0 ok, 1 job failed, 2 bad configuration or usage.
inline constexpr int kExitFailed = 1;
inline constexpr int kExitConfig = 2;

struct CommandExit {
  int code;
};

void add_worker(CLI::App& app);
void add_coordinator(CLI::App& app);
void add_demo(CLI::App& app);
void add_hub(CLI::App& app);
void add_tls(CLI::App& app);
void add_user(CLI::App& app);
void add_model(CLI::App& app);
void add_pod(CLI::App& app);
void add_keys(CLI::App& app);    // keys_cmd.cpp: fedpod keys generate
void add_access(CLI::App& app);  // access_cmds.cpp: roles, access requests, pod policy
void add_policy(CLI::App& app);  // policy_cmd.cpp: fedpod policy sign | verify
void add_audit(CLI::App& app);   // audit_cmd.cpp: fedpod audit verify
void add_privacy(CLI::App& app); // privacy_cmd.cpp: fedpod privacy status | epsilon

}  // namespace fedpod::cli
