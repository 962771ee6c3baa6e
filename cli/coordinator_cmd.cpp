// fedpod coordinator run job.yaml
#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/metrics/metrics.h"

namespace fedpod::cli {
namespace {

struct RunArgs {
  std::string job;
  std::string output_dir;
  std::string metrics_listen;
  std::string metrics_linger;
  std::string log_level = "info";
  bool resume = false;
};

void run_job(const RunArgs& args) {
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
  zmq::context_t ctx(1);
  // A custom model's code never runs in this process: it is built in a confined job
  // runner, this binary's hidden `runner` subcommand (worker/runner.h), as on pods.
  spec.runner_command = {self_executable(), "runner"};
  coordinator::Coordinator c(ctx, spec, log, std::cout);
  auto result = c.run();
  // A job is over in seconds; Prometheus scrapes every 15-60 s. Lingering keeps the
  // final values on /metrics long enough to be collected.
  if (linger.count() > 0 && c.metrics_port() != 0) {
    std::cout << "serving the final metrics on port " << c.metrics_port() << " for " << linger.count() / 1000.0
              << " s (--metrics-linger)" << std::endl;
    std::this_thread::sleep_for(linger);
  }
  if (!result.ok()) {
    std::cerr << "fedpod: job " << spec.job_id << " failed: " << result.status().to_string() << "\n";
    throw CommandExit{c.job_config_error() ? kExitConfig : kExitFailed};
  }
}

}  // namespace

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
  run->add_option("--log-level", args->log_level, "debug | info | warn | error");
  run->callback([args] { run_job(*args); });
}

}  // namespace fedpod::cli
