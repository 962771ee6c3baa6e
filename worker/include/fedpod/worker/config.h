// A pod's configuration (pod.yaml).
//
//   name: pod-a                       # how coordinators and logs name this pod
//   listen: tcp://0.0.0.0:5555        # ROUTER endpoint to bind
//   dataset:
//     path: data/pod-a.csv            # relative paths are relative to this file
//     header: true                    # first line names the columns (default true)
//     delimiter: ","                  # default ","
//     on_bad_row: error               # error (default) | skip: skip, count, report
//     schema:                         # optional; inferred from the file when absent
//       - {name: age, type: numeric}
//       - {name: label, type: categorical, categories: [cat, dog]}
//   devices: auto                     # auto | [cpu]
//   threads: 1                        # libtorch intra-op threads (default: all cores)
//   job_idle_timeout: 10m             # a job with no message for this long is ended
//   max_frame_bytes: 2147483648       # largest accepted ZeroMQ frame (also bounds a
//                                     # custom model's artifact, sent as one frame)
//   custom_models: refuse             # refuse (default) | allow_unauthenticated
//   log_level: info
//
// custom_models. A custom model (a TorchScript archive or a native plugin from the
// model hub) is arbitrary code: loading it runs it on this pod with the worker's
// privileges and access to the whole dataset. Pods will decide who may run what
// from the modeller's CURVE identity and the pod owner's grants (a later release);
// until then the username in a startJob is just text anyone can write. So:
//   refuse                 every custom model is refused with permissionDenied;
//                          built-in models (logreg, mlp, cnn) still run.
//   allow_unauthenticated  DANGEROUS: any peer that can reach `listen` can run any
//                          code on this pod and read its data. Only for air-gapped
//                          tests and demos on loopback; never on a shared network.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "fedpod/data/csv.h"
#include "fedpod/data/schema.h"

namespace fedpod::worker {

enum class CustomModels {
  kRefuse,                // default
  kAllowUnauthenticated,  // dangerous: see custom_models above
};

struct PodConfig {
  std::string name;
  std::string listen;
  std::string dataset_path;
  data::CsvOptions csv;
  std::optional<data::Schema> schema;
  std::vector<std::string> devices;  // resolved: e.g. {"cpu"}
  int threads = 0;                   // 0: every core
  std::chrono::milliseconds job_idle_timeout{10 * 60 * 1000};
  int64_t max_frame_bytes = int64_t{2} << 30;
  CustomModels custom_models = CustomModels::kRefuse;
  std::string log_level = "info";
};

// Reads and validates `path`. Throws ConfigError naming the file and key.
PodConfig load_pod_config(const std::string& path);

// Resolves the `devices` setting ("auto", or a list) to device names this build can
// use. Throws ConfigError for a device that does not exist.
std::vector<std::string> resolve_devices(const std::vector<std::string>& requested);

}  // namespace fedpod::worker
