// Jobs for fault-injection tests: a digits job over `fedpod worker` processes, run by
// `fedpod coordinator run` as a child process so that it can be killed, and readers
// for what it leaves behind.
//
//   auto pod_a = start_digits_pod(dir, id, "pod-a");
//   std::string job = digits_job_yaml(id, {&pod_a, &pod_b}, out, "rounds: 6\n");
//   Process coordinator(coordinator_argv(dir.write("job.yaml", job)), log);
//
// Header-only; link fedpod::coordinator for load_parameters.
#pragma once

#include <torch/torch.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fedpod/coordinator/history.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod::testing {

// job.yaml for the digits mlp over `pods` (their endpoints and keys), writing to
// `output_dir`. `extra` is appended (rounds:, min_pods:, round_timeout:, ...); the
// defaults train one epoch per round with a fixed seed.
inline std::string digits_job_yaml(TestIdentity& id, const std::vector<const PodProcess*>& pods,
                                   const std::string& output_dir, const std::string& extra,
                                   const std::string& job_id = "fault-test") {
  std::string job = "job_id: " + job_id +
                    "\nmodel: {ref: mlp, hyperparameters: {hidden: [64], lr: 0.1, momentum: 0.9}}\n"
                    "datastructure: {target: label, num_classes: 10, scale: 0.0625}\n"
                    "key_file: " + id.modeller_key_file + "\nseed: 7\nlocal_epochs: 1\nbatch_size: 32\n"
                    "output_dir: " + output_dir + "\npods:\n";
  for (const PodProcess* p : pods) {
    job += "  - {name: " + p->name + ", address: \"" + p->endpoint + "\", public_key: \"" + p->public_key + "\"}\n";
  }
  return job + extra;
}

inline std::vector<std::string> coordinator_argv(const std::string& job_file, bool resume = false) {
  std::vector<std::string> argv = {fedpod_bin(), "coordinator", "run", job_file};
  if (resume) argv.push_back("--resume");
  return argv;
}

inline nlohmann::json read_history(const std::string& output_dir) {
  return nlohmann::json::parse(read_file(output_dir + "/history.json"), nullptr, false);
}

// Restarts a pod that was killed: the same pod.yaml, now listening on the endpoint
// it had, so the coordinator's connection finds it again.
inline void restart_pod(const TempDir& dir, PodProcess& pod) {
  const std::string config = (dir.path() / (pod.name + ".yaml")).string();
  std::string yaml = read_file(config);
  const auto at = yaml.find("listen: ");
  const auto end = yaml.find('\n', at);
  yaml.replace(at, end - at, "listen: " + pod.endpoint);
  std::ofstream(config, std::ios::trunc) << yaml;
  std::filesystem::remove(pod.endpoint_file);
  pod.process.reset();  // reaps the killed one
  pod.process = std::make_unique<Process>(
      std::vector<std::string>{fedpod_bin(), "worker", "--config", config, "--endpoint-file", pod.endpoint_file},
      pod.log);
  const std::string endpoint = wait_for_word(pod.endpoint_file, std::chrono::seconds(60), pod.process.get());
  if (endpoint != pod.endpoint) throw std::runtime_error("pod " + pod.name + " did not restart on " + pod.endpoint);
}

// Each round's outcome for `pod` in history.json, in round order.
inline std::vector<std::string> outcomes(const nlohmann::json& history, const std::string& pod) {
  std::vector<std::string> out;
  for (const auto& r : history["rounds"]) {
    out.push_back(r["pods"].contains(pod) ? r["pods"][pod].value("outcome", "?") : std::string("-"));
  }
  return out;
}

// True when two model.pt files hold the same tensors, bit for bit.
inline bool same_parameters(const std::string& a, const std::string& b) {
  auto pa = coordinator::load_parameters(a);
  auto pb = coordinator::load_parameters(b);
  if (pa.size() != pb.size()) return false;
  for (const auto& [name, t] : pa) {
    auto it = pb.find(name);
    if (it == pb.end() || !torch::equal(t, it->second)) return false;
  }
  return true;
}

}  // namespace fedpod::testing
