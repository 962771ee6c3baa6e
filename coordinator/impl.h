// The coordinator's internals, shared by its source files (not installed):
//   coordinator.cpp   the job: resolution, hello, startJob, the round loop, evaluation
//   pod_link.cpp      one link per pod: sockets, tensor channel, exchanges of requests
//   secure_round.cpp  a round with secure aggregation: its sequence of phases
//   job_state.cpp     what a job saves: history.json, checkpoints, round files
#pragma once

#include <kj/exception.h>
#include <torch/torch.h>
#include <zmq.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <algorithm>
#include <atomic>
#include <deque>
#include <random>
#include <set>
#include <functional>
#include <future>
#include <iomanip>
#include <mutex>
#include <ostream>
#include <sstream>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>

#include "fedpod/aggregation/fedavg.h"
#include "fedpod/aggregation/strategies.h"
#include "fedpod/coordinator/checkpoint.h"
#include "fedpod/coordinator/history.h"
#include "fedpod/coordinator/report.h"
#include "fedpod/common/peer_text.h"
#include "fedpod/common/sha256.h"
#include "fedpod/common/utc.h"
#include "fedpod/data/schema.h"
#include "fedpod/hub/client.h"
#include "fedpod/metrics/metrics.h"
#include "fedpod/model/zoo.h"
#include "fedpod/protocol/bulk.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/secagg.h"
#include "fedpod/protocol/secagg_wire.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/runner.h"
#include "fedpod/protocol/wire_convert.h"
#include "fedpod/coordinator/coordinator.h"

