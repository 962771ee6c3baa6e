// A pod's configuration (pod.yaml).
//
//   name: pod-a                       # how coordinators and logs name this pod
//   listen: tcp://0.0.0.0:5555        # ROUTER endpoint to bind
//   dataset:
//     path: data/pod-a.csv            # relative paths are relative to this file
//     format: csv                     # csv (default) or idx: MNIST-format files, plain or
//                                     # gzipped; path: the images, labels: the labels file;
//                                     # columns px_0.. (0..255) and label (data/idx.h)
//     header: true                    # first line names the columns (default true)
//     delimiter: ","                  # default ","
//     on_bad_row: error               # error (default) | skip: skip, count, report
//     schema:                         # optional; inferred from the file when absent
//       - {name: age, type: numeric}
//       - {name: label, type: categorical, categories: [cat, dog]}
//   devices: auto                     # auto: every visible CUDA device, else [cpu]; or a
//                                     # list, one model replica per entry: [cuda:0, cuda:1]
//                                     # or [cpu, cpu] (not mixed; each GPU at most once)
//   threads: 1                        # libtorch intra-op threads (default: all cores);
//                                     # several replicas split them: threads / replicas
//                                     # each, at least 1 (so [cpu, cpu] with threads: 1
//                                     # uses 2)
//   job_idle_timeout: 10m             # a job with no message for this long is ended
//   max_frame_bytes: 2147483648       # largest accepted ZeroMQ frame (also bounds a
//                                     # custom model's artifact, sent as one frame)
//   max_message_bytes: 2147483648     # largest accepted message, all frames together
//                                     # (default: max_frame_bytes)
//   transport_memory: 4.25GiB         # memory limit of the pod's receiving process, which
//                                     # owns the public socket (default: 2 x
//                                     # max_message_bytes + 256MiB; docs/permissions.md)
//   receiving_process: true           # false: the worker holds the socket itself (faster,
//                                     # but a peer's message is bounded only per frame)
//   transport_shared_memory: 256MiB   # each direction's shared ring between the receiving
//                                     # process and the worker for tensor frames of 64KiB
//                                     # and up (0: none, every frame crosses the local
//                                     # socket); touched only as far as messages reach
//   tensor_listen: tcp://0.0.0.0:5556 # the job's tensor channel: parameters sealed with
//                                     # AES-256-GCM, keys agreed over CURVE at startJob
//                                     # (docs/tensor-encryption.md). Default: listen's
//                                     # address, any free port (named to coordinators in
//                                     # jobAccepted); set a port where a firewall or a
//                                     # Service must know it; off: parameters over CURVE
//   custom_models: policy             # policy (default) | refuse: refuse every custom model
//   secure_aggregation: optional      # optional (default) | required: refuse every job whose
//                                     # updates are not securely aggregated (the coordinator
//                                     # then sees only sums; docs/privacy.md); or a map:
//   # secure_aggregation: {required: true, min_threshold: 3}  # and refuse a threshold below 3
//   privacy:                          # what a job may ask of this pod's data (docs/privacy.md)
//     min_batch_size: 32              #   refuse smaller batches (default: any)
//     min_samples_per_update: 1000    #   refuse a round that trains on fewer samples
//     max_local_steps: 500            #   refuse more optimizer steps per round
//     differential_privacy:           #   every job trains with DP-SGD, within a budget:
//       epsilon: 3                    #     required: ε this dataset may spend, all jobs together
//       delta: 1e-5                   #     δ of every job (default 1e-5)
//       min_noise_multiplier: 0.5     #     refuse less noise (default: any within the budget)
//       ledger: state/pod-a.privacy.json  # spent budget (default: state/<name>.privacy.json)
//   log_level: info
//   sandbox: auto                     # job runners (docs/permissions.md): auto (the best
//                                     # confinement this machine allows) or required
//                                     # (refuse to start without namespaces); or a map:
//   # sandbox: {level: required, memory: 8GiB, step_timeout: 30m, load_timeout: 8s,
//   #           open_files: 256}      # memory: the runner's address space
//   # Identity and permissions (docs/permissions.md); all paths relative to this file.
//   key_file: keys/pod-a.key          # required: this pod's CURVE key pair (fedpod keys generate)
//   policy:                           # required: who may run what here, from one source:
//     hub: https://hub:8470           #   the model hub (http:// only on loopback)
//     hub_ca: tls/ca.crt              #   CA of the hub's certificate (default: env
//                                     #   FEDPOD_HUB_CA, else the system store)
//     token_file: owner.token         #   (or env FEDPOD_TOKEN)
//     refresh: 30s                    #   how often the hub is asked: revocations reach
//                                     #   the pod within this (plus a 10 s fetch timeout)
//                                     #   and apply from the next job
//     max_staleness: 24h              #   a hub outage keeps the cached policy this long;
//                                     #   after that every job is refused
//     cache: state/pod-a.policy.json  #   last fetched policy, read at start when the hub
//                                     #   is down (default: state/<name>.policy.json)
//     # file: policy.signed.json      #   air-gapped: a local signed policy file instead of
//                                     #   the hub (fedpod policy sign; re-read when it changes)
//     signing_key: "<44 base64 chars>" #  required: the Ed25519 key every policy must be
//                                     #   signed with: the hub's (fedpod hub signing-key) or,
//                                     #   for a file, its owner's (or signing_key_file: X.sign.pub)
//   audit_log: state/pod-a.audit.log  # hash-chained decisions (default: state/<name>.audit.log)
//   audit_publish: 60s                # with a hub: how often the log's signed head is published
//                                     # (and at every job end), so a cut log is detected
//   metrics_listen: 127.0.0.1:9101    # /metrics, /healthz, /readyz (default: off)
//
// With several devices the pod trains data-parallel (worker/data_parallel.h): every
// batch is split across the replicas and their gradients are averaged, so a round's
// result is the one a single device would compute, up to float rounding.
//
// The ROUTER socket is a CURVE server with key_file's secret key; only public keys of
// users in the policy complete the handshake, and the pod decides each startJob from
// the authenticated user (never from a name in a message): built-in models need the
// general-modeller or super-modeller role on this pod, custom models super-modeller
// or general-modeller plus an approved, unexpired grant for that exact sha256.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fedpod/common/hub_url.h"
#include "fedpod/data/csv.h"
#include "fedpod/data/schema.h"

