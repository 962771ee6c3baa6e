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
// Pods that fail or stall (docs/reliability.md lists what the tests inject):
//   - a pod that disconnects mid-round is noticed at once (socket monitor), not at the
//     deadline: outcome "disconnected";
//   - a pod that stays connected but says nothing (stopped, hung, partitioned without
//     a reset) is found by heartbeats: every heartbeat_interval each pending pod is
//     pinged, and one that answers nothing for heartbeat_timeout leaves the round as
//     "silent". A pod uploading its update is not pinged (answers queue behind it);
//   - a pod past round_timeout leaves the round as "timeout"; its late reply is
//     discarded (closed_round, below), whenever it arrives;
//   - a pod that lost the job (it restarted: "no job" errors) or the link
//     (disconnected, silent, unreachable) takes the job again with startJob before
//     its next round or evaluation: it rejoins (history.json rounds[].rejoined,
//     fedpod_coordinator_pod_rejoins_total). A pod that cannot sits the round out.
//   A round goes on when at least min_pods answered; otherwise the job stops with
//   each pod's reason, and its checkpoint stays at the last completed round.
//
// Checkpoint and resume (checkpoint.h): after every completed round the global
// parameters, round, strategy state, history and generator state are written
// atomically to <output_dir>/checkpoint.bin, before history.json. With spec.resume
// (`fedpod coordinator run --resume`) the job continues after the checkpoint's round,
// under the checkpoint's job id and resolved model version; a checkpoint of a
// different job (fingerprint) or a damaged one is refused and left untouched. Pods
// still holding the job from the dead coordinator restart it on startJob. With a
// fixed seed, deterministic local training and `aggregation_order: pod`, a resumed
// job ends with the same parameters, bit for bit, as an uninterrupted one: pods seed
// each round from (seed, round), and updates are folded in pod order. (Folded in
// arrival order, the default, float32 sums can differ in their last bits from run to
// run, resumed or not.)
//
// Exactly once: a training update is keyed by (job, round, pod). A trainDone or
// trainResult is used only if its job id is this job's, it answers the request in
// progress on the socket of the pod it was sent to, its round is the round being
// collected, and no update of that (round, pod) was folded yet. Everything else is
// discarded unread, logged at info (event=reply_discarded, with the reason) and
// counted: stale_request (a reply to an older request), closed_round (an update for
// a round whose collection ended: a straggler's reply past the deadline, whenever it
// arrives), duplicate (an update for a (round, pod) already taken), wrong_job,
// unfetched (a trainResult pushed before the coordinator's fetchResult asked for it:
// reading it would bypass max_concurrent_uploads).
// history.json counts them per round ("discarded_replies": replies discarded while
// that round trained or validated) and per reason for the job
// ("discarded_replies_by_reason").
//
// Trusting pods' numbers: a pod's update is weighted by the samples its trainDone
// reports, capped at the training rows it reported in jobAccepted (logged as
// event=update_weight_capped, counted per pod in the metric below and in history.json
// "update_weight_capped"): a pod cannot outvote the others by claiming more data. An
// evalResult is weighted the same way, capped at the validation or test rows of the
// pod's jobAccepted (event=eval_weight_capped). A trainResult is read only after the
// coordinator's fetchResult asked for it. Each
// pod's socket queues at most 16 messages (ZMQ_RCVHWM) before ZeroMQ stops reading
// its connection, so a pod that floods the coordinator meets TCP backpressure rather
// than growing the coordinator's memory. An update must be finite, and FedAvg (and the
// server optimizers' mean) refuses one whose values, weighted, could carry the round's
// sum past float32's range (the pod's outcome is an error that says so; the others
// make the round). Whatever the strategy, parameters or strategy state that are not
// finite are never applied nor checkpointed: the job ends naming each pod's largest
// value, with the previous round's checkpoint intact.
//
// Metrics: every Coordinator defines its metrics on its own registry (registry()),
// whether or not it serves them:
//
//   fedpod_coordinator_rounds_completed_total                  counter
//   fedpod_coordinator_round_duration_seconds                  histogram, per completed
//       round: training, aggregation and validation
//   fedpod_coordinator_pod_responses_total{pod,outcome}        counter: each pod's answer
//       to startJob, to each round's train and to each evaluation; outcome as in
//       history.json (ok|timeout|silent|error|refused|unreachable|disconnected)
//   fedpod_coordinator_update_bytes_total{direction}           counter: parameter bytes
//       of training rounds, "sent" (the global model, once per pod sent to) and
//       "received" (the pods' trainResult tensors)
//   fedpod_coordinator_aggregation_seconds                     histogram, per round:
//       folding the pods' updates and finishing the aggregate
//   fedpod_coordinator_global_loss{split}, _global_accuracy{split}  gauges: the last
//       evaluation, split validation|test
//   fedpod_coordinator_job_info{job_id,model} = 1              model: "mlp", or
//       "alice/net:2" (":latest" until the hub resolved the version)
//   fedpod_coordinator_pod_rejoins_total{pod}                 counter: startJob again after the
//       pod lost the job or the link
//   fedpod_coordinator_checkpoint_seconds                      histogram: writing the checkpoint
//   fedpod_coordinator_discarded_replies_total{reason}         counter: replies not
//       used (see "Exactly once" above), reason stale_request|closed_round|duplicate|
//       wrong_job|unfetched; every reason is present from the start
//   fedpod_coordinator_update_weight_capped_total{pod}         counter: updates whose
//       sample count exceeded the training rows the pod reported when it accepted the
//       job (see "Trusting pods' numbers" above)
//
// With spec.metrics_listen set, the constructor starts a metrics::MetricsServer
// (/metrics, /healthz, /readyz) that lives as long as the Coordinator. /readyz
// answers 503 with the phase ("contacting the pods", ...) until the pods accepted the
// job and training started, then 200 for the rest of the Coordinator's life, the end
// of the job included: an unready endpoint would drop out of a Service, and
// Prometheus would miss the last scrape of a finished job.
//
// Threading: run() drives every socket from the calling thread. registry() and
// metrics_port() may be called from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <iosfwd>
#include <map>
#include <nlohmann/json.hpp>
#include <prometheus/registry.h>
#include <vector>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "fedpod/common/log.h"
#include "fedpod/common/status.h"
#include "fedpod/coordinator/history.h"
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
  // Throws: ConfigError for an unreadable key_file, or naming spec.metrics_listen
  // when the metrics endpoint cannot listen there (port taken, bad address).
  Coordinator(zmq::context_t& ctx, JobSpec spec, Logger log, std::ostream& progress,
              ModelFactory make_model = model::make_builtin, CustomLoader load_custom = model::load_custom);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // Runs the job to the end. Fails (with the pods and reasons named) when fewer than
  // min_pods can start the job or answer a round. history.json is written either way.
  StatusOr<RunResult> run();

  // The registry this job's metrics live on (never null); serialize it with
  // prometheus::TextSerializer to read them without the HTTP endpoint.
  std::shared_ptr<prometheus::Registry> registry() const;
  // The port the metrics endpoint listens on (useful with port 0); 0 without one.
  int metrics_port() const;
  // After run() failed: true when it failed on the job's own settings, before any pod
  // was contacted (hyperparameters the model does not declare, or of the wrong type).
  // `fedpod coordinator run` exits 2 then, as for any other error in job.yaml.
  bool job_config_error() const;

  // Called on the coordinator's thread as each step of a secure aggregation round
  // ends ("advertise", "share", "mask", "unmask"; protocol/secagg.h), with the ids
  // still taking part. For tools that follow a round, and for tests that stop pods
  // between steps. Set before run().
  using StepObserver = std::function<void(int round, const std::string& step, const std::vector<uint32_t>& ids)>;
  void set_step_observer(StepObserver observer);

  // Stopping a running job: run() reads `*flag` (a signal number; 0: keep going) at
  // least every 100 ms, and once it is set ends the job between steps. The pods are
  // told to end it (they are free at once), history.json says "stopped" with the
  // last completed round, whose checkpoint `--resume` continues from; run() returns
  // an error and job_stopped() is true. Storing to `flag` is signal-safe.
  void set_stop_flag(const std::atomic<int>* flag);

  // Events for scripts and notebooks (`coordinator run --json`): one JSON object per
  // line on `out`, each with "event" and "time" (UTC): job_start, pod_left_out,
  // pod_accepted, round_start, pod_result, round_waiting (every 10 s of a long
  // round), round_end, evaluation, job_end. Set before run().
  void set_event_stream(std::ostream* out);
  bool job_stopped() const;

  // Without running the job: tells every pod of the job to end it (endJob from the
  // job's key), for a coordinator that died or cannot be reached. Each pod's answer
  // by name: "ok" ended; "error" with code failed_precondition: it holds no such job.
  StatusOr<std::map<std::string, PodRound>> end_job_on_pods(const std::string& reason);

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
