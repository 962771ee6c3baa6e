// Worker: a pod's long-running server (`fedpod worker --config pod.yaml`).
//
// It binds a ROUTER socket and answers the coordinator's requests:
//   hello      -> schema of the local dataset, devices, active job
//   startJob   -> builds the model and the dataset splits for the job
//   train      -> loads the global parameters, trains locally, answers trainDone
//   fetchResult-> sends the trained parameters (zero-copy from the model's buffer)
//   evaluate   -> loads parameters, scores the validation or test split
//   endJob     -> drops the job
//   heartbeat  -> busy flag and round
// One job at a time: a startJob for another job while one is active is refused
// with kBusy. A job idle longer than job_idle_timeout is ended, so a vanished
// coordinator cannot hold the pod forever.
//
// Identity and permissions (docs/permissions.md): the ROUTER is a CURVE server with
// the pod's key; the context's ZAP handler admits only keys of users in the pod's
// policy (PolicyCache: from the hub or a file), and every message carries the
// authenticated user. startJob is decided by decide() (policy.h) before any model
// code loads; each decision is appended to the audit log, refusals are counted in
// fedpod_access_denied_total{reason}. Only the user who started a job may drive it.
//
// Threads: serve() runs the socket loop; training and evaluation run on a second
// (executor) thread that hands finished replies back through an inproc PAIR socket,
// so heartbeats and refusals are answered while a round trains. Bad messages get
// an Error reply and are counted; the loop keeps serving.
#pragma once

#include <atomic>
#include <functional>
#include <cstdint>
#include <memory>
#include <string>
#include <zmq.hpp>

#include "fedpod/common/log.h"
#include "fedpod/model/custom.h"
#include "fedpod/model/zoo.h"
#include "fedpod/worker/config.h"
#include "fedpod/worker/engine.h"
#include "fedpod/worker/trainer.h"

namespace fedpod::worker {

// Counters for observability and tests. Read from any thread.
struct WorkerCounters {
  std::atomic<int64_t> bad_messages{0};
  std::atomic<int64_t> jobs_started{0};
  std::atomic<int64_t> jobs_refused{0};
  std::atomic<int64_t> rounds_trained{0};
  std::atomic<int64_t> samples_trained{0};
  std::atomic<int64_t> evaluations{0};
  std::atomic<int64_t> heartbeats{0};
  std::atomic<int64_t> access_denied{0};       // startJob refused by the permission check
  std::atomic<int64_t> handshakes_refused{0};  // CURVE handshakes with a key of no known user
};

// Runtime (what runs a job's model code, and where) is in engine.h.

class Worker {
 public:
  // Loads the dataset (reporting skipped rows) and binds the ROUTER socket.
  // Throws ConfigError for a dataset that cannot be read or an address that
  // cannot be bound. `ctx` must outlive the Worker.
  Worker(zmq::context_t& ctx, PodConfig config, Logger log, Runtime runtime = Runtime());
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // The bound endpoint, with the real port when the config said "*".
  const std::string& endpoint() const { return endpoint_; }
  // The tensor channel's bound endpoint (pod.yaml tensor_listen); "" when off.
  const std::string& tensor_endpoint() const;
  const PodConfig& config() const { return config_; }
  const WorkerCounters& counters() const { return counters_; }
  // This pod's CURVE public key (coordinators use it as the server key).
  const std::string& public_key() const;
  // The port of /metrics, /healthz, /readyz (config metrics_listen); 0 when off.
  int metrics_port() const;
  // The pod's metrics in Prometheus text format, as /metrics serves them.
  std::string metrics_text() const;

  // Serves until `stop` becomes true (checked every 100 ms). Call from one thread,
  // once; the socket moves to that thread.
  void serve(const std::atomic<bool>& stop);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PodConfig config_;
  std::string endpoint_;
  WorkerCounters counters_;
};

}  // namespace fedpod::worker