namespace YAML {
class Node;
}

namespace fedpod::worker {

enum class CustomModels {
  kPolicy,  // default: decided per modeller by roles and grants
  kRefuse,  // every custom model refused, whatever the grants
};

// Where the pod's access policy comes from: the hub (hub_url + token) or a file.
struct PolicySource {
  std::string hub_url;
  HubUrl hub;           // parsed from hub_url; hub.ca_file from policy.hub_ca
  std::string token;  // read from token_file (or FEDPOD_TOKEN) at load time
  std::string file;
  std::string signing_key;  // base64 Ed25519 public key policies must be signed with
  std::string cache_path;
  std::chrono::milliseconds refresh{30'000};
  std::chrono::milliseconds max_staleness{24LL * 3600 * 1000};
};

// Limits of a job runner (runner.h).
struct RunnerLimits {
  int64_t memory_bytes = int64_t{8} << 30;                 // RLIMIT_AS of the runner (RLIMIT_DATA with GPUs)
  std::chrono::milliseconds step_timeout{30 * 60 * 1000};  // each train, each evaluate
  // Starting the runner and building the model. Below the coordinator's default
  // connect_timeout (10 s), so that a model that hangs while loading is reported as
  // such rather than as a pod that did not answer.
  std::chrono::milliseconds load_timeout{8 * 1000};
  int open_files = 256;                                    // RLIMIT_NOFILE
  int64_t file_bytes = int64_t{1} << 30;                   // RLIMIT_FSIZE (scratch files)
};

// How model code is confined (runner.h): `sandbox: auto` (the best this machine
// allows, stated at start-up) or `sandbox: required` (refuse to start without
// namespaces), with the runner's limits.
struct SandboxConfig {
  bool required = false;
  RunnerLimits limits;
};

// Parses a `sandbox:` value (pod.yaml, job.yaml): auto | required | {level, memory,
// step_timeout, load_timeout, open_files}. Throws ConfigError naming `where`.
SandboxConfig parse_sandbox(const YAML::Node& node, const std::string& where);

// What the pod demands of a job's aggregation (docs/privacy.md).
struct SecureAggregationPolicy {
  bool required = false;       // refuse jobs without secure aggregation
  uint32_t min_threshold = 0;  // refuse a threshold below this (0: any the protocol accepts)
};

// What the pod demands of a job's training (pod.yaml privacy; docs/privacy.md).
struct PrivacyPolicy {
  int64_t min_batch_size = 0;          // 0: any
  int64_t min_samples_per_update = 0;  // 0: any
  int64_t max_local_steps = 0;         // 0: any
  // privacy.differential_privacy: every job must train with DP-SGD and fit the budget.
  bool dp_required = false;
  double epsilon_cap = 0;              // total ε over every job on this dataset
  double delta = 1e-5;
  double min_noise_multiplier = 0;
  std::string ledger;                  // absolute; the spent budget (privacy_ledger.h)
};

struct PodConfig {
  std::string name;
  std::string listen;
  std::string dataset_path;
  std::string dataset_format = "csv";  // csv | idx (dataset_path: images, dataset_labels: labels)
  std::string dataset_labels;
  // A table already in memory, served instead of reading dataset_path: for programs
  // that build pods' data themselves (`fedpod simulate` hands each virtual pod its
  // partition). Never set from pod.yaml.
  std::shared_ptr<const data::Table> table;
  data::CsvOptions csv;
  std::optional<data::Schema> schema;
  std::vector<std::string> devices;  // resolved: e.g. {"cpu"}, {"cpu", "cpu"}, {"cuda:0", "cuda:1"}
  int threads = 0;                   // 0: every core; split between replicas
  std::chrono::milliseconds job_idle_timeout{10 * 60 * 1000};
  int64_t max_frame_bytes = int64_t{2} << 30;
  // Largest accepted message, all frames together (default: max_frame_bytes).
  int64_t max_message_bytes = int64_t{2} << 30;
  // The receiving process's memory limit above its start-up size (gate.h); default
  // 2 × max_message_bytes + 256 MiB: one message arriving while a reply leaves.
  int64_t transport_memory = (int64_t{4} << 30) + (int64_t{256} << 20);
  // `fedpod worker` holds the public socket in the receiving process (gate.h);
  // false keeps it in the worker: one copy less per message, no memory bound.
  bool receiving_process = true;
  // Each direction's shared-memory ring between the receiving process and the worker
  // (gate.h; 0: none).
  int64_t transport_shared_memory = int64_t{256} << 20;
  // Endpoint of the tensor channel (protocol/bulk.h); "" = off.
  std::string tensor_listen;
  CustomModels custom_models = CustomModels::kPolicy;
  SecureAggregationPolicy secure_aggregation;
  PrivacyPolicy privacy;
  std::string log_level = "info";
  std::string key_file;  // absolute
  PolicySource policy;
  std::string audit_log;       // absolute
  // How often the audit chain head is signed and published to the hub (and at every
  // job end); only with a policy from the hub (worker/audit_anchor.h).
  std::chrono::milliseconds audit_publish{60'000};
  // `fedpod worker --reset-audit-log REASON`: start a new audit log on purpose when
  // the old one is missing or contradicts the hub (not a pod.yaml key).
  std::string audit_reset_reason;
  std::string metrics_listen;  // "" = no metrics endpoint
  SandboxConfig sandbox;
};

// The default tensor_listen for `listen`: the same address with any free port
// ("tcp://HOST:*"); "" (off) for an endpoint that is not tcp://host:port.
std::string default_tensor_listen(const std::string& listen);

// Throws ConfigError naming `where` unless `endpoint` is tcp://HOST:PORT with PORT
// 1-65535, or * or 0 (any free port), or an ipc:// path: a typo in a port must not
// make ZeroMQ bind some other port silently.
void check_listen_endpoint(const std::string& endpoint, const std::string& where);

// Throws ConfigError naming `where` unless `token` is a pod token ("pod_...", made by
// `fedpod pod token`): the owner's own hub token never goes on a pod.
void check_pod_token(const std::string& token, const std::string& pod, const std::string& where);

// Reads and validates `path`. Throws ConfigError naming the file and key.
PodConfig load_pod_config(const std::string& path);

// The same over pod.yaml text in memory: `where` names it in errors as the path does,
// and relative paths in it (dataset.path, key_file, ...) resolve against `base_dir`.
// Throws ConfigError, and nothing else, for any text (tests/fuzz/pod_config_fuzz.cpp).
PodConfig parse_pod_config(const std::string& yaml, const std::string& where,
                           const std::string& base_dir);

// Resolves the `devices` setting ({"auto"} or empty, or a list) to the devices the
// pod trains on: auto is every visible CUDA device (torch::cuda::device_count(); 0 in
// a CPU-only libtorch), else {"cpu"}; a list is returned as given once every entry is
// "cpu" or "cuda:N" with N < the count. Throws ConfigError naming the device and the
// devices that exist, for an unknown name, a missing or repeated GPU, or cpu and
// cuda mixed in one list.
std::vector<std::string> resolve_devices(const std::vector<std::string>& requested);
// The same against `cuda_device_count` visible CUDA devices (for tests).
std::vector<std::string> resolve_devices(const std::vector<std::string>& requested, int cuda_device_count);

}  // namespace fedpod::worker
