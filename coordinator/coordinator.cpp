#include "fedpod/coordinator/coordinator.h"

#include <kj/exception.h>
#include <torch/torch.h>
#include <zmq.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <algorithm>
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
#include "fedpod/coordinator/checkpoint.h"
#include "fedpod/coordinator/history.h"
#include "fedpod/coordinator/report.h"
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
#include "fedpod/worker/wire_convert.h"

namespace fedpod::coordinator {
namespace {

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
  uint64_t max_frame_bytes = 0;  // from helloReply; 0: not advertised
  // The tensor channel (protocol/bulk.h): a DEALER to the pod's tensor endpoint (no
  // CURVE: what travels there is sealed) and the keys agreed at the last startJob.
  zmq::socket_t tensor;
  std::string tensor_address;  // where `tensor` is connected; "" = not yet
  protocol::BulkSession tensors;
  bool sealed = false;  // train, fetchResult and evaluate go sealed over `tensor`
};

// Called with each valid reply of an expected kind; returns the pod's outcome, or
// nullopt when the pod has more to say (it stays pending).
using ReplyHandler = std::function<std::optional<PodRound>(Pod&, protocol::Incoming&)>;
using Kinds = std::vector<wire::Envelope::Body::Which>;

std::string fmt(double v, int digits = 4) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << v;
  return s.str();
}

