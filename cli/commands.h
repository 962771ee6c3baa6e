// Subcommands of the fedpod binary. Each add_* registers its options and callback;
// callbacks throw CommandExit to end the process with a specific code.
#pragma once

#include <CLI/CLI.hpp>

#include <atomic>
#include <stdexcept>
#include <string>

namespace fedpod::cli {

// Exit codes (docs/errors.md): 0 ok, 1 the operation failed (a job, a hub call, a
// check), 2 bad usage or configuration (command-line parse errors included); a job
// stopped by a signal exits 128 + the signal (130 for SIGINT, 143 for SIGTERM).
inline constexpr int kExitFailed = 1;
inline constexpr int kExitConfig = 2;

// A number above zero, for options such as --rounds; unlike CLI::PositiveNumber its
// message is short: "--rounds: must be above 0, got 0".
inline const CLI::Validator kPositive(
    [](std::string& value) -> std::string {
      double d = 0;
      if (!CLI::detail::lexical_cast(value, d)) return "must be a number, got '" + value + "'";
      return d > 0 ? std::string() : "must be above 0, got " + value;
    },
    "POSITIVE");

struct CommandExit {
  int code;
};

void add_worker(CLI::App& app);
void add_coordinator(CLI::App& app);
void add_job(CLI::App& app);  // coordinator_cmd.cpp: fedpod job stop
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
void add_simulate(CLI::App& app);  // simulate_cmd.cpp: fedpod simulate sim.yaml

// coordinator_cmd.cpp: the first SIGINT/SIGTERM sets job_stop_signal() (the job
// ends between steps, Coordinator::set_stop_flag); a second exits at once.
std::atomic<int>& job_stop_signal();
void install_job_stop_handlers();

// version.cpp: the version and the build's options (NCCL, TLS, sandbox, ...).
std::string version_text();

}  // namespace fedpod::cli
