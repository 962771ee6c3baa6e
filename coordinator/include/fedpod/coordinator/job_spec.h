// A coordinator job (job.yaml): which model to train, on which pods, for how long.
//
//   job_id: digits-demo              # letters, digits, - _ . (at most 128); default: generated (job-YYYYmmdd-HHMMSS-xxxx)
//   model:
//     ref: mlp                       # built-in: logreg | mlp | cnn | 2nn | mnist_cnn (alias: model_ref)
//     hyperparameters: {hidden: [64], optimizer: sgd, lr: 0.05, momentum: 0.9}
//   # or a custom model from the model hub:
//   # model:
//   #   username: alice              # the model's owner on the hub
//   #   model_ref: digits-net        # (or ref:)
//   #   model_version: 3             # (or version:) default 0: the latest
//   #   hyperparameters: {lr: 0.01}
//   hub: https://hub.example:8470    # needed for a custom model; default: env FEDPOD_HUB.
//                                    # http:// only on loopback (fedpod/common/hub_url.h)
//   hub_ca: ca.crt                   # PEM CA bundle the hub's certificate is checked
//                                    # against; default: env FEDPOD_HUB_CA, else the
//                                    # system store. Relative to this file
//   hub_token: ...                   # optional (private models); default: env FEDPOD_TOKEN
//   datastructure:
//     target: label
//     features: [...]                # default: every column but target and ignore
//     ignore: [...]
//     input_shape: [1, 8, 8]         # default: [number of features]
//     num_classes: 10                # required, unless categories lists the target
//     scale: 0.0625                  # multiplies every feature (default 1)
//     split: {validation: 0.1, test: 0.2, seed: 0}
//     categories:                    # categorical columns: the i-th value is code i on
//       label: [cat, dog, bird]      # every pod. Default: the sorted union of the
//                                    # categories the pods declare; a pod that infers
//                                    # them from its data publishes none, so then the
//                                    # job must list them
//   key_file: ~/.config/fedpod/alice.key  # the modeller's CURVE key pair (fedpod keys
//                                    # generate); pods admit only keys registered on the
//                                    # hub. Relative to this file. Default: env FEDPOD_KEY_FILE
//   pods:
//     - {name: pod-a, address: tcp://127.0.0.1:5555, public_key: "..."}
//     - {name: pod-c, address: tcp://10.0.0.7:5555, public_key_file: keys/pod-c.pub}
//     - pod-b                        # a bare name: address and public key come from the hub
//                                    # (a pod's public_key, when not given, too)
//   rounds: 10
//   local_epochs: 1                  # or local_steps: N
//   batch_size: 32
//   min_pods: 2                      # default: all pods
//   round_timeout: 60s               # a pod that has not answered by then is excluded from
//                                    # the round ("timeout"); its late reply is discarded
//   heartbeat_interval: 1s           # while a round waits, each pending pod is pinged this often
//   heartbeat_timeout: 10s           # a pending pod that answers nothing for this long is
//                                    # excluded before the deadline ("silent"); 0: off. Must
//                                    # exceed the time one model takes over the slowest link
//                                    # (replies queue behind a transfer on the same connection)
//   checkpoint: true                 # write <output_dir>/checkpoint.bin after every completed
//                                    # round; `fedpod coordinator run --resume` continues from it
//   connect_timeout: 10s             # for hello and startJob
//   eval_every: 1                    # rounds between validation (0: only at the end)
//   max_concurrent_uploads: 2        # pods sending parameters back at once; bounds
//                                    # coordinator memory to this many models
//   sample: {fraction: 0.1}          # client sampling: train on 10% of the pods each round
//                                    # (or {count: 10}); at least min_pods; chosen from
//                                    # (seed, round), recorded in history.json rounds[].sampled
//   strategy: fedavg                 # or fedprox, fedavgm, fedadagrad, fedadam, fedyogi, median,
//                                    # trimmed_mean, krum; with options:
//                                    # {name: fedadam, server_lr: 0.01, beta1: 0.9, beta2: 0.99,
//                                    #  tau: 0.001} (aggregation/strategies.h; docs/strategies.md)
//   aggregation_order: arrival       # fold updates as they arrive (fastest), or "pod": in the
//                                    # order of `pods`, one upload at a time, so the float32
//                                    # sums and hence the parameters are the same bits on every
//                                    # run (reproducible runs, resumed ones included)
//   update_precision: float32        # how pods send their updates: float32, or bfloat16
//                                    # (each pod's change to the round's parameters, rounded
//                                    # to bfloat16: half the bytes; aggregated in float32)
//   broadcast_precision: float32     # how the round's parameters go to the pods: float32, or
//                                    # bfloat16 (rounded, half the bytes; the pods train in
//                                    # float32 from them and the coordinator keeps float32)
//   secure_aggregation: true         # the coordinator learns only the sum of the pods'
//                                    # updates, never one (docs/privacy.md); or a map:
//   # secure_aggregation: {threshold: 3, neighbours: 4, clip: 10, modulus_bits: auto}
//   differential_privacy:            # every pod trains with DP-SGD (docs/privacy.md): each
//     noise_multiplier: 1.1          #   record's gradient clipped to max_grad_norm, Gaussian
//     max_grad_norm: 1.0             #   noise of std noise_multiplier·max_grad_norm per step;
//                                    #   each pod accounts the job's ε against its own budget
//   #   threshold: shares that rebuild a pod's secret, and the fewest pods a round may
//   #     end with (default: a strict majority of a pod's neighbours and itself)
//   #   neighbours: pods each pod masks with (default: min(pods-1, max(4, 2*ceil(log2 pods))))
//   #   clip: each coordinate of a pod's change to the parameters is clipped to [-clip, clip]
//   #   modulus_bits: 32, 64 or auto (32 unless the sum of the pods' updates needs more)
//   seed: 0                          # initial parameters
//   output_dir: out                  # relative to the current directory
//   metrics_listen: 0.0.0.0:9102     # serve /metrics, /healthz, /readyz while the job
//                                    # runs (host:port, ":9102" for every interface,
//                                    # port 0: any free port); default: off. The CLI's
//                                    # --metrics-listen overrides it.
//   sandbox: {level: auto, memory: 8GiB, load_timeout: 8s}  # how the coordinator confines
//                                    # a custom model's code while it learns the model's
//                                    # layout and initial values (`fedpod coordinator run`
//                                    # builds it in a job runner, as pods do): auto (the
//                                    # best this machine allows) or required (refuse without
//                                    # namespaces); memory and load_timeout limit the runner
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fedpod/common/config_util.h"
#include "fedpod/common/hub_url.h"
#include "fedpod/data/schema.h"
#include "fedpod/model/zoo.h"
#include "fedpod/worker/config.h"

