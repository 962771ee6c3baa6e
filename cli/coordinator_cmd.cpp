// fedpod coordinator run job.yaml
#include <signal.h>
#include <torch/torch.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "commands.h"
#include "fedpod/common/peer_text.h"
#include "hub_access.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/common/utc.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/metrics/metrics.h"

namespace fedpod::cli {
namespace {

// The signal that asked the running job to stop (0: none). A second signal exits at
// once, with the same code.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  int expected = 0;
  if (!g_stop_signal.compare_exchange_strong(expected, sig)) _exit(128 + sig);
  static const char kMessage[] =
      "\nfedpod: stopping the job: the pods end it and the files are written (a second Ctrl-C exits at once)\n";
  (void)!::write(STDERR_FILENO, kMessage, sizeof kMessage - 1);
}

}  // namespace

std::atomic<int>& job_stop_signal() { return g_stop_signal; }

void install_job_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

namespace {


struct RunArgs {
  std::string job;
  std::string output_dir;
  std::string metrics_listen;
  std::string metrics_linger;
  std::string log_level = "info";
  bool resume = false;
  bool json = false;   // events on stdout, one JSON object per line
  bool quiet = false;  // no progress; errors still go to stderr
  int threads = 1;     // libtorch intra-op threads for the coordinator's own tensor math
};

void run_job(const RunArgs& args) {
  export_saved_hub_config();
  coordinator::JobSpec spec = coordinator::load_job_spec(args.job);
  if (!args.output_dir.empty()) spec.output_dir = args.output_dir;
  spec.resume = args.resume;
  if (!args.metrics_listen.empty()) {
    std::string host;
    int port = 0;
    Status st = metrics::parse_listen_address(args.metrics_listen, host, port);
    if (!st.ok()) throw ConfigError("--metrics-listen: " + st.message());
    spec.metrics_listen = args.metrics_listen;
  }
  std::chrono::milliseconds linger{0};
  if (!args.metrics_linger.empty()) linger = parse_duration(args.metrics_linger, "--metrics-linger");
  Logger log = make_logger("coordinator", args.log_level);
  metrics::set_component("coordinator");
  // The coordinator's tensor math is a few memory-bound folds per pod per round. On
  // more than one intra-op thread libtorch keeps an OpenMP team whose helpers spin
  // for milliseconds after each fold, taking a core from the threads that open the
  // next pod's update and from CURVE's I/O thread (on two cores, in one sitting: 1M x 2
  // rounds 0.019-0.022 s on two threads, 0.013-0.015 s on one; 10M x 8 0.50-0.52 s
  // and 0.44-0.45 s).
  torch::set_num_threads(args.threads);
  zmq::context_t ctx(1);
  // A custom model's code never runs in this process: it is built in a confined job
  // runner, this binary's hidden `runner` subcommand (worker/runner.h), as on pods.
  spec.runner_command = {self_executable(), "runner"};
  // Progress for people on stdout; with --json the events take stdout and people's
  // lines (the resume hint) go to stderr; --quiet prints neither.
  std::ostream none(nullptr);
  std::ostream& human = args.json || args.quiet ? none : std::cout;
  std::ostream& hints = args.json || args.quiet ? std::cerr : std::cout;
  coordinator::Coordinator c(ctx, spec, log, human);
  if (args.json) c.set_event_stream(&std::cout);
  c.set_stop_flag(&job_stop_signal());
  install_job_stop_handlers();
  auto result = c.run();
  if (c.job_stopped()) {
    const int sig = job_stop_signal().load();
    if (spec.checkpoint) {
      hints << "to continue it: fedpod coordinator run " << args.job << " --resume"
                << (args.output_dir.empty() ? std::string() : " --output-dir " + args.output_dir) << std::endl;
    } else {
      hints << "the job has checkpoint: false, so running it again starts it over" << std::endl;
    }
    // 128 + the signal, as a shell reports a process the signal ended (130 for Ctrl-C).
    throw CommandExit{128 + sig};
  }
  // A job is over in seconds; Prometheus scrapes every 15-60 s. Lingering keeps the
  // final values on /metrics long enough to be collected.
  if (linger.count() > 0 && c.metrics_port() != 0) {
    hints << "serving the final metrics on port " << c.metrics_port() << " for " << linger.count() / 1000.0
              << " s (--metrics-linger)" << std::endl;
    std::this_thread::sleep_for(linger);
  }
  if (!result.ok()) {
    std::cerr << "fedpod: job " << spec.job_id << " failed: " << result.status().to_string() << "\n";
    throw CommandExit{c.job_config_error() ? kExitConfig : kExitFailed};
  }
}

struct StopArgs {
  std::string job;
  std::string reason = "stopped by its owner (fedpod job stop)";
  std::string log_level = "warn";
};

// fedpod job stop job.yaml: for a coordinator that died or cannot be reached. A
// running coordinator is stopped with Ctrl-C or SIGTERM instead: it would give a pod
// the job again at its next round.
void stop_job(const StopArgs& args) {
  export_saved_hub_config();
  coordinator::JobSpec spec = coordinator::load_job_spec(args.job);
  Logger log = make_logger("job-stop", args.log_level);
  zmq::context_t ctx(1);
  coordinator::Coordinator c(ctx, spec, log, std::cout);
  auto ended = c.end_job_on_pods(args.reason);
  if (!ended.ok()) {
    std::cerr << "fedpod: job stop: " << ended.status().to_string() << "\n";
    throw CommandExit{kExitFailed};
  }
  int failed = 0;
  for (const auto& [name, r] : *ended) {
    if (r.outcome == "ok") {
      std::cout << "  " << name << ": ended job " << spec.job_id << "\n";
    } else if (r.code == to_string(StatusCode::kFailedPrecondition)) {
      std::cout << "  " << name << ": does not hold job " << spec.job_id << " (nothing to stop)\n";
    } else {
      ++failed;
      std::cout << "  " << name << ": " << r.outcome << ": " << r.error << "\n";
    }
  }
  // The history of a coordinator that died says "running": say what happened.
  const std::filesystem::path history = std::filesystem::path(spec.output_dir) / "history.json";
  std::ifstream in(history);
  auto h = nlohmann::json::parse(in, nullptr, false);
  if (!h.is_discarded() && h.value("job_id", "") == spec.job_id && h.value("status", "") == "running") {
    h["status"] = "stopped";
    h["stopped"] = {{"signal", "fedpod job stop"}, {"at", now_utc()}};
    coordinator::write_file_atomic(history.string(), json_text(h, 2) + "\n");
    std::cout << history.string() << ": status stopped\n";
  }
  if (failed > 0) {
    std::cerr << "fedpod: job stop: " << failed << " pod(s) could not be told; they end the job after their "
              << "job_idle_timeout\n";
    throw CommandExit{kExitFailed};
  }
}

}  // namespace

