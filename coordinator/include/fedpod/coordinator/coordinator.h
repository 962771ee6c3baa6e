// Coordinator: runs one federated job (`fedpod coordinator run job.yaml`).
//
//   1. hello every pod; check its schema against the job's datastructure (an error
//      names the pod and the column) and resolve the feature order;
//   2. create the model locally (seeded) for its layout and initial parameters;
//      startJob on every pod. A custom model (model.username set) is first resolved
//      through the hub to one version, its artifact downloaded to
//      <output_dir>/artifacts/<sha256>.pt|.so (sha256 checked against the hub's
//      record) and loaded here; startJob carries the artifact bytes to every pod as
//      one raw frame with the sha256 and format (see ModelReference in
//      fedpod.capnp). history.json records the resolved reference under
//      model.resolved {username, ref, version, sha256, format, bytes};
//   3. each round: broadcast train with the global parameters (one buffer shared by
//      every pod's frames, zero-copy), fold each result into the aggregation
//      strategy as it arrives, stop waiting at round_timeout, and go on if at least
//      min_pods answered; evaluate every eval_every rounds; print a progress line;
//      rewrite history.json;
//   4. evaluate on the pods' test splits, endJob everywhere, save model.pt.
//
// A pod that disconnects mid-round is noticed at once (socket monitor), not at the
// deadline. Replies to an older request are discarded.
//
// Threading: run() drives every socket from the calling thread.
#pragma once

#include <functional>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <vector>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "fedpod/common/log.h"
#include "fedpod/common/status.h"
#include "fedpod/coordinator/job_spec.h"
#include "fedpod/model/custom.h"
#include "fedpod/model/zoo.h"

namespace fedpod::coordinator {

struct RunResult {
  int rounds_completed = 0;
  double test_loss = 0;
  double test_accuracy = 0;
  int64_t test_samples = 0;
  double mean_round_seconds = 0;
  std::string history_path;
  std::string model_path;
  std::string report_path;  // report.html: plots of the run, self-contained
};

class Coordinator {
 public:
  // Turns the job's model reference into a model; the default is the built-in zoo.
  using ModelFactory = std::function<std::unique_ptr<model::Model>(const std::string& ref)>;
  // Loads a downloaded custom-model artifact by format; the default is
  // model::load_custom (TorchScript or plugin). Loading a plugin needs the host
  // program to export fedpod's symbols (ENABLE_EXPORTS), as `fedpod` does.
  using CustomLoader =
      std::function<StatusOr<std::unique_ptr<model::Model>>(const std::string& path, const std::string& format)>;

  // `ctx` must outlive the coordinator; `progress` receives one line per round.
  Coordinator(zmq::context_t& ctx, JobSpec spec, Logger log, std::ostream& progress,
              ModelFactory make_model = model::make_builtin, CustomLoader load_custom = model::load_custom);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Runs the job to the end. Fails (with the pods and reasons named) when fewer than
  // min_pods can start the job or answer a round. history.json is written either way.
  StatusOr<RunResult> run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The model to train, as a modeller names it: a hub model ({username, model_ref,
// model_version (0: latest)}) or a built-in one (empty username, model_ref "mlp").
struct ModelReference {
  std::string username;
  std::string model_ref;
  uint32_t model_version = 0;
  nlohmann::json hyperparameters = nlohmann::json::object();
};

// Runs a job for programs that launch jobs themselves:
//
//   coordinator::JobSpec job;                      // datastructure, rounds, hub_url, ...
//   job.datastructure.target = "label";
//   job.datastructure.num_classes = 10;
//   job.hub_url = "http://hub:8470";
//   auto history = coordinator::fit(ctx, job, {"alice", "digits-net", 0, {{"lr", 0.01}}},
//                                   {"pod-a", "pod-b", "pod-c@tcp://10.0.0.7:5555"});
//
// `pod_identifiers` are pod names registered on the hub, or "name@address". `job`
// supplies everything else (its model and pods are replaced). Returns the job's
// history (the content of history.json); a job that fails returns its Status.
// Throws ConfigError for an invalid job, as load_job_spec does.
StatusOr<nlohmann::json> fit(zmq::context_t& ctx, JobSpec job, const ModelReference& model,
                             const std::vector<std::string>& pod_identifiers, Logger log = null_logger(),
                             std::ostream* progress = nullptr);

}  // namespace fedpod::coordinator