namespace fedpod::coordinator {

struct PodAddress {
  std::string name;
  std::string address;     // empty: resolved through the hub by name when the job starts
  std::string public_key;  // the pod's CURVE server key; empty: taken from the hub
};

struct ModelSpec {
  std::string username;  // empty: the built-in zoo
  std::string ref;
  uint32_t version = 0;  // 0: latest
  Hyperparameters hyperparameters;
};

// job.yaml secure_aggregation (protocol/secagg.h turns it into Settings once the
// number of pods is known).
struct SecureAggregationSpec {
  bool enabled = false;
  uint32_t threshold = 0;     // 0: default for the pod count
  uint32_t neighbours = 0;    // 0: default for the pod count
  double clip = 10.0;
  uint32_t modulus_bits = 0;  // 0: auto
};

// job.yaml differential_privacy: DP-SGD at every pod (privacy/dp_sgd.h).
struct DifferentialPrivacySpec {
  double noise_multiplier = 0;  // σ; 0: off
  double max_grad_norm = 1.0;   // C
};

struct JobSpec {
  std::string job_id;
  bool job_id_generated = false;  // job_id was not given; a resumed job takes the checkpoint's
  ModelSpec model;
  std::string hub_url;    // "https://host:port"; required when model.username is set
  std::string hub_ca;     // CA file for the hub's certificate; empty: the system store
  std::string hub_token;  // bearer token for the hub; may be empty
  std::string key_file;   // the modeller's CURVE key pair; empty: connect without CURVE
  data::Datastructure datastructure;
  std::vector<PodAddress> pods;
  int rounds = 10;
  int local_epochs = 1;
  int local_steps = 0;
  int batch_size = 32;
  int min_pods = 0;  // resolved to pods.size() when not set
  std::chrono::milliseconds round_timeout{60'000};
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds heartbeat_interval{1'000};
  std::chrono::milliseconds heartbeat_timeout{10'000};  // 0: no silence detection
  bool checkpoint = true;
  bool resume = false;  // not in job.yaml: `--resume` (continue from output_dir's checkpoint)
  int eval_every = 1;
  int max_concurrent_uploads = 2;
  std::string strategy = "fedavg";
  std::map<std::string, double> strategy_options;  // strategy: {name: ..., option: number}
  // Client sampling (sample: {fraction: 0.1} or {count: 10}): each round trains on
  // that many of the pods holding the job, at least min_pods, chosen at random from
  // (seed, round) so that a resumed job samples as the uninterrupted one did. 0 / 0:
  // every pod, every round.
  double sample_fraction = 0;
  int sample_count = 0;
  std::string aggregation_order = "arrival";  // arrival | pod
  std::string update_precision = "float32";   // float32 | bfloat16
  std::string broadcast_precision = "float32";  // float32 | bfloat16
  SecureAggregationSpec secure_aggregation;
  DifferentialPrivacySpec differential_privacy;
  uint64_t seed = 0;
  std::string output_dir = "out";
  std::string metrics_listen;  // empty: no metrics endpoint (the registry exists anyway)
  // How a custom model is built for its layout and initial values. With
  // runner_command (e.g. {"/usr/bin/fedpod", "runner"}; not in job.yaml), in a
  // confined job runner (worker/runner.h) under `sandbox`: its static constructors,
  // hyperparameters() and create_model run there, and the runner ends once the layout
  // and initial values are known. `fedpod coordinator run` always sets it. Without it
  // (the default for a program embedding the coordinator), the model is loaded into
  // the calling process.
  std::vector<std::string> runner_command;
  worker::SandboxConfig sandbox;
};

// Reads and validates a job file. Throws ConfigError naming the file and key.
JobSpec load_job_spec(const std::string& path);

// The same over job.yaml text in memory: `where` names it in errors as the path does,
// and relative key_file / public_key_file paths resolve against `base_dir`. Throws
// ConfigError, and nothing else, for any text (tests/fuzz/job_spec_fuzz.cpp).
JobSpec parse_job_spec(const std::string& yaml, const std::string& where, const std::string& base_dir);

// Validates a spec built in code (the same checks as load_job_spec). A model without
// a username must be one `is_known_model` accepts (the built-in zoo by default).
void validate(JobSpec& spec, const std::string& where,
              bool (*is_known_model)(const std::string& ref) = model::is_builtin);

}  // namespace fedpod::coordinator
