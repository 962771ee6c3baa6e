// fedpod coordinator run job.yaml
#include <torch/torch.h>

#include <iostream>

#include "commands.h"
#include "fedpod/common/log.h"
#include "fedpod/coordinator/coordinator.h"

namespace fedpod::cli {
namespace {

struct RunArgs {
  std::string job;
  std::string output_dir;
  std::string log_level = "info";
};

void run_job(const RunArgs& args) {
  coordinator::JobSpec spec = coordinator::load_job_spec(args.job);
  if (!args.output_dir.empty()) spec.output_dir = args.output_dir;
  Logger log = make_logger("coordinator", args.log_level);
  zmq::context_t ctx(1);
  coordinator::Coordinator c(ctx, spec, log, std::cout);
  auto result = c.run();
  if (!result.ok()) {
    std::cerr << "fedpod: job " << spec.job_id << " failed: " << result.status().to_string() << "\n";
    throw CommandExit{kExitFailed};
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
  run->add_option("--log-level", args->log_level, "debug | info | warn | error");
  run->callback([args] { run_job(*args); });
}

}  // namespace fedpod::cli
