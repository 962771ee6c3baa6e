// Job runners: a job's model code in its own confined process.
//
// `fedpod worker` never loads or runs model code itself. For each accepted job it
// starts a runner (`fedpod runner`, a hidden subcommand of the same binary) and
// hands it the job: the model reference (a custom model's artifact as a sealed
// in-memory file), the hyperparameters, the datastructure, and the pod's parsed table
// as a read-only in-memory file. The runner builds the model and the splits
// (engine.h's LocalEngine) and answers train and evaluate requests over a private
// socketpair; the model state moves through one shared-memory region that the
// worker creates and seals. The worker keeps the network, identity, policy, audit
// and metrics; the runner has none of them.
//
// Confinement (docs/permissions.md, "What a custom model can and cannot do"):
//   namespaces   bubblewrap (`bwrap`): new user, pid, network, ipc, uts and cgroup
//                namespaces; a root with /usr, /lib*, /etc/ld.so.cache and the fedpod
//                binary read-only, a private /proc, a minimal /dev and an empty tmpfs
//                /tmp (the scratch directory); a cleared environment; it dies with
//                its parent
//   seccomp      a libseccomp filter the runner loads before any model code: no
//                socket but AF_UNIX (no network even outside a network namespace), no
//                new processes (fork, vfork, clone without CLONE_THREAD), no exec, no
//                ptrace or process_vm_*, no mount, namespaces, keyrings, bpf,
//                perf_event_open, module or reboot calls
//   rlimits      address space (sandbox.memory), open files, file size, no core dumps
//   wall clock   loading must answer within sandbox.load_timeout, each train or
//                evaluate within sandbox.step_timeout, or the runner is killed
// Levels: "namespaces+seccomp+rlimits" when bubblewrap works, else
// "seccomp+rlimits" (the model can then read what the pod's user can read), stated
// at start-up, in /metrics (fedpod_worker_sandbox_info) and in hello. pod.yaml
// `sandbox: required` refuses to start without namespaces.
//
// Failures are the job's: a runner that crashes, exceeds a limit, hangs or exits
// fails that job with the reason named; the pod serves the next job with a new
// runner. The runner's memory is returned when it exits.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "fedpod/common/status.h"
#include "fedpod/worker/config.h"
#include "fedpod/worker/engine.h"

namespace fedpod::worker {

// How a runner is confined on this machine.
struct Confinement {
  bool namespaces = false;  // bubblewrap works
  std::string level;        // "namespaces+seccomp+rlimits" or "seccomp+rlimits"
  std::string why_not;      // when !namespaces: what failed
};

// Tries the sandbox once: starts `command` + {"--probe"} under bubblewrap (and, if
// that fails, without it) and checks that it loads its seccomp filter. Throws
// ConfigError when the runner cannot start at all.
Confinement probe_confinement(const std::vector<std::string>& command);

struct RunnerOptions {
  std::vector<std::string> command;  // e.g. {"/usr/bin/fedpod", "runner"}
  Confinement confinement;           // from probe_confinement
  RunnerLimits limits;
};

// Starts a runner for one job and builds its engine there (see above). `artifact`:
// a custom model's bytes (empty for a built-in). Errors: the runner's own (model,
// hyperparameters, splits), or why it failed (crash, limit, timeout), naming the
// limits. `cancel` (may be null) aborts the start.
StatusOr<std::unique_ptr<JobEngine>> start_runner(const EngineSpec& spec, const data::Table& table,
                                                  std::string_view artifact, const RunnerOptions& options,
                                                  const std::atomic<bool>* cancel = nullptr);

// The runner's side: `fedpod runner --fd N [--allow-inet] [--probe]`. Loads the
// seccomp filter, then serves the worker on socket N until it closes, and ends the
// process with _exit (0; 2 on a broken socket; 3 when the filter cannot load).
int runner_main(int argc, char** argv, const Runtime& runtime = Runtime());

}  // namespace fedpod::worker