namespace fedpod::coordinator {
namespace detail {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Pod {
  PodAddress addr;
  zmq::socket_t socket;
  zmq::socket_t monitor;  // PAIR receiving this socket's connect/disconnect events
  bool connected = false;
  bool secured = false;          // a CURVE handshake completed at least once
  std::string handshake_error;   // why the last handshake failed, from the monitor
  bool active = false;  // accepted the job
  bool needs_rejoin = false;  // lost the job or the connection: startJob again before its next round
  int rejoin_attempts = 0;    // since it was last flagged
  int64_t train_samples = 0;
  // jobAccepted's validation and test rows: an evalResult's weight is capped at them.
  int64_t validation_samples = 0;
  int64_t test_samples = 0;
  uint64_t max_frame_bytes = 0;  // from helloReply; 0: not advertised
  // The tensor channel (protocol/bulk.h): a DEALER to the pod's tensor endpoint (no
  // CURVE: what travels there is sealed) and the keys agreed at the last startJob.
  zmq::socket_t tensor;
  std::string tensor_address;  // where `tensor` is connected; "" = not yet
  protocol::BulkSession tensors;
  bool sealed = false;  // train, fetchResult and evaluate go sealed over `tensor`
  bool uploads_when_done = false;  // jobAccepted.uploadsWhenDone: may be sent train with uploadWhenDone
};

// Why a pod never connected, found out with a plain TCP connect of at most `budget`
// (ZeroMQ only retries, silently): outcome "unreachable" or "timeout", a cause
// (name_not_resolved, connection_refused, no_tcp_answer, network, no_answer: TCP
// connects but no fedpod answered) and a sentence saying what to check.
struct Unreached {
  std::string outcome, cause, reason;
};
Unreached diagnose_unreached(const std::string& address, std::chrono::milliseconds budget);

// Called with each valid reply of an expected kind; returns the pod's outcome, or
// nullopt when the pod has more to say (it stays pending).
using ReplyHandler = std::function<std::optional<PodRound>(Pod&, protocol::Incoming&)>;
using Kinds = std::vector<wire::Envelope::Body::Which>;

inline std::string fmt(double v, int digits = 4) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// Why a reply was discarded (fedpod_coordinator_discarded_replies_total{reason}).
// A training update is keyed by (job, round, pod): a reply is read only when its
// job id is this job's, its request id is the exchange's, and, for trainDone and
// trainResult, its round is the one being collected and that (round, pod) has not
// been folded yet.
// The most rows of any split a pod's jobAccepted may report (2^48): far above any
// dataset, far below where weights summed over thousands of pods overflow.
constexpr uint64_t kMaxPodRows = uint64_t{1} << 48;

constexpr const char* kStaleRequest = "stale_request";  // an older request's reply
constexpr const char* kClosedRound = "closed_round";    // an update for a round already closed
constexpr const char* kDuplicate = "duplicate";         // a second update for a (round, pod) already taken
constexpr const char* kWrongJob = "wrong_job";          // another job's reply
constexpr const char* kUnfetched = "unfetched";         // a trainResult not asked for (no fetchResult out)
constexpr const char* kDiscardReasons[] = {kStaleRequest, kClosedRound, kDuplicate, kWrongJob, kUnfetched};

// Messages a pod's socket queues before ZeroMQ stops reading from its connection
// (ZMQ_RCVHWM). The coordinator expects at most a few replies from a pod at a time
// (heartbeats, trainDone, trainResult); a pod that floods it meets TCP backpressure
// instead of growing the coordinator's memory by up to ZeroMQ's default of 1000 messages.
constexpr int kPodReceiveHwm = 16;

// How long the first rejoin after a pod was lost waits for ZeroMQ to reconnect to it
// (dealer reconnect_ivl_max is 2 s).
constexpr std::chrono::milliseconds kRejoinGrace{2500};

// How long a broadcast waits for earlier sealed copies to leave before it sends the
// next pod's anyway (exchange()).
constexpr std::chrono::milliseconds kSealedStall{500};

// The longest an exchange waits in one poll before it looks at the stop flag again
// (a signal interrupts the poll only when it lands on this thread).
constexpr std::chrono::milliseconds kStopPoll{100};

// A pod that answers `busy` to a request of the job it holds is still finishing
// earlier work (a round it was late for, an evaluation no one waits for any more):
// exchange() asks it again after a pause that starts at kBusyRetryFirst and doubles,
// up to kBusyRetries times (25, 50, 100, 200 and 400 ms: 775 ms in all) while the
// deadline allows, instead of leaving it out for the round.
constexpr std::chrono::milliseconds kBusyRetryFirst{25};
constexpr int kBusyRetries = 5;

// The job's metrics (listed in coordinator.h), defined on `registry`.
struct JobMetrics {
  explicit JobMetrics(prometheus::Registry& r)
      : rounds_completed(metrics::counter(r, "fedpod_coordinator_rounds_completed_total",
                                          "Training rounds completed (at least min_pods answered)")
                             .Add({})),
        round_duration(metrics::histogram(r, "fedpod_coordinator_round_duration_seconds",
                                          "Wall time of each completed round: training, aggregation and validation")
                           .Add({}, metrics::seconds_buckets())),
        pod_responses(metrics::counter(r, "fedpod_coordinator_pod_responses_total",
                                       "Pods' answers to startJob, train and evaluate, by pod and outcome "
                                       "(ok, timeout, error, refused, unreachable, disconnected)")),
        update_bytes(metrics::counter(r, "fedpod_coordinator_update_bytes_total",
                                      "Parameter bytes of training rounds: sent (the global model, once per pod) "
                                      "and received (the pods' updates)")),
        bytes_sent(update_bytes.Add({{"direction", "sent"}})),
        bytes_received(update_bytes.Add({{"direction", "received"}})),
        message_bytes(metrics::counter(r, "fedpod_coordinator_bytes_total",
                                       "Bytes of every message to and from the pods, by direction: envelopes, "
                                       "parameters, heartbeats and artifacts, as handed to ZeroMQ (sealed tensor "
                                       "frames at their sealed size; before CURVE and TCP framing)")),
        all_sent(message_bytes.Add({{"direction", "sent"}})),
        all_received(message_bytes.Add({{"direction", "received"}})),
        aggregation(metrics::histogram(r, "fedpod_coordinator_aggregation_seconds",
                                       "Time spent folding each round's updates and finishing the aggregate")
                        .Add({}, metrics::seconds_buckets())),
        global_loss(metrics::gauge(r, "fedpod_coordinator_global_loss",
                                   "Loss of the global model at the last evaluation, by split (validation, test)")),
        global_accuracy(metrics::gauge(r, "fedpod_coordinator_global_accuracy",
                                       "Accuracy of the global model at the last evaluation, by split "
                                       "(validation, test)")),
        job_info(metrics::gauge(r, "fedpod_coordinator_job_info",
                                "The job this coordinator runs: always 1, its id and model in the labels")),
        rejoins(metrics::counter(r, "fedpod_coordinator_pod_rejoins_total",
                                 "Pods that lost the job or the connection and took the job again (startJob) "
                                 "before a later round")),
        checkpoint_seconds(metrics::histogram(r, "fedpod_coordinator_checkpoint_seconds",
                                              "Time to write the checkpoint after each completed round")
                               .Add({}, metrics::seconds_buckets())),
        checkpoints_skipped(metrics::counter(r, "fedpod_coordinator_checkpoints_skipped_total",
                                             "Rounds whose checkpoint and history were not written because a later "
                                             "round's replaced them while the previous write was still going (the "
                                             "disk is slower than the rounds); the last round's are always written")
                                .Add({})),
        discarded_replies(metrics::counter(r, "fedpod_coordinator_discarded_replies_total",
                                           "Pod replies discarded unread, by reason: stale_request (an older "
                                           "request), closed_round (an update for a round already closed), "
                                           "duplicate (an update already folded), wrong_job, unfetched (a "
                                           "trainResult sent before the coordinator asked for it)")),
        tensor_refused(metrics::counter(r, "fedpod_coordinator_tensor_messages_refused_total",
                                        "Messages on a pod's tensor channel dropped unread, by reason: malformed, "
                                        "unknown_session, replay, tampered (an authentication tag failed), "
                                        "round_mismatch")),
        weight_capped(metrics::counter(r, "fedpod_coordinator_update_weight_capped_total",
                                       "Updates whose sample count exceeded the training rows the pod reported "
                                       "when it accepted the job; their weight was capped to those rows")) {
    // Every reason from the start: a discard shows as a rate, not as a series appearing.
    for (const char* reason : kDiscardReasons) discarded_replies.Add({{"reason", reason}});
  }

