// fedpod worker --config pod.yaml
#include <torch/torch.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>

#include "commands.h"
#include "fedpod/metrics/metrics.h"
#include "fedpod/common/process.h"
#include "fedpod/common/log.h"
#include "fedpod/worker/worker.h"

namespace fedpod::cli {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct WorkerArgs {
  std::string reset_audit_log;
  std::string config;
  std::string endpoint_file;
  std::string log_level;
};

void run_worker(const WorkerArgs& args) {
  worker::PodConfig config = worker::load_pod_config(args.config);
  if (!args.log_level.empty()) config.log_level = args.log_level;
  config.audit_reset_reason = args.reset_audit_log;
  Logger log = make_logger("worker", config.log_level);
  metrics::set_component("worker");
  // This process never trains: each job's runner does, on `threads` intra-op threads
  // (EngineSpec::threads). Its own tensor work (checking and copying what arrives)
  // stays on one thread, so it keeps no OpenMP team whose idle helpers would spin for
  // milliseconds after each round's checks, on the cores the runner is training on.
  torch::set_num_threads(1);
  // Before the endpoint file appears: a launcher may signal as soon as it sees it.
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  zmq::context_t ctx(1);
  // Model code never runs in this process: each job gets a runner, this binary's
  // hidden `runner` subcommand, confined (worker/runner.h).
  worker::Runtime runtime;
  runtime.runner_command = {self_executable(), "runner"};
  // The public socket lives in a receiving process under a memory limit
  // (worker/gate.h), so no peer's message can grow this process without bound.
  if (config.receiving_process) {
    runtime.gate_command = {self_executable(), "gate"};
  } else {
    log->warn("event=transport pod={} receiving_process=off consequence=\"the public socket is in this process: "
              "an admitted peer's message is bounded per frame (max_frame_bytes), not per message\"",
              config.name);
  }
  worker::Worker w(ctx, config, log, runtime);
  if (!args.endpoint_file.empty()) {
    // Written after binding: a launcher that waits for this file can connect at once.
    std::string tmp = args.endpoint_file + ".tmp";
    std::ofstream(tmp) << w.endpoint() << "\n";
    std::rename(tmp.c_str(), args.endpoint_file.c_str());
  }
  w.serve(g_stop);
}

}  // namespace

void add_worker(CLI::App& app) {
  auto args = std::make_shared<WorkerArgs>();
  auto* cmd = app.add_subcommand("worker", "Run a pod worker: serve a local dataset to coordinators");
  cmd->add_option("-c,--config", args->config, "pod configuration (pod.yaml)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--endpoint-file", args->endpoint_file,
                  "write the bound endpoint here once listening (useful with port *)");
  cmd->add_option("--log-level", args->log_level, "debug | info | warn | error (overrides the config)");
  cmd->add_option("--reset-audit-log", args->reset_audit_log,
                  "start a new audit log on purpose when the old one is missing, cut or replaced (it is moved "
                  "aside; the new log's first entry and the hub record the reset with this REASON)");
  cmd->callback([args] { run_worker(*args); });
}

}  // namespace fedpod::cli
