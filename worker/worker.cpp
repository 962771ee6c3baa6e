#include "fedpod/worker/worker.h"

#include <kj/exception.h>
#include <torch/torch.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "fedpod/common/names.h"
#include "fedpod/common/sha256.h"
#include "fedpod/common/temp_dir.h"
#include "fedpod/data/idx.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/worker/audit.h"
#include "fedpod/worker/privacy_guard.h"
#include "fedpod/common/utc.h"
#include "fedpod/worker/audit_anchor.h"
#include "fedpod/worker/gate.h"
#include "fedpod/worker/policy.h"
#include "fedpod/worker/policy_cache.h"
#include "fedpod/hub/client.h"
#include "fedpod/metrics/metrics.h"
#include <prometheus/text_serializer.h>
#include "fedpod/protocol/bulk.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/secagg.h"
#include "fedpod/protocol/secagg_wire.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/engine.h"
#include "fedpod/worker/runner.h"
#include "fedpod/worker/task_pool.h"
#include "fedpod/worker/trainer.h"
#include "fedpod/protocol/wire_convert.h"

namespace fedpod::worker {

using protocol::from_wire;
using protocol::parameter_views;
using protocol::tensor_specs;
using protocol::to_wire;
namespace {

using Clock = std::chrono::steady_clock;
using Frames = std::vector<zmq::message_t>;

// Directories that must stay until the process exits (a loaded plugin's file).
void keep_until_exit(TempDir dir) {
  static std::mutex mu;
  static auto* kept = new std::vector<TempDir>();  // never destroyed: outlives every pod
  std::lock_guard<std::mutex> lock(mu);
  kept->push_back(std::move(dir));
}

// What a finished round left in the model, waiting for fetchResult.
struct TrainedResult {
  uint32_t round = 0;
  int64_t num_samples = 0;
  double seconds = 0;
  std::vector<std::pair<std::string, double>> metrics;
  // Train.updateDtype bfloat16: the update is sent as the change to `base`, the
  // round's parameters as received (views of the received frames, kept until then;
  // bfloat16 when Train.paramsDtype was).
  std::vector<torch::Tensor> base;
};

template <typename List>
void set_metrics(List list, const std::vector<std::pair<std::string, double>>& metrics) {
  for (size_t i = 0; i < metrics.size(); ++i) {
    list[i].setName(metrics[i].first);
    list[i].setValue(metrics[i].second);
  }
}

// A job accepted by this pod. Immutable fields are read by the socket thread; the
// model is touched only by the executor thread while a task runs.
struct Job {
  std::string id;
  std::string user;      // the authenticated modeller who started it; only they may drive it
  std::string decision;  // why it was admitted
  AccessRequest access;  // what was admitted: decided again at each request (still_allowed)
  std::string started_at;  // UTC, when it was admitted (a busy pod says since when)
  std::string model_ref;
  Hyperparameters hp;
  // The job's model code: a runner process (runner.h), or in this process when the
  // Worker was embedded with its own Runtime hooks (engine.h).
  std::unique_ptr<JobEngine> engine;
  std::vector<protocol::TensorSpec> specs;
  uint64_t seed = 0;
  uint32_t round = 0;
  std::optional<TrainedResult> result;  // set by the executor, read once it is idle
  // A train with uploadWhenDone: where its trainResult goes once trainDone is sent.
  struct Upload {
    uint32_t round;
    std::shared_ptr<zmq::message_t> routing;
    uint64_t request_id;
  };
  std::optional<Upload> upload;
  Clock::time_point last_activity = Clock::now();
  // The tensor channel's keys, agreed in this job's startJob (protocol/bulk.h);
  // without keys when the coordinator or this pod did not ask for one.
  protocol::BulkSession tensors;
  bool sealed = false;
  // Secure aggregation (startJob.secureAggregation; protocol/secagg.h): the job's
  // settings and this pod's id, this round's protocol state (made when training
  // ends, wiped once the pod revealed its shares) and its masked update until fetched.
  std::optional<protocol::secagg::Settings> secagg;
  uint32_t secagg_id = 0;
  std::unique_ptr<protocol::secagg::Client> secagg_client;
  uint32_t secagg_round = 0;
  std::shared_ptr<protocol::secagg::RingVector> masked;
  // Privacy (pod.yaml privacy; privacy_guard.h): what the job declared, its DP-SGD
  // settings, its ledger entry, and the trains and DP steps it has run.
  JobPlan plan;
  privacy::DpSgdOptions dp;
  double dp_sample_rate = 0;
  std::string ledger_key;  // "": nothing reserved in the ledger
  int64_t trains = 0;      // socket thread
  std::atomic<int64_t> dp_steps{0};  // executor thread writes, socket thread reads once idle
};

// Runs tasks one at a time, in order, on its own thread or (with a shared TaskPool,
// task_pool.h) as a strand on the pool's threads; each task returns the frames of its
// reply, which are sent to the socket thread over an inproc PAIR socket. The PAIR
// socket is used by one thread at a time (the strand's), handed on under the mutex.
class Executor {
 public:
  using Task = std::function<Frames()>;
  // Builds the reply for a task that threw, so the requester always gets an answer
  // and the socket thread learns the task is over.
  using OnError = std::function<Frames(const std::string&)>;

  Executor(zmq::context_t& ctx, std::string inproc, Logger log, std::shared_ptr<TaskPool> pool)
      : ctx_(ctx), inproc_(std::move(inproc)), log_(std::move(log)), pool_(std::move(pool)) {
    if (!pool_) thread_ = std::thread([this] { serve(/*own_thread=*/true); });
  }

  ~Executor() {
    if (pool_) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return !scheduled_; });  // queued tasks still run, as below
      out_.reset();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void submit(Task task, OnError on_error) {
    bool post = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back({std::move(task), std::move(on_error)});
      if (pool_ && !scheduled_) post = scheduled_ = true;
    }
    cv_.notify_all();
    if (post) pool_->post([this] { serve(/*own_thread=*/false); });
  }

  // Blocks until no task is queued or running.
  void wait_idle() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return queue_.empty() && !running_; });
  }

 private:
  struct Item {
    Task task;
    OnError on_error;
  };

  void run_one(Item& item) {
    Frames frames;
    try {
      frames = item.task();
    } catch (const std::exception& e) {
      log_->error("event=task_failed error=\"{}\"", e.what());
      frames = item.on_error(e.what());
    }
    if (!out_) {
      out_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
      out_->set(zmq::sockopt::linger, 0);
      out_->connect(inproc_);
    }
    protocol::send_frames(*out_, frames);
  }

  // Runs the queued tasks in order. On its own thread it then waits for more until
  // stopped (running what is queued first); on a pool strand it gives the thread back
  // once the queue is empty.
  void serve(bool own_thread) {
    while (true) {
      Item item;
      {
        std::unique_lock<std::mutex> lock(mu_);
        if (own_thread) cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) {
          if (own_thread) break;
          scheduled_ = false;
          cv_.notify_all();  // under the lock: ~Executor may free this once it sees it
          return;
        }
        item = std::move(queue_.front());
        queue_.pop_front();
        running_ = true;
      }
      run_one(item);
      {
        std::lock_guard<std::mutex> lock(mu_);
        running_ = false;
      }
      cv_.notify_all();
    }
    out_.reset();
  }

  zmq::context_t& ctx_;
  std::string inproc_;
  Logger log_;
  std::shared_ptr<TaskPool> pool_;
  std::unique_ptr<zmq::socket_t> out_;  // the strand's end of the PAIR
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool running_ = false;
  bool stopping_ = false;
  bool scheduled_ = false;  // pool mode: a serve() is posted or running
  std::thread thread_;      // own-thread mode only
};

// Log lines a peer can provoke at will (a refused request, a refused handshake, a
// reply to a peer that left): at most kLinesPerSecond of each event a second; the
// rest are counted (fedpod_worker_log_lines_suppressed_total{event}) and the next
// line of that event says how many were left out (suppressed=N). Thread-safe: the
// ZAP thread and the socket thread both log.
class PeerLines {
 public:
  static constexpr int kLinesPerSecond = 5;

  explicit PeerLines(prometheus::Family<prometheus::Counter>& suppressed) : suppressed_(suppressed) {}

  // -1: leave this line out; else how many of this event were left out before it.
  int64_t admit(const std::string& event) {
    std::lock_guard<std::mutex> lock(mu_);
    State& s = state_[event];
    const auto now = Clock::now();
    if (now - s.second >= std::chrono::seconds(1)) {
      s.second = now;
      s.lines = 0;
    }
    if (s.lines >= kLinesPerSecond) {
      ++s.left_out;
      suppressed_.Add({{"event", event}}).Increment();
      return -1;
    }
    ++s.lines;
    const int64_t n = s.left_out;
    s.left_out = 0;
    return n;
  }

 private:
  struct State {
    Clock::time_point second;
    int lines = 0;
    int64_t left_out = 0;
  };
  std::mutex mu_;
  std::map<std::string, State> state_;
  prometheus::Family<prometheus::Counter>& suppressed_;
};

// Audit entries a peer can provoke at will (refused handshakes and startJobs) are
// coalesced: the first refusal of a kind (event, user or key, reason, model) is
// written at once; repeats within kWindow are counted, and written as one entry
// {"event": "<event>_repeated", "count": N, "first_at", "last_at", ...} when the
// window ends (at the next refusal after it, the worker's next tick, or its stop).
// So the log keeps every kind of refusal and how many there were, while a peer
// retrying in a loop costs one fsync'd line a minute, not one per attempt.
//
// The keys are the peers' choosing (a fresh CURVE key per handshake, a new model
// version per startJob), so at most kMaxOpen kinds are open at once: past that, each
// further refusal joins one entry per event, {"coalesced": "..."}, counted likewise,
// and a peer that varies its key costs one line a minute, not one per attempt.
class RefusalAudit {
 public:
  static constexpr std::chrono::seconds kWindow{60};
  static constexpr size_t kMaxOpen = 64;

  // `write` appends one entry (AuditLog::append).
  explicit RefusalAudit(std::function<Status(nlohmann::json)> write) : write_(std::move(write)) {}