  prometheus::Counter& rounds_completed;
  prometheus::Histogram& round_duration;
  prometheus::Family<prometheus::Counter>& pod_responses;
  prometheus::Family<prometheus::Counter>& update_bytes;
  prometheus::Counter& bytes_sent;
  prometheus::Counter& bytes_received;
  prometheus::Family<prometheus::Counter>& message_bytes;
  prometheus::Counter& all_sent;
  prometheus::Counter& all_received;
  prometheus::Histogram& aggregation;
  prometheus::Family<prometheus::Gauge>& global_loss;
  prometheus::Family<prometheus::Gauge>& global_accuracy;
  prometheus::Family<prometheus::Gauge>& job_info;
  prometheus::Family<prometheus::Counter>& rejoins;
  prometheus::Histogram& checkpoint_seconds;
  prometheus::Counter& checkpoints_skipped;
  prometheus::Family<prometheus::Counter>& discarded_replies;
  prometheus::Family<prometheus::Counter>& tensor_refused;
  prometheus::Family<prometheus::Counter>& weight_capped;
  prometheus::Gauge* job_info_child = nullptr;  // the current labels' child

  // Replaces the job_info child (the model label changes once a hub model resolves).
  void set_job_info(const std::string& job_id, const std::string& model) {
    if (job_info_child) job_info.Remove(job_info_child);
    job_info_child = &job_info.Add({{"job_id", job_id}, {"model", model}});
    job_info_child->Set(1);
  }
};

}  // namespace detail

using namespace detail;

struct Coordinator::Impl {
  zmq::context_t& ctx;
  JobSpec spec;
  Logger log;
  std::ostream& progress;
  std::vector<Pod> pods;
  uint64_t next_request = 1;
  // The model: built in this process (a built-in one, or a custom one without a
  // runner command), or in a confined job runner (spec.runner_command) that ends once
  // the layout and initial values are known.
  std::unique_ptr<model::Model> model;
  std::unique_ptr<worker::ModelRunner> model_runner;
  std::optional<model::HyperparameterSpec> declared;  // what the model declares
  std::vector<model::ParamInfo> layout;               // after create_model()
  torch::Tensor initial;                              // its initial values, float32
  std::vector<protocol::TensorSpec> specs;
  data::Datastructure ds;  // with resolved features
  nlohmann::json history;
  std::string history_path, model_path, report_path;

  Coordinator::ModelFactory make_model;
  Coordinator::CustomLoader load_custom;

  // A custom model resolved through the hub.
  struct Resolved {
    hub::VersionInfo version;
    std::shared_ptr<const std::string> artifact;  // its bytes, sent in startJob
  };
  std::optional<Resolved> resolved;
  // The modeller's CURVE key pair (job key_file); nullopt: no CURVE.
  std::optional<protocol::CurveKeyPair> keys;