void add_job(CLI::App& app) {
  auto* job = app.add_subcommand("job", "Control a job outside its coordinator");
  job->require_subcommand(1);
  auto args = std::make_shared<StopArgs>();
  auto* stop = job->add_subcommand(
      "stop",
      "Tell every pod of a job to end it now (the job's key_file signs in as its owner); for a coordinator that "
      "died or cannot be reached; stop a running coordinator with Ctrl-C or SIGTERM instead");
  stop->add_option("job", args->job, "the job file (job.yaml) the job was started with")
      ->required()
      ->check(CLI::ExistingFile);
  stop->add_option("--reason", args->reason, "why, as the pods log it");
  stop->add_option("--log-level", args->log_level, "debug | info | warn | error");
  stop->callback([args] { stop_job(*args); });
}

void add_coordinator(CLI::App& app) {
  auto* coord = app.add_subcommand("coordinator", "Run federated jobs across pods");
  coord->require_subcommand(1);
  auto args = std::make_shared<RunArgs>();
  auto* run = coord->add_subcommand("run", "Run the job described in a job file to completion");
  run->add_option("job", args->job, "job file (job.yaml)")->required()->check(CLI::ExistingFile);
  run->add_option("-o,--output-dir", args->output_dir, "where history.json and model.pt go (overrides the job)");
  run->add_option("--metrics-listen", args->metrics_listen,
                  "serve /metrics, /healthz and /readyz on HOST:PORT while the job runs (overrides the job's "
                  "metrics_listen; :PORT for every interface, port 0 for any free port)");
  run->add_option("--metrics-linger", args->metrics_linger,
                  "after the job, keep serving /metrics this long (e.g. 30s) so a scrape collects the final values");
  run->add_flag("--resume", args->resume,
                "continue the job from <output_dir>/checkpoint.bin (written after every completed round) instead "
                "of starting it over; the job file must describe the same job");
  run->add_option("--threads", args->threads,
                  "libtorch threads for the coordinator's aggregation (default 1: its folds are memory-bound, "
                  "and an idle OpenMP team spins, taking CPU from decryption and I/O; more may help the "
                  "robust strategies' sorts on large models)")
      ->check(CLI::Range(1, 1024));
  run->add_option("--log-level", args->log_level, "debug | info | warn | error");
  auto* json = run->add_flag("--json", args->json,
                             "stream events on stdout, one JSON object per line (job_start, pod_left_out, "
                             "pod_accepted, round_start, pod_result, round_waiting, round_end, evaluation, job_end) "
                             "instead of the progress lines");
  run->add_flag("-q,--quiet", args->quiet, "print no progress (errors still go to stderr)")->excludes(json);
  run->callback([args] { run_job(*args); });
}

}  // namespace fedpod::cli