  // `key` identifies the kind; `entry` is what the first one writes.
  Status refused(std::string key, nlohmann::json entry) {
    std::vector<nlohmann::json> out;
    Status st;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const auto now = Clock::now();
      collect_expired(now, out);
      auto it = open_.find(key);
      if (it == open_.end() && open_.size() >= kMaxOpen) {
        const std::string event = entry.value("event", std::string("refused"));
        key = "\x01many|" + event;  // no peer's key starts with a control character
        it = open_.find(key);
        entry["coalesced"] = "more than " + std::to_string(kMaxOpen) + " kinds of refusal within " +
                             std::to_string(kWindow.count()) + " s: this and the next " + event +
                             " refusals of other kinds are counted in one entry";
      }
      if (it != open_.end()) {
        it->second.count++;
        it->second.last_at = format_utc(std::chrono::system_clock::now());
      } else {
        open_[key] = Open{now, entry, 0, ""};
        out.push_back(std::move(entry));
      }
    }
    for (auto& e : out) {
      Status w = write_(std::move(e));
      if (st.ok()) st = w;
    }
    return st;
  }

  // Writes the repeat counts of windows that ended (all of them with `all`).
  void flush(bool all = false) {
    std::vector<nlohmann::json> out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      collect_expired(all ? Clock::time_point::max() : Clock::now(), out);
    }
    for (auto& e : out) (void)write_(std::move(e));
  }

 private:
  struct Open {
    Clock::time_point since;
    nlohmann::json first;
    int64_t count = 0;  // repeats after the first
    std::string last_at;
  };

  void collect_expired(Clock::time_point now, std::vector<nlohmann::json>& out) {
    for (auto it = open_.begin(); it != open_.end();) {
      if (now == Clock::time_point::max() || now - it->second.since >= kWindow) {
        if (it->second.count > 0) {
          nlohmann::json e = it->second.first;
          e["event"] = e.value("event", std::string("refused")) + "_repeated";
          e["count"] = it->second.count;
          e["last_at"] = it->second.last_at;
          out.push_back(std::move(e));
        }
        it = open_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::function<Status(nlohmann::json)> write_;
  std::mutex mu_;
  std::map<std::string, Open> open_;
};

}  // namespace

struct Worker::Impl {
  Impl(zmq::context_t& ctx, Worker& owner, Logger log, Runtime runtime)
      : ctx(ctx), owner(owner), log(std::move(log)), runtime(std::move(runtime)) {}

  zmq::context_t& ctx;
  Worker& owner;
  Logger log;
  Runtime runtime;
  zmq::socket_t router;
  // The tensor channel's ROUTER (an embedded Worker; with a gate the gate holds it)
  // and its bound endpoint ("" = no tensor channel).
  zmq::socket_t tensor_router;
  std::string tensor_endpoint;
  data::Table table;
  protocol::Limits limits;
  std::unique_ptr<Job> job;
  bool busy = false;  // a task of `job` is queued or running (socket thread only)
  std::optional<std::string> end_after_reply;  // still_allowed(): end `job` with this reason after replying
  std::atomic<bool> cancel{false};
  std::unique_ptr<Executor> executor;
  // Private directory (0700) for received custom-model artifacts, made on first use.
  // Plugin files stay until the process exits: a loaded plugin is never unloaded,
  // and removing its file would let a later file reuse the inode, which the dynamic
  // loader would take for the already-loaded library.
  TempDir artifact_dir;
  bool plugin_loaded = false;
  // Identity and permissions: the pod's key pair, its policy, its audit log, and the
  // ZAP domain that admits the policy's users.
  protocol::CurveKeyPair keys;
  std::unique_ptr<PolicyCache> policy;
  std::unique_ptr<AuditLog> audit;
  std::shared_ptr<protocol::ZapHandler> zap;
  std::string zap_domain;
  std::unique_ptr<RefusalAudit> refusal_audit;  // set with `audit`
  // The spent privacy budget (pod.yaml privacy.differential_privacy); null without one.
  std::unique_ptr<PrivacyLedger> ledger;
  // Publishes the audit head to the hub (policy from the hub only). Its callback
  // holds the registry, so it may outlive the members declared after it.
  std::unique_ptr<AuditAnchor> anchor;
  std::atomic<bool> serving{false};  // readiness: serve() is running
  // Metrics: this pod's registry and, with metrics_listen, its HTTP endpoint.
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& access_denied_family = metrics::counter(
      *registry, "fedpod_access_denied_total",
      "Jobs and connections this pod refused, by reason (unknown_key: a CURVE handshake with a key of no user "
      "in the policy; the others: startJob refusals, see docs/permissions.md)");
  prometheus::Family<prometheus::Counter>& jobs_family =
      metrics::counter(*registry, "fedpod_worker_jobs_total",
                       "Jobs by outcome: accepted (startJob admitted), refused (permission or busy), ended (endJob "
                       "or worker stop), expired (idle past job_idle_timeout), revoked (its role or grant taken away while it "
                       "ran)");
  prometheus::Histogram& train_seconds =
      metrics::histogram(*registry, "fedpod_worker_train_seconds", "Local training time of one round")
          .Add({}, metrics::seconds_buckets());
  prometheus::Counter& train_steps =
      metrics::counter(*registry, "fedpod_worker_train_steps_total", "Optimizer steps taken in local training").Add({});
  prometheus::Counter& train_samples =
      metrics::counter(*registry, "fedpod_worker_train_samples_total", "Samples seen in local training (with repeats)")
          .Add({});
  prometheus::Family<prometheus::Counter>& bytes_family = metrics::counter(
      *registry, "fedpod_worker_bytes_total", "Message bytes received from and sent to coordinators, by direction");
  prometheus::Counter& bytes_received = bytes_family.Add({{"direction", "received"}});
  prometheus::Counter& bytes_sent = bytes_family.Add({{"direction", "sent"}});
  prometheus::Counter& gate_shared_bytes =
      metrics::counter(*registry, "fedpod_worker_gate_shared_memory_bytes_total",
                       "Tensor-channel bytes that crossed between the receiving process and the worker through their "
                       "shared rings instead of the local socket (both directions)")
          .Add({});
  prometheus::Counter& gate_shared_misses =
      metrics::counter(*registry, "fedpod_worker_gate_shared_memory_misses_total",
                       "Large tensor-channel frames that found no room in a shared ring and crossed the local socket")
          .Add({});
  uint64_t gate_shared_seen = 0, gate_misses_seen = 0;
  // The gate's own counts since start, into the metrics.
  void sync_gate_counters() {
    if (!gate) return;
    const uint64_t bytes = gate->shared_bytes(), misses = gate->shared_misses();
    gate_shared_bytes.Increment(static_cast<double>(bytes - gate_shared_seen));
    gate_shared_misses.Increment(static_cast<double>(misses - gate_misses_seen));
    gate_shared_seen = bytes;
    gate_misses_seen = misses;
  }
  prometheus::Family<prometheus::Counter>& bad_family = metrics::counter(
      *registry, "fedpod_worker_bad_messages_total",
      "Messages refused as malformed, by reason: no_envelope, too_many_frames, envelope (unreadable header), "
      "too_large (beyond max_message_bytes), content (wrong tensors, values or fields), unexpected_kind, protocol_version (another protocol version; "
      "audited once a minute per user)");
  prometheus::Family<prometheus::Counter>& tensor_refused_family = metrics::counter(
      *registry, "fedpod_worker_tensor_messages_refused_total",
      "Messages on the tensor channel dropped unread, by reason: malformed, unknown_session (no job holds that "
      "session: answered with a notice), replay (a sequence number already used), tampered (an authentication "
      "tag failed: altered, moved, or sealed with other keys), round_mismatch, too_large, too_many_frames");
  prometheus::Family<prometheus::Counter>& runner_failures_family = metrics::counter(
      *registry, "fedpod_worker_runner_failures_total",
      "Jobs whose runner failed, by reason: crashed (a signal such as SIGSEGV), timeout (past the step or load "
      "time limit), exited, error (the model's own error)");
  prometheus::Family<prometheus::Gauge>& sandbox_family = metrics::gauge(
      *registry, "fedpod_worker_sandbox_info",
      "How this pod confines model code: always 1, the level in the label (namespaces+seccomp+rlimits, "
      "seccomp+rlimits, or in-process for an embedded worker)");
  prometheus::Family<prometheus::Counter>& suppressed_family = metrics::counter(
      *registry, "fedpod_worker_log_lines_suppressed_total",
      "Log lines a peer provoked beyond the limit (PeerLines::kLinesPerSecond a second of each event) and left "
      "out, by event");
  PeerLines peer_lines{suppressed_family};
  prometheus::Family<prometheus::Counter>& audit_heads_family = metrics::counter(
      *registry, "fedpod_worker_audit_heads_published_total",
      "Attempts to publish the audit log's signed head to the hub, by result: ok, refused (the hub holds a head "
      "this log contradicts: it was cut or replaced; see the log), unavailable (retried)");
  prometheus::Family<prometheus::Counter>& handshake_failures_family = metrics::counter(
      *registry, "fedpod_worker_handshake_failures_total",
      "Connections whose ZeroMQ handshake failed, by reason: protocol (not ZMTP, a wrong version or mechanism, "
      "a malformed or undecryptable CurveZMQ command), auth (the key refused: see fedpod_access_denied_total), "
      "other (the peer went away mid-handshake)");
  prometheus::Family<prometheus::Counter>& transport_restarts_family = metrics::counter(
      *registry, "fedpod_worker_transport_restarts_total",
      "Times the pod's receiving process (`fedpod worker` only: it owns the public socket under a memory "
      "limit) ended and was restarted, by reason: memory (SIGABRT or SIGKILL: most likely a peer's message "
      "beyond the limit), crashed (another signal), exited, restart (an earlier restart failed; retried)");
  // The ROUTER's handshake failures (ZMQ socket monitor), read in serve(); empty
  // with a gate, which passes them on as messages.
  std::string monitor_endpoint;
  // A socket monitor's event frame (uint16 event, uint32 value), from this process's
  // monitor or passed on by the receiving process.
  void on_monitor_event(const zmq::message_t& event_frame, const std::string& peer) {
    if (event_frame.size() < 6) return;
    uint16_t event;
    uint32_t value;
    std::memcpy(&event, event_frame.data(), 2);
    std::memcpy(&value, static_cast<const char*>(event_frame.data()) + 2, 4);
    on_handshake_event(event, value, peer);
  }
  void on_no_envelope() {
    on_bad_message("no_envelope");
    if (int64_t left_out = peer_lines.admit("bad_message"); left_out >= 0) {
      log->warn("event=bad_message reason=\"message without an envelope\" suppressed={}", left_out);
    }
  }
  void on_handshake_event(uint16_t event, uint32_t value, const std::string& peer) {
    const char* reason = event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH       ? "auth"
                         : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol"
                                                                        : "other";
    handshake_failures_family.Add({{"reason", reason}}).Increment();
    if (event != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) return;  // auth: audited by authenticate()
    if (int64_t left_out = peer_lines.admit("handshake_failed"); left_out >= 0) {
      log->warn("event=handshake_failed pod={} peer={} reason=protocol zmq_protocol_error=0x{:x} suppressed={}",
                config().name, peer, value, left_out);
    }
    if (refusal_audit) {
      (void)refusal_audit->refused("handshake_failed|protocol",
                                   {{"event", "handshake_failed"},
                                    {"pod", config().name},
                                    {"peer", peer},
                                    {"reason", "protocol"},
                                    {"message", "not a CurveZMQ client of this pod (wrong protocol, version or "
                                                "mechanism, or a malformed handshake)"}});
    }
  }
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  // How this pod's runners are confined (probed at start; empty level: in-process).
  Confinement confinement;
  void on_runner_failure(const Status& st) {
    if (runtime.runner_command.empty() || st.code() != StatusCode::kInternal) return;
    const std::string& m = st.message();
    const char* reason = m.find("killed by signal") != std::string::npos && m.find("time limit") == std::string::npos
                             ? "crashed"
                         : m.find("time limit") != std::string::npos ? "timeout"
                         : m.find("exited with code") != std::string::npos ? "exited"
                                                                             : "error";
    runner_failures_family.Add({{"reason", reason}}).Increment();
  }
  void on_access_denied(const std::string& reason) { access_denied_family.Add({{"reason", reason}}).Increment(); }
  void on_job(const char* outcome) { jobs_family.Add({{"outcome", outcome}}).Increment(); }
  void on_bad_message(const char* reason) {
    counters().bad_messages++;
    bad_family.Add({{"reason", reason}}).Increment();
  }
  static double frame_bytes(const Frames& frames) {
    double n = 0;
    for (const auto& f : frames) n += static_cast<double>(f.size());
    return n;
  }

  // ZAP: admits a client key only if it is the key of a user who holds a role on this
  // pod, or of its owner. Any other hub user cannot even complete the handshake: no
  // schema to read, no job to keep alive, no startJob to make the pod hash.
  std::optional<std::string> authenticate(const std::string& key, const std::string& address) {
    auto p = policy ? policy->snapshot() : nullptr;
    std::optional<std::string> user = p ? p->user_by_key(key) : std::nullopt;
    const char* reason = nullptr;
    if (!user) {
      reason = "unknown_key";
    } else if (p->role_of(*user) == Role::kNone && *user != p->owner) {
      reason = "no_role";
    }
    if (!reason) return user;
    counters().handshakes_refused++;
    on_access_denied(reason);
    const std::string why = user ? "user " + *user + " holds no role on this pod" : "key of no user in the pod's policy";
    if (int64_t left_out = peer_lines.admit("handshake_refused"); left_out >= 0) {
      log->warn("event=handshake_refused pod={} peer={} public_key={} reason={} message=\"{}\" refused_total={} "
                "suppressed={}", config().name, address, key, reason, why, counters().handshakes_refused.load(),
                left_out);
    }
    if (refusal_audit) {
      nlohmann::json e = {{"event", "handshake_refused"}, {"pod", config().name}, {"public_key", key},
                          {"peer", address},              {"reason", reason},     {"message", why}};
      if (user) e["user"] = *user;
      // Coalesced per key and reason (the peer's address changes with every connection).
      (void)refusal_audit->refused(std::string("handshake|") + reason + "|" + key, std::move(e));
    }
    return std::nullopt;
  }

  ~Impl() {
    if (zap) zap->remove_domain(zap_domain);
    if (refusal_audit) refusal_audit->flush(true);
    // A loaded plugin's file stays while the process lives (its directory locked;
    // once the process has exited, the next pod's TempDir::create removes it).
    if (plugin_loaded) keep_until_exit(std::move(artifact_dir));
  }

  const PodConfig& config() const { return owner.config_; }

  // Intra-op threads of each replica on a pod with several devices: the pod's
  // `threads` (every core when 0) shared between them, at least one each.
  int threads_per_replica() const {
    const int threads = config().threads > 0 ? config().threads : static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, threads / static_cast<int>(config().devices.size()));
  }

  // Writes an admitted custom-model artifact (`got`: its sha256) to a private file
  // (directory 0700, file 0600) for an in-process engine; returns its path. A
  // runner gets the bytes as a sealed in-memory file instead (runner.h).
  StatusOr<std::string> write_artifact(const std::string& format, std::string_view bytes, const std::string& got) {
    if (artifact_dir.empty()) {
      auto dir = TempDir::create("fedpod-pod-");
      if (!dir.ok()) return dir.status();
      artifact_dir = std::move(*dir);
    }
    const std::string path = artifact_dir.path() + "/" + got + model::artifact_extension(format);
    const bool is_plugin = format == "plugin";
    if (is_plugin) plugin_loaded = true;  // loading runs its static constructors; keep the file
    if (is_plugin && std::filesystem::exists(path)) return path;  // a plugin seen before: same bytes, same file
    const std::string tmp = path + ".part";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return Status::internal("cannot write " + tmp + ": " + std::strerror(errno));
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        int err = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        return Status::internal("cannot write " + tmp + ": " + std::strerror(err));
      }
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) return Status::internal("cannot rename " + tmp + ": " + std::strerror(errno));
    return path;
  }

  // The schema told to coordinators. Categories of an inferred categorical column are
  // values of the data (names, cities): only a declared schema advertises them.
  data::Schema advertised_schema() const {
    data::Schema s = table.schema;
    if (!config().schema) {
      for (auto& c : s.columns) {
        c.categories_withheld = c.type == data::ColumnType::kCategorical && !c.categories.empty();
        c.categories.clear();
      }
    }
    return s;
  }
  WorkerCounters& counters() { return owner.counters_; }
  // Where peers' messages arrive and replies go: the receiving process (`fedpod
  // worker`) or this process's own ROUTER (an embedded Worker).
  zmq::socket_t& transport() { return gate ? gate->socket() : router; }

  // Builds a reply echoing the request's ids; `fill` sets the body.
  Frames reply(const zmq::message_t& routing, const std::string& job_id, uint64_t request_id,
               const std::function<void(protocol::Outgoing&)>& fill) {
    protocol::Outgoing out(job_id, request_id);
    fill(out);
    Frames frames = out.frames();
    frames.insert(frames.begin(), zmq::message_t(routing.data(), routing.size()));
    return frames;
  }

  static bool is_tensor_route(const zmq::message_t& routing) {
    return routing.size() > 1 && *static_cast<const char*>(routing.data()) == kTensorRoute;
  }

  void send(Frames& frames) {
    // frames[0] is the routing id.
    zmq::message_t routing = std::move(frames[0]);
    frames.erase(frames.begin());
    if (is_tensor_route(routing)) {
      // A reply to a sealed request is sealed for the job's coordinator, or dropped
      // when the job (and its keys) ended meanwhile.
      if (!job || !job->sealed || frames.empty()) return;
      const uint32_t round = protocol::round_of(frames[0]);
      frames = job->tensors.seal(std::move(frames), round);
    }
    send_raw(routing, frames);
  }

  // Sends `frames` to `routing` as they are: to the CURVE socket, or (a tensor route)
  // to the tensor endpoint.
  void send_raw(zmq::message_t& routing, Frames& frames) {
    const double bytes = frame_bytes(frames);
    bool sent = false;
    if (gate) {
      sent = gate->send(routing, frames);
      sync_gate_counters();
    } else if (is_tensor_route(routing)) {
      zmq::message_t id(static_cast<const char*>(routing.data()) + 1, routing.size() - 1);
      sent = tensor_router && protocol::send_frames(tensor_router, frames, &id);
    } else {
      sent = protocol::send_frames(router, frames, &routing);
    }
    if (sent) {
      bytes_sent.Increment(bytes);
    } else if (int64_t left_out = peer_lines.admit("reply_dropped"); left_out >= 0) {
      log->warn("event=reply_dropped reason=peer_gone suppressed={}", left_out);
    }
  }

  void send_error(const zmq::message_t& routing, const std::string& job_id, uint64_t request_id,
                  const Status& status, const char* bad_reason = "content") {
    if (status.code() == StatusCode::kBadMessage) on_bad_message(bad_reason);
    if (int64_t left_out = peer_lines.admit("request_refused"); left_out >= 0) {
      log->warn("event=request_refused job={} request={} code={} reason=\"{}\" suppressed={}", job_id, request_id,
                to_string(status.code()), status.message(), left_out);
    }
    Frames f = reply(routing, job_id, request_id,
                     [&](protocol::Outgoing& o) { protocol::set_error(o.envelope(), status); });
    send(f);
  }

  void serve(const std::atomic<bool>& stop) {
    const std::string inproc = "inproc://fedpod-worker-" + std::to_string(reinterpret_cast<uintptr_t>(this));
    zmq::socket_t results(ctx, zmq::socket_type::pair);
    results.set(zmq::sockopt::linger, 0);
    results.bind(inproc);
    executor = std::make_unique<Executor>(ctx, inproc, log, runtime.pool);
    serving = true;
    std::string devices;
    for (const auto& d : config().devices) devices += (devices.empty() ? "" : ",") + d;
    log->info("event=serving pod={} endpoint={} rows={} columns={} devices={}", config().name,
              owner.endpoint_, table.schema.num_rows, table.schema.columns.size(), devices);

    zmq::socket_t monitor(ctx, zmq::socket_type::pair);
    monitor.set(zmq::sockopt::linger, 0);
    if (!gate) monitor.connect(monitor_endpoint);
    Frames frames;
    while (!stop.load()) {
      if (gate) {
        if (auto ended = gate->check()) on_gate_ended(*ended);
      }
      const bool own_tensors = !gate && tensor_router;
      zmq::pollitem_t items[] = {{transport().handle(), 0, ZMQ_POLLIN, 0},
                                 {results.handle(), 0, ZMQ_POLLIN, 0},
                                 {monitor.handle(), 0, ZMQ_POLLIN, 0},
                                 {own_tensors ? tensor_router.handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      protocol::poll(items, own_tensors ? 4 : 3, std::chrono::milliseconds(100));
      bool too_many = false;
      if (items[2].revents & ZMQ_POLLIN) {
        while (protocol::recv_frames(monitor, frames, 4, too_many)) {
          if (frames.size() >= 2) on_monitor_event(frames[0], frames[1].to_string());
        }
      }
      if (items[1].revents & ZMQ_POLLIN) {
        while (protocol::recv_frames(results, frames, SIZE_MAX, too_many)) {
          busy = false;
          if (job) job->last_activity = Clock::now();
          send(frames);
          upload_if_granted();
        }
      }
      if (items[0].revents & ZMQ_POLLIN) {
        // Drain what is waiting, one message at a time.
        if (gate) {
          // The gate sends only whole, checked messages (and notes); no limit here.
          for (int i = 0; i < 64 && protocol::recv_frames(transport(), frames, SIZE_MAX, too_many); ++i) {
            handle_from_gate(frames);
          }
        } else {
          for (int i = 0; i < 64 && protocol::recv_frames(router, frames, limits.max_frames + 1, too_many); ++i) {
            handle(frames, too_many);
          }
        }
      }
      if (own_tensors && (items[3].revents & ZMQ_POLLIN)) {
        for (int i = 0; i < 64 && protocol::recv_frames(tensor_router, frames, limits.max_frames + 2, too_many); ++i) {
          if (frames.size() < 2) continue;
          zmq::message_t routing = std::move(frames[0]);
          frames.erase(frames.begin());
          const char* peer_prop = zmq_msg_gets(frames[0].handle(), "Peer-Address");
          if (too_many) {
            on_tensor_refused("too_many_frames");
            continue;
          }
          if (frame_bytes(frames) > static_cast<double>(config().max_message_bytes)) {
            on_tensor_refused("too_large");
            continue;
          }
          handle_tensor(routing, peer_prop ? peer_prop : "", frames);
        }
      }
      expire_idle_job();
      if (refusal_audit) refusal_audit->flush();
    }
    serving = false;
    if (job) {
      on_job("ended");
      end_job("worker stopping");
    }
    executor.reset();
    log->info("event=stopped pod={}", config().name);
  }

  void expire_idle_job() {
    if (!job || busy) return;
    if (Clock::now() - job->last_activity > config().job_idle_timeout) {
      log->warn("event=job_expired job={} idle_timeout_ms={}", job->id, config().job_idle_timeout.count());
      on_job("expired");
      end_job("idle timeout");
    }
  }

  void end_job(const std::string& reason) {
    if (busy) {
      cancel = true;
      executor->wait_idle();
      cancel = false;
    }
    log->info("event=job_ended job={} round={} reason=\"{}\"", job->id, job->round, reason);
    settle_privacy(*job);
    job.reset();
    if (anchor) anchor->notify();  // the job's decisions, anchored on the hub now
  }

  // The job's DP steps, as trained, replace its reservation in the ledger (it never
  // trains again: its executor is idle). A failed write leaves the reservation, which
  // charges more, never less.
  void settle_privacy(Job& j) {
    if (!ledger || j.ledger_key.empty()) return;
    const int64_t done = j.dp_steps.load();
    Status st = ledger->settle(j.ledger_key, done, now_utc());
    const double eps = privacy::RdpCurve::subsampled_gaussian(j.dp_sample_rate, j.dp.noise_multiplier, done)
                           .epsilon(ledger->delta()).epsilon;
    const double total = ledger->spent().epsilon(ledger->delta()).epsilon;
    if (!st.ok()) {
      log->error("event=privacy_settle_failed pod={} job={} error=\"{}\" consequence=\"the job stays charged at its "
                 "plan\"", config().name, j.id, st.message());
    } else {
      log->info("event=privacy_settled pod={} job={} steps={} epsilon={:.4f} epsilon_total={:.4f}", config().name, j.id,
                done, eps, total);
    }
    Status a = audit->append({{"event", "privacy_settled"}, {"pod", config().name}, {"job", j.id}, {"user", j.user},
                              {"steps", done}, {"epsilon", eps}, {"epsilon_total", total}, {"ledger_written", st.ok()}});
    if (!a.ok()) log->error("event=audit_write_failed pod={} error=\"{}\"", config().name, a.message());
    j.ledger_key.clear();
  }

  // A message from this process's own ROUTER: [routing id, frames...].
  void handle(Frames& frames, bool too_many) {
    bytes_received.Increment(frame_bytes(frames));
    if (frames.size() < 2) {
      on_no_envelope();
      return;  // no way to answer without a routing id and envelope
    }
    zmq::message_t routing = std::move(frames[0]);
    frames.erase(frames.begin());
    // Who sent it, as the CURVE handshake established (ZAP's User-Id): never a name
    // written inside the message.
    std::string user = protocol::user_id(frames[0]);
    if (user.empty() && !runtime.inproc_user.empty() && config().listen.rfind("inproc://", 0) == 0) {
      user = runtime.inproc_user;  // in-process only: engine.h, Runtime::inproc_user
    }
    const char* peer_prop = zmq_msg_gets(frames[0].handle(), "Peer-Address");
    const std::string peer = peer_prop ? peer_prop : "";
    if (too_many) {
      send_error(routing, "", 0,
                 Status::bad_message("message has more than " + std::to_string(limits.max_frames) + " frames"),
                 "too_many_frames");
      return;
    }
    const double bytes = frame_bytes(frames);
    if (bytes > static_cast<double>(config().max_message_bytes)) {
      send_error(routing, "", 0,
                 Status::bad_message("message of " + std::to_string(static_cast<uint64_t>(bytes)) +
                                     " bytes; this pod accepts at most " +
                                     std::to_string(config().max_message_bytes) + " (pod.yaml max_message_bytes)"),
                 "too_large");
      return;
    }
    handle_message(routing, user, peer, frames);
  }

  // What the receiving process passes on (gate.h): a peer's message, a message it
  // refused, or a failed handshake.
  void handle_from_gate(Frames& frames) {
    if (frames.empty() || frames[0].size() != 1) return;
    const char kind = *static_cast<const char*>(frames[0].data());
    if (kind == kGateHandshake) {
      if (frames.size() >= 3) on_monitor_event(frames[1], frames[2].to_string());
      return;
    }
    if (kind == kGateTensorRefused) {
      if (frames.size() >= 2) on_tensor_refused(frames[1].to_string() == "too_many_frames" ? "too_many_frames" : "too_large");
      return;
    }
    if (frames.size() < 4) return;
    if (kind == kGateTensor || kind == kGateTensorShm) {
      // Its large frames from the shared ring (gate.h), as frames of their own.
      std::string error;
      const bool unwrapped = gate->unwrap(frames, error);
      sync_gate_counters();
      if (!unwrapped) {
        log->error("event=gate_message_dropped reason=\"{}\"", error);
        return;
      }
    }
    zmq::message_t routing = std::move(frames[1]);
    const std::string user = frames[2].to_string();
    const std::string peer = frames[3].to_string();
    if (kind == kGateTensor || kind == kGateTensorShm) {
      frames.erase(frames.begin(), frames.begin() + 4);
      handle_tensor(routing, peer, frames);
      return;
    }
    if (kind == kGateRefused) {
      if (frames.size() < 6) return;
      const std::string reason = frames[4].to_string();
      send_error(routing, "", 0, Status::bad_message(frames[5].to_string()),
                 reason == "too_many_frames" ? "too_many_frames" : "too_large");
      return;
    }
    if (kind != kGateMessage) return;
    frames.erase(frames.begin(), frames.begin() + 4);
    bytes_received.Increment(frame_bytes(frames));
    if (frames.empty()) {
      on_no_envelope();
      return;
    }
    handle_message(routing, user, peer, frames);
  }

  void on_tensor_refused(const char* reason, const std::string& detail = "") {
    tensor_refused_family.Add({{"reason", reason}}).Increment();
    if (int64_t left_out = peer_lines.admit("tensor_refused"); left_out >= 0) {
      log->warn("event=tensor_message_refused pod={} reason={} message=\"{}\" suppressed={}", config().name, reason,
                detail, left_out);
    }
  }

  // A message from the tensor channel: [header, sealed frames...] (protocol/bulk.h).
  // Only the job's own session opens it; what opens is handled as a message from
  // the job's user, and its reply goes back sealed on the same channel.
  void handle_tensor(const zmq::message_t& routing, const std::string& peer, Frames& frames) {
    bytes_received.Increment(frame_bytes(frames));
    if (frames.empty()) return;
    auto header = protocol::parse_bulk_header(frames[0]);
    if (!header.ok()) {
      on_tensor_refused("malformed", header.status().message());
      return;
    }
    zmq::message_t reply_to(routing.size() + 1);
    static_cast<char*>(reply_to.data())[0] = kTensorRoute;
    std::memcpy(static_cast<char*>(reply_to.data()) + 1, routing.data(), routing.size());
    if (!job || !job->sealed || header->session != job->tensors.id()) {
      // A coordinator whose pod restarted learns it at once (the notice is not
      // authenticated; it only makes the coordinator start the job again over CURVE).
      on_tensor_refused("unknown_session", "no job holds this session");
      if (header->kind == 1) {
        Frames notice = protocol::bulk_notice(header->session, header->sequence);
        send_raw(reply_to, notice);
      }
      return;
    }
    uint32_t round = 0;
    protocol::BulkRefusal why = protocol::BulkRefusal::kNone;
    auto opened = job->tensors.open(std::move(frames), &round, &why);
    if (!opened.ok()) {
      on_tensor_refused(protocol::to_string(why), opened.status().message() + " (peer " + peer + ")");
      return;
    }
    if (opened->empty() || protocol::round_of((*opened)[0]) != round) {
      on_tensor_refused("round_mismatch", "the sealed header's round is not the message's");
      return;
    }
    handle_message(reply_to, job->user, peer, *opened, /*sealed=*/true);
  }

  void handle_message(const zmq::message_t& routing, const std::string& user, const std::string& peer,
                      Frames& frames, bool sealed = false) {
    auto parsed = protocol::Incoming::parse(std::move(frames), limits);
    if (!parsed.ok()) {
      if (parsed.status().code() == StatusCode::kVersionMismatch) {
        // An admitted peer speaking another protocol version: counted, and audited
        // once per user and minute (coalesced), as a handshake failure is.
        on_bad_message("protocol_version");
        if (refusal_audit) {
          (void)refusal_audit->refused("protocol_version|" + user,
                                       {{"event", "protocol_version_mismatch"},
                                        {"pod", config().name},
                                        {"user", user},
                                        {"peer", peer},
                                        {"reason", "protocol_version"},
                                        {"message", parsed.status().message()}});
        }
      }
      send_error(routing, "", 0, parsed.status(), "envelope");
      return;
    }
    protocol::Incoming& in = **parsed;
    auto env = in.envelope();
    std::string job_id;
    uint64_t request_id = 0;
    try {
      job_id = env.getJobId();
      request_id = env.getRequestId();
      Status st = dispatch(routing, in, job_id, request_id, Peer{user, peer, sealed});
      if (!st.ok()) {
        const bool wrong_kind = st.message().rfind("a pod does not accept", 0) == 0;
        send_error(routing, job_id, request_id, st, wrong_kind ? "unexpected_kind" : "content");
      }
    } catch (const kj::Exception& e) {
      send_error(routing, job_id, request_id,
                 Status::bad_message(std::string("malformed message: ") + e.getDescription().cStr()), "envelope");
    } catch (const ConfigError& e) {
      send_error(routing, job_id, request_id, Status::invalid(e.what()));
    } catch (const c10::Error& e) {
      send_error(routing, job_id, request_id, Status::internal(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      send_error(routing, job_id, request_id, Status::internal(e.what()));
    }
    // A job whose permission is gone ends after its refusal is sent: a reply on the
    // tensor channel is sealed with the job's keys, which end with it.
    if (end_after_reply) {
      const std::string why = std::move(*end_after_reply);
      end_after_reply.reset();
      if (job) end_job(why);
    }
  }

  // The authenticated sender of a message.
  struct Peer {
    std::string user;
    std::string address;
    bool sealed = false;  // came over the tensor channel (the job's session)
  };

  Status dispatch(const zmq::message_t& routing, protocol::Incoming& in, const std::string& job_id,
                  uint64_t request_id, const Peer& peer) {
    auto body = in.envelope().getBody();
    using W = wire::Envelope::Body::Which;
    if (peer.sealed && body.which() != W::TRAIN && body.which() != W::FETCH_RESULT && body.which() != W::EVALUATE) {
      return Status::bad_message(std::string("a pod does not accept '") + protocol::body_name(body.which()) +
                                 "' messages on the tensor channel");
    }
    if (peer.sealed && job_id != job->id) {
      return Status::bad_message("a sealed message for job '" + job_id + "' in job '" + job->id + "''s session");
    }
    switch (body.which()) {
      case W::HELLO: {
        Frames f = reply(routing, job_id, request_id, [&](protocol::Outgoing& o) {
          auto r = o.envelope().getBody().initHelloReply();
          r.setPodName(config().name);
          to_wire(advertised_schema(), r.initSchema());
          auto devs = r.initDevices(config().devices.size());
          for (size_t i = 0; i < config().devices.size(); ++i) devs.set(i, config().devices[i]);
          r.setActiveJob(job ? job->id : "");
          r.setMaxFrameBytes(static_cast<uint64_t>(config().max_frame_bytes));
          r.setSandbox(confinement.level.empty() ? "in-process" : confinement.level);
        });
        send(f);
        return Status();
      }
      case W::HEARTBEAT: {
        counters().heartbeats++;
        // Only the job's owner keeps it alive.
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        if (job && job->id == job_id) job->last_activity = Clock::now();
        Frames f = reply(routing, job_id, request_id, [&](protocol::Outgoing& o) {
          auto h = o.envelope().getBody().initHeartbeat();
          h.setBusy(busy);
          h.setRound(job ? job->round : 0);
        });
        send(f);
        return Status();
      }
      case W::FETCH_RESULT:
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        return fetch_result(routing, body.getFetchResult(), job_id, request_id);
      case W::START_JOB:
        return start_job(routing, in, body.getStartJob(), job_id, request_id, peer);
      case W::TRAIN:
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        return train(routing, in, body.getTrain(), job_id, request_id);
      case W::EVALUATE:
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        return evaluate_split(routing, in, body.getEvaluate(), job_id, request_id);
      case W::SEC_AGG_SHARE:
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        return secagg_share(routing, body.getSecAggShare(), job_id, request_id);
      case W::SEC_AGG_MASK:
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        return secagg_mask(routing, body.getSecAggMask(), job_id, request_id);
      case W::SEC_AGG_UNMASK:
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        return secagg_unmask(routing, body.getSecAggUnmask(), job_id, request_id);
      case W::END_JOB: {
        if (!job || job->id != job_id) return Status::failed_precondition("no job '" + job_id + "' on pod " + config().name);
        FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
        on_job("ended");
        end_job(std::string("requested: ") + body.getEndJob().getReason().cStr());
        Frames f = reply(routing, job_id, request_id,
                         [&](protocol::Outgoing& o) { o.envelope().getBody().initJobEnded(); });
        send(f);
        return Status();
      }
      default:
        return Status::bad_message(std::string("a pod does not accept '") + protocol::body_name(body.which()) +
                                   "' messages");
    }
  }

  // A job's messages come only from the user who started it: nobody else may feed it
  // parameters, read its results or end it.
  Status check_owner(const std::string& job_id, const Peer& peer) {
    if (job && job->id == job_id && job->user != peer.user) {
      return Status(StatusCode::kPermissionDenied, "job '" + job_id + "' on pod " + config().name + " belongs to user '" +
                                                       job->user + "', not '" + peer.user + "'");
    }
    return Status();
  }

  // Writes a decision to the audit log. Returns an error when it cannot be written:
  // a pod that cannot record what it admits admits nothing.
  Status audit_decision(const std::string& event, const std::string& job_id, const Peer& peer,
                        const AccessRequest& req, const std::string& claimed_sha, const Decision& d) {
    nlohmann::json e = {{"event", event},       {"pod", config().name}, {"job", job_id},
                        {"user", req.user},     {"peer", peer.address}, {"model", req.model},
                        {"custom", req.custom}, {"reason", d.reason}};
    if (req.custom) {
      e["version"] = req.version;
      e["sha256"] = req.sha256;
      if (claimed_sha != req.sha256) e["claimed_sha256"] = claimed_sha;
    }
    if (d.allowed) {
      e["basis"] = d.basis;
    } else {
      e["message"] = d.message;
    }
    // Refusals are coalesced per user, reason and model (RefusalAudit); admissions
    // are each written.
    Status st = event == "job_refused" && refusal_audit
                    ? refusal_audit->refused("job|" + req.user + "|" + d.reason + "|" + req.model + "|" +
                                                 std::to_string(req.version), std::move(e))
                    : audit->append(std::move(e));
    if (!st.ok()) log->error("event=audit_write_failed pod={} error=\"{}\"", config().name, st.message());
    return st;
  }

  // The permission check of a startJob (docs/permissions.md). Returns the decision; a
  // refusal is counted, logged and audited by the caller.
  Decision decide_start(const AccessRequest& req, const std::string& claimed_sha) {
    auto current = policy->current();
    if (!current.ok()) {
      Decision d;
      d.reason = "policy_unavailable";
      d.message = "pod " + config().name + " cannot check permissions: " + current.status().message();
      return d;
    }
    Decision d = decide(**current, config().name, req, std::chrono::system_clock::now());
    if (d.allowed && req.custom && req.sha256 != claimed_sha) {
      d = Decision();
      d.reason = "hash_mismatch";
      d.message = "pod " + config().name + " refuses custom model " + req.model + " version " +
                  std::to_string(req.version) + ": the artifact received hashes to " + req.sha256 +
                  ", but startJob says " + claimed_sha + " (the hub's record); refusing a tampered artifact";
    }
    if (d.allowed && req.custom && config().custom_models == CustomModels::kRefuse) {
      d = Decision();
      d.reason = "custom_models_disabled";
      d.message = "pod " + config().name + " refuses every custom model (pod.yaml custom_models: refuse), whatever "
                  "the roles and grants; ask its owner (" + (*current)->owner + ") to set custom_models: policy";
    }
    return d;
  }

  Status start_job(const zmq::message_t& routing, protocol::Incoming& in, wire::StartJob::Reader sj,
                   const std::string& job_id, uint64_t request_id, const Peer& peer) {
    if (job_id.empty()) return Status::invalid("startJob without a job id");
    // The job id and model names go into the audit log, log lines and refusal keys:
    // names of the shape the coordinator and hub give them, no longer.
    if (std::string why = check_job_id(job_id); !why.empty()) return Status::bad_message("startJob: job id " + why);
    if (job && job->id != job_id) {
      counters().jobs_refused++;
      on_job("refused");
      return Status::busy("pod " + config().name + " is running job '" + job->id + "' of user '" + job->user +
                          "' since " + job->started_at + " (round " + std::to_string(job->round) +
                          "); a second job is refused until that one ends (its owner can end it at once with "
                          "`fedpod job stop`, or it ends after " +
                          std::to_string(config().job_idle_timeout.count() / 1000) + " s without a message)");
    }
    if (job) FEDPOD_RETURN_IF_ERROR(check_owner(job_id, peer));
    if (job && busy) {
      // The job's own coordinator starts it over: it restarted (`--resume` after a
      // crash) or lost track of this pod. The work in flight answers a request nobody
      // waits for any more: cancel it rather than refuse the job as busy.
      log->info("event=job_restart job={} round={} reason=\"startJob while busy\"", job->id, job->round);
      cancel = true;
      executor->wait_idle();
      cancel = false;
    }
    if (job && !job->ledger_key.empty()) {
      // A DP job starting over (its coordinator resumed): the steps it trained are
      // settled now, so that the new start is decided against them and not against
      // the old plan; the old plan trains no more.
      on_job("ended");
      end_job("restarted by its coordinator");
    }
    auto mref = sj.getModel();
    const std::string username = mref.getUsername();
    std::string ref = mref.getModelRef();
    if (std::string why = check_model_ref(ref); !why.empty()) return Status::bad_message("startJob: model ref " + why);
    if (!username.empty()) {
      if (std::string why = check_username(username); !why.empty()) {
        return Status::bad_message("startJob: the model's username " + why);
      }
    }
    // Secure aggregation as the job asks for it (checked before anything else: a
    // malformed setting is the coordinator's error, not a policy decision).
    std::optional<protocol::secagg::Settings> secagg;
    uint32_t secagg_id = 0;
    if (sj.hasSecureAggregation() && sj.getSecureAggregation().getThreshold() > 0) {
      secagg = protocol::secagg::settings_from_wire(sj.getSecureAggregation());
      secagg_id = sj.getSecureAggregation().getPodId();
      if (Status st = protocol::secagg::validate(*secagg); !st.ok()) return Status::bad_message(st.message());
      if (secagg_id == 0) return Status::bad_message("secure_aggregation: podId must be at least 1");
    }

    // 1. What is asked for: a built-in model, or a custom one (its bytes are hashed
    //    only once the user's role and grant allow the version claimed).
    AccessRequest req;
    req.user = peer.user;
    req.custom = !username.empty();
    std::string claimed_sha, format;
    std::string_view artifact;
    if (!req.custom) {
      req.model = ref;
    } else {
      req.model = username + "/" + ref;
      req.version = mref.getModelVersion();
      claimed_sha = mref.getSha256();
      format = mref.getFormat();
      req.format = format;
      ref = "'" + req.model + "' version " + std::to_string(req.version) + " (sha256 " + claimed_sha + ")";
      if (!model::is_custom_format(format)) {
        return Status::bad_message("custom model " + ref + ": format '" + format + "' is not torchscript or plugin");
      }
      if (claimed_sha.size() != 64 || claimed_sha.find_first_not_of("0123456789abcdef") != std::string::npos) {
        return Status::bad_message("custom model " + ref + ": sha256 '" + claimed_sha +
                                   "' is not 64 lowercase hex digits");
      }
      auto bytes = in.raw_frame(mref.getArtifactFrame(), mref.getArtifactBytes(), "custom model " + ref + ": artifact");
      if (!bytes.ok()) return bytes.status();
      artifact = *bytes;
      req.sha256 = claimed_sha;  // provisional, until the bytes are hashed below
    }

    // 2. May this user run it here? Decided before any of the model's code is loaded,
    //    and before a byte of it is hashed: a user without a role or grant cannot
    //    make the pod hash a 2 GiB artifact. Then the bytes received must be the ones
    //    the grant names (hash_mismatch otherwise).
    Decision d = decide_start(req, claimed_sha);
    if (d.allowed && req.custom) {
      req.sha256 = sha256_hex(artifact);
      d = decide_start(req, claimed_sha);
    }
    // The pod owner's demand on aggregation (pod.yaml secure_aggregation): refused,
    // counted and audited like any other refusal.
    if (d.allowed) {
      const auto& demand = config().secure_aggregation;
      if (demand.required && !secagg) {
        d = Decision{};
        d.reason = "secure_aggregation_required";
        d.message = "pod " + config().name +
                    " requires secure aggregation (pod.yaml secure_aggregation: required): the coordinator must not "
                    "see this pod's update alone; set secure_aggregation in the job (docs/privacy.md)";
      } else if (secagg && secagg->threshold < demand.min_threshold) {
        d = Decision{};
        d.reason = "secure_aggregation_threshold";
        d.message = "pod " + config().name + " requires a secure aggregation threshold of at least " +
                    std::to_string(demand.min_threshold) + "; the job's is " + std::to_string(secagg->threshold) +
                    " (set secure_aggregation.threshold in the job)";
      }
    }
    // The pod owner's privacy limits and budget (pod.yaml privacy; privacy_guard.h).
    PrivacyRequest preq;
    if (sj.hasPlan()) {
      auto pl = sj.getPlan();
      preq.plan = JobPlan{pl.getRounds(), pl.getLocalEpochs(), pl.getLocalSteps(), pl.getBatchSize()};
    }
    if (sj.hasDifferentialPrivacy() && sj.getDifferentialPrivacy().getNoiseMultiplier() != 0) {
      preq.dp.on = true;
      preq.dp.noise_multiplier = sj.getDifferentialPrivacy().getNoiseMultiplier();
      preq.dp.max_grad_norm = sj.getDifferentialPrivacy().getMaxGradNorm();
    }
    const data::Datastructure job_ds = from_wire(sj.getDatastructure());
    preq.train_rows = train_rows(job_ds);
    PrivacyDecision pd;
    if (d.allowed) {
      pd = decide_privacy(config().privacy, preq, ledger ? ledger->spent() : privacy::RdpCurve(), config().name);
      if (!pd.allowed) {
        d = Decision{};
        d.reason = pd.reason;
        d.message = pd.message;
      }
    }
    if (!d.allowed) {
      counters().jobs_refused++;
      on_job("refused");
      counters().access_denied++;
      on_access_denied(d.reason);
      if (int64_t left_out = peer_lines.admit("access_denied"); left_out >= 0) {
        log->warn("event=access_denied pod={} job={} user={} peer={} model={} reason={} message=\"{}\" suppressed={}",
                  config().name, job_id, req.user, peer.address, req.model, d.reason, d.message, left_out);
      }
      Status audited = audit_decision("job_refused", job_id, peer, req, claimed_sha, d);
      (void)audited;  // refused either way
      return Status(StatusCode::kPermissionDenied, d.message);
    }
    FEDPOD_RETURN_IF_ERROR(audit_decision("job_accepted", job_id, peer, req, claimed_sha, d));
    log->info("event=access_granted pod={} job={} user={} model={} basis=\"{}\"", config().name, job_id, req.user,
              req.model, d.basis);

    // 3. The model itself, in the job's runner (or, embedded with Runtime hooks, here).
    std::string hp_text = mref.getHyperparameters();
    nlohmann::json hp_json = nlohmann::json::object();
    if (!hp_text.empty()) {
      hp_json = nlohmann::json::parse(hp_text, nullptr, /*allow_exceptions=*/false);
      if (hp_json.is_discarded()) return Status::bad_message("hyperparameters are not valid JSON");
    }
    auto new_job = std::make_unique<Job>();
    new_job->id = job_id;
    new_job->user = req.user;
    new_job->started_at = now_utc();
    new_job->decision = d.basis;
    new_job->access = req;
    new_job->model_ref = ref;
    new_job->hp = Hyperparameters(hp_json);
    new_job->seed = sj.getSeed();
    new_job->secagg = secagg;
    new_job->secagg_id = secagg_id;
    new_job->plan = preq.plan;
    new_job->dp = preq.dp;
    new_job->dp_sample_rate = pd.sample_rate;
    EngineSpec spec;
    spec.ref = req.custom ? ref : mref.getModelRef().cStr();
    spec.format = req.custom ? format : "";
    spec.hp = new_job->hp;
    spec.ds = job_ds;
    spec.seed = new_job->seed;
    spec.devices = config().devices;
    spec.threads_per_replica = threads_per_replica();
    spec.threads = config().threads;
    spec.pod = config().name;
    StatusOr<std::unique_ptr<JobEngine>> engine = Status::internal("no engine");
    if (!runtime.runner_command.empty()) {
      RunnerOptions ro;
      ro.command = runtime.runner_command;
      ro.confinement = confinement;
      ro.limits = config().sandbox.limits;
      ro.log = log;
      engine = start_runner(spec, table, artifact, ro, &cancel);
    } else {
      if (req.custom) {
        auto path = write_artifact(format, artifact, req.sha256);
        if (!path.ok()) return path.status();
        spec.artifact_path = *path;
      }
      engine = make_local_engine(spec, table, runtime);
      if (engine.ok()) (*engine)->confinement = "none (in-process)";
    }
    if (!engine.ok()) {
      log->warn("event=job_start_failed pod={} job={} model={} code={} error=\"{}\"", config().name, job_id, ref,
                to_string(engine.status().code()), engine.status().message());
      on_runner_failure(engine.status());
      return engine.status();
    }
    if (req.custom) {
      log->info("event=custom_model_loaded pod={} model={} format={} sha256={} bytes={} confinement=\"{}\"",
                config().name, ref, format, req.sha256, artifact.size(), (*engine)->confinement);
    }
    new_job->engine = std::move(*engine);
    const JobEngine& e = *new_job->engine;
    if (new_job->dp.enabled()) {
      for (const auto& entry : e.layout()) {
        if (entry.is_parameter()) continue;
        Status st(StatusCode::kPermissionDenied,
                  "pod " + config().name + " refuses the job: differential privacy: the model has buffer '" + entry.name +
                      "' (batch-norm statistics), which mixes the examples of a batch, so clipping an example's "
                      "gradient does not bound its influence; train without batch norm (e.g. batch_norm: false) or "
                      "with a per-example normalization (GroupNorm, LayerNorm)");
        on_access_denied("differential_privacy_model");
        (void)audit->append({{"event", "job_refused"}, {"pod", config().name}, {"job", job_id}, {"user", req.user},
                             {"model", req.model}, {"reason", "differential_privacy_model"}, {"message", st.message()}});
        return st;
      }
    }
    // The job's whole planned ε is charged before its first step (privacy_guard.h).
    if (pd.dp && ledger) {
      PrivacyLedger::Entry entry;
      entry.key = job_id + "@" + now_utc();
      entry.job = job_id;
      entry.user = req.user;
      entry.model = req.model;
      entry.started = now_utc();
      entry.sample_rate = pd.sample_rate;
      entry.noise_multiplier = preq.dp.noise_multiplier;
      entry.steps_planned = pd.steps;
      if (Status st = ledger->reserve(entry); !st.ok()) {
        log->error("event=privacy_reserve_failed pod={} job={} error=\"{}\"", config().name, job_id, st.message());
        return Status(StatusCode::kUnavailable, "pod " + config().name + " cannot record the job's privacy budget, so it "
                                                "does not start it: " + st.message());
      }
      new_job->ledger_key = entry.key;
      FEDPOD_RETURN_IF_ERROR(audit->append({{"event", "privacy_reserved"}, {"pod", config().name}, {"job", job_id},
                                            {"user", req.user}, {"model", req.model}, {"sample_rate", pd.sample_rate},
                                            {"noise_multiplier", preq.dp.noise_multiplier},
                                            {"max_grad_norm", preq.dp.max_grad_norm}, {"steps", pd.steps},
                                            {"rounds", preq.plan.rounds}, {"delta", ledger->delta()},
                                            {"epsilon", pd.epsilon}, {"epsilon_total", pd.epsilon_after},
                                            {"epsilon_cap", config().privacy.epsilon_cap}}));
      log->info("event=privacy_reserved pod={} job={} steps={} sample_rate={:.5f} noise_multiplier={} epsilon={:.4f} "
                "epsilon_total={:.4f} epsilon_cap={}", config().name, job_id, pd.steps, pd.sample_rate,
                preq.dp.noise_multiplier, pd.epsilon, pd.epsilon_after, config().privacy.epsilon_cap);
    }
    new_job->specs = tensor_specs(e.layout());
    log->info("event=job_started job={} user={} model={} train={} validation={} test={} parameters={} replicas={} "
              "allreduce=\"{}\" confinement=\"{}\"", job_id, req.user, ref, e.train_size, e.validation_size,
              e.test_size, e.numel(), e.replicas, e.allreduce, e.confinement);
    // The tensor channel: this pod's half of a fresh key agreement, bound to the job,
    // this pod and the user CURVE authenticated (protocol/bulk.h).
    std::string tensor_key;
    auto coordinator_key = sj.getTensorKey();
    if (coordinator_key.size() > 0 && !tensor_endpoint.empty()) {
      protocol::BulkKeyPair mine;
      auto session = protocol::BulkSession::derive(
          protocol::BulkRole::kPod, mine,
          std::string_view(reinterpret_cast<const char*>(coordinator_key.begin()), coordinator_key.size()),
          {job_id, keys.public_key});
      if (!session.ok()) return session.status();
      new_job->tensors = std::move(*session);
      new_job->sealed = true;
      tensor_key = mine.public_key();
    }
    Frames f = reply(routing, job_id, request_id, [&](protocol::Outgoing& o) {
      auto a = o.envelope().getBody().initJobAccepted();
      if (!tensor_key.empty()) {
        a.setTensorKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(tensor_key.data()), tensor_key.size()));
        a.setTensorPort(static_cast<uint16_t>(protocol::endpoint_port(tensor_endpoint)));
      }
      a.setUploadsWhenDone(true);
      a.setTrainSamples(e.train_size);
      a.setValidationSamples(e.validation_size);
      a.setTestSamples(e.test_size);
      a.setSkippedRows(table.skipped_rows);
      a.setNumParameters(e.numel());
      a.setDecision(new_job->decision);
    });
    job = std::move(new_job);
    counters().jobs_started++;
    on_job("accepted");
    send(f);
    return Status();
  }

  Executor::OnError failure_reply(std::shared_ptr<zmq::message_t> routing, std::string job_id, uint64_t request_id) {
    return [this, routing, job_id, request_id](const std::string& what) {
      return reply(*routing, job_id, request_id, [&](protocol::Outgoing& o) {
        protocol::set_error(o.envelope(), Status::internal("pod " + config().name + " failed: " + what));
      });
    };
  }

  Status check_job(const std::string& job_id) {
    if (!job) return Status::failed_precondition("no job is running on pod " + config().name + "; send startJob first");
    if (job->id != job_id) {
      return Status::failed_precondition("message for job '" + job_id + "', pod " + config().name + " runs '" + job->id + "'");
    }
    FEDPOD_RETURN_IF_ERROR(still_allowed());
    if (busy) return Status::busy("pod " + config().name + " is still working on round " + std::to_string(job->round));
    return Status();
  }

  // A running job is held to the policy as the pod holds it now, not as it was at
  // startJob: a role taken away, a grant revoked or expired since then ends the job
  // at its next request (the work in flight is cancelled), logged, counted and
  // audited as job_revoked. Decided on the last policy this pod holds: a hub out of
  // reach past max_staleness refuses new jobs, but ends none that its last policy allows.
  Status still_allowed() {
    if (!policy) return Status();
    auto current = policy->current();
    std::shared_ptr<const Policy> p = current.ok() ? *current : policy->snapshot();
    if (!p) return Status();
    Decision d = decide(*p, config().name, job->access, std::chrono::system_clock::now());
    if (d.allowed) return Status();
    const std::string id = job->id, user = job->user, model = job->access.model;
    counters().access_denied++;
    on_access_denied(d.reason);
    log->warn("event=job_revoked pod={} job={} user={} model={} reason={} message=\"{}\"", config().name, id, user, model,
              d.reason, d.message);
    nlohmann::json e = {{"event", "job_revoked"}, {"pod", config().name}, {"job", id},      {"user", user},
                        {"model", model},         {"reason", d.reason},   {"message", d.message}};
    if (job->access.custom) {
      e["version"] = job->access.version;
      e["sha256"] = job->access.sha256;
    }
    if (Status a = audit->append(std::move(e)); !a.ok()) {
      log->error("event=audit_write_failed pod={} error=\"{}\"", config().name, a.message());
    }
    on_job("revoked");
    end_after_reply = "access revoked: " + d.reason;  // handle_message ends it once this refusal is sent
    return Status(StatusCode::kPermissionDenied,
                  "pod " + config().name + " ended job '" + id + "': the permission it ran under is gone (" + d.reason +
                      "): " + d.message);
  }

  // Rows of the pod's training split for a job's datastructure (data/dataset.h splits
  // the rows this way).
  int64_t train_rows(const data::Datastructure& ds) const {
    const int64_t n = table.schema.num_rows;
    return n - static_cast<int64_t>(std::floor(ds.split.test * n)) - static_cast<int64_t>(std::floor(ds.split.validation * n));
  }

  // The privacy limits on one train (pod.yaml privacy), checked before the pod turns
  // busy. A DP job may not train more rounds, or other rounds, than it declared: its
  // budget was charged for exactly those.
  Status check_train_privacy(Job& j, const TrainOptions& opts) {
    PrivacyDecision d = check_limits(config().privacy, opts.batch_size, opts.steps > 0 ? 0 : opts.epochs, opts.steps,
                                     j.engine->train_size, config().name);
    if (d.allowed && j.dp.enabled()) {
      const JobPlan& p = j.plan;
      const bool same = opts.batch_size == p.batch_size &&
                        (opts.steps > 0 ? opts.steps == p.local_steps : opts.epochs == p.local_epochs && p.local_steps == 0);
      if (!same) {
        d = PrivacyDecision{};
        d.allowed = false;
        d.reason = "privacy_plan_exceeded";
        d.message = "pod " + config().name + " trains this differentially private job only as its startJob declared "
                    "(batch size " + std::to_string(p.batch_size) + ", " +
                    (p.local_steps > 0 ? std::to_string(p.local_steps) + " steps" : std::to_string(p.local_epochs) + " epochs") +
                    " per round): its privacy budget was charged for that";
      } else if (j.trains >= p.rounds) {
        d = PrivacyDecision{};
        d.allowed = false;
        d.reason = "privacy_plan_exceeded";
        d.message = "pod " + config().name + " has trained this differentially private job the " +
                    std::to_string(p.rounds) + " rounds its startJob declared and charged to its budget; start a new job "
                    "for more";
      }
    }
    if (d.allowed) return Status();
    on_access_denied(d.reason);
    if (int64_t left_out = peer_lines.admit("train_refused"); left_out >= 0) {
      log->warn("event=train_refused pod={} job={} reason={} message=\"{}\" suppressed={}", config().name, j.id, d.reason,
                d.message, left_out);
    }
    if (refusal_audit) {
      (void)refusal_audit->refused("train|" + j.user + "|" + d.reason,
                                   {{"event", "train_refused"}, {"pod", config().name}, {"job", j.id}, {"user", j.user},
                                    {"reason", d.reason}, {"message", d.message}});
    }
    return Status(StatusCode::kPermissionDenied, d.message);
  }

  // Copies received parameters into the job's model state (the one receive-side copy).
  static Status load_parameters(Job& j, std::vector<torch::Tensor>& tensors) {
    j.result.reset();  // the model no longer holds the last round's parameters
    Status st = j.engine->write_state(tensors);
    tensors.clear();  // releases the received frames
    return st;
  }

  Status train(const zmq::message_t& routing, protocol::Incoming& in, wire::Train::Reader t,
               const std::string& job_id, uint64_t request_id) {
    FEDPOD_RETURN_IF_ERROR(check_job(job_id));
    if (t.getParamsDtype() != wire::DType::FLOAT32 && t.getParamsDtype() != wire::DType::BFLOAT16) {
      return Status::bad_message("train sends parameters of a dtype that is not float32 or bfloat16");
    }
    const bool bf16_params = t.getParamsDtype() == wire::DType::BFLOAT16;
    if (bf16_params && job->secagg) {
      return Status::bad_message("train sends bfloat16 parameters in a job with secure aggregation");
    }
    // bfloat16 parameters: every tensor must say so, and each is widened to float32
    // as it is written into the model.
    auto tensors = in.take_tensors(t.getTensors(), job->specs, true,
                                   bf16_params ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
    if (!tensors.ok()) return tensors.status();
    TrainOptions opts;
    opts.epochs = t.getLocalEpochs();
    opts.steps = t.getLocalSteps();
    opts.batch_size = t.getBatchSize() ? t.getBatchSize() : job->hp.integer("batch_size", 32);
    if (opts.epochs == 0 && opts.steps == 0) opts.epochs = 1;
    const uint32_t round = t.getRound();
    opts.seed = job->seed * 1000003ULL + round;
    job->round = round;
    job->last_activity = Clock::now();
    Job* j = job.get();
    // Checked before the pod turns busy: a refused train leaves it free for the next.
    if (t.getUpdateDtype() != wire::DType::FLOAT32 && t.getUpdateDtype() != wire::DType::BFLOAT16) {
      return Status::bad_message("train asks for updates of a dtype that is not float32 or bfloat16");
    }
    const bool bf16_update = t.getUpdateDtype() == wire::DType::BFLOAT16;
    opts.proximal_mu = t.getProximalMu();
    if (!(opts.proximal_mu >= 0) || !std::isfinite(opts.proximal_mu)) {
      return Status::bad_message("train asks for a proximal term mu of " + std::to_string(opts.proximal_mu) +
                                 "; it must be a finite number >= 0");
    }
    if (bf16_update && j->secagg) {
      return Status::bad_message("train asks for bfloat16 updates in a job with secure aggregation");
    }
    FEDPOD_RETURN_IF_ERROR(check_train_privacy(*j, opts));
    opts.dp = j->dp;
    ++j->trains;
    busy = true;
    // A new round: the last one's secure aggregation state is gone.
    j->secagg_client.reset();
    j->masked.reset();
    auto routing_copy = std::make_shared<zmq::message_t>(routing.data(), routing.size());
    j->upload.reset();
    if (t.getUploadWhenDone() && !j->secagg) j->upload = Job::Upload{round, routing_copy, request_id};
    auto params = std::make_shared<std::vector<torch::Tensor>>(std::move(*tensors));
    executor->submit([this, j, routing_copy, params, opts, round, job_id, request_id, bf16_update]() -> Frames {
      std::vector<torch::Tensor> base;
      // The same storage: the received frames stay until the fetch (bfloat16) or the
      // masking (secure aggregation), which send the change to them.
      if (bf16_update || j->secagg) base = *params;
      Status loaded = load_parameters(*j, *params);
      if (!loaded.ok()) {
        return reply(*routing_copy, job_id, request_id,
                     [&](protocol::Outgoing& o) { protocol::set_error(o.envelope(), loaded); });
      }
      log->info("event=train_started job={} round={}", job_id, round);
      const auto start = Clock::now();
      auto stats = j->engine->train(opts, &cancel);
      const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
      if (!stats.ok()) {
        log->warn("event=train_failed job={} round={} code={} error=\"{}\"", job_id, round,
                  to_string(stats.status().code()), stats.status().message());
        on_runner_failure(stats.status());
        return reply(*routing_copy, job_id, request_id,
                     [&](protocol::Outgoing& o) { protocol::set_error(o.envelope(), stats.status()); });
      }
      counters().rounds_trained++;
      counters().samples_trained += stats->samples_seen;
      if (j->dp.enabled()) j->dp_steps += stats->steps;
      train_seconds.Observe(seconds);
      train_steps.Increment(static_cast<double>(stats->steps));
      train_samples.Increment(static_cast<double>(stats->samples_seen));
      log->info("event=trained job={} round={} steps={} samples={} train_loss={:.4f} train_accuracy={:.4f} seconds={:.3f}",
                job_id, round, stats->steps, stats->samples_seen, stats->loss, stats->accuracy, seconds);
      // The parameters stay in the model until the coordinator fetches them.
      j->result = TrainedResult{round, j->engine->train_size, seconds,
                                {{"steps", static_cast<double>(stats->steps)},
                                 {"samples_seen", static_cast<double>(stats->samples_seen)}},
                                std::move(base)};
      // The training rows' loss and accuracy are exact aggregates over the rows
      // DP-SGD protects, outside its noise and ε: a differentially private job's
      // pod keeps them to its own log.
      if (!j->dp.enabled()) {
        j->result->metrics.insert(j->result->metrics.begin(),
                                  {{"train_loss", stats->loss}, {"train_accuracy", stats->accuracy}});
      }
      if (j->dp.enabled()) {
        // The ε this job has spent on this pod so far, for the coordinator's history.
        const double delta = ledger ? ledger->delta() : config().privacy.delta;
        j->result->metrics.emplace_back(
            "epsilon", privacy::RdpCurve::subsampled_gaussian(j->dp_sample_rate, j->dp.noise_multiplier, j->dp_steps.load())
                           .epsilon(delta).epsilon);
        j->result->metrics.emplace_back("delta", delta);
      }
      if (j->secagg) {
        // Fresh keys and self-mask seed for this round (step A).
        j->secagg_client = std::make_unique<protocol::secagg::Client>(*j->secagg, protocol::secagg::Context{job_id, round},
                                                                       j->secagg_id);
        j->secagg_round = round;
      }
      return reply(*routing_copy, job_id, request_id, [&](protocol::Outgoing& o) {
        auto r = o.envelope().getBody().initTrainDone();
        r.setRound(round);
        r.setNumSamples(j->result->num_samples);
        r.setSeconds(seconds);
        set_metrics(r.initMetrics(j->result->metrics.size()), j->result->metrics);
        if (j->secagg_client) protocol::secagg::to_wire(j->secagg_client->keys(), r.initSecAggKeys());
      });
    }, failure_reply(routing_copy, job_id, request_id));
    return Status();
  }

  Status fetch_result(const zmq::message_t& routing, wire::FetchResult::Reader f, const std::string& job_id,
                      uint64_t request_id) {
    FEDPOD_RETURN_IF_ERROR(check_job(job_id));
    return send_result(routing, f.getRound(), job_id, request_id);
  }

  // After each reply from the executor: once the train sent with uploadWhenDone has
  // left its parameters (its trainDone just went out), their trainResult follows at
  // once; the coordinator holds an upload slot for it. A train that failed leaves no
  // result for its round: its error reply was all there was, and the next train
  // replaces the grant.
  void upload_if_granted() {
    if (!job || !job->upload || !job->result || job->result->round != job->upload->round) return;
    const Job::Upload u = *job->upload;
    job->upload.reset();
    Status st = send_result(*u.routing, u.round, job->id, u.request_id);
    if (!st.ok()) send_error(*u.routing, job->id, u.request_id, st);
  }

  // trainResult for `round`: the parameters (or their bfloat16 change, or the masked
  // update) the last train left in the model.
  Status send_result(const zmq::message_t& routing, uint32_t round, const std::string& job_id, uint64_t request_id) {
    if (!job->result || job->result->round != round) {
      return Status::failed_precondition("pod " + config().name + " holds no trained parameters for round " +
                                         std::to_string(round));
    }
    job->last_activity = Clock::now();
    const TrainedResult& res = *job->result;
    if (job->secagg && (!job->masked || job->secagg_round != round)) {
      return Status::failed_precondition("pod " + config().name + " has not masked its update for round " +
                                         std::to_string(round) + " (secure aggregation: secAggMask first)");
    }
    Frames frames = reply(routing, job_id, request_id, [&](protocol::Outgoing& o) {
      auto r = o.envelope().getBody().initTrainResult();
      r.setRound(res.round);
      r.setNumSamples(res.num_samples);
      r.setSeconds(res.seconds);
      set_metrics(r.initMetrics(res.metrics.size()), res.metrics);
      if (job->secagg) {
        // Only the masked update leaves the pod: one ring vector, zero-copy.
        auto masked = job->masked;
        const auto dtype = masked->modulus_bits == 32 ? torch::kInt32 : torch::kInt64;
        torch::Tensor v = torch::from_blob(
            masked->bytes.data(), {static_cast<int64_t>(masked->size())}, [masked](void*) {},
            torch::TensorOptions().dtype(dtype));
        r.setMasked(true);
        o.attach(r.initTensors(1), {{"secagg", v}}, masked);
        return;
      }
      auto [state, keep] = job->engine->read_state();
      const auto& layout = job->engine->layout();
      if (!res.base.empty()) {
        // bfloat16: the change to the round's parameters, rounded (half the bytes).
        std::vector<protocol::NamedTensor> delta = parameter_views(state, layout);
        for (size_t k = 0; k < delta.size(); ++k) {
          delta[k].tensor = protocol::bf16_delta(delta[k].tensor, res.base[k].contiguous());
        }
        r.setDelta(true);
        o.attach(r.initTensors(layout.size()), std::move(delta));
        return;
      }
      // Zero-copy: the frames point into the model state (the runner's shared region,
      // or the model's own buffer), kept alive until sent.
      o.attach(r.initTensors(layout.size()), parameter_views(state, layout), keep);
    });
    send(frames);
    return Status();
  }

  // Secure aggregation's per-round state for `round`, or why there is none.
  StatusOr<protocol::secagg::Client*> secagg_state(const std::string& job_id, uint32_t round) {
    FEDPOD_RETURN_IF_ERROR(check_job(job_id));
    if (!job->secagg) return Status::failed_precondition("job '" + job_id + "' does not use secure aggregation");
    if (!job->secagg_client || job->secagg_round != round) {
      return Status::failed_precondition("pod " + config().name + " holds no secure aggregation state for round " +
                                         std::to_string(round) + " (it trains the round first, and forgets it once it "
                                         "revealed its shares)");
    }
    job->last_activity = Clock::now();
    return job->secagg_client.get();
  }

  // Step B: the neighbours' keys in, this pod's encrypted shares out.
  Status secagg_share(const zmq::message_t& routing, wire::SecAggShare::Reader m, const std::string& job_id,
                      uint64_t request_id) {
    auto client = secagg_state(job_id, m.getRound());
    if (!client.ok()) return client.status();
    std::map<uint32_t, protocol::secagg::PublicKeys> neighbours;
    for (auto p : m.getNeighbours()) {
      if (!neighbours.emplace(p.getId(), protocol::secagg::from_wire(p.getKeys())).second) {
        return Status::bad_message("secAggShare lists pod " + std::to_string(p.getId()) + " twice");
      }
    }
    auto shares = (*client)->share(neighbours);
    if (!shares.ok()) return shares.status();
    Frames f = reply(routing, job_id, request_id, [&](protocol::Outgoing& o) {
      auto r = o.envelope().getBody().initSecAggShares();
      r.setRound(m.getRound());
      protocol::secagg::to_wire(*shares, r.initShares(shares->size()));
    });
    send(f);
    return Status();
  }

  // Step C: the shares addressed to this pod in; it masks its update (on the
  // executor: a pass over every parameter) and says so; fetchResult takes it.
  Status secagg_mask(const zmq::message_t& routing, wire::SecAggMask::Reader m, const std::string& job_id,
                     uint64_t request_id) {
    const uint32_t round = m.getRound();
    auto client = secagg_state(job_id, round);
    if (!client.ok()) return client.status();
    if (!job->result || job->result->round != round) {
      return Status::failed_precondition("pod " + config().name + " holds no trained parameters for round " +
                                         std::to_string(round));
    }
    FEDPOD_RETURN_IF_ERROR((*client)->receive(protocol::secagg::from_wire(m.getShares())));
    busy = true;
    Job* j = job.get();
    auto routing_copy = std::make_shared<zmq::message_t>(routing.data(), routing.size());
    executor->submit([this, j, routing_copy, round, job_id, request_id]() -> Frames {
      auto [state, keep] = j->engine->read_state();
      const auto& layout = j->engine->layout();
      const auto& base = j->result->base;
      // The update is the trained parameters minus the round's (the received
      // frames): read in place, encoded and masked in one pass.
      torch::Tensor flat = state.contiguous();
      const float* now = flat.data_ptr<float>();
      std::vector<torch::Tensor> was(base.size());
      std::vector<protocol::secagg::UpdateSegment> update;
      for (size_t k = 0; k < layout.size(); ++k) {
        was[k] = base[k].contiguous();
        const auto off = static_cast<size_t>(layout[k].offset), n = static_cast<size_t>(layout[k].numel);
        update.push_back({now + off, was[k].data_ptr<float>(), off, n});
      }
      auto masked = j->secagg_client->mask(update, static_cast<size_t>(flat.numel()),
                                           static_cast<uint64_t>(j->result->num_samples));
      return reply(*routing_copy, job_id, request_id, [&](protocol::Outgoing& o) {
        if (!masked.ok()) {
          protocol::set_error(o.envelope(), masked.status());
          return;
        }
        if (j->secagg_client->clipped() > 0) {
          log->warn("event=secagg_clipped job={} round={} coordinates={} clip={}", job_id, round,
                    j->secagg_client->clipped(), j->secagg->clip);
        }
        j->masked = std::make_shared<protocol::secagg::RingVector>(std::move(*masked));
        o.envelope().getBody().initSecAggMasked().setRound(round);
      });
    }, failure_reply(routing_copy, job_id, request_id));
    return Status();
  }

  // Step D: the survivors and the dropped in; the shares that remove masks out, once.
  Status secagg_unmask(const zmq::message_t& routing, wire::SecAggUnmask::Reader m, const std::string& job_id,
                       uint64_t request_id) {
    auto client = secagg_state(job_id, m.getRound());
    if (!client.ok()) return client.status();
    std::vector<uint32_t> survivors, dropped;
    for (uint32_t id : m.getSurvivors()) survivors.push_back(id);
    for (uint32_t id : m.getDropped()) dropped.push_back(id);
    auto reveal = (*client)->unmask(survivors, dropped);
    job->secagg_client.reset();  // answered or refused: this round's secrets are wiped now
    if (!reveal.ok()) {
      log->warn("event=secagg_unmask_refused job={} round={} error=\"{}\"", job_id, m.getRound(),
                reveal.status().message());
      return reveal.status();
    }
    Frames f = reply(routing, job_id, request_id, [&](protocol::Outgoing& o) {
      auto r = o.envelope().getBody().initSecAggReveal();
      r.setRound(m.getRound());
      protocol::secagg::to_wire(reveal->self_mask, r.initSelfMask(reveal->self_mask.size()));
      protocol::secagg::to_wire(reveal->pair_key, r.initPairKey(reveal->pair_key.size()));
    });
    send(f);
    return Status();
  }

  Status evaluate_split(const zmq::message_t& routing, protocol::Incoming& in, wire::Evaluate::Reader e,
                        const std::string& job_id, uint64_t request_id) {
    FEDPOD_RETURN_IF_ERROR(check_job(job_id));
    const auto split = e.getSplit();
    // The training split is evaluated by no one: its loss and accuracy at parameters
    // the coordinator chose would count rows of the data that trains (and, under
    // differential privacy, outside the budget that protects them).
    if (split != wire::Split::VALIDATION && split != wire::Split::TEST) {
      return Status(StatusCode::kPermissionDenied,
                    "pod " + config().name +
                        " evaluates only its validation and test splits; evaluate asked for the training split");
    }
    auto tensors = in.take_tensors(e.getTensors(), job->specs);
    if (!tensors.ok()) return tensors.status();
    const int64_t batch = e.getBatchSize() ? e.getBatchSize() : 256;
    const uint32_t round = e.getRound();
    job->last_activity = Clock::now();
    busy = true;
    Job* j = job.get();
    auto routing_copy = std::make_shared<zmq::message_t>(routing.data(), routing.size());
    auto params = std::make_shared<std::vector<torch::Tensor>>(std::move(*tensors));
    executor->submit([this, j, routing_copy, params, split, batch, round, job_id, request_id]() -> Frames {
      Status loaded = load_parameters(*j, *params);
      StatusOr<EvalStats> stats = loaded;
      if (loaded.ok()) {
        const Split which = split == wire::Split::TEST ? Split::kTest : Split::kValidation;
        stats = j->engine->evaluate(which, batch, &cancel);
        if (!stats.ok()) on_runner_failure(stats.status());
      }
      return reply(*routing_copy, job_id, request_id, [&](protocol::Outgoing& o) {
        if (!stats.ok()) {
          protocol::set_error(o.envelope(), stats.status());
          return;
        }
        counters().evaluations++;
        auto r = o.envelope().getBody().initEvalResult();
        r.setRound(round);
        r.setSplit(split);
        r.setNumSamples(stats->samples);
        r.setLoss(stats->loss);
        r.setAccuracy(stats->accuracy);
      });
    }, failure_reply(routing_copy, job_id, request_id));
    return Status();
  }

  // The receiving process (gated `fedpod worker`), declared last so that it, and
  // its thread that calls authenticate(), end before everything that uses.
  std::unique_ptr<Gate> gate;
  void on_gate_ended(const GateEnded& e) {
    transport_restarts_family.Add({{"reason", e.reason}}).Increment();
    if (e.restarted.ok()) {
      log->warn("event=transport_restarted pod={} reason={} how=\"the receiving process {}\" endpoint={} pid={} "
                "consequence=\"every connection to the pod was dropped; coordinators reconnect\"",
                config().name, e.reason, e.detail, gate->endpoint(), gate->pid());
    } else {
      log->error("event=transport_down pod={} reason={} how=\"the receiving process {}\" error=\"{}\" "
                 "consequence=\"the pod cannot be reached; retried every second\"",
                 config().name, e.reason, e.detail, e.restarted.message());
    }
    if (refusal_audit) {
      (void)refusal_audit->refused("transport_restarted|" + e.reason,
                                   {{"event", "transport_restarted"},
                                    {"pod", config().name},
                                    {"reason", e.reason},
                                    {"message", "the receiving process " + e.detail +
                                                    (e.restarted.ok() ? "; restarted" : "; not restarted: " +
                                                                                            e.restarted.message())}});
    }
  }
};

Worker::Worker(zmq::context_t& ctx, PodConfig config, Logger log, Runtime runtime)
    : impl_(std::make_unique<Impl>(ctx, *this, std::move(log), std::move(runtime))), config_(std::move(config)) {
  try {
    config_.devices = resolve_devices(config_.devices);  // a PodConfig built in code is checked too
  } catch (const ConfigError& e) {
    throw ConfigError("pod " + config_.name + ": " + e.what());
  }
  if (config_.table) {
    impl_->table = *config_.table;  // built by the embedding program (fedpod simulate)
    impl_->table.schema.num_rows = impl_->table.values.size(0);
  } else {
    auto table = config_.dataset_format == "idx" ? data::read_idx(config_.dataset_path, config_.dataset_labels)
                                                 : data::read_csv(config_.dataset_path, config_.csv, config_.schema);
    if (!table.ok()) throw ConfigError("pod " + config_.name + ": dataset: " + table.status().message());
    impl_->table = std::move(*table);
  }
  if (impl_->table.skipped_rows > 0) {
    impl_->log->warn("event=bad_rows_skipped pod={} count={}", config_.name, impl_->table.skipped_rows);
    for (const auto& r : impl_->table.skipped_reasons) impl_->log->warn("event=bad_row reason=\"{}\"", r);
  }
  Impl& m = *impl_;
  // Identity: the pod's key pair.
  auto keys = protocol::read_key_file(config_.key_file);
  if (!keys.ok()) throw ConfigError("pod " + config_.name + ": key_file: " + keys.status().message());
  if (keys->secret_key.empty()) {
    throw ConfigError("pod " + config_.name + ": key_file: " + config_.key_file +
                      " holds only a public key; a pod needs its .key file (fedpod keys generate)");
  }
  m.keys = *keys;
  // Permissions: the policy (from the hub, or a local file) and the audit log.
  PolicyCacheOptions popts;
  popts.pod_name = config_.name;
  popts.file = config_.policy.file;
  popts.signing_key = config_.policy.signing_key;
  popts.cache_path = config_.policy.cache_path;
  popts.refresh = config_.policy.refresh;
  popts.max_staleness = config_.policy.max_staleness;
  if (popts.file.empty()) {
    check_pod_token(config_.policy.token, config_.name, "pod " + config_.name + ": policy token");
    popts.fetch = [hub = config_.policy.hub, token = config_.policy.token,
                   name = config_.name]() -> StatusOr<nlohmann::json> {
      hub::Client client(hub, token);
      client.set_timeouts(5, 5);  // a hung hub delays a refresh by 10 s at most (docs/permissions.md)
      return client.get_pod_policy(name);
    };
  }
  // State (policy cache, audit log) lives in private directories, made on first start.
  for (const std::string& f : {config_.audit_log, config_.policy.cache_path}) {
    if (f.empty()) continue;
    const auto dir = std::filesystem::path(f).parent_path();
    std::error_code ec;
    if (!dir.empty() && !std::filesystem::exists(dir, ec)) {
      std::filesystem::create_directories(dir, ec);
      if (ec) throw ConfigError("pod " + config_.name + ": cannot create " + dir.string() + ": " + ec.message());
      std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    }
  }
  m.policy = std::make_unique<PolicyCache>(std::move(popts), m.log);
  Status st = m.policy->start();
  if (!st.ok()) throw ConfigError("pod " + config_.name + ": policy: " + st.message());
  // The audit log: checked against what this pod published before (audit_anchor.h)
  // before it is opened; a missing, cut or replaced log stops the pod unless the
  // owner resets it on purpose.
  std::function<std::unique_ptr<hub::Client>()> hub_client;
  if (config_.policy.file.empty()) {
    hub_client = [hub = config_.policy.hub, token = config_.policy.token]() {
      auto client = std::make_unique<hub::Client>(hub, token);
      client->set_timeouts(5, 5);
      return client;
    };
  }
  nlohmann::json heads = nullptr;
  if (hub_client) {
    auto h = hub_client()->get_audit_heads(config_.name);
    if (h.ok()) {
      heads = *h;
    } else {
      m.log->warn("event=audit_heads_unchecked pod={} error=\"{}\" consequence=\"the log is checked against the "
                  "hub when its head is next published\"",
                  config_.name, h.status().message());
    }
  }
  auto prepared = prepare_audit_log(config_.audit_log, heads, config_.audit_reset_reason);
  if (!prepared.ok()) throw ConfigError("pod " + config_.name + ": " + prepared.status().message());
  auto audit = AuditLog::open(config_.audit_log, m.log);
  if (!audit.ok()) throw ConfigError("pod " + config_.name + ": audit_log: " + audit.status().message());
  m.audit = std::move(*audit);
  if (m.audit->entries() == 0 && !prepared->reset_entry.is_object()) {
    // A new log starts with an entry, so that an emptied file never passes for a
    // pod that has decided nothing yet.
    Status st = m.audit->append({{"event", "audit_log_started"}, {"pod", config_.name}});
    if (!st.ok()) throw ConfigError("pod " + config_.name + ": audit_log: " + st.message());
  }
  if (prepared->reset_entry.is_object()) {
    Status st = m.audit->append(prepared->reset_entry);
    if (!st.ok()) throw ConfigError("pod " + config_.name + ": audit_log: " + st.message());
    m.log->warn("event=audit_log_reset pod={} reason=\"{}\" problem=\"{}\"", config_.name,
                config_.audit_reset_reason, prepared->reset_entry.value("problem", ""));
  }
  if (hub_client) {
    AuditAnchorOptions ao;
    ao.pod_name = config_.name;
    ao.interval = config_.audit_publish;
    ao.publish = [hub_client, name = config_.name](const nlohmann::json& doc) {
      return hub_client()->publish_audit_head(name, doc);
    };
    ao.on_result = [registry = m.registry, &family = m.audit_heads_family](const std::string& result) {
      family.Add({{"result", result}}).Increment();
    };
    m.anchor = std::make_unique<AuditAnchor>(std::move(ao), prepared->startup, m.audit.get(), m.log);
  }
  m.refusal_audit = std::make_unique<RefusalAudit>([a = m.audit.get()](nlohmann::json e) { return a->append(std::move(e)); });
  if (config_.privacy.dp_required) {
    auto ledger = PrivacyLedger::open(config_.privacy.ledger, config_.privacy.delta);
    if (!ledger.ok()) throw ConfigError("pod " + config_.name + ": " + ledger.status().message());
    m.ledger = std::move(*ledger);
    const privacy::RdpCurve spent = m.ledger->spent();
    int64_t open = 0;
    for (const auto& e : m.ledger->entries()) open += e.state == "reserved";
    m.log->info("event=privacy_budget pod={} ledger={} jobs={} unsettled={} epsilon_spent={:.4f} epsilon_cap={} delta={}",
                config_.name, config_.privacy.ledger, m.ledger->entries().size(), open,
                spent.epsilon(config_.privacy.delta).epsilon, config_.privacy.epsilon_cap, config_.privacy.delta);
  }
  // Transport: a CURVE server whose handshakes the context's ZAP handler routes to
  // this pod's authenticate().
  m.zap = protocol::ZapHandler::for_context(ctx);
  m.zap_domain = "fedpod-pod-" + config_.name + "-" + std::to_string(reinterpret_cast<uintptr_t>(impl_.get()));
  m.zap->add_domain(m.zap_domain, [impl = impl_.get()](const std::string& key, const std::string& address) {
    return impl->authenticate(key, address);
  });
  if (!m.runtime.gate_command.empty()) {
    // The public socket lives in the receiving process, under its memory limit
    // (gate.h); handshakes still come here to be decided.
    GateOptions go;
    go.command = m.runtime.gate_command;
    go.pod_name = config_.name;
    go.listen = config_.listen;
    go.tensor_listen = config_.tensor_listen;
    go.secret_key = m.keys.secret_key;
    go.max_frame_bytes = config_.max_frame_bytes;
    go.max_message_bytes = config_.max_message_bytes;
    go.max_frames = m.limits.max_frames;
    go.memory_bytes = config_.transport_memory;
    go.shared_memory_bytes = config_.transport_shared_memory;
    go.authenticate = [impl = impl_.get()](const std::string& key, const std::string& address) {
      return impl->authenticate(key, address);
    };
    auto gate = Gate::start(ctx, std::move(go));
    if (!gate.ok()) throw ConfigError("pod " + config_.name + ": " + gate.status().message());
    m.gate = std::move(*gate);
    endpoint_ = m.gate->endpoint();
    m.tensor_endpoint = m.gate->tensor_endpoint();
    m.log->info("event=transport pod={} receiving_process={} memory_limit_bytes={} max_message_bytes={}",
                config_.name, m.gate->pid(), m.gate->memory_limit(), config_.max_message_bytes);
  } else {
    protocol::SocketOptions opts;
    opts.max_frame_bytes = config_.max_frame_bytes;
    opts.curve_server_secret = m.keys.secret_key;
    opts.zap_domain = m.zap_domain;
    try {
      impl_->router = protocol::make_router(ctx, config_.listen, opts);
    } catch (const zmq::error_t& e) {
      throw ConfigError("pod " + config_.name + ": cannot listen on " + config_.listen + ": " + e.what());
    }
    endpoint_ = protocol::bound_endpoint(impl_->router);
    if (!config_.tensor_listen.empty()) {
      protocol::SocketOptions to;
      to.max_frame_bytes = config_.max_frame_bytes;
      try {
        m.tensor_router = protocol::make_router(ctx, config_.tensor_listen, to);
      } catch (const zmq::error_t& e) {
        throw ConfigError("pod " + config_.name + ": cannot listen on " + config_.tensor_listen +
                          " (tensor_listen): " + e.what());
      }
      m.tensor_endpoint = protocol::bound_endpoint(m.tensor_router);
    }
    // Handshake failures, counted and audited (serve() reads the monitor).
    m.monitor_endpoint =
        "inproc://fedpod-worker-monitor-" + std::to_string(reinterpret_cast<uintptr_t>(impl_.get()));
    if (zmq_socket_monitor(impl_->router.handle(), m.monitor_endpoint.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
      throw ConfigError("pod " + config_.name + ": cannot monitor its socket: " + zmq_strerror(zmq_errno()));
    }
  }
  if (!config_.metrics_listen.empty()) {
    metrics::MetricsServerOptions mo;
    Status ms = metrics::parse_listen_address(config_.metrics_listen, mo.host, mo.port);
    if (!ms.ok()) throw ConfigError("pod " + config_.name + ": metrics_listen: " + ms.message());
    mo.readiness = [impl = impl_.get()]() -> std::string {
      return impl->serving.load() ? "" : "the pod is not serving yet";
    };
    m.metrics_server = std::make_unique<metrics::MetricsServer>(m.registry, mo);
    ms = m.metrics_server->start();
    if (!ms.ok()) throw ConfigError("pod " + config_.name + ": metrics_listen: " + ms.message());
    m.log->info("event=metrics_listening pod={} address={}", config_.name, m.metrics_server->address());
  }
  m.log->info("event=identity pod={} public_key={} policy={} audit_log={}", config_.name, m.keys.public_key,
              config_.policy.file.empty() ? config_.policy.hub_url : config_.policy.file, config_.audit_log);
  // Confinement of model code: probed once, stated plainly (log, /metrics, hello).
  if (!m.runtime.runner_command.empty()) {
    m.confinement = probe_confinement(m.runtime.runner_command);
    if (!m.confinement.namespaces) {
      if (config_.sandbox.required) {
        throw ConfigError("pod " + config_.name + ": sandbox: required, but job runners cannot get namespaces: " +
                          m.confinement.why_not +
                          " (install bubblewrap and allow unprivileged user namespaces, or set sandbox: auto)");
      }
      m.log->warn("event=sandbox pod={} level={} why=\"{}\" consequence=\"{}\"", config_.name, m.confinement.level,
                  m.confinement.why_not, m.confinement.gap);
    } else {
      m.log->info("event=sandbox pod={} level={}", config_.name, m.confinement.level);
    }
  } else if (config_.sandbox.required) {
    throw ConfigError("pod " + config_.name + ": sandbox: required, but this worker runs model code in-process");
  }
  m.sandbox_family.Add({{"level", m.confinement.level.empty() ? "in-process" : m.confinement.level}}).Set(1);
}

const std::string& Worker::public_key() const { return impl_->keys.public_key; }
const std::string& Worker::tensor_endpoint() const { return impl_->tensor_endpoint; }

std::string Worker::metrics_text() const {
  return prometheus::TextSerializer().Serialize(impl_->registry->Collect());
}

int Worker::metrics_port() const { return impl_->metrics_server ? impl_->metrics_server->port() : 0; }

// The Impl goes first: its ZAP authenticator and metrics threads use counters_.
Worker::~Worker() { impl_.reset(); }

void Worker::serve(const std::atomic<bool>& stop) { impl_->serve(stop); }

}  // namespace fedpod::worker