  // Metrics: this job's registry and, with metrics_listen, its HTTP endpoint.
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  JobMetrics job_metrics{*registry};
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  // Why /readyz is not ready yet; "" once training started. Read on the server's threads.
  std::mutex phase_mutex;
  std::string not_ready = "the job has not started: no pod contacted yet";  // guarded by phase_mutex

  void set_not_ready(std::string reason);

  Impl(zmq::context_t& c, JobSpec s, Logger l, std::ostream& p, Coordinator::ModelFactory f,
       Coordinator::CustomLoader lc)
      : ctx(c), spec(std::move(s)), log(std::move(l)), progress(p), make_model(std::move(f)),
        load_custom(std::move(lc)) {
    if (!spec.key_file.empty()) {
      auto k = protocol::read_key_file(spec.key_file);
      if (!k.ok()) throw ConfigError("key_file: " + k.status().message());
      if (k->secret_key.empty()) {
        throw ConfigError("key_file: " + spec.key_file + " holds only a public key; give the .key file");
      }
      keys = *k;
    }
    job_metrics.set_job_info(spec.job_id, model_label());
    if (!spec.metrics_listen.empty()) {
      metrics::MetricsServerOptions mo;
      Status ms = metrics::parse_listen_address(spec.metrics_listen, mo.host, mo.port);
      if (!ms.ok()) throw ConfigError("metrics_listen: " + ms.message());
      mo.readiness = [this]() -> std::string {
        std::lock_guard<std::mutex> lock(phase_mutex);
        return not_ready;
      };
      metrics_server = std::make_unique<metrics::MetricsServer>(registry, mo);
      ms = metrics_server->start();
      if (!ms.ok()) throw ConfigError("metrics_listen: " + ms.message());
      log->info("event=metrics_listening job={} address={}", spec.job_id, metrics_server->address());
    }
  }

  // The server's threads read the registry and not_ready: stop them first. The round
  // files' writer writes what waits (the latest state is what a resume needs).
  ~Impl() {
    if (metrics_server) metrics_server->stop();
    stop_round_files();
  }

  // The model as job_info names it: "mlp", "alice/net:2", "alice/net:latest".
  std::string model_label() const;

  // Counts each pod's answer in pod_responses_total.
  void count_responses(const std::map<size_t, PodRound>& replies);

  // Exactly-once bookkeeping for training updates, keyed by (job, round, pod); the
  // run() thread only. A round opens when its train goes out and closes when its
  // collection ends (all pods answered, or the deadline): no update for it is taken
  // after that, whenever it arrives.
  int open_round = 0;          // the round whose updates are being collected; 0: none
  int last_closed_round = 0;   // rounds up to this one take no more updates
  int current_round = 0;       // the round in progress (training or its validation), for logs
  std::set<std::pair<int, size_t>> folded_updates;  // (round, pod) whose update went into an aggregate
  int round_discarded = 0;     // replies discarded since the current round started

  // Why `env` from pod `i` is not a reply to the exchange of `request_id`; nullptr
  // when it is (it may still be the wrong kind: receive() decides that).
  const char* discard_reason(size_t i, wire::Envelope::Reader env, uint64_t request_id) const;

  // Counts and logs (once, at info: it is rare and says a pod misbehaves or lags)
  // a reply that is not used; history.json has the per-round and per-reason counts.
  void discard(const Pod& pod, const char* reason, wire::Envelope::Reader env, uint64_t expected_request);

  // Records an evaluation in the global_loss/global_accuracy gauges.
  void record_eval(const std::optional<EvalSummary>& s);

  std::string model_name() const;

  // A client of the job's hub (TLS verified with hub_ca or the system store).
  StatusOr<std::unique_ptr<hub::Client>> hub_client() const;

  // Resolves the custom model through the hub and downloads its artifact; then loads
  // it in a runner (with a runner command) or in this process.
  Status resolve_custom();

  Status hyperparameters_of_model();

  // Pods named without an address are looked up on the hub (fedpod pod register).
  Status resolve_pod_addresses();

  void connect_pods();

  void close_pods();

  protocol::SocketOptions tensor_options;