// Why a reply was discarded (fedpod_coordinator_discarded_replies_total{reason}).
// A training update is keyed by (job, round, pod): a reply is read only when its
// job id is this job's, its request id is the exchange's, and, for trainDone and
// trainResult, its round is the one being collected and that (round, pod) has not
// been folded yet.
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

}  // namespace

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

  void set_not_ready(std::string reason) {
    std::lock_guard<std::mutex> lock(phase_mutex);
    not_ready = std::move(reason);
  }

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
  std::string model_label() const {
    if (spec.model.username.empty()) return spec.model.ref;
    const uint32_t v = resolved ? static_cast<uint32_t>(resolved->version.version) : spec.model.version;
    return spec.model.username + "/" + spec.model.ref + ":" + (v ? std::to_string(v) : std::string("latest"));
  }

  // Counts each pod's answer in pod_responses_total.
  void count_responses(const std::map<size_t, PodRound>& replies) {
    for (const auto& [i, r] : replies) {
      job_metrics.pod_responses.Add({{"pod", pods[i].addr.name}, {"outcome", r.outcome}}).Increment();
    }
  }

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
  const char* discard_reason(size_t i, wire::Envelope::Reader env, uint64_t request_id) const {
    if (std::string(env.getJobId().cStr()) != spec.job_id) return kWrongJob;
    auto body = env.getBody();
    std::optional<uint32_t> round;
    if (body.which() == wire::Envelope::Body::TRAIN_DONE) round = body.getTrainDone().getRound();
    if (body.which() == wire::Envelope::Body::TRAIN_RESULT) round = body.getTrainResult().getRound();
    if (round) {
      const int r = static_cast<int>(*round);
      if (folded_updates.count({r, i})) return kDuplicate;
      if (r != open_round && r <= last_closed_round) return kClosedRound;
    }
    if (env.getRequestId() != request_id) return kStaleRequest;
    return nullptr;
  }

  // Counts and logs (once, at info: it is rare and says a pod misbehaves or lags)
  // a reply that is not used; history.json has the per-round and per-reason counts.
  void discard(const Pod& pod, const char* reason, wire::Envelope::Reader env, uint64_t expected_request) {
    job_metrics.discarded_replies.Add({{"reason", reason}}).Increment();
    ++round_discarded;
    auto& totals = history["discarded_replies_by_reason"];
    totals[reason] = totals.value(reason, 0) + 1;
    auto body = env.getBody();
    std::string detail;  // what the reply was about, when it says
    if (body.which() == wire::Envelope::Body::TRAIN_DONE) {
      detail = " reply_round=" + std::to_string(body.getTrainDone().getRound());
    } else if (body.which() == wire::Envelope::Body::TRAIN_RESULT) {
      detail = " reply_round=" + std::to_string(body.getTrainResult().getRound());
    } else if (body.which() == wire::Envelope::Body::ERROR) {
      detail = std::string(" error=\"") + body.getError().getMessage().cStr() + "\"";
    }
    log->info("event=reply_discarded job={} round={} pod={} reason={} kind={} reply_job={} request={} "
              "expected_request={}{}",
              spec.job_id, current_round, pod.addr.name, reason, protocol::body_name(body.which()),
              env.getJobId().cStr(), env.getRequestId(), expected_request, detail);
  }

  // Records an evaluation in the global_loss/global_accuracy gauges.
  void record_eval(const std::optional<EvalSummary>& s) {
    if (!s) return;
    job_metrics.global_loss.Add({{"split", s->split}}).Set(s->loss);
    job_metrics.global_accuracy.Add({{"split", s->split}}).Set(s->accuracy);
  }

  std::string model_name() const {
    if (spec.model.username.empty()) return spec.model.ref;
    return spec.model.username + "/" + spec.model.ref +
           (spec.model.version ? " version " + std::to_string(spec.model.version) : std::string(" (latest)"));
  }

  // A client of the job's hub (TLS verified with hub_ca or the system store).
  StatusOr<std::unique_ptr<hub::Client>> hub_client() const {
    HubUrl addr;
    try {
      addr = parse_hub_url(spec.hub_url, "hub");
    } catch (const ConfigError& e) {
      return Status::invalid(e.what());
    }
    addr.ca_file = spec.hub_ca;
    return std::make_unique<hub::Client>(addr, spec.hub_token);
  }

  // Resolves the custom model through the hub and downloads its artifact; then loads
  // it in a runner (with a runner command) or in this process.
  Status resolve_custom() {
    const auto& m = spec.model;
    const std::string what = "model '" + m.username + "/" + m.ref + "' " +
                             (m.version ? "version " + std::to_string(m.version) : std::string("(latest version)"));
    auto made = hub_client();
    if (!made.ok()) return made.status();
    hub::Client& client = **made;
    auto v = client.resolve(m.username, m.ref, m.version);
    if (!v.ok()) {
      return Status(v.status().code(), what + " cannot be resolved on the hub " + spec.hub_url + ": " +
                                           v.status().message());
    }
    if (!model::is_custom_format(v->format)) {
      return Status::invalid(what + ": the hub says its format is '" + v->format + "', not torchscript or plugin");
    }
    const fs::path dir = fs::path(spec.output_dir) / "artifacts";
    fs::create_directories(dir);
    const std::string path = (dir / (v->sha256 + model::artifact_extension(v->format))).string();
    auto sha = client.download_artifact(m.username, m.ref, v->version, path, v->sha256);
    if (!sha.ok()) return Status(sha.status().code(), what + ": download failed: " + sha.status().message());
    auto bytes = std::make_shared<std::string>();
    {
      std::ifstream f(path, std::ios::binary);
      bytes->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
      if (!f.good() && !f.eof()) return Status::internal("cannot read " + path);
    }
    // download_artifact checked the hash; check the bytes actually sent, too.
    if (sha256_hex(*bytes) != v->sha256) {
      return Status::bad_message(what + ": " + path + " changed after download (sha256 differs from the hub's " +
                                 v->sha256 + ")");
    }
    resolved = Resolved{*v, bytes};
    job_metrics.set_job_info(spec.job_id, model_label());
    history["model"]["resolved"] = {{"username", v->username}, {"ref", v->model_ref}, {"version", v->version},
                                    {"sha256", v->sha256},     {"format", v->format},  {"bytes", v->size},
                                    {"artifact", path}};
    write_history();
    log->info("event=model_resolved model={}/{} version={} format={} sha256={} bytes={}", v->username, v->model_ref,
              v->version, v->format, v->sha256, v->size);
    if (!spec.runner_command.empty()) {
      // Its code runs only in a confined runner, as on the pods.
      worker::RunnerOptions ro;
      ro.command = spec.runner_command;
      ro.limits = spec.sandbox.limits;
      try {
        ro.confinement = worker::probe_confinement(spec.runner_command);
      } catch (const ConfigError& e) {
        return Status::internal(what + ": " + e.what());
      }
      if (!ro.confinement.namespaces) {
        if (spec.sandbox.required) {
          config_error = true;
          return Status::failed_precondition(
              what + ": sandbox: required, but the job runner cannot get namespaces here: " + ro.confinement.why_not +
              " (install bubblewrap and allow unprivileged user namespaces, or set sandbox: auto)");
        }
        log->warn("event=sandbox level={} why=\"{}\" consequence=\"the model's code can read what this user can "
                  "read while it is built\"",
                  ro.confinement.level, ro.confinement.why_not);
        progress << "warning: the custom model is built with confinement " << ro.confinement.level
                 << " only: " << ro.confinement.why_not << "\n";
      }
      auto r = worker::load_in_runner(v->username + "/" + v->model_ref + ":" + std::to_string(v->version), v->format,
                                      *bytes, ro, "coordinator");
      if (!r.ok()) return Status(r.status().code(), what + ": " + r.status().message());
      model_runner = std::move(*r);
      declared = model_runner->hyperparameters();
      log->info("event=custom_model_loaded model={}/{} version={} confinement=\"{}\"", v->username, v->model_ref,
                v->version, model_runner->confinement());
      history["model"]["confinement"] = model_runner->confinement();
      return Status();
    }
    auto loaded = load_custom(path, v->format);
    if (!loaded.ok()) return Status(loaded.status().code(), what + ": " + loaded.status().message());
    model = std::move(*loaded);
    history["model"]["confinement"] = "none (in-process)";
    return hyperparameters_of_model();
  }

  Status hyperparameters_of_model() {
    try {
      declared = model->hyperparameters();
    } catch (const std::exception& e) {
      return Status::invalid("model " + model_name() + ": hyperparameters() failed: " + e.what());
    }
    return Status();
  }

  // Pods named without an address are looked up on the hub (fedpod pod register).
  Status resolve_pod_addresses() {
    std::unique_ptr<hub::Client> client;
    for (auto& p : spec.pods) {
      // A pod's address, and its key when we authenticate, come from the hub unless given.
      if (!p.address.empty() && (!keys || !p.public_key.empty())) continue;
      if (spec.hub_url.empty()) {
        return Status::invalid("pod '" + p.name + "' has no public_key: give pods[].public_key in the job (the pod's .pub "
                               "file) or set hub: so it is looked up");
      }
      if (!client) {
        auto made = hub_client();
        if (!made.ok()) return made.status();
        client = std::move(*made);
      }
      auto info = client->get_pod(p.name);
      if (!info.ok()) {
        return Status(info.status().code(), "pod '" + p.name + "' cannot be resolved on the hub " + spec.hub_url +
                                                ": " + info.status().message());
      }
      if (p.address.empty()) p.address = info->address;
      if (p.public_key.empty()) p.public_key = info->public_key;
      log->info("event=pod_resolved pod={} address={} public_key={}", p.name, p.address, p.public_key);
    }
    return Status();
  }

  void connect_pods() {
    protocol::SocketOptions opts;
    for (size_t i = 0; i < spec.pods.size(); ++i) {
      Pod pod;
      pod.addr = spec.pods[i];
      protocol::SocketOptions o = opts;
      // ZMTP heartbeats at the job's pace: a connection that carries nothing at all
      // (not even upload bytes) for heartbeat_timeout is dropped, and the monitor
      // reports the pod disconnected. This covers a pod cut off mid-upload, which the
      // request-level heartbeats leave alone.
      o.heartbeat_interval = spec.heartbeat_interval;
      if (spec.heartbeat_timeout.count() > 0) o.heartbeat_timeout = spec.heartbeat_timeout;
      o.receive_hwm = kPodReceiveHwm;
      tensor_options = o;  // the same, without CURVE
      if (keys) {
        // The pod must prove it holds the secret of the key registered for it.
        o.curve_client_public = keys->public_key;
        o.curve_client_secret = keys->secret_key;
        o.curve_server_public = pod.addr.public_key;
      }
      try {
        pod.socket = protocol::make_dealer(ctx, "", o);
      } catch (const zmq::error_t& e) {
        throw ConfigError("pod " + pod.addr.name + ": cannot create a socket: " + e.what());
      }
      const std::string mon = "inproc://fedpod-monitor-" + std::to_string(reinterpret_cast<uintptr_t>(this)) +
                              "-" + std::to_string(i);
      if (zmq_socket_monitor(pod.socket.handle(), mon.c_str(), ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                                                                   ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                                                   ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                                                   ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                                                   ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
        throw zmq::error_t();
      }
      pod.monitor = zmq::socket_t(ctx, zmq::socket_type::pair);
      pod.monitor.set(zmq::sockopt::linger, 0);
      pod.monitor.connect(mon);
      // Connect only now, so the monitor sees the first CONNECTED event.
      try {
        pod.socket.connect(pod.addr.address);
      } catch (const zmq::error_t& e) {
        throw ConfigError("pod " + pod.addr.name + ": bad address '" + pod.addr.address + "': " + e.what());
      }
      pods.push_back(std::move(pod));
    }
  }

  void close_pods() {
    for (auto& p : pods) {
      zmq_socket_monitor(p.socket.handle(), nullptr, 0);
      p.monitor.close();
      p.socket.close();
      p.tensor.close();
    }
  }

  protocol::SocketOptions tensor_options;

  // Sets up the tensor channel with `pod` from its jobAccepted: the keys (bound to
  // the job and the pod's CURVE key) and a connection to its tensor port. A pod
  // that offers none, or an address without a port, keeps everything on CURVE.
  Status open_tensor_channel(Pod& pod, const protocol::BulkKeyPair& mine, wire::JobAccepted::Reader a) {
    pod.sealed = false;
    auto key = a.getTensorKey();
    if (key.size() == 0 || a.getTensorPort() == 0 || !keys) return Status();
    const std::string address = protocol::with_port(pod.addr.address, a.getTensorPort());
    if (address.empty()) return Status();
    auto session = protocol::BulkSession::derive(
        protocol::BulkRole::kCoordinator, mine,
        std::string_view(reinterpret_cast<const char*>(key.begin()), key.size()), {spec.job_id, pod.addr.public_key});
    if (!session.ok()) return Status::bad_message("tensor channel: " + session.status().message());
    if (address != pod.tensor_address) {
      pod.tensor.close();
      try {
        pod.tensor = protocol::make_dealer(ctx, address, tensor_options);
      } catch (const zmq::error_t& e) {
        pod.tensor_address.clear();
        return Status(StatusCode::kUnavailable, "tensor channel: cannot connect to " + address + ": " + e.what());
      }
      pod.tensor_address = address;
    }
    pod.tensors = std::move(*session);
    pod.sealed = true;
    return Status();
  }

  static bool carries_tensors(wire::Envelope::Body::Which w) {
    return w == wire::Envelope::Body::TRAIN || w == wire::Envelope::Body::FETCH_RESULT ||
           w == wire::Envelope::Body::EVALUATE;
  }

  // Sends `out` to `pod`: sealed over the tensor channel when the pod has one and
  // `out` is train, fetchResult or evaluate; over CURVE otherwise.
  bool send_to(Pod& pod, protocol::Outgoing& out) {
    auto frames = out.frames();
    if (pod.sealed && carries_tensors(out.envelope().getBody().which())) {
      const uint32_t round = protocol::round_of(frames[0]);
      auto sealed = pod.tensors.seal(std::move(frames), round);
      return protocol::send_frames(pod.tensor, sealed);
    }
    return protocol::send_frames(pod.socket, frames);
  }

  enum class TensorIn { kOpened, kNotice, kDropped };
  // A message from `pod`'s tensor channel: opened in place into `frames`, a notice
  // that the pod holds no such session (it restarted), or dropped and counted.
  TensorIn open_tensor(Pod& pod, std::vector<zmq::message_t>& frames, bool too_many) {
    auto refused = [&](const char* reason, const std::string& why) {
      job_metrics.tensor_refused.Add({{"reason", reason}}).Increment();
      log->warn("event=tensor_message_refused job={} pod={} reason={} message=\"{}\"", spec.job_id, pod.addr.name,
                reason, why);
      return TensorIn::kDropped;
    };
    if (too_many || frames.empty()) return refused("malformed", "too many frames");
    auto header = protocol::parse_bulk_header(frames[0]);
    if (!header.ok()) return refused("malformed", header.status().message());
    if (!pod.sealed || header->session != pod.tensors.id()) return refused("unknown_session", "not this job's session");
    if (header->kind == 2) return TensorIn::kNotice;
    uint32_t round = 0;
    protocol::BulkRefusal why = protocol::BulkRefusal::kNone;
    auto opened = pod.tensors.open(std::move(frames), &round, &why);
    if (!opened.ok()) return refused(protocol::to_string(why), opened.status().message());
    if (opened->empty() || protocol::round_of((*opened)[0]) != round) {
      return refused("round_mismatch", "the sealed header's round is not the message's");
    }
    frames = std::move(*opened);
    return TensorIn::kOpened;
  }

  // Why a handshake with `pod` failed, in words that say what to fix.
  std::string handshake_failure(const Pod& pod, uint16_t event, uint32_t value) const {
    const std::string who = "pod " + pod.addr.name + " at " + pod.addr.address;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      return who + " refused our CURVE key (ZAP status " + std::to_string(value) + "): the key in key_file (" +
             (keys ? keys->public_key : std::string("none")) +
             ") is not the key of a user with a role on this pod (a pod admits only its owner and its role "
             "holders): register the key on the hub (fedpod user register) if you have not, ask the pod's owner for "
             "a role (fedpod access grant-role --pod " + pod.addr.name + " --user <you> --role general-modeller), "
             "and let the pod refresh its policy";
    }
    if (!keys) {
      return who + " requires CURVE authentication and this job has no key: set key_file in the job (or "
                   "FEDPOD_KEY_FILE) to your key pair from `fedpod keys generate`, registered on the hub";
    }
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
      return who + " failed the CURVE handshake (protocol error " + std::to_string(value) +
             "): it may not run CURVE, or its server key differs from " + pod.addr.public_key;
    }
    return who + " closed the connection during the CURVE handshake: its key may not be the one registered for it (" +
           pod.addr.public_key + ")";
  }

  // Applies pending monitor events; returns true if `pod` disconnected (or its
  // handshake failed) meanwhile.
  bool drain_monitor(Pod& pod) {
    bool disconnected = false;
    std::vector<zmq::message_t> ev;
    bool too_many;
    while (protocol::recv_frames(pod.monitor, ev, 4, too_many)) {
      if (ev.empty() || ev[0].size() < 6) continue;
      uint16_t event;
      uint32_t value;
      std::memcpy(&event, ev[0].data(), sizeof event);
      std::memcpy(&value, static_cast<const char*>(ev[0].data()) + 2, sizeof value);
      if (event == ZMQ_EVENT_CONNECTED) pod.connected = true;
      if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        pod.secured = true;
        pod.handshake_error.clear();
      }
      if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
          event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
        pod.handshake_error = handshake_failure(pod, event, value);
        pod.connected = false;
        disconnected = true;
      }
      if (event == ZMQ_EVENT_DISCONNECTED) {
        // Dropped before any handshake completed: with CURVE, the pod could not prove its key.
        if (keys && !pod.secured && pod.handshake_error.empty()) {
          pod.handshake_error = handshake_failure(pod, event, value);
        }
        pod.connected = false;
        disconnected = true;
      }
    }
    return disconnected;
  }

  // Sends `out` to each pod in `targets` and collects their replies of kind `want`
  // until all answered or `deadline`. `require_connected`: skip pods known to be
  // disconnected instead of queueing for them.
  std::map<size_t, PodRound> exchange(protocol::Outgoing& out, uint64_t request_id,
                                      const std::vector<size_t>& targets, const Kinds& want,
                                      Clock::time_point deadline, bool require_connected,
                                      const ReplyHandler& on_reply,
                                      const std::function<void(const std::vector<size_t>&)>& on_tick = nullptr,
                                      size_t* sent_count = nullptr, bool heartbeats = false,
                                      const std::function<bool(size_t)>& exempt = nullptr) {
    return exchange_each([&](size_t) -> protocol::Outgoing& { return out; }, request_id, targets, want, deadline,
                         require_connected, on_reply, on_tick, sent_count, heartbeats, exempt);
  }

  // exchange() with a message of its own for each pod (`message_for(i)`), all of one
  // kind and request id.
  using MessageFor = std::function<protocol::Outgoing&(size_t)>;
  std::map<size_t, PodRound> exchange_each(const MessageFor& message_for, uint64_t request_id,
                                           const std::vector<size_t>& targets, const Kinds& want,
                                           Clock::time_point deadline, bool require_connected,
                                           const ReplyHandler& on_reply,
                                           const std::function<void(const std::vector<size_t>&)>& on_tick = nullptr,
                                           size_t* sent_count = nullptr, bool heartbeats = false,
                                           const std::function<bool(size_t)>& exempt = nullptr) {
    std::map<size_t, PodRound> result;
    std::map<size_t, Clock::time_point> sent_at;
    // Heartbeats: every heartbeat_interval each pending pod is pinged; one that has
    // said nothing at all (reply, heartbeat answer) for heartbeat_timeout is "silent"
    // and leaves the exchange before the deadline. A pod uploading its update is
    // exempt (`exempt`): its answers queue behind the upload on the same connection.
    const bool detect_silence = heartbeats && spec.heartbeat_timeout.count() > 0;
    std::map<size_t, Clock::time_point> last_heard;
    std::optional<protocol::Outgoing> beat;
    Clock::time_point next_beat = Clock::time_point::max();
    if (detect_silence) {
      beat.emplace(spec.job_id, next_request++);
      beat->envelope().getBody().initHeartbeat();
      next_beat = Clock::now() + spec.heartbeat_interval;
    }
    std::vector<size_t> waiting;
    // A message sealed for each pod is a copy per pod (CURVE encrypts as it sends):
    // at most four copies' worth waits in ZeroMQ at once, so the coordinator's memory
    // does not grow with the number of pods. A pod that does not read cannot hold the
    // others back for long: after kSealedStall the next copy goes anyway.
    std::deque<size_t> unsent(targets.begin(), targets.end());
    const bool sealed_copies =
        !targets.empty() && carries_tensors(message_for(targets.front()).envelope().getBody().which());
    const size_t sealed_budget =
        std::max<size_t>(size_t{64} << 20, targets.empty() ? 0 : 4 * message_for(targets.front()).payload_bytes());
    auto last_send = Clock::now();
    size_t sent_ok = 0;
    auto pump = [&] {
      while (!unsent.empty()) {
        const size_t i = unsent.front();
        Pod& pod = pods[i];
        if (sealed_copies && pod.sealed && sent_ok > 0 &&
            protocol::BulkSession::sealed_bytes_in_flight() > sealed_budget && Clock::now() - last_send < kSealedStall) {
          return;
        }
        unsent.pop_front();
        drain_monitor(pod);
        if (require_connected && !pod.connected) {
          result[i] = {"unreachable", "not connected", 0, 0, {}};
          continue;
        }
        if (!send_to(pod, message_for(i))) {
          // A refused CURVE handshake tears the connection's queue down, so a send after
          // it fails at once: say why (the model is loaded before hello, which gives the
          // handshake time to fail first).
          drain_monitor(pod);
          if (!pod.handshake_error.empty() && !pod.secured) {
            result[i] = {"refused", pod.handshake_error, 0, 0, {}};
          } else {
            result[i] = {"unreachable", "send queue full", 0, 0, {}};
          }
          continue;
        }
        sent_at[i] = Clock::now();
        last_heard[i] = sent_at[i];
        last_send = sent_at[i];
        ++sent_ok;
        waiting.push_back(i);
      }
    };
    pump();
    std::vector<zmq::message_t> frames;
    while (!waiting.empty() || !unsent.empty()) {
      pump();
      if (on_tick) on_tick(waiting);
      auto now = Clock::now();
      if (now >= deadline) break;
      if (detect_silence && now >= next_beat) {
        for (size_t i : waiting) {
          if (exempt && exempt(i)) continue;
          auto frames = beat->frames();
          protocol::send_frames(pods[i].socket, frames);  // a full queue: the silence check settles it
        }
        next_beat = now + spec.heartbeat_interval;
      }
      std::vector<zmq::pollitem_t> items;
      std::vector<size_t> base;  // each waiting pod's first item: socket, monitor, tensor channel
      for (size_t i : waiting) {
        base.push_back(items.size());
        items.push_back({pods[i].socket.handle(), 0, ZMQ_POLLIN, 0});
        items.push_back({pods[i].monitor.handle(), 0, ZMQ_POLLIN, 0});
        if (pods[i].tensor) items.push_back({pods[i].tensor.handle(), 0, ZMQ_POLLIN, 0});
      }
      auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(std::min(deadline, next_beat) - now) +
                  std::chrono::milliseconds(1);
      if (!unsent.empty()) wait = std::min(wait, std::chrono::milliseconds(2));  // copies still to send
      protocol::poll(items.data(), items.size(), wait);
      std::vector<size_t> still;
      for (size_t k = 0; k < waiting.size(); ++k) {
        size_t i = waiting[k];
        Pod& pod = pods[i];
        bool done = false;
        if (pod.tensor && (items[base[k] + 2].revents & ZMQ_POLLIN)) {
          bool too_many = false;
          while (!done && protocol::recv_frames(pod.tensor, frames, protocol::Limits().max_frames + 2, too_many)) {
            last_heard[i] = Clock::now();
            const TensorIn got = open_tensor(pod, frames, too_many);
            if (got == TensorIn::kDropped) continue;
            if (got == TensorIn::kNotice) {
              // The pod holds no session for this job: it restarted or ended the job.
              pod.sealed = false;
              result[i] = {"error", "the pod no longer holds this job (tensor channel: unknown session)", 0,
                           std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {},
                           to_string(StatusCode::kFailedPrecondition)};
              done = true;
              break;
            }
            auto r = receive(pod, frames, false, request_id, want, on_reply);
            if (r) {
              r->seconds = std::chrono::duration<double>(Clock::now() - sent_at[i]).count();
              result[i] = std::move(*r);
              done = true;
            }
          }
        }
        if (!done && (items[base[k]].revents & ZMQ_POLLIN)) {
          bool too_many = false;
          while (!done && protocol::recv_frames(pod.socket, frames, protocol::Limits().max_frames + 1, too_many)) {
            pod.connected = true;  // a reply proves the connection
            last_heard[i] = Clock::now();
            auto r = receive(pod, frames, too_many, request_id, want, on_reply);
            if (r) {
              r->seconds = std::chrono::duration<double>(Clock::now() - sent_at[i]).count();
              result[i] = std::move(*r);
              done = true;
            }
          }
        }
        if (!done && (items[base[k] + 1].revents & ZMQ_POLLIN) && drain_monitor(pod)) {
          if (!pod.handshake_error.empty() && !pod.secured) {
            result[i] = {"refused", pod.handshake_error, 0, 0, {}};
            done = true;
          } else if (require_connected || pod.secured) {
            // ZeroMQ's own heartbeats (same heartbeat_timeout) drop a connection that
            // carried nothing for that long, which can come a moment before the check
            // below: a pod quiet for the whole timeout was silent, whichever noticed.
            const auto quiet = Clock::now() - last_heard[i];
            if (detect_silence && !(exempt && exempt(i)) && quiet >= spec.heartbeat_timeout) {
              result[i] = {"silent",
                           "no answer, not even to heartbeats, for " +
                               fmt(std::chrono::duration<double>(quiet).count(), 1) +
                               " s (heartbeat_timeout); the connection was dropped",
                           0, std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {}};
            } else {
              result[i] = {"disconnected", "pod disconnected while the request was pending", 0, 0, {}};
            }
            done = true;
          }
          // Otherwise (hello, startJob): not yet connected; ZeroMQ keeps retrying until the deadline.
        }
        if (!done && detect_silence) {
          const auto t = Clock::now();
          if (exempt && exempt(i)) {
            last_heard[i] = t;  // silence counts from the end of its upload
          } else if (t - last_heard[i] >= spec.heartbeat_timeout) {
            const double quiet = std::chrono::duration<double>(t - last_heard[i]).count();
            result[i] = {"silent", "no answer, not even to heartbeats, for " + fmt(quiet, 1) + " s (heartbeat_timeout)",
                         0, std::chrono::duration<double>(t - sent_at[i]).count(), {}};
            done = true;
          }
        }
        if (!done) still.push_back(i);
      }
      waiting.swap(still);
    }
    if (sent_count) *sent_count = sent_ok;
    for (size_t i : unsent) {
      result[i] = {"timeout", "the round's deadline passed before its parameters could be sent (other pods were "
                              "not reading theirs)", 0, 0, {}};
    }
    for (size_t i : waiting) {
      if (!pods[i].handshake_error.empty() && !pods[i].secured) {
        result[i] = {"refused", pods[i].handshake_error, 0, 0, {}};
        continue;
      }
      result[i] = {"timeout", "no answer within the deadline", 0,
                   std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {}};
    }
    return result;
  }

  // One received message from `pod`: nullopt when it is discarded (discard_reason)
  // or the handler waits for more.
  std::optional<PodRound> receive(Pod& pod, std::vector<zmq::message_t>& frames, bool too_many,
                                  uint64_t request_id, const Kinds& want, const ReplyHandler& on_reply) {
    if (too_many) return PodRound{"error", "reply has too many frames", 0, 0, {}};
    auto parsed = protocol::Incoming::parse(std::move(frames));
    if (!parsed.ok()) return PodRound{"error", "bad reply: " + parsed.status().message(), 0, 0, {}};
    try {
      auto env = (*parsed)->envelope();
      // A heartbeat's answer only says the pod is alive (exchange() noted that).
      if (env.getBody().which() == wire::Envelope::Body::HEARTBEAT && std::string(env.getJobId().cStr()) == spec.job_id) {
        return std::nullopt;
      }
      if (const char* reason = discard_reason(static_cast<size_t>(&pod - pods.data()), env, request_id)) {
        discard(pod, reason, env, request_id);
        return std::nullopt;
      }
      auto body = env.getBody();
      if (body.which() == wire::Envelope::Body::ERROR) {
        auto err = body.getError();
        StatusCode code = protocol::from_wire(err.getCode());
        std::string outcome = (code == StatusCode::kBusy || code == StatusCode::kPermissionDenied ||
                               code == StatusCode::kSchemaMismatch)
                                  ? "refused"
                                  : "error";
        return PodRound{outcome, std::string(to_string(code)) + ": " + err.getMessage().cStr(), 0, 0, {},
                        to_string(code)};
      }
      if (std::find(want.begin(), want.end(), body.which()) == want.end()) {
        return PodRound{"error", std::string("unexpected reply '") + protocol::body_name(body.which()) + "'", 0, 0, {}};
      }
      return on_reply(pod, **parsed);
    } catch (const kj::Exception& e) {
      return PodRound{"error", std::string("malformed reply: ") + e.getDescription().cStr(), 0, 0, {}};
    }
  }

  std::vector<size_t> active_pods() const {
    std::vector<size_t> out;
    for (size_t i = 0; i < pods.size(); ++i) {
      if (pods[i].active) out.push_back(i);
    }
    return out;
  }

  // The active pods that hold the job now: those waiting to rejoin have none to train
  // or evaluate with.
  std::vector<size_t> pods_with_job() const {
    std::vector<size_t> out;
    for (size_t i : active_pods()) {
      if (!pods[i].needs_rejoin) out.push_back(i);
    }
    return out;
  }

  std::string describe_failures(const std::map<size_t, PodRound>& r) const {
    std::string out;
    for (const auto& [i, p] : r) {
      if (p.outcome == "ok") continue;
      if (!out.empty()) out += "; ";
      out += pods[i].addr.name + " " + p.outcome + " (" + p.error + ")";
    }
    return out;
  }

  std::map<std::string, PodRound> by_name(const std::map<size_t, PodRound>& r) const {
    std::map<std::string, PodRound> out;
    for (const auto& [i, p] : r) out[pods[i].addr.name] = p;
    return out;
  }

  // Phase 1: hello and schema checks. Returns the pods that can take the job.
  Status hello_and_check() {
    const uint64_t rid = next_request++;
    protocol::Outgoing out(spec.job_id, rid);
    out.envelope().getBody().initHello();
    std::vector<size_t> all;
    for (size_t i = 0; i < pods.size(); ++i) all.push_back(i);
    std::map<size_t, data::Schema> schemas;
    auto replies = exchange(out, rid, all, {wire::Envelope::Body::HELLO_REPLY}, Clock::now() + spec.connect_timeout,
                            false, [&](Pod& pod, protocol::Incoming& in) {
                              auto hr = in.envelope().getBody().getHelloReply();
                              schemas[&pod - pods.data()] = worker::from_wire(hr.getSchema());
                              pod.max_frame_bytes = hr.getMaxFrameBytes();
                              return PodRound{"ok", "", static_cast<int64_t>(hr.getSchema().getNumRows()), 0, {}};
                            });
    std::optional<std::vector<std::string>> features;
    std::string features_from;
    std::vector<data::PodSchema> answered;
    progress << "pods:\n";
    for (auto& [i, r] : replies) {
      if (r.outcome != "ok") progress << "  " << pods[i].addr.name << ": " << r.outcome << ": " << r.error << "\n";
    }
    progress << std::flush;
    for (auto& [i, r] : replies) {
      if (r.outcome != "ok") continue;
      auto f = data::resolve_features(schemas[i], spec.datastructure);
      if (!f.ok()) {
        return Status(StatusCode::kSchemaMismatch, "pod " + pods[i].addr.name + ": " + f.status().message());
      }
      if (!features) {
        features = *f;
        features_from = pods[i].addr.name;
      } else if (*features != *f) {
        return Status(StatusCode::kSchemaMismatch, "pod " + pods[i].addr.name + " has features that differ from pod " +
                                                       features_from + "'s; list datastructure.features explicitly");
      }
      pods[i].active = true;
      answered.push_back({pods[i].addr.name, &schemas[i]});
      max_rows = std::max<int64_t>(max_rows, r.num_samples);
    }
    int ok = static_cast<int>(active_pods().size());
    if (ok < spec.min_pods) {
      return Status(StatusCode::kUnavailable, std::to_string(ok) + " of " + std::to_string(pods.size()) +
                                                  " pods answered hello, min_pods is " + std::to_string(spec.min_pods) +
                                                  ": " + describe_failures(replies));
    }
    for (auto& [i, r] : replies) {
      if (r.outcome != "ok") log->warn("event=pod_skipped pod={} reason=\"{}\"", pods[i].addr.name, r.error);
    }
    ds = spec.datastructure;
    ds.features = *features;
    return agree_categories(answered);
  }

  // One code for every category on every pod, before round 1 (data::agree_categories),
  // recorded in history.json and in the checkpoint's fingerprint.
  Status agree_categories(const std::vector<data::PodSchema>& answered) {
    std::vector<std::string> columns = ds.features;
    columns.insert(columns.begin(), ds.target);
    auto agreed = data::agree_categories(answered, spec.datastructure, columns);
    if (!agreed.ok()) return agreed.status();
    ds.categories = std::move(*agreed);
    const auto target = ds.categories.find(ds.target);
    if (target != ds.categories.end() && static_cast<int64_t>(target->second.size()) != ds.num_classes) {
      std::string list;
      for (size_t i = 0; i < target->second.size() && i < 12; ++i) list += (i ? ", " : "") + target->second[i];
      if (target->second.size() > 12) list += ", ...";
      return Status(StatusCode::kSchemaMismatch,
                    "datastructure.num_classes is " + std::to_string(ds.num_classes) + ", but the pods declare " +
                        std::to_string(target->second.size()) + " categories of the target '" + ds.target +
                        "' (" + list + "); set num_classes to that, or list the categories in " +
                        "datastructure.categories." + ds.target);
    }
    nlohmann::json cats = nlohmann::json::object();
    for (const auto& [column, values] : ds.categories) {
      const bool listed = spec.datastructure.categories.count(column) > 0;
      cats[column] = {{"values", values}, {"from", listed ? "job" : "pods"}};
      log->info("event=categories_agreed column={} count={} from={}", column, values.size(), listed ? "job" : "pods");
      progress << "categories of '" << column << "': " << values.size()
               << (listed ? " (listed by the job)" : " (the union the pods declare)") << ", coded 0.."
               << values.size() - 1 << " on every pod\n";
    }
    history["datastructure"] = {{"target", ds.target},
                                {"features", ds.features},
                                {"num_classes", ds.num_classes},
                                {"categories", cats}};
    return Status();
  }

  // Before any pod is contacted: the model object (a custom one resolved through the
  // hub and loaded), and the job's hyperparameters checked against what it declares.
  bool config_error = false;  // the job's own settings are wrong (exit 2 in the CLI)
  Status load_model() {
    if (spec.model.username.empty()) {
      model = make_model(spec.model.ref);
      if (!model) return Status::not_found("model '" + spec.model.ref + "' is not a built-in model");
      FEDPOD_RETURN_IF_ERROR(hyperparameters_of_model());
    } else {
      FEDPOD_RETURN_IF_ERROR(resolve_custom());
    }
    if (!declared) {
      log->warn("event=hyperparameters_unchecked model=\"{}\"", model_name());
      progress << "note: model " << model_name()
               << " does not declare its hyperparameters (Model::hyperparameters), so their names and types are "
                  "not checked\n";
      return Status();
    }
    Status st = model::check_hyperparameters(spec.model.hyperparameters, *declared, model_name());
    if (!st.ok()) config_error = true;
    return st;
  }

  Status create_model() {
    auto shape = data::resolve_input_shape(ds, static_cast<int64_t>(ds.features.size()));
    if (!shape.ok()) return shape.status();
    if (model_runner) {
      auto built = model_runner->create(*shape, ds.num_classes, spec.model.hyperparameters, spec.seed);
      model_runner.reset();  // the runner ends: no model code stays alive here
      if (!built.ok()) return Status(built.status().code(), "model " + model_name() + ": " + built.status().message());
      layout = std::move(built->layout);
      initial = std::move(built->state);
    } else {
      torch::manual_seed(spec.seed);
      try {
        model->create_model(*shape, ds.num_classes, spec.model.hyperparameters);
      } catch (const ConfigError& e) {
        return Status::invalid("model " + model_name() + ": " + e.what());
      } catch (const c10::Error& e) {
        return Status::invalid("model " + model_name() + ": " + e.what_without_backtrace());
      }
      layout = model->flat().layout();
      initial = model->flat().tensor().clone();
    }
    specs = worker::tensor_specs(layout);
    return Status();
  }

  // Sends startJob to `targets` (with the custom model's artifact, if any) and
  // collects the answers; `decisions` receives each accepting pod's basis.
  std::map<size_t, PodRound> send_start_job(std::vector<size_t> targets, std::map<size_t, std::string>& decisions) {
    const uint64_t rid = next_request++;
    std::map<size_t, PodRound> too_small;  // pods whose max_frame_bytes cannot take the artifact
    if (resolved) {
      std::vector<size_t> fit;
      for (size_t i : targets) {
        if (pods[i].max_frame_bytes != 0 && pods[i].max_frame_bytes < resolved->artifact->size()) {
          too_small[i] = {"refused",
                          "the model artifact has " + std::to_string(resolved->artifact->size()) +
                              " bytes, the pod accepts frames of at most " + std::to_string(pods[i].max_frame_bytes) +
                              " (pod.yaml max_frame_bytes)",
                          0, 0, {}};
        } else {
          fit.push_back(i);
        }
      }
      targets = fit;
    }
    // This startJob's half of the tensor channel's key agreement (one key pair for
    // all its pods; each pod answers with its own, so each pair of keys differs).
    protocol::BulkKeyPair tensor_keys;
    auto fill = [&](protocol::Outgoing& out, size_t i) {
      auto sj = out.envelope().getBody().initStartJob();
      auto m = sj.initModel();
      m.setUsername(spec.model.username);
      m.setModelRef(spec.model.ref);
      m.setModelVersion(spec.model.version);
      m.setHyperparameters(spec.model.hyperparameters.dump());
      if (resolved) {
        const auto& v = resolved->version;
        m.setModelVersion(static_cast<uint32_t>(v.version));  // the exact version resolved, never "latest"
        m.setSha256(v.sha256);
        m.setFormat(v.format);
        m.setArtifactBytes(resolved->artifact->size());
        m.setArtifactFrame(out.attach_bytes(resolved->artifact));  // shared by every pod's message: no copy
      }
      worker::to_wire(ds, sj.initDatastructure());
      sj.setSeed(spec.seed);
      if (keys) {
        const std::string pk = tensor_keys.public_key();
        sj.setTensorKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(pk.data()), pk.size()));
      }
      if (secagg) protocol::secagg::to_wire(*secagg, secagg_id(i), sj.initSecureAggregation());
    };
    // With secure aggregation each pod's startJob names its id in the protocol;
    // otherwise one message serves every pod.
    std::map<size_t, protocol::Outgoing> each;
    std::optional<protocol::Outgoing> shared;
    if (secagg) {
      for (size_t i : targets) fill(each.try_emplace(i, spec.job_id, rid).first->second, i);
    } else {
      shared.emplace(spec.job_id, rid);
      fill(*shared, 0);
    }
    const MessageFor message_for = [&](size_t i) -> protocol::Outgoing& { return secagg ? each.at(i) : *shared; };
    const uint64_t want_params = static_cast<uint64_t>(initial.numel());
    auto replies = exchange_each(message_for, rid, targets, {wire::Envelope::Body::JOB_ACCEPTED},
                            Clock::now() + spec.connect_timeout, false, [&](Pod& pod, protocol::Incoming& in) {
                              auto a = in.envelope().getBody().getJobAccepted();
                              if (a.getNumParameters() != want_params) {
                                return PodRound{"error",
                                                "pod built a model with " + std::to_string(a.getNumParameters()) +
                                                    " parameters, expected " + std::to_string(want_params),
                                                0, 0, {}};
                              }
                              if (Status t = open_tensor_channel(pod, tensor_keys, a); !t.ok()) {
                                return PodRound{"error", t.message(), 0, 0, {}};
                              }
                              pod.train_samples = static_cast<int64_t>(a.getTrainSamples());
                              decisions[&pod - pods.data()] = a.getDecision();
                              return PodRound{"ok", "", static_cast<int64_t>(a.getTrainSamples()), 0,
                                              {{"validation_samples", double(a.getValidationSamples())},
                                               {"test_samples", double(a.getTestSamples())},
                                               {"skipped_rows", double(a.getSkippedRows())}}};
                            });
    replies.insert(too_small.begin(), too_small.end());
    count_responses(replies);
    return replies;
  }

  bool job_sent = false;  // startJob went out: pods may hold the job
  Status start_job() {
    job_sent = true;
    std::map<size_t, std::string> decisions;
    auto replies = send_start_job(active_pods(), decisions);
    nlohmann::json pods_json = nlohmann::json::object();
    // Each pod's decision, before any training: who admitted the job on what basis,
    // and why the others refused.
    for (auto& [i, r] : replies) {
      if (r.outcome != "ok") {
        pods[i].active = false;
        log->warn("event=job_refused pod={} reason=\"{}\"", pods[i].addr.name, r.error);
        progress << "  " << pods[i].addr.name << ": " << r.outcome << ": " << r.error << "\n";
      } else {
        progress << "  " << pods[i].addr.name << ": accepted"
                 << (decisions[i].empty() ? std::string() : " (" + decisions[i] + ")") << ", " << r.num_samples
                 << " training rows, parameters " << (pods[i].sealed ? "sealed with AES-256-GCM" : "over CURVE")
                 << "\n";
      }
      pods_json[pods[i].addr.name] = {{"outcome", r.outcome}, {"train_samples", r.num_samples}};
      if (r.outcome == "ok") pods_json[pods[i].addr.name]["tensor_channel"] = pods[i].sealed ? "aes-256-gcm" : "curve";
      if (!decisions[i].empty()) pods_json[pods[i].addr.name]["decision"] = decisions[i];
      if (!r.error.empty()) pods_json[pods[i].addr.name]["error"] = r.error;
      for (const auto& [k, v] : r.metrics) pods_json[pods[i].addr.name][k] = v;
    }
    history["pods"] = pods_json;
    int ok = static_cast<int>(active_pods().size());
    if (ok < spec.min_pods) {
      return Status(StatusCode::kUnavailable, std::to_string(ok) + " pods accepted the job, min_pods is " +
                                                  std::to_string(spec.min_pods) + ": " + describe_failures(replies));
    }
    return Status();
  }

  // Pods that lost the job (restarted) or the connection during a round take it
  // again before the next one: startJob to each one connected now. Returns the
  // outcome of every attempt; a pod that accepted trains this round.
  std::map<size_t, PodRound> rejoin_pods(int round) {
    std::vector<size_t> flagged, targets;
    for (size_t i : active_pods()) {
      if (pods[i].needs_rejoin) flagged.push_back(i);
    }
    // Just lost: ZeroMQ may still be reconnecting (it retries at most every 2 s), so
    // give such pods one grace period; a pod that stays away costs no more rounds.
    auto pending_reconnect = [&] {
      for (size_t i : flagged) {
        drain_monitor(pods[i]);
        if (!pods[i].connected && pods[i].rejoin_attempts == 0) return true;
      }
      return false;
    };
    const auto grace_until = Clock::now() + kRejoinGrace;
    while (pending_reconnect() && Clock::now() < grace_until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::map<size_t, PodRound> away;  // still gone: recorded as unreachable, not dropped silently
    for (size_t i : flagged) {
      ++pods[i].rejoin_attempts;
      if (pods[i].connected) {
        targets.push_back(i);
      } else {
        away[i] = {"unreachable", "not connected since it was lost; it takes the job again once it is back", 0, 0, {}};
      }
    }
    if (targets.empty()) return away;
    std::map<size_t, std::string> decisions;
    auto replies = send_start_job(targets, decisions);
    replies.insert(away.begin(), away.end());
    for (auto& [i, r] : replies) {
      Pod& pod = pods[i];
      if (r.outcome == "ok") {
        pod.needs_rejoin = false;
        pod.rejoin_attempts = 0;
        job_metrics.rejoins.Add({{"pod", pod.addr.name}}).Increment();
        log->info("event=pod_rejoined job={} round={} pod={} train_samples={}", spec.job_id, round, pod.addr.name,
                  r.num_samples);
        progress << "  " << pod.addr.name << " rejoined before "
                 << (round > spec.rounds ? std::string("the test evaluation") : "round " + std::to_string(round))
                 << std::endl;
      } else {
        log->warn("event=pod_rejoin_failed job={} round={} pod={} outcome={} reason=\"{}\"", spec.job_id, round,
                  pod.addr.name, r.outcome, r.error);
      }
    }
    return replies;
  }

  // After a pod's answer to a round: does it need startJob again before the next?
  static bool lost_job_or_link(const PodRound& r) {
    return r.outcome == "disconnected" || r.outcome == "silent" || r.outcome == "unreachable" ||
           (r.outcome == "error" && r.code == to_string(StatusCode::kFailedPrecondition));
  }

  void mark_rejoins(const std::map<size_t, PodRound>& replies) {
    for (const auto& [i, r] : replies) {
      if (!lost_job_or_link(r)) continue;
      if (!pods[i].needs_rejoin) pods[i].rejoin_attempts = 0;
      pods[i].needs_rejoin = true;
    }
  }

  // Evaluates `global` on every active pod's `split`.
  std::optional<EvalSummary> evaluate(const torch::Tensor& global, int round, wire::Split split) {
    const uint64_t rid = next_request++;
    protocol::Outgoing out(spec.job_id, rid);
    auto ev = out.envelope().getBody().initEvaluate();
    ev.setRound(static_cast<uint32_t>(round));
    ev.setSplit(split);
    ev.setBatchSize(256);
    out.attach(ev.initTensors(specs.size()), worker::parameter_views(global, layout));
    auto replies = exchange(out, rid, pods_with_job(), {wire::Envelope::Body::EVAL_RESULT},
                            Clock::now() + spec.round_timeout, true, [&](Pod&, protocol::Incoming& in) {
                              auto r = in.envelope().getBody().getEvalResult();
                              if (!std::isfinite(r.getLoss()) || r.getAccuracy() < 0 || r.getAccuracy() > 1) {
                                return PodRound{"error", "evaluation result out of range", 0, 0, {}};
                              }
                              return PodRound{"ok", "", static_cast<int64_t>(r.getNumSamples()), 0,
                                              {{"loss", r.getLoss()}, {"accuracy", r.getAccuracy()}}};
                            },
                            nullptr, nullptr, /*heartbeats=*/true);
    count_responses(replies);
    mark_rejoins(replies);
    EvalSummary s;
    s.split = split == wire::Split::TEST ? "test" : "validation";
    double loss = 0, acc = 0;
    for (auto& [i, r] : replies) {
      if (r.outcome != "ok" || r.num_samples == 0) continue;
      s.num_samples += r.num_samples;
      loss += r.metrics["loss"] * r.num_samples;
      acc += r.metrics["accuracy"] * r.num_samples;
    }
    s.pods = by_name(replies);
    if (s.num_samples == 0) return std::nullopt;
    s.loss = loss / s.num_samples;
    s.accuracy = acc / s.num_samples;
    record_eval(s);
    return s;
  }

  void end_job(const std::string& reason) {
    const uint64_t rid = next_request++;
    protocol::Outgoing out(spec.job_id, rid);
    out.envelope().getBody().initEndJob().setReason(reason);
    exchange(out, rid, active_pods(), {wire::Envelope::Body::JOB_ENDED}, Clock::now() + std::chrono::seconds(5), true,
             [](Pod&, protocol::Incoming&) { return PodRound{"ok", "", 0, 0, {}}; });
  }

  // history.json and the report drawn from it, rewritten at every change of the
  // job's state: here at once (after any round's files still being written), and
  // after each round by write_round_files, off the round's path.
  void write_history() {
    (void)finish_round_files();
    write_file_atomic(history_path, history.dump(2) + "\n");
    write_file_atomic(report_path, render_report(history));
  }

  // A completed round's files (its checkpoint, then history.json and report.html)
  // are written on their own thread while the next rounds run, one write at a time
  // and never torn (checkpoint.h, "When"). When a write is still going as another
  // round ends, that round's files wait; a later round's replace them (latest wins),
  // so a disk slower than the rounds costs skipped checkpoints, never round time.
  // Returns the error of an earlier write, if one failed.
  struct RoundFiles {
    int round = 0;
    std::optional<Checkpoint> checkpoint;
    nlohmann::json history;
  };

  Status write_round_files(int round, const torch::Tensor& global, const aggregation::Strategy& strategy) {
    RoundFiles f;
    f.round = round;
    if (spec.checkpoint) f.checkpoint = make_checkpoint(round, global, strategy);
    f.history = history;
    std::lock_guard<std::mutex> lock(files_mu);
    if (files_pending) {
      job_metrics.checkpoints_skipped.Increment();
      log->info("event=round_files_skipped job={} round={} replaced_by={} reason=\"the previous write is still going\"",
                spec.job_id, files_pending->round, round);
    }
    files_pending = std::move(f);
    if (!files_thread.joinable()) files_thread = std::thread([this] { write_files_loop(); });
    files_cv.notify_all();
    return files_error;
  }

  void write_files_loop() {
    std::unique_lock<std::mutex> lock(files_mu);
    for (;;) {
      files_cv.wait(lock, [&] { return files_pending.has_value() || files_stop; });
      if (!files_pending) return;  // stopping, nothing left to write
      RoundFiles f = std::move(*files_pending);
      files_pending.reset();
      files_busy = true;
      lock.unlock();
      Status st = write_files(f);
      lock.lock();
      files_busy = false;
      if (!st.ok() && files_error.ok()) {
        log->error("event=round_files_failed job={} error=\"{}\"", spec.job_id, st.message());
        files_error = st;
      }
      files_cv.notify_all();
    }
  }

  Status write_files(const RoundFiles& f) {
    try {
      if (f.checkpoint) {
        const auto start = Clock::now();
        write_checkpoint(checkpoint_path, *f.checkpoint);
        job_metrics.checkpoint_seconds.Observe(std::chrono::duration<double>(Clock::now() - start).count());
      }
    } catch (const std::exception& e) {
      return Status::internal("round " + std::to_string(f.round) + ": cannot write the checkpoint: " + e.what());
    }
    try {
      write_file_atomic(history_path, f.history.dump(2) + "\n");
      write_file_atomic(report_path, render_report(f.history));
    } catch (const std::exception& e) {
      return Status::internal("round " + std::to_string(f.round) + ": cannot write " + history_path + ": " + e.what());
    }
    return Status();
  }

  // Waits until every round's files handed over are written (the latest included);
  // the first error any write had.
  Status finish_round_files() {
    std::unique_lock<std::mutex> lock(files_mu);
    files_cv.wait(lock, [&] { return !files_pending && !files_busy; });
    return files_error;
  }

  void stop_round_files() {
    {
      std::lock_guard<std::mutex> lock(files_mu);
      files_stop = true;
      files_cv.notify_all();
    }
    if (files_thread.joinable()) files_thread.join();
  }

  // torch's default CPU generator: saved in the checkpoint, restored on resume.
  static torch::Tensor rng_state() {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  }
  static void set_rng_state(const torch::Tensor& state) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  }

  // What must not change between a run and its resume (checkpoint.h).
  nlohmann::json fingerprint() const {
    nlohmann::json names = nlohmann::json::array();
    for (const auto& p : spec.pods) names.push_back(p.name);
    nlohmann::json f = {{"model",
             {{"username", spec.model.username},
              {"ref", spec.model.ref},
              {"version", resolved ? static_cast<int64_t>(resolved->version.version) : int64_t{spec.model.version}},
              {"sha256", resolved ? resolved->version.sha256 : std::string()},
              {"hyperparameters", spec.model.hyperparameters.json()}}},
            {"datastructure",
             {{"target", ds.target},
              {"features", ds.features},
              {"input_shape", ds.input_shape},
              {"num_classes", ds.num_classes},
              {"scale", ds.scale},
              {"split", {{"validation", ds.split.validation}, {"test", ds.split.test}, {"seed", ds.split.seed}}}}},
            {"strategy", spec.strategy},
            {"seed", spec.seed},
            {"local_epochs", spec.local_steps > 0 ? 0 : spec.local_epochs},
            {"local_steps", spec.local_steps},
            {"batch_size", spec.batch_size},
            {"pods", names}};
    // Only when there are any, so that checkpoints of numeric-label jobs written before
    // categories were agreed still resume.
    if (!ds.categories.empty()) f["datastructure"]["categories"] = ds.categories;
    return f;
  }

  std::string checkpoint_path;
  std::optional<Checkpoint> resume_from;  // --resume: the checkpoint read at start

  // --resume: reads the checkpoint and takes the job's identity from it, before
  // anything is sent. The rest is checked once the model exists (restore_checkpoint).
  Status load_resume() {
    auto c = read_checkpoint(checkpoint_path);
    if (!c.ok()) {
      if (c.status().code() == StatusCode::kNotFound) {
        return Status::failed_precondition("--resume: no checkpoint at " + checkpoint_path +
                                           "; run the job without --resume to start it");
      }
      return Status(c.status().code(), "--resume: " + c.status().message());
    }
    if (!spec.job_id_generated && spec.job_id != c->job_id) {
      return Status::invalid("--resume: " + checkpoint_path + " is job '" + c->job_id + "', the job file says '" +
                             spec.job_id + "'");
    }
    spec.job_id = c->job_id;
    // A hub model resolved to "latest" stays on the version the job started with.
    if (!spec.model.username.empty() && spec.model.version == 0) {
      spec.model.version = c->fingerprint.value("/model/version"_json_pointer, 0u);
    }
    job_metrics.set_job_info(spec.job_id, model_label());
    log->info("event=resuming job={} after_round={} checkpoint={}", c->job_id, c->round, checkpoint_path);
    resume_from = std::move(*c);
    return Status();
  }

  // --resume, once the model exists: the same job, the same model, the saved state.
  Status restore_checkpoint(torch::Tensor& global, aggregation::Strategy& strategy) {
    const Checkpoint& c = *resume_from;
    const std::string diff = fingerprint_difference(c.fingerprint, fingerprint());
    if (!diff.empty()) {
      return Status::invalid("--resume: the job changed since its checkpoint (" + checkpoint_path + "): " + diff +
                             "; resume it with the job file it started with, or start a new job");
    }
    if (c.parameters.numel() != global.numel()) {
      return Status::invalid("--resume: " + checkpoint_path + " has " + std::to_string(c.parameters.numel()) +
                             " parameters, the model has " + std::to_string(global.numel()));
    }
    global = c.parameters.clone();
    FEDPOD_RETURN_IF_ERROR(strategy.restore(c.strategy_state));
    try {
      set_rng_state(c.rng_state);
    } catch (const c10::Error& e) {
      return Status::bad_message("--resume: " + checkpoint_path + ": bad generator state: " + e.what_without_backtrace());
    }
    next_request = std::max(next_request, c.next_request);
    last_closed_round = c.round;  // nothing for those rounds is taken again
    return Status();
  }

  // What the checkpoint after `round` holds. Tensors the next round may change in
  // place are copied: the strategy's state. The global parameters are not: each
  // round's aggregate is a tensor of its own (a strategy reuses a buffer only once
  // nobody else holds it).
  Checkpoint make_checkpoint(int round, const torch::Tensor& global, const aggregation::Strategy& strategy) {
    Checkpoint c;
    c.job_id = spec.job_id;
    c.round = round;
    c.next_request = next_request;
    c.strategy = spec.strategy;
    c.fingerprint = fingerprint();
    c.history = history;
    c.parameters = global;
    c.rng_state = rng_state();
    for (const auto& t : strategy.state()) c.strategy_state.push_back(t.clone());
    return c;
  }

  StatusOr<RunResult> run() {
    fs::create_directories(spec.output_dir);
    checkpoint_path = (fs::path(spec.output_dir) / "checkpoint.bin").string();
    if (spec.resume) {
      // A checkpoint that cannot be used changes nothing on disk.
      Status st = load_resume();
      if (!st.ok()) {
        log->error("event=resume_failed job={} error=\"{}\"", spec.job_id, st.to_string());
        set_not_ready("the job failed before training: " + st.to_string());
        return st;
      }
    } else if (spec.checkpoint && fs::exists(checkpoint_path)) {
      log->warn("event=checkpoint_replaced path={} hint=\"run with --resume to continue that job instead\"",
                checkpoint_path);
      progress << "note: starting over; " << checkpoint_path
               << " from an earlier run will be replaced (--resume continues it instead)" << std::endl;
    }
    history_path = (fs::path(spec.output_dir) / "history.json").string();
    model_path = (fs::path(spec.output_dir) / "model.pt").string();
    report_path = (fs::path(spec.output_dir) / "report.html").string();
    history = {{"job_id", spec.job_id},
               {"model", {{"username", spec.model.username}, {"ref", spec.model.ref}, {"version", spec.model.version},
                          {"hyperparameters", spec.model.hyperparameters.json()}}},
               {"strategy", spec.strategy},
               {"update_precision", spec.update_precision},
               {"status", "running"},
               {"rounds", nlohmann::json::array()},
               {"discarded_replies_by_reason", nlohmann::json::object()}};
    for (const char* reason : kDiscardReasons) history["discarded_replies_by_reason"][reason] = 0;
    if (resume_from) {
      // The history as of the checkpoint's round; the rounds after it are redone.
      history = resume_from->history;
      history["status"] = "running";
      history.erase("error");
      history.erase("test");
      history["resumed"].push_back({{"after_round", resume_from->round}, {"at", now_utc()}});
    }
    set_not_ready("resolving the pods' addresses");
    Status st = resolve_pod_addresses();
    if (st.ok()) {
      connect_pods();
      st = run_job();
    }
    if (!st.ok()) {
      {
        std::lock_guard<std::mutex> lock(phase_mutex);
        if (!not_ready.empty()) not_ready = "the job failed before training: " + st.to_string();
      }
      history["status"] = "failed";
      history["error"] = st.to_string();
      log->error("event=job_failed job={} error=\"{}\"", spec.job_id, st.to_string());
      if (job_sent) end_job("coordinator failed: " + st.message());
      write_history();
      close_pods();
      return st;
    }
    close_pods();
    return result;
  }

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

  Status resolve_secure_aggregation() {
    const auto& want = spec.secure_aggregation;
    if (!want.enabled) return Status();
    namespace sa = protocol::secagg;
    const size_t all = spec.pods.size();
    const size_t answered = active_pods().size();
    sa::Settings s;
    // Neighbours among the pods that can take part; the fixed-point range for all the
    // job's pods (any of them may rejoin).
    s.neighbours = want.neighbours ? std::min<uint32_t>(want.neighbours, static_cast<uint32_t>(answered - 1))
                                   : sa::default_neighbours(answered);
    s.threshold = want.threshold ? want.threshold : sa::default_threshold(s.neighbours);
    s.clip = want.clip;
    s.modulus_bits = want.modulus_bits ? want.modulus_bits : sa::modulus_bits_for(s.clip, all);
    s.fraction_bits = sa::fraction_bits(s.modulus_bits, s.clip, all);
    // A pod's weight is its training rows over the largest dataset's rows (<= 1).
    s.weight_scale = static_cast<double>(std::max<int64_t>(1, max_rows));
    if (Status st = sa::validate(s); !st.ok()) {
      config_error = true;
      return Status(StatusCode::kInvalidArgument,
                    st.message() + " (with " + std::to_string(answered) + " pods answering; job.yaml secure_aggregation)");
    }
    secagg = s;
    history["secure_aggregation"] = {{"threshold", s.threshold},       {"neighbours", s.neighbours},
                                     {"clip", s.clip},                 {"modulus_bits", s.modulus_bits},
                                     {"fraction_bits", s.fraction_bits}, {"weight_scale", s.weight_scale}};
    progress << "secure aggregation: threshold " << s.threshold << ", " << s.neighbours << " neighbours per pod, clip "
             << s.clip << ", " << s.modulus_bits << "-bit ring with " << s.fraction_bits << " fraction bits\n";
    return Status();
  }

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
                                          double& loss_sum, int64_t& loss_weight, double& seconds_aggregating,
                                          size_t& sent) {
    namespace sa = protocol::secagg;
    using B = wire::Envelope::Body;
    const auto deadline = start + spec.round_timeout;
    const uint32_t r = static_cast<uint32_t>(round);
    auto index = [&](const Pod& pod) { return static_cast<size_t>(&pod - pods.data()); };
    auto wrong_round = [&](const char* kind, uint32_t got) {
      return PodRound{"error", std::string(kind) + " for round " + std::to_string(got) + ", the coordinator is in round " +
                                   std::to_string(round), 0, 0, {}};
    };
    std::vector<uint32_t> ids;
    for (size_t i : targets) ids.push_back(secagg_id(i));
    std::random_device rd;
    sa::Server server(*secagg, {spec.job_id, r}, ids, (static_cast<uint64_t>(rd()) << 32) | rd());
    std::map<size_t, PodRound> outcome;  // pods out of the round, and at the end everyone
    std::map<size_t, PodRound> trained;  // trainDone's metadata
    secagg_steps = nlohmann::json::object();
    auto step_start = Clock::now();
    auto settle = [&](const std::map<size_t, PodRound>& step, std::vector<size_t>& still_in, const char* name) {
      const auto now = Clock::now();
      secagg_steps[std::string(name) + "_seconds"] = std::chrono::duration<double>(now - step_start).count();
      step_start = now;
      still_in.clear();
      std::vector<uint32_t> still_ids;
      for (const auto& [i, p] : step) {
        if (p.outcome == "ok") {
          still_in.push_back(i);
          still_ids.push_back(secagg_id(i));
        } else {
          outcome[i] = p;
        }
      }
      if (step_observer) step_observer(round, name, still_ids);
    };
    // The round fails: every pod still in it gets the reason; nothing was unmasked.
    auto fail = [&](const Status& st) {
      log->warn("event=secagg_round_failed job={} round={} error=\"{}\"", spec.job_id, round, st.message());
      for (const auto& [i, p] : trained) {
        if (!outcome.count(i)) outcome[i] = PodRound{"secagg_failed", st.message(), 0, 0, {}};
      }
      return outcome;
    };

    // A. Train; the trainDone of each pod carries its public keys for the round.
    auto a = exchange(train, rid, targets, {B::TRAIN_DONE}, deadline, true,
        [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
          auto d = in.envelope().getBody().getTrainDone();
          if (d.getRound() != r) return wrong_round("trainDone", d.getRound());
          if (d.getNumSamples() == 0) return PodRound{"error", "trained on no samples", 0, 0, {}};
          if (!d.hasSecAggKeys()) return PodRound{"error", "trainDone without secure aggregation keys", 0, 0, {}};
          if (Status st = server.add_keys(secagg_id(index(pod)), sa::from_wire(d.getSecAggKeys())); !st.ok()) {
            return PodRound{"error", st.message(), 0, 0, {}};
          }
          // The weight FedAvg would give it (capped at its training rows); the pod
          // applies its own inside the masked sum.
          int64_t n = static_cast<int64_t>(std::min<uint64_t>(d.getNumSamples(), uint64_t{1} << 62));
          if (pod.train_samples > 0) n = std::min(n, pod.train_samples);
          PodRound pr{"ok", "", n, 0, {}};
          for (auto m : d.getMetrics()) pr.metrics[m.getName().cStr()] = m.getValue();
          pr.metrics["train_seconds"] = d.getSeconds();
          trained[index(pod)] = pr;
          return pr;
        },
        nullptr, &sent, /*heartbeats=*/true);
    std::vector<size_t> in_round;
    settle(a, in_round, "advertise");
    if (Status st = server.close_advertise(); !st.ok()) return fail(st);

    // B. Each pod gets its neighbours' keys and returns its encrypted shares.
    const uint64_t rid_b = next_request++;
    std::map<size_t, protocol::Outgoing> share_msgs;
    for (size_t i : in_round) {
      auto m = share_msgs.try_emplace(i, spec.job_id, rid_b).first->second.envelope().getBody().initSecAggShare();
      m.setRound(r);
      const auto nb = server.neighbours_of(secagg_id(i));
      auto list = m.initNeighbours(static_cast<unsigned>(nb.size()));
      unsigned k = 0;
      for (const auto& [id, pk] : nb) {
        list[k].setId(id);
        sa::to_wire(pk, list[k].initKeys());
        ++k;
      }
    }
    auto b = exchange_each([&](size_t i) -> protocol::Outgoing& { return share_msgs.at(i); }, rid_b, in_round,
        {B::SEC_AGG_SHARES}, deadline, true,
        [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
          auto m = in.envelope().getBody().getSecAggShares();
          if (m.getRound() != r) return wrong_round("secAggShares", m.getRound());
          if (Status st = server.add_shares(secagg_id(index(pod)), sa::from_wire(m.getShares())); !st.ok()) {
            return PodRound{"error", st.message(), 0, 0, {}};
          }
          return PodRound{"ok", "", 0, 0, {}};
        },
        nullptr, nullptr, true);
    settle(b, in_round, "share");
    if (Status st = server.close_share(); !st.ok()) return fail(st);

    // C. Each pod gets the shares addressed to it and masks its update; the masked
    //    updates are pulled like plain ones and summed in the ring as they arrive.
    const uint64_t rid_c = next_request++;
    std::map<size_t, protocol::Outgoing> mask_msgs;
    for (size_t i : in_round) {
      auto m = mask_msgs.try_emplace(i, spec.job_id, rid_c).first->second.envelope().getBody().initSecAggMask();
      m.setRound(r);
      const auto shares = server.shares_for(secagg_id(i));
      sa::to_wire(shares, m.initShares(static_cast<unsigned>(shares.size())));
    }
    protocol::Outgoing fetch(spec.job_id, rid_c);
    fetch.envelope().getBody().initFetchResult().setRound(r);
    std::deque<size_t> ready;
    std::set<size_t> fetching;
    auto start_fetches = [&](const std::vector<size_t>& pending) {
      for (auto it = fetching.begin(); it != fetching.end();) {
        it = std::find(pending.begin(), pending.end(), *it) == pending.end() ? fetching.erase(it) : std::next(it);
      }
      while (static_cast<int>(fetching.size()) < spec.max_concurrent_uploads && !ready.empty()) {
        if (send_to(pods[ready.front()], fetch)) fetching.insert(ready.front());
        ready.pop_front();
      }
    };
    const auto ring_dtype = secagg->modulus_bits == 32 ? wire::DType::INT32 : wire::DType::INT64;
    const std::vector<protocol::TensorSpec> ring_spec = {{"secagg", {global.numel() + 1}}};
    std::set<size_t> masked_ready;
    auto c = exchange_each([&](size_t i) -> protocol::Outgoing& { return mask_msgs.at(i); }, rid_c, in_round,
        {B::SEC_AGG_MASKED, B::TRAIN_RESULT}, deadline, true,
        [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
          const size_t i = index(pod);
          auto body = in.envelope().getBody();
          if (body.which() == B::SEC_AGG_MASKED) {
            if (body.getSecAggMasked().getRound() != r) return wrong_round("secAggMasked", body.getSecAggMasked().getRound());
            if (masked_ready.insert(i).second) ready.push_back(i);
            return std::nullopt;  // the masked update is still to fetch
          }
          auto t = body.getTrainResult();
          if (t.getRound() != r) return wrong_round("trainResult", t.getRound());
          if (!fetching.count(i)) {
            discard(pod, kUnfetched, in.envelope(), rid_c);
            return std::nullopt;
          }
          if (!t.getMasked()) return PodRound{"error", "trainResult is not a masked update, the job aggregates securely", 0, 0, {}};
          auto tensors = in.take_tensors(t.getTensors(), ring_spec, false, ring_dtype);
          if (!tensors.ok()) return PodRound{"error", tensors.status().message(), 0, 0, {}};
          const torch::Tensor& v = (*tensors)[0];
          job_metrics.bytes_received.Increment(static_cast<double>(v.nbytes()));
          const auto fold_start = Clock::now();
          Status added = server.add_masked(secagg_id(i), v.data_ptr(), v.nbytes());
          seconds_aggregating += std::chrono::duration<double>(Clock::now() - fold_start).count();
          if (!added.ok()) return PodRound{"error", added.message(), 0, 0, {}};
          folded_updates.insert({round, i});
          return PodRound{"ok", "", 0, 0, {}};
        },
        start_fetches, nullptr, true, [&](size_t i) { return fetching.count(i) > 0; });
    settle(c, in_round, "mask");
    if (Status st = server.close_mask(); !st.ok()) return fail(st);

    // D. The survivors reveal what removes the masks: self-mask seeds of survivors,
    //    mask keys of the pods that dropped after sharing.
    const uint64_t rid_d = next_request++;
    protocol::Outgoing unmask(spec.job_id, rid_d);
    {
      auto m = unmask.envelope().getBody().initSecAggUnmask();
      m.setRound(r);
      const auto& survivors = server.survivors();
      const auto dropped = server.dropped();
      auto s = m.initSurvivors(static_cast<unsigned>(survivors.size()));
      for (size_t k = 0; k < survivors.size(); ++k) s.set(static_cast<unsigned>(k), survivors[k]);
      auto d = m.initDropped(static_cast<unsigned>(dropped.size()));
      for (size_t k = 0; k < dropped.size(); ++k) d.set(static_cast<unsigned>(k), dropped[k]);
    }
    auto d = exchange(unmask, rid_d, in_round, {B::SEC_AGG_REVEAL}, deadline, true,
        [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
          auto m = in.envelope().getBody().getSecAggReveal();
          if (m.getRound() != r) return wrong_round("secAggReveal", m.getRound());
          sa::Reveal rv{sa::from_wire(m.getSelfMask()), sa::from_wire(m.getPairKey())};
          if (Status st = server.add_reveal(secagg_id(index(pod)), rv); !st.ok()) return PodRound{"error", st.message(), 0, 0, {}};
          return PodRound{"ok", "", 0, 0, {}};
        },
        nullptr, nullptr, true);
    secagg_steps["unmask_seconds"] = std::chrono::duration<double>(Clock::now() - step_start).count();
    if (step_observer) {
      std::vector<uint32_t> revealed;
      for (const auto& [i, p] : d) {
        if (p.outcome == "ok") revealed.push_back(secagg_id(i));
      }
      step_observer(round, "unmask", revealed);
    }
    for (const auto& [i, p] : d) {
      if (p.outcome != "ok") {
        // Its update is in the sum; the others' shares remove its self mask.
        log->warn("event=secagg_no_reveal job={} round={} pod={} outcome={} reason=\"{}\"", spec.job_id, round,
                  pods[i].addr.name, p.outcome, p.error);
      }
    }
    const auto unmask_start = Clock::now();
    torch::Tensor next = global.clone();
    auto total_weight = server.add_average_to(next.data_ptr<float>(), static_cast<size_t>(next.numel()));
    if (!total_weight.ok()) return fail(total_weight.status());
    Status folded = strategy.fold({{0, next}}, 1.0);
    secagg_steps["finish_seconds"] = std::chrono::duration<double>(Clock::now() - unmask_start).count();
    secagg_steps["survivors"] = server.survivors().size();
    secagg_steps["dropped"] = server.dropped().size();
    seconds_aggregating += std::chrono::duration<double>(Clock::now() - unmask_start).count();
    if (!folded.ok()) return fail(folded);
    for (size_t i : in_round) {
      outcome[i] = trained[i];
      if (outcome[i].metrics.count("train_loss")) {
        loss_sum += outcome[i].metrics["train_loss"] * outcome[i].num_samples;
        loss_weight += outcome[i].num_samples;
      }
    }
    return outcome;
  }

  Status run_job() {
    set_not_ready("loading the model");
    FEDPOD_RETURN_IF_ERROR(load_model());
    set_not_ready("contacting the pods (hello)");
    FEDPOD_RETURN_IF_ERROR(hello_and_check());
    FEDPOD_RETURN_IF_ERROR(resolve_secure_aggregation());
    set_not_ready("creating the model");
    FEDPOD_RETURN_IF_ERROR(create_model());
    set_not_ready("starting the job on the pods");
    FEDPOD_RETURN_IF_ERROR(start_job());
    set_not_ready("");
    torch::Tensor global = initial.clone();
    log->info("event=job_started job={} model={} parameters={} pods={}", spec.job_id, model_name(),
              global.numel(), active_pods().size());
    auto strategy = aggregation::make_strategy(spec.strategy);
    {
      // Integer buffers (num_batches_tracked) take the pods' maximum, not a mean.
      std::vector<aggregation::Range> max_ranges;
      for (const auto& info : layout) {
        if (info.kind == model::EntryKind::kMirroredBuffer) max_ranges.push_back({info.offset, info.numel});
      }
      strategy->set_max_ranges(std::move(max_ranges));
    }
    int first_round = 1;
    if (resume_from) {
      FEDPOD_RETURN_IF_ERROR(restore_checkpoint(global, *strategy));
      first_round = resume_from->round + 1;
      progress << "resumed job " << spec.job_id << " after round " << resume_from->round << " from "
               << checkpoint_path << std::endl;
      result.rounds_completed = resume_from->round;
    }
    for (int round = first_round; round <= spec.rounds; ++round) {
      const auto start = Clock::now();
      // Pods that lost the job or the link take it again first; one that cannot sits
      // this round out, with the reason.
      std::map<size_t, PodRound> rejoin = rejoin_pods(round);
      const std::vector<size_t> targets = pods_with_job();
      std::vector<std::string> rejoined;
      for (const auto& [i, r] : rejoin) {
        if (r.outcome == "ok") rejoined.push_back(pods[i].addr.name);
      }
      const uint64_t rid = next_request++;
      current_round = round;
      round_discarded = 0;
      protocol::Outgoing out(spec.job_id, rid);
      auto t = out.envelope().getBody().initTrain();
      t.setRound(static_cast<uint32_t>(round));
      t.setLocalEpochs(static_cast<uint32_t>(spec.local_steps > 0 ? 0 : spec.local_epochs));
      t.setLocalSteps(static_cast<uint32_t>(spec.local_steps));
      t.setBatchSize(static_cast<uint32_t>(spec.batch_size));
      const bool bf16_updates = spec.update_precision == "bfloat16";
      t.setUpdateDtype(bf16_updates ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
      // One buffer for every pod: each frame references `global`, none copies it.
      out.attach(t.initTensors(specs.size()), worker::parameter_views(global, layout));
      strategy->begin_round(global);
      double round_aggregation_seconds = 0;  // this round's folds and finish()
      double loss_sum = 0;
      int64_t loss_weight = 0;
      // Pods report trainDone; their parameters are pulled with fetchResult, at most
      // `max_concurrent_uploads` at a time, so received-but-unfolded updates never
      // hold more than that many models in memory, whatever the number of pods.
      std::map<size_t, PodRound> done;  // trainDone metadata, by pod
      std::map<size_t, uint64_t> claimed_samples;  // trainDone's numSamples, before the cap
      std::deque<size_t> ready;
      std::set<size_t> fetching;
      protocol::Outgoing fetch(spec.job_id, rid);
      fetch.envelope().getBody().initFetchResult().setRound(static_cast<uint32_t>(round));
      // Called before each poll with the pods still pending: an upload slot frees when
      // its pod answers, fails or disconnects.
      auto start_fetches = [&](const std::vector<size_t>& pending) {
        for (auto it = fetching.begin(); it != fetching.end();) {
          it = std::find(pending.begin(), pending.end(), *it) == pending.end() ? fetching.erase(it) : std::next(it);
        }
        if (spec.aggregation_order == "pod") {
          // One upload at a time, in the job's pod order: the next pod still in the
          // round is fetched once it is done training, and nobody after it before.
          if (!fetching.empty()) return;
          for (size_t i : targets) {
            if (std::find(pending.begin(), pending.end(), i) == pending.end()) continue;  // folded, or out
            if (!done.count(i)) return;
            if (send_to(pods[i], fetch)) fetching.insert(i);
            return;
          }
          return;
        }
        while (static_cast<int>(fetching.size()) < spec.max_concurrent_uploads && !ready.empty()) {
          // A failed send leaves the pod pending: the monitor or the deadline settles it.
          if (send_to(pods[ready.front()], fetch)) fetching.insert(ready.front());
          ready.pop_front();
        }
      };
      size_t sent = 0;  // pods the round's train request went out to
      open_round = round;
      auto replies = secagg ? secure_round(round, rid, targets, out, start, global, *strategy, loss_sum, loss_weight,
                                           round_aggregation_seconds, sent)
                            : exchange(
          out, rid, targets, {wire::Envelope::Body::TRAIN_DONE, wire::Envelope::Body::TRAIN_RESULT},
          start + spec.round_timeout, true,
          [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
            const size_t i = static_cast<size_t>(&pod - pods.data());
            auto body = in.envelope().getBody();
            // receive() discarded other jobs' replies and those for closed or folded
            // rounds: a round other than this one is a round not started yet.
            if (body.which() == wire::Envelope::Body::TRAIN_DONE) {
              auto d = body.getTrainDone();
              if (d.getRound() != static_cast<uint32_t>(round)) {
                return PodRound{"error",
                                "trainDone for round " + std::to_string(d.getRound()) + ", the coordinator is in round " +
                                    std::to_string(round),
                                0, 0, {}};
              }
              if (done.count(i)) {  // the first one stands; its parameters are being fetched
                discard(pod, kDuplicate, in.envelope(), rid);
                return std::nullopt;
              }
              if (d.getNumSamples() == 0) return PodRound{"error", "trained on no samples", 0, 0, {}};
              // An update weighs what the pod trained on, and no more than the training
              // rows it reported when it accepted the job: a pod cannot outvote the
              // others by claiming more samples than it has.
              const uint64_t claimed = d.getNumSamples();
              int64_t weight = static_cast<int64_t>(std::min<uint64_t>(claimed, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
              if (pod.train_samples > 0 && weight > pod.train_samples) {
                weight = pod.train_samples;
                job_metrics.weight_capped.Add({{"pod", pod.addr.name}}).Increment();
                auto& capped = history["update_weight_capped"][pod.addr.name];
                capped = capped.is_number() ? capped.get<int64_t>() + 1 : 1;
                log->warn("event=update_weight_capped job={} round={} pod={} claimed_samples={} train_samples={}",
                          spec.job_id, round, pod.addr.name, claimed, pod.train_samples);
              }
              claimed_samples[i] = claimed;
              PodRound pr{"ok", "", weight, 0, {}};
              for (auto m : d.getMetrics()) pr.metrics[m.getName().cStr()] = m.getValue();
              pr.metrics["train_seconds"] = d.getSeconds();
              done[i] = std::move(pr);
              ready.push_back(i);
              return std::nullopt;  // parameters still to fetch
            }
            auto r = body.getTrainResult();
            if (r.getRound() != static_cast<uint32_t>(round)) {
              return PodRound{"error",
                              "trainResult for round " + std::to_string(r.getRound()) + ", the coordinator is in round " +
                                  std::to_string(round),
                              0, 0, {}};
            }
            // Only a trainResult the coordinator asked for is read: one pushed before its
            // fetchResult would bypass max_concurrent_uploads, which bounds memory.
            if (!fetching.count(i)) {
              discard(pod, kUnfetched, in.envelope(), rid);
              return std::nullopt;
            }
            if (!done.count(i)) return PodRound{"error", "trainResult before trainDone", 0, 0, {}};
            const int64_t n = done[i].num_samples;  // capped at the pod's training rows
            if (r.getNumSamples() != claimed_samples[i]) {
              return PodRound{"error",
                              "trainResult has num_samples " + std::to_string(r.getNumSamples()) +
                                  ", its trainDone said " + std::to_string(claimed_samples[i]),
                              0, 0, {}};
            }
            // A bfloat16 update is the pod's change to this round's parameters; it is
            // added back to them in float32 before it is folded.
            if (r.getDelta() != bf16_updates) {
              return PodRound{"error",
                              std::string("trainResult ") + (r.getDelta() ? "is" : "is not") +
                                  " a bfloat16 change, the job asked for update_precision " + spec.update_precision,
                              0, 0, {}};
            }
            auto tensors = in.take_tensors(r.getTensors(), specs, true,
                                           bf16_updates ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
            if (!tensors.ok()) return PodRound{"error", tensors.status().message(), 0, 0, {}};
            for (const auto& t : *tensors) job_metrics.bytes_received.Increment(static_cast<double>(t.nbytes()));
            std::vector<aggregation::Segment> segments;
            for (size_t k = 0; k < layout.size(); ++k) {
              torch::Tensor v = (*tensors)[k].view({-1});
              if (bf16_updates) v = protocol::add_bf16_delta(global.narrow(0, layout[k].offset, layout[k].numel), v);
              segments.push_back({layout[k].offset, v});
            }
            const auto fold_start = Clock::now();
            Status folded = strategy->fold(segments, static_cast<double>(n));
            const double fold_seconds = std::chrono::duration<double>(Clock::now() - fold_start).count();
            aggregation_seconds += fold_seconds;
            round_aggregation_seconds += fold_seconds;
            if (!folded.ok()) return PodRound{"error", folded.message(), 0, 0, {}};
            folded_updates.insert({round, i});  // anything else for (round, pod) is a duplicate
            PodRound pr = done[i];
            if (pr.metrics.count("train_loss")) {
              loss_sum += pr.metrics["train_loss"] * n;
              loss_weight += n;
            }
            return pr;
          },
          start_fetches, &sent, /*heartbeats=*/true, [&](size_t i) { return fetching.count(i) > 0; });
      // Closed: whatever arrives for this round from now on is discarded, not folded.
      open_round = 0;
      last_closed_round = round;
      for (const auto& [i, r] : rejoin) {
        if (r.outcome != "ok") replies[i] = r;  // sat out: its rejoin's outcome is its answer
      }
      mark_rejoins(replies);
      job_metrics.bytes_sent.Increment(static_cast<double>(sent) * static_cast<double>(global.nbytes()));
      count_responses(replies);
      RoundRecord rec;
      rec.round = round;
      rec.pods_asked = static_cast<int>(replies.size());
      rec.pods = by_name(replies);
      for (auto& [i, r] : replies) {
        if (r.outcome == "ok") ++rec.pods_answered;
        else log->warn("event=pod_failed round={} pod={} outcome={} reason=\"{}\"", round, pods[i].addr.name, r.outcome, r.error);
      }
      rec.train_loss = loss_weight ? loss_sum / loss_weight : 0;
      if (rec.pods_answered < spec.min_pods) {
        rec.seconds = std::chrono::duration<double>(Clock::now() - start).count();
        history["rounds"].push_back(to_json(rec));
        history["rounds"].back()["discarded_replies"] = round_discarded;
        if (secagg) history["rounds"].back()["secure_aggregation"] = secagg_steps;
        if (!rejoined.empty()) history["rounds"].back()["rejoined"] = rejoined;
        // The checkpoint of the last completed round stays as it was.
        const std::string resume_hint =
            spec.checkpoint && round > 1
                ? "; the checkpoint after round " + std::to_string(round - 1) + " is intact: `fedpod coordinator run " +
                      "--resume` continues from it once enough pods are back"
                : "";
        return Status(StatusCode::kUnavailable,
                      "round " + std::to_string(round) + "/" + std::to_string(spec.rounds) + ": " +
                          std::to_string(rec.pods_answered) + " of " + std::to_string(rec.pods_asked) +
                          " pods answered, min_pods is " + std::to_string(spec.min_pods) + ": " +
                          describe_failures(replies) + resume_hint);
      }
      const auto finish_start = Clock::now();
      auto next = strategy->finish();
      if (!next.ok()) return next.status();
      global = std::move(*next);
      round_aggregation_seconds += std::chrono::duration<double>(Clock::now() - finish_start).count();
      job_metrics.aggregation.Observe(round_aggregation_seconds);
      rec.train_seconds = std::chrono::duration<double>(Clock::now() - start).count();
      const bool eval_now = (spec.eval_every > 0 && round % spec.eval_every == 0) || round == spec.rounds;
      if (eval_now) rec.eval = evaluate(global, round, wire::Split::VALIDATION);
      rec.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      history["rounds"].push_back(to_json(rec));
      // Replies discarded while this round was open, its validation included.
      history["rounds"].back()["discarded_replies"] = round_discarded;
      if (secagg) history["rounds"].back()["secure_aggregation"] = secagg_steps;
      if (!rejoined.empty()) history["rounds"].back()["rejoined"] = rejoined;
      // First the checkpoint, then history.json: a crash between the two leaves a
      // history one round behind, which the resumed run rewrites from the checkpoint.
      if (spec.checkpoint) history["checkpoint"] = {{"path", checkpoint_path}, {"round", round}};
      Status files = write_round_files(round, global, *strategy);
      if (!files.ok()) return files;
      progress << "round " << round << "/" << spec.rounds << "  pods " << rec.pods_answered << "/" << rec.pods_asked
               << "  train_loss " << fmt(rec.train_loss);
      if (rec.eval) progress << "  val_loss " << fmt(rec.eval->loss) << "  val_acc " << fmt(rec.eval->accuracy);
      progress << "  " << fmt(rec.seconds, 2) << "s" << std::endl;
      result.rounds_completed = round;
      job_metrics.rounds_completed.Increment();
      job_metrics.round_duration.Observe(rec.seconds);
    }
    // Pods that lost the job in the last round take it again to evaluate.
    rejoin_pods(spec.rounds + 1);
    auto test = evaluate(global, spec.rounds, wire::Split::TEST);
    end_job("completed");
    save_parameters(model_path, global, layout);
    double total_seconds = 0;  // over every round of the job, resumed runs included
    for (const auto& r : history["rounds"]) total_seconds += r.value("seconds", 0.0);
    result.mean_round_seconds = history["rounds"].empty() ? 0 : total_seconds / history["rounds"].size();
    result.history_path = history_path;
    result.model_path = model_path;
    result.report_path = report_path;
    if (test) {
      result.test_loss = test->loss;
      result.test_accuracy = test->accuracy;
      result.test_samples = test->num_samples;
      history["test"] = to_json(*test);
      progress << "test  loss " << fmt(test->loss) << "  accuracy " << fmt(test->accuracy) << "  samples "
               << test->num_samples << std::endl;
    } else {
      history["test"] = nullptr;
      progress << "test  no pod returned a test evaluation" << std::endl;
    }
    history["status"] = "completed";
    history["mean_round_seconds"] = result.mean_round_seconds;
    write_history();
    if (Status st = finish_round_files(); !st.ok()) return st;
    progress << "wrote " << history_path << ", " << model_path << " and " << report_path << std::endl;
    return Status();
  }

  // The round files' writer (write_round_files): what waits to be written, whether
  // a write is going, the first error. Its thread is stopped in ~Impl, after writing
  // what waits (the latest state is what a resume needs).
  std::mutex files_mu;
  std::condition_variable files_cv;
  std::optional<RoundFiles> files_pending;
  bool files_busy = false;
  bool files_stop = false;
  Status files_error;
  std::thread files_thread;
};

Coordinator::Coordinator(zmq::context_t& ctx, JobSpec spec, Logger log, std::ostream& progress,
                         ModelFactory make_model, CustomLoader load_custom)
    : impl_(std::make_unique<Impl>(ctx, std::move(spec), std::move(log), progress, std::move(make_model),
                                   std::move(load_custom))) {}

Coordinator::~Coordinator() = default;

StatusOr<RunResult> Coordinator::run() { return impl_->run(); }

std::shared_ptr<prometheus::Registry> Coordinator::registry() const { return impl_->registry; }

bool Coordinator::job_config_error() const { return impl_->config_error; }

void Coordinator::set_step_observer(StepObserver observer) { impl_->step_observer = std::move(observer); }

int Coordinator::metrics_port() const { return impl_->metrics_server ? impl_->metrics_server->port() : 0; }

StatusOr<nlohmann::json> fit(zmq::context_t& ctx, JobSpec job, const ModelReference& model,
                             const std::vector<std::string>& pod_identifiers, Logger log, std::ostream* progress) {
  job.model.username = model.username;
  job.model.ref = model.model_ref;
  job.model.version = model.model_version;
  job.model.hyperparameters = Hyperparameters(model.hyperparameters);
  job.pods.clear();
  for (const auto& id : pod_identifiers) {
    const auto at = id.find('@');
    job.pods.push_back(at == std::string::npos ? PodAddress{id, "", ""}
                                              : PodAddress{id.substr(0, at), id.substr(at + 1), ""});
  }
  validate(job, "fit");
  std::ostringstream quiet;
  Coordinator c(ctx, job, std::move(log), progress ? *progress : quiet);
  auto result = c.run();
  if (!result.ok()) return result.status();
  std::ifstream in(result->history_path);
  return nlohmann::json::parse(in);
}

}  // namespace fedpod::coordinator
