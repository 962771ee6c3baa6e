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
// A coordinator builds a custom model the same way (load_in_runner below): the
// runner loads it, says what hyperparameters it declares, runs create_model and
// returns the layout and initial values, then ends.
//
// Confinement (docs/permissions.md, "What a custom model can and cannot do"):
//   namespaces   bubblewrap (`bwrap`): new user, pid, network, ipc, uts and cgroup
//                namespaces; a root with /usr, /lib*, /etc/ld.so.cache and the fedpod
//                binary read-only, a private /proc, a minimal /dev and an empty tmpfs
//                /tmp (the scratch directory); a cleared environment; it dies with
//                its parent
//   seccomp      a libseccomp filter the runner loads before any model code: no
//                socket but AF_UNIX (no network even outside a network namespace;
//                without namespaces no socket at all, unless NCCL needs inet), no
//                new processes (fork, vfork, clone without CLONE_THREAD), no exec, no
//                ptrace or process_vm_*, no mount, namespaces, keyrings, bpf,
//                perf_event_open, module or reboot calls
//   rlimits      address space (sandbox.memory), open files, file size, no core dumps
//   wall clock   loading must answer within sandbox.load_timeout, each train or
//                evaluate within sandbox.step_timeout, or the runner is killed
//   landlock     only without namespaces (Linux 5.13+): a Landlock layer the runner
//                adds before any model code, under which it opens only the system's
//                libraries and programs (read-only), its own /proc/PID, a few /proc
//                and /sys files, /dev/null and the random devices, and its scratch
//                directory; with Landlock ABI 6 it also cannot reach abstract unix
//                sockets or signal processes outside the layer
// Levels: "namespaces+seccomp+rlimits" when bubblewrap works, else
// "landlock+seccomp+rlimits" where the kernel has Landlock, else "seccomp+rlimits"
// (the model can then read what the pod's user can read), stated at start-up, in
// /metrics (fedpod_worker_sandbox_info) and in hello. pod.yaml `sandbox: required`
// refuses to start without namespaces.
//
// Failures are the job's: a runner that crashes, exceeds a limit, hangs or exits
// fails that job with the reason named; the pod serves the next job with a new
// runner. The runner's memory is returned when it exits.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fedpod/common/status.h"
#include "fedpod/worker/config.h"
#include "fedpod/model/hyperparameters.h"
#include "fedpod/worker/engine.h"

namespace spdlog {
class logger;
}

namespace fedpod::worker {

// How a runner is confined on this machine.
struct Confinement {
  bool namespaces = false;  // bubblewrap works
  bool landlock = false;    // without namespaces: Landlock confines the runner's files
  std::string level;        // "namespaces+seccomp+rlimits", "landlock+seccomp+rlimits" or "seccomp+rlimits"
  std::string why_not;      // when !namespaces: what failed (and, without Landlock, why not)
  std::string gap;          // when !namespaces: what model code can still do, in words
};

// The kernel's Landlock ABI version (1, 2, ...), or -errno when it has none (ENOSYS:
// not built in; EOPNOTSUPP: disabled at boot).
int landlock_abi();

// Tries the sandbox once: starts `command` + {"--probe"} under bubblewrap (and, if
// that fails, without it) and checks that it loads its seccomp filter. Throws
// ConfigError when the runner cannot start at all.
Confinement probe_confinement(const std::vector<std::string>& command);

struct RunnerOptions {
  std::vector<std::string> command;  // e.g. {"/usr/bin/fedpod", "runner"}
  Confinement confinement;           // from probe_confinement
  RunnerLimits limits;
  // Where the runner's stdout and stderr go (what model code prints is its author's
  // text): line by line, made printable and cut at 1 KB, as event=runner_output, at
  // most kMaxRunnerOutputBytes a runner, the rest counted. Null: the same lines to
  // this process's stderr.
  std::shared_ptr<spdlog::logger> log;
};

// What one runner's output may add to its host's log.
constexpr size_t kMaxRunnerOutputBytes = size_t{256} << 10;

// Starts a runner for one job and builds its engine there (see above). `artifact`:
// a custom model's bytes (empty for a built-in). Errors: the runner's own (model,
// hyperparameters, splits), or why it failed (crash, limit, timeout), naming the
// limits. `cancel` (may be null) aborts the start.
StatusOr<std::unique_ptr<JobEngine>> start_runner(const EngineSpec& spec, const data::Table& table,
                                                  std::string_view artifact, const RunnerOptions& options,
                                                  const std::atomic<bool>* cancel = nullptr);

// A model built in a runner for a coordinator, which needs only what the model
// declares, its layout and its initial values: a modeller running someone else's
// public model runs none of its code in their own process either.
//
//   auto m = load_in_runner("alice/net:3", "plugin", bytes, options);  // static constructors run there
//   m->hyperparameters();                                              // what it declares, if anything
//   auto built = m->create({64}, 10, hp, seed);                        // create_model, seeded
//   built->layout; built->state;                                       // float32, layout order
//
// The runner ends when the ModelRunner is destroyed. Errors are the model's own (as
// kInvalidArgument when create_model rejects its input) or the runner's fate (crash,
// limit, timeout: kInternal), naming `who`, the limits and the confinement.
struct BuiltModel {
  std::vector<model::ParamInfo> layout;
  torch::Tensor state;  // CPU float32, numel = the layout's total
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const std::optional<model::HyperparameterSpec>& hyperparameters() const = 0;
  // torch::manual_seed(seed), then create_model(input_shape, num_classes, hp); once.
  virtual StatusOr<BuiltModel> create(const std::vector<int64_t>& input_shape, int64_t num_classes,
                                      const Hyperparameters& hp, uint64_t seed) = 0;
  virtual const std::string& confinement() const = 0;
};

// `format`: "torchscript" or "plugin" with `artifact` its bytes; "" for a built-in
// model named `name`. Loading must finish within options.limits.load_timeout, and so
// must create().
StatusOr<std::unique_ptr<ModelRunner>> load_in_runner(const std::string& name, const std::string& format,
                                                      std::string_view artifact, const RunnerOptions& options,
                                                      const std::string& who = "coordinator");

// The runner's side: `fedpod runner --fd N [--allow-inet] [--probe]`. Loads the
// seccomp filter, then serves the worker on socket N until it closes, and ends the
// process with _exit (0; 2 on a broken socket; 3 when the filter cannot load).
int runner_main(int argc, char** argv, const Runtime& runtime = Runtime());

}  // namespace fedpod::worker