  // A pod's trainDone metrics and seconds into `pr`: they go into history.json and
  // report.html beside the coordinator's own fields. Names must be plain (a letter or
  // '_', then letters, digits, '_' or '.'; at most 64 characters), none of those
  // fields, at most 64 of them; the error names the first that is not. A value that is
  // not finite (JSON has no NaN) is left out and logged.
  Status take_train_metrics(const Pod& pod, int round, wire::TrainDone::Reader d, PodRound& pr);
  // The most samples `pod` may process in one round of this job's plan: local_steps ×
  // batch_size, or local_epochs × its training rows.
  double most_samples_per_round(const Pod& pod) const {
    if (spec.local_steps > 0) return static_cast<double>(spec.local_steps) * spec.batch_size;
    return static_cast<double>(spec.local_epochs) * static_cast<double>(pod.train_samples);
  }

  // Sets up the tensor channel with `pod` from its jobAccepted: the keys (bound to
  // the job and the pod's CURVE key) and a connection to its tensor port. A pod
  // that offers none, or an address without a port, keeps everything on CURVE.
  Status open_tensor_channel(Pod& pod, const protocol::BulkKeyPair& mine, wire::JobAccepted::Reader a);

  static bool carries_tensors(wire::Envelope::Body::Which w) {
    return w == wire::Envelope::Body::TRAIN || w == wire::Envelope::Body::FETCH_RESULT ||
           w == wire::Envelope::Body::EVALUATE;
  }

  // Sends `out` to `pod`: sealed over the tensor channel when the pod has one and
  // `out` is train, fetchResult or evaluate; over CURVE otherwise.
  bool send_to(Pod& pod, protocol::Outgoing& out);

  enum class TensorIn { kOpened, kNotice, kDropped };
  // A message from `pod`'s tensor channel: opened in place into `frames`, a notice
  // that the pod holds no such session (it restarted), or dropped and counted.
  TensorIn open_tensor(Pod& pod, std::vector<zmq::message_t>& frames, bool too_many);

  // Why a handshake with `pod` failed, in words that say what to fix.
  std::string handshake_failure(const Pod& pod, uint16_t event, uint32_t value) const;

  // Applies pending monitor events; returns true if `pod` disconnected (or its
  // handshake failed) meanwhile.
  bool drain_monitor(Pod& pod);
  // The upload window (max_concurrent_uploads), called with the pods still pending:
  // forgets uploads that ended (answered, failed or disconnected), then sends
  // `fetch` to the pods in `ready` while there is room. A failed send leaves the pod
  // pending: the monitor or the deadline settles it.
  static void forget_finished_uploads(const std::vector<size_t>& pending, std::set<size_t>& fetching);
  void fill_upload_window(const std::vector<size_t>& pending, std::set<size_t>& fetching, std::deque<size_t>& ready,
                          protocol::Outgoing& fetch);

  // Sends `out` to each pod in `targets` and collects their replies of kind `want`
  // until all answered or `deadline`. `require_connected`: skip pods known to be
  // disconnected instead of queueing for them. `on_tick` runs before each poll with
  // the pods that have not answered yet, including those whose sealed copy is still
  // waiting to be sent (a broadcast of large parameters is paced).
  std::map<size_t, PodRound> exchange(protocol::Outgoing& out, uint64_t request_id,
                                      const std::vector<size_t>& targets, const Kinds& want,
                                      Clock::time_point deadline, bool require_connected,
                                      const ReplyHandler& on_reply,
                                      const std::function<void(const std::vector<size_t>&)>& on_tick = nullptr,
                                      size_t* sent_count = nullptr, bool heartbeats = false,
                                      const std::function<bool(size_t)>& exempt = nullptr);

  // exchange() with a message of its own for each pod (`message_for(i)`), all of one
  // kind and request id.
  using MessageFor = std::function<protocol::Outgoing&(size_t)>;
  std::map<size_t, PodRound> exchange_each(const MessageFor& message_for, uint64_t request_id,
                                           const std::vector<size_t>& targets, const Kinds& want,
                                           Clock::time_point deadline, bool require_connected,
                                           const ReplyHandler& on_reply,
                                           const std::function<void(const std::vector<size_t>&)>& on_tick = nullptr,
                                           size_t* sent_count = nullptr, bool heartbeats = false,
                                           const std::function<bool(size_t)>& exempt = nullptr);

  // One received message from `pod`: nullopt when it is discarded (discard_reason)
  // or the handler waits for more.
  std::optional<PodRound> receive(Pod& pod, std::vector<zmq::message_t>& frames, bool too_many,
                                  uint64_t request_id, const Kinds& want, const ReplyHandler& on_reply);

  std::vector<size_t> active_pods() const;

