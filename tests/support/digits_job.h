// In-process digits jobs for the integration tests: the JobSpec most of them start
// from, and `fedpod worker` pods added to it.
//
//   coordinator::JobSpec spec = digits_job_spec("round-test", out_dir, id.modeller_key_file);
//   ASSERT_NO_FATAL_FAILURE(start_digits_pods(dir, id, {"pod-a", "pod-b"}, spec, procs));
//
// Header-only; link fedpod::coordinator.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "fedpod/coordinator/job_spec.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod::testing {

// The built-in mlp (hidden [32], lr 0.1) over the digits shares in examples/digits:
// target "label", 10 classes, pixels scaled by 1/16; 3 rounds, a 60 s round deadline
// and 20 s to connect. No pods yet. Tests change what they are about.
inline coordinator::JobSpec digits_job_spec(const std::string& job_id, const std::string& output_dir,
                                            const std::string& key_file) {
  using namespace std::chrono_literals;
  coordinator::JobSpec spec;
  spec.job_id = job_id;
  spec.model.ref = "mlp";
  spec.model.hyperparameters = Hyperparameters(nlohmann::json{{"hidden", {32}}, {"lr", 0.1}});
  spec.datastructure.target = "label";
  spec.datastructure.num_classes = 10;
  spec.datastructure.scale = 1.0 / 16;
  spec.rounds = 3;
  spec.round_timeout = 60s;
  spec.connect_timeout = 20s;
  spec.output_dir = output_dir;
  spec.key_file = key_file;
  return spec;
}

// Adds a started pod to the job: its name, endpoint and public key.
inline void add_pod(coordinator::JobSpec& spec, const PodProcess& pod) {
  spec.pods.push_back({pod.name, pod.endpoint, pod.public_key});
}

// Starts one `fedpod worker` per name, each on its digits share (start_digits_pod: the
// modeller has `role` there, `extra_yaml` is appended to its pod.yaml), adds it to
// `spec` and keeps its process in `procs`. A pod that does not start fails the test
// with its log.
inline void start_digits_pods(const TempDir& dir, TestIdentity& id, const std::vector<std::string>& names,
                              coordinator::JobSpec& spec, std::vector<std::unique_ptr<Process>>& procs,
                              const std::string& role = "general-modeller", const std::string& extra_yaml = "") {
  for (const auto& name : names) {
    PodProcess pod = start_digits_pod(dir, id, name, role, extra_yaml);
    ASSERT_FALSE(pod.endpoint.empty()) << "worker " << name << " did not start: " << read_file(pod.log);
    add_pod(spec, pod);
    procs.push_back(std::move(pod.process));
  }
}

}  // namespace fedpod::testing