  // Client sampling (JobSpec::sample_*): the pods of `available` that train `round`.
  std::vector<size_t> sample_pods(std::vector<size_t> available, int round) const;

  // The active pods that hold the job now: those waiting to rejoin have none to train
  // or evaluate with.
  std::vector<size_t> pods_with_job() const;

  std::string describe_failures(const std::map<size_t, PodRound>& r) const;

  std::map<std::string, PodRound> by_name(const std::map<size_t, PodRound>& r) const;

  // Phase 1: hello and schema checks. Returns the pods that can take the job.
  Status hello_and_check();

  // One code for every category on every pod, before round 1 (data::agree_categories),
  // recorded in history.json and in the checkpoint's fingerprint.
  Status agree_categories(const std::vector<data::PodSchema>& answered);

  // Before any pod is contacted: the model object (a custom one resolved through the
  // hub and loaded), and the job's hyperparameters checked against what it declares.
  bool config_error = false;  // the job's own settings are wrong (exit 2 in the CLI)
  Status load_model();

  Status create_model();

  // Sends startJob to `targets` (with the custom model's artifact, if any) and
  // collects the answers; `decisions` receives each accepting pod's basis.
  std::map<size_t, PodRound> send_start_job(std::vector<size_t> targets, std::map<size_t, std::string>& decisions);

  bool job_sent = false;  // startJob went out: pods may hold the job
  Status start_job();

  // Pods that lost the job (restarted) or the connection during a round take it
  // again before the next one: startJob to each one connected now. Returns the
  // outcome of every attempt; a pod that accepted trains this round.
  std::map<size_t, PodRound> rejoin_pods(int round);

  // After a pod's answer to a round: does it need startJob again before the next?
  static bool lost_job_or_link(const PodRound& r);

  void mark_rejoins(const std::map<size_t, PodRound>& replies);

  // Evaluates `global` on every active pod's `split`.
  std::optional<EvalSummary> evaluate(const torch::Tensor& global, int round, wire::Split split);

  void end_job(const std::string& reason);

  // history.json and the report drawn from it, rewritten at every change of the
  // job's state: here at once (after any round's files still being written), and
  // after each round by write_round_files, off the round's path.
  void write_history();

  // A completed round's files (its checkpoint, then history.json and report.html)
  // are written on their own thread while the next rounds run, one write at a time
  // and never torn (checkpoint.h, "When"). When a write is still going as another
  // round ends, that round's files wait; a later round's replace them (latest wins),
  // so a disk slower than the rounds costs skipped checkpoints, never round time.
  // Returns the error of an earlier write, if one failed.
  //
  // What the coordinator's thread copies per round does not grow with the job: rounds
  // are only ever appended to history["rounds"], so it hands over the history less its
  // rounds (`head`) and the rounds completed since its last handover; the writer keeps
  // the rounds it was given (`written_rounds`) and assembles the whole history there.
  // The writer rests after each write for kFilesRestFactor times the CPU time the write
  // took, so however long the history grows, its files take at most a fifth of one
  // core from the rounds (a write of 17 MB of history costs ~0.3 s of CPU).
  struct RoundFiles {
    int round = 0;
    std::optional<Checkpoint> checkpoint;  // its history is assembled by write_files
    nlohmann::json head;                   // history.json less "rounds"
    nlohmann::json new_rounds = nlohmann::json::array();  // not handed over before
  };
  static constexpr double kFilesRestFactor = 4;

  Status write_round_files(int round, const torch::Tensor& global, const aggregation::Strategy& strategy);

  void write_files_loop();

  Status write_files(RoundFiles& f);

  // Waits until every round's files handed over are written (the latest included);
  // the first error any write had.
  Status finish_round_files();

  void stop_round_files();

  // torch's default CPU generator: saved in the checkpoint, restored on resume.
  static torch::Tensor rng_state();
  static void set_rng_state(const torch::Tensor& state);

  // What must not change between a run and its resume (checkpoint.h).
  nlohmann::json fingerprint() const;

  std::string checkpoint_path;
  std::optional<Checkpoint> resume_from;  // --resume: the checkpoint read at start

  // --resume: reads the checkpoint and takes the job's identity from it, before
  // anything is sent. The rest is checked once the model exists (restore_checkpoint).
  Status load_resume();

  // --resume, once the model exists: the same job, the same model, the saved state.
  Status restore_checkpoint(torch::Tensor& global, aggregation::Strategy& strategy);

  // What the checkpoint after `round` holds. Tensors the next round may change in
  // place are copied: the strategy's state. The global parameters are not: each
  // round's aggregate is a tensor of its own (a strategy reuses a buffer only once
  // nobody else holds it). Its history is left empty: the file writer fills it in.
  Checkpoint make_checkpoint(int round, const torch::Tensor& global, const aggregation::Strategy& strategy);

  StatusOr<RunResult> run();

  // Stopping (Coordinator::set_stop_flag): a signal number stored by the caller's
  // handler, read by every wait of the job (exchange() polls at most kStopPoll at a
  // time). Once set, pending exchanges end with outcome "stopped" and the job ends
  // between steps: no round is cut short in a way a resume could notice, because a
  // round that did not complete is redone from the last checkpoint.
  const std::atomic<int>* stop_flag = nullptr;

  // Progress for programs (Coordinator::set_event_stream): one JSON object per line.
  std::ostream* events = nullptr;
  void emit(nlohmann::json e);
  // Set by run_job() for a round's training exchange: `settled` for each pod as its
  // outcome is known, `waiting` on every pass of the exchange's loop with the pods
  // still pending.
  std::function<void(size_t, const PodRound&)> settled_hook;
  std::function<void(const std::vector<size_t>&)> waiting_hook;
  double run_seconds = 0;  // this run's completed rounds, for the ETA
  int run_rounds = 0;
  bool ignore_stop = false;  // end_job() after a stop still waits for the pods' answers
  bool stopped = false;      // run() ended because of stop_flag
  int stopping() const { return stop_flag && !ignore_stop ? stop_flag->load() : 0; }
  // The error a stopped job returns from run_job().
  Status stop_status() const;

  // fedpod job stop: endJob to every pod of the job, from the job's own key, without
  // running it; each pod's outcome.
  StatusOr<std::map<std::string, PodRound>> end_job_on_pods(const std::string& reason);

  RunResult result;
  double aggregation_seconds = 0;  // time spent folding updates, all rounds

  // Secure aggregation (protocol/secagg.h), resolved once the pods answered hello:
  // the settings every pod gets in startJob. A pod's id in the protocol is its place
  // in the job's pod list, plus one.
  std::optional<protocol::secagg::Settings> secagg;
  Coordinator::StepObserver step_observer;
  nlohmann::json secagg_steps;  // the last secure round's step durations (s), for history.json
  int64_t max_rows = 0;  // the largest dataset among the pods that answered hello
  static uint32_t secagg_id(size_t i) { return static_cast<uint32_t>(i + 1); }

  Status resolve_secure_aggregation();

  // One round with secure aggregation (protocol/secagg.h): A. train, and each pod's
  // trainDone carries its keys; B. secAggShare -> secAggShares; C. secAggMask ->
  // secAggMasked, then fetchResult -> the masked update (at most
  // max_concurrent_uploads at once, each added to the ring sum as it arrives);
  // D. secAggUnmask -> secAggReveal; then the masks come off and the decoded average
  // is folded into `strategy` once. Returns each pod's outcome: a pod in the sum is
  // "ok", even when it dropped in step D.
  std::map<size_t, PodRound> secure_round(int round, uint64_t rid, const std::vector<size_t>& targets,
                                          protocol::Outgoing& train, Clock::time_point start,
                                          const torch::Tensor& global, aggregation::Strategy& strategy,
                                          long double& loss_sum, int64_t& loss_weight, double& seconds_aggregating,
                                          size_t& sent);

  Status run_job();
  // Each pod's ε so far (its trainDone metric "epsilon") into history.json's
  // differential_privacy section; nothing for a job without DP.
  void record_epsilon(const RoundRecord& rec, int round);

  // The round files' writer (write_round_files): what waits to be written, whether
  // a write is going, the first error. Its thread is stopped in ~Impl, after writing
  // what waits (the latest state is what a resume needs).
  std::mutex files_mu;
  std::condition_variable files_cv;
  std::optional<RoundFiles> files_pending;
  bool files_busy = false;
  bool files_stop = false;
  int files_flush = 0;         // finish_round_files callers waiting: no rest for them
  size_t rounds_handed_over = 0;  // history["rounds"] entries given to the writer (job thread)
  nlohmann::json written_rounds = nlohmann::json::array();  // the writer's own (writer thread)
  Status files_error;
  std::thread files_thread;
};

}  // namespace fedpod::coordinator
