// Whole-round benchmark: K real worker processes on loopback whose training returns
// the received parameters (bench-only echo trainer), a coordinator in its own
// process, and - in the same run - the transport limit: a plain ZeroMQ exchange of
// the same bytes, in the same frames, between the same number of processes, with
// no fedpod code.
//
//   fedpod_round_bench round --pods 2,8,32 --params 10000000 --rounds 5 --json out.json
//
// fedpod runs with its full security: pods are CURVE servers with a pod key behind a
// ZAP allow-list from a signed policy file, clients connect with a modeller key (the
// driver writes the keys to its temporary folder and hands it to its children in
// FEDPOD_BENCH_KEYS). The baseline is measured three times: plain ZeroMQ without
// encryption (the transport limit; the ratio is against it), plain ZeroMQ with
// CURVE (what ZeroMQ's own encryption costs), and plain ZeroMQ with every message
// sealed per peer by the tensor channel's AES-256-GCM (protocol/bulk.h) and opened
// at the other end: the floor for any design that encrypts each pod's copy, so the
// gap between it and fedpod is fedpod's own overhead.
//
// For each K it prints seconds per round (median; fedpod's is wall time from one
// round's console line to the next, so checkpoint and history writes count),
// effective bytes per second (2 * K * P * 4 bytes moved per round: parameters down
// and back up), the ratios, and each side's peak RSS. The other subcommands are the
// roles it launches itself. FEDPOD_BENCH_LOG=info (or debug) raises the coordinator's
// and the pods' log level from warn, into the logs in the bench's temporary folder.
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench_model.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/protocol/bulk.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/common/signing.h"
#include "fedpod/worker/policy.h"
#include "fedpod/worker/gate.h"
#include "fedpod/worker/runner.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / 1024.0;  // kilobytes on Linux
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

// The bench identities in FEDPOD_BENCH_KEYS: modeller.key, pod.key, policy.yaml.
std::string keys_dir() {
  const char* d = std::getenv("FEDPOD_BENCH_KEYS");
  if (!d || !*d) {
    std::cerr << "round bench: FEDPOD_BENCH_KEYS is not set (the driver sets it for its children)\n";
    std::exit(2);
  }
  return d;
}

fedpod::protocol::CurveKeyPair read_keys(const std::string& name) {
  auto k = fedpod::protocol::read_key_file(keys_dir() + "/" + name + ".key");
  if (!k.ok()) {
    std::cerr << "round bench: " << k.status().to_string() << "\n";
    std::exit(2);
  }
  return *k;
}

// The client side of CURVE, as the coordinator uses it.
fedpod::protocol::SocketOptions client_options() {
  fedpod::protocol::SocketOptions o;
  const auto me = read_keys("modeller");
  o.curve_client_public = me.public_key;
  o.curve_client_secret = me.secret_key;
  o.curve_server_public = read_keys("pod").public_key;
  return o;
}

void write_endpoint(const std::string& file, const std::string& endpoint) {
  std::ofstream(file + ".tmp") << endpoint << "\n";
  fs::rename(file + ".tmp", file);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

// --- roles -----------------------------------------------------------------------

// A pod with the echo runtime and a two-row dataset.
void run_worker(const std::string& endpoint_file, const std::string& data, bool in_process, bool no_gate,
                bool curve_only, bool no_shm) {
  torch::set_num_threads(1);
  fedpod::worker::PodConfig config;
  config.name = "bench-pod";
  config.listen = "tcp://127.0.0.1:*";
  // As pod.yaml's default: parameters sealed on the tensor channel, unless --curve-only.
  if (!curve_only) config.tensor_listen = fedpod::worker::default_tensor_listen(config.listen);
  if (no_shm) config.transport_shared_memory = 0;
  config.dataset_path = data;
  config.devices = {"cpu"};
  config.key_file = keys_dir() + "/pod.key";
  config.policy.file = keys_dir() + "/policy.signed.json";
  config.policy.signing_key = fedpod::read_signing_key_file(keys_dir() + "/owner.sign.pub")->public_key;
  config.audit_log = keys_dir() + "/audit-" + std::to_string(getpid()) + ".log";
  // Up to 32 pods start their runners at once on this one machine: give each more
  // than the default 8 s to load (not on the timed path).
  config.sandbox.limits.load_timeout = std::chrono::minutes(2);
  zmq::context_t ctx(1);
  fedpod::worker::Runtime runtime = fedpod::bench::echo_runtime();
  // As `fedpod worker` does: the job's model code in a confined runner (this binary's
  // `runner` subcommand, with the echo trainer), and the public socket in a
  // receiving process under a memory limit (`gate`), unless --in-process.
  if (!in_process) {
    runtime.runner_command = {fedpod::self_executable(), "runner"};
    if (!no_gate) runtime.gate_command = {fedpod::self_executable(), "gate"};
  }
  fedpod::worker::Worker w(ctx, config, fedpod::make_logger("bench-worker", std::getenv("FEDPOD_BENCH_LOG") ? std::getenv("FEDPOD_BENCH_LOG") : "warn"), runtime);
  write_endpoint(endpoint_file, w.endpoint());
  w.serve(g_stop);
}

// The baselines' transport. plain: no encryption; curve: ZeroMQ's CURVE on the socket;
// aes: no CURVE, every message sealed with the tensor channel's AES-256-GCM
// (protocol/bulk.h) under a key per peer and direction, as fedpod's tensor channel
// seals it, with no other fedpod code around it.
enum class Baseline { kPlain, kCurve, kAes };

const char* baseline_flag(Baseline b) { return b == Baseline::kPlain ? "plain" : b == Baseline::kCurve ? "curve" : "aes"; }

Baseline parse_baseline(const std::string& s) {
  if (s == "plain") return Baseline::kPlain;
  if (s == "curve") return Baseline::kCurve;
  if (s == "aes") return Baseline::kAes;
  throw std::runtime_error("unknown baseline transport '" + s + "' (plain, curve, aes)");
}

// The AES baseline's key exchange, one message each way before the first round:
// ["key", X25519 public key]. A bench stand-in for startJob's exchange over CURVE
// (the keys are derived exactly as the tensor channel derives them).
const fedpod::protocol::BulkBinding kBaselineBinding{"round-bench-baseline", "baseline-pod"};

// A ZeroMQ ROUTER that sends every message straight back (zero-copy: the received
// frames are the ones sent); with aes it opens each message in place and seals it
// again for the way back, as a pod opens the parameters and seals its update.
void run_echo(const std::string& endpoint_file, Baseline mode) {
  zmq::context_t ctx(1);
  fedpod::protocol::SocketOptions opts;
  // CURVE for encryption only (no ZAP allow-list here), or none at all.
  if (mode == Baseline::kCurve) opts.curve_server_secret = read_keys("pod").secret_key;
  zmq::socket_t router = fedpod::protocol::make_router(ctx, "tcp://127.0.0.1:*", opts);
  write_endpoint(endpoint_file, fedpod::protocol::bound_endpoint(router));
  std::vector<zmq::message_t> frames;
  fedpod::protocol::BulkSession session;
  while (!g_stop) {
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    if (fedpod::protocol::poll(&item, 1, 100ms) == 0) continue;
    bool too_many;
    while (fedpod::protocol::recv_frames(router, frames, 1 << 20, too_many)) {
      zmq::message_t id = std::move(frames[0]);
      frames.erase(frames.begin());
      if (mode == Baseline::kAes) {
        if (frames.size() == 2 && frames[0].to_string_view() == "key") {
          fedpod::protocol::BulkKeyPair mine;
          auto derived = fedpod::protocol::BulkSession::derive(fedpod::protocol::BulkRole::kPod, mine,
                                                               frames[1].to_string_view(), kBaselineBinding);
          if (!derived.ok()) throw std::runtime_error(derived.status().to_string());
          session = std::move(*derived);
          const std::string pk = mine.public_key();
          frames.clear();
          frames.emplace_back("key", 3);
          frames.emplace_back(pk.data(), pk.size());
        } else {
          uint32_t round = 0;
          fedpod::protocol::BulkRefusal why;
          auto opened = session.open(std::move(frames), &round, &why);
          if (!opened.ok()) throw std::runtime_error("aes echo: " + opened.status().to_string());
          frames = session.seal(std::move(*opened), round);
        }
      }
      fedpod::protocol::send_frames(router, frames, &id);
    }
  }
}

// The baselines' client: each round sends the same P floats in `tensors` zero-copy
// frames to every peer and waits for all echoes. With aes it seals each peer's copy
// under that peer's key (the next peer's copy is sealed while ZeroMQ sends the last)
// and opens every echo, as the coordinator does with parameters and updates.
void run_zmq_client(const std::vector<std::string>& endpoints, int64_t params, int tensors, int rounds,
                    Baseline mode) {
  zmq::context_t ctx(1);
  std::vector<zmq::socket_t> peers;
  for (const auto& e : endpoints) {
    peers.push_back(fedpod::protocol::make_dealer(
        ctx, e, mode == Baseline::kCurve ? client_options() : fedpod::protocol::SocketOptions{}));
  }
  std::vector<fedpod::protocol::BulkSession> sessions(peers.size());
  if (mode == Baseline::kAes) {
    std::vector<std::unique_ptr<fedpod::protocol::BulkKeyPair>> mine;
    for (auto& s : peers) {
      mine.push_back(std::make_unique<fedpod::protocol::BulkKeyPair>());
      std::vector<zmq::message_t> frames;
      frames.emplace_back("key", 3);
      const std::string pk = mine.back()->public_key();
      frames.emplace_back(pk.data(), pk.size());
      fedpod::protocol::send_frames(s, frames);
    }
    for (size_t i = 0; i < peers.size(); ++i) {
      std::vector<zmq::message_t> frames;
      bool too_many;
      zmq::pollitem_t item{peers[i].handle(), 0, ZMQ_POLLIN, 0};
      if (fedpod::protocol::poll(&item, 1, 60000ms) == 0 ||
          !fedpod::protocol::recv_frames(peers[i], frames, 4, too_many) || frames.size() != 2) {
        throw std::runtime_error("aes baseline: peer " + std::to_string(i) + " did not answer the key exchange");
      }
      auto derived = fedpod::protocol::BulkSession::derive(fedpod::protocol::BulkRole::kCoordinator, *mine[i],
                                                           frames[1].to_string_view(), kBaselineBinding);
      if (!derived.ok()) throw std::runtime_error(derived.status().to_string());
      sessions[i] = std::move(*derived);
    }
  }
  torch::Tensor buffer = torch::randn({params});
  std::vector<double> seconds;
  for (int r = 0; r < rounds + 1; ++r) {  // round 0 warms the connections up
    const auto start = Clock::now();
    for (size_t i = 0; i < peers.size(); ++i) {
      std::vector<zmq::message_t> frames;
      frames.emplace_back("hdr", 3);
      int64_t offset = 0;
      for (int t = 0; t < tensors; ++t) {
        const int64_t n = params / tensors + (t < params % tensors ? 1 : 0);
        auto* keep = new torch::Tensor(buffer);
        frames.emplace_back(static_cast<float*>(buffer.data_ptr()) + offset, n * sizeof(float),
                            [](void*, void* hint) { delete static_cast<torch::Tensor*>(hint); }, keep);
        offset += n;
      }
      if (mode == Baseline::kAes) frames = sessions[i].seal(std::move(frames), static_cast<uint32_t>(r + 1));
      fedpod::protocol::send_frames(peers[i], frames);
    }
    size_t answered = 0;
    std::vector<zmq::message_t> frames;
    while (answered < peers.size()) {
      std::vector<zmq::pollitem_t> items;
      for (auto& s : peers) items.push_back({s.handle(), 0, ZMQ_POLLIN, 0});
      fedpod::protocol::poll(items.data(), items.size(), 1000ms);
      for (size_t i = 0; i < peers.size(); ++i) {
        bool too_many;
        if ((items[i].revents & ZMQ_POLLIN) && fedpod::protocol::recv_frames(peers[i], frames, 1 << 20, too_many)) {
          if (mode == Baseline::kAes) {
            uint32_t round = 0;
            fedpod::protocol::BulkRefusal why;
            auto opened = sessions[i].open(std::move(frames), &round, &why);
            if (!opened.ok() || round != static_cast<uint32_t>(r + 1)) {
              throw std::runtime_error("aes baseline: an echo did not open: " + opened.status().to_string());
            }
          }
          ++answered;
        }
      }
    }
    if (r > 0) seconds.push_back(std::chrono::duration<double>(Clock::now() - start).count());
  }
  nlohmann::json out = {{"seconds_per_round", median(seconds)}, {"rounds", seconds}, {"peak_rss_mb", peak_rss_mb()}};
  std::cout << out.dump() << std::endl;
}

// Notes when each "round N/M ..." console line of the coordinator is complete: the
// time between two such lines is a whole round as a user sees it, files included.
class RoundLineClock : public std::streambuf {
 public:
  std::vector<Clock::time_point> ends;

 protected:
  int overflow(int c) override {
    if (c == '\n') {
      if (line_.rfind("round ", 0) == 0) ends.push_back(Clock::now());
      line_.clear();
    } else if (c != EOF) {
      line_ += static_cast<char>(c);
    }
    return c;
  }

 private:
  std::string line_;
};

// A fedpod coordinator job over `endpoints` with the bench model.
void run_coordinator(const std::vector<std::string>& endpoints, int64_t params, int tensors, int rounds,
                     int window, const std::string& out_dir, const std::string& update_precision,
                     const std::string& broadcast_precision, bool secure, int threads) {
  torch::set_num_threads(threads);  // as `fedpod coordinator run --threads` (default 1)
  fedpod::coordinator::JobSpec spec;
  spec.job_id = "round-bench";
  spec.update_precision = update_precision;
  spec.broadcast_precision = broadcast_precision;
  spec.secure_aggregation.enabled = secure;  // the job's defaults: threshold, neighbours, clip 10
  spec.model.ref = "bench-params";
  spec.model.hyperparameters = fedpod::Hyperparameters(nlohmann::json{{"params", params}, {"tensors", tensors}});
  spec.datastructure.target = "label";
  spec.datastructure.num_classes = 2;
  spec.datastructure.split = {0, 0, 0};
  const std::string pod_key = read_keys("pod").public_key;
  for (size_t i = 0; i < endpoints.size(); ++i) spec.pods.push_back({"pod-" + std::to_string(i), endpoints[i], pod_key});
  spec.key_file = keys_dir() + "/modeller.key";
  spec.rounds = rounds + 1;  // round 1 warms the connections up
  spec.eval_every = 0;
  spec.max_concurrent_uploads = window;
  spec.round_timeout = 600s;
  spec.connect_timeout = 60s;
  spec.output_dir = out_dir;
  fedpod::coordinator::validate(spec, "round bench", [](const std::string& ref) { return ref == "bench-params"; });
  zmq::context_t ctx(1);
  RoundLineClock clock;
  std::ostream progress(&clock);
  fedpod::coordinator::Coordinator c(ctx, spec, fedpod::make_logger("coordinator", std::getenv("FEDPOD_BENCH_LOG") ? std::getenv("FEDPOD_BENCH_LOG") : "warn"), progress,
                                     fedpod::bench::make_bench_model);
  auto result = c.run();
  if (!result.ok()) {
    std::cerr << "round bench: " << result.status().to_string() << "\n";
    std::exit(1);
  }
  std::ifstream in(result->history_path);
  auto history = nlohmann::json::parse(in);
  // Round 1 warms up; rounds 2.. are timed line to line.
  std::vector<double> seconds, train;
  for (size_t i = 1; i < clock.ends.size(); ++i) {
    seconds.push_back(std::chrono::duration<double>(clock.ends[i] - clock.ends[i - 1]).count());
  }
  for (const auto& r : history["rounds"]) {
    if (r["round"].get<int>() > 1) train.push_back(r["train_seconds"].get<double>());
  }
  if (seconds.size() != train.size()) {
    std::cerr << "round bench: saw " << clock.ends.size() << " round lines for " << history["rounds"].size()
              << " rounds\n";
    std::exit(1);
  }
  nlohmann::json out = {{"seconds_per_round", median(seconds)},
                        {"rounds", seconds},
                        {"train_seconds", train},
                        {"peak_rss_mb", peak_rss_mb()}};
  // Secure aggregation: the median time of each protocol step over the timed rounds.
  if (secure) {
    std::map<std::string, std::vector<double>> steps;
    for (const auto& r : history["rounds"]) {
      if (r["round"].get<int>() <= 1 || !r.contains("secure_aggregation")) continue;
      for (const auto& [k, v] : r["secure_aggregation"].items()) {
        if (k.size() > 8 && k.compare(k.size() - 8, 8, "_seconds") == 0) steps[k.substr(0, k.size() - 8)].push_back(v);
      }
    }
    for (auto& [k, v] : steps) out["steps"][k] = median(v);
  }
  std::cout << out.dump() << std::endl;
}

// --- driver ----------------------------------------------------------------------

struct Servers {
  std::vector<std::unique_ptr<fedpod::Process>> procs;
  std::vector<std::string> endpoints;
  Servers() = default;
  Servers(Servers&&) = default;
  ~Servers() {
    for (auto& p : procs) p->kill(SIGTERM);
    for (auto& p : procs) p->wait(10s);
  }
};

Servers start_servers(const std::string& role, int k, const fs::path& dir, const std::string& data,
                      bool in_process = false, bool no_gate = false, Baseline transport = Baseline::kPlain,
                      bool curve_only = false,
                      bool no_shm = false) {
  Servers s;
  for (int i = 0; i < k; ++i) {
    const std::string ep = (dir / (role + std::to_string(i) + ".endpoint")).string();
    fs::remove(ep);
    std::vector<std::string> argv = {fedpod::self_executable(), role, "--endpoint-file", ep};
    if (role == "worker") argv.insert(argv.end(), {"--data", data});
    if (role == "worker" && in_process) argv.push_back("--in-process");
    if (role == "worker" && no_gate) argv.push_back("--no-receiving-process");
    if (role == "worker" && curve_only) argv.push_back("--curve-only");
    if (role == "worker" && no_shm) argv.push_back("--no-shared-memory");
    if (role == "echo") argv.insert(argv.end(), {"--transport", baseline_flag(transport)});
    s.procs.push_back(std::make_unique<fedpod::Process>(argv, (dir / (role + std::to_string(i) + ".log")).string()));
  }
  for (int i = 0; i < k; ++i) {
    const std::string ep = (dir / (role + std::to_string(i) + ".endpoint")).string();
    const std::string endpoint = fedpod::wait_for_word(ep, 60s, s.procs[i].get());
    if (endpoint.empty()) throw std::runtime_error(role + " " + std::to_string(i) + " did not start");
    s.endpoints.push_back(endpoint);
  }
  return s;
}

nlohmann::json run_child(const std::vector<std::string>& argv, const fs::path& log) {
  fedpod::Process p(argv, log.string());
  int status = p.wait(3600s);
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || last.empty()) {
    throw std::runtime_error("benchmark child failed; see " + log.string());
  }
  return nlohmann::json::parse(last);
}

void run_driver(const std::vector<int>& pods, int64_t params, int tensors, int rounds, int window,
                const std::string& json_out, bool in_process, bool no_gate, bool curve_only,
                const std::string& update_precision, const std::string& broadcast_precision, bool secure, bool no_shm,
                int coordinator_threads) {
  const fs::path dir = fs::temp_directory_path() / ("fedpod-round-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string data = (dir / "data.csv").string();
  std::ofstream(data) << "x,label\n0,0\n1,1\n";
  {
    const auto modeller = fedpod::protocol::generate_curve_keypair();
    const auto pod = fedpod::protocol::generate_curve_keypair();
    for (const auto& [name, keys] : {std::make_pair("modeller", modeller), std::make_pair("pod", pod)}) {
      auto st = fedpod::protocol::write_key_files((dir / name).string(), keys, true);
      if (!st.ok()) throw std::runtime_error(st.to_string());
    }
    std::ofstream(dir / "policy.yaml") << "pod: bench-pod\nusers:\n  - {username: bench, public_key: \""
                                       << modeller.public_key
                                       << "\"}\nroles:\n  - {username: bench, role: super-modeller}\ngrants: []\n";
    // Signed by a bench owner's key, which the pod pins (docs/permissions.md).
    const auto owner = fedpod::generate_signing_keypair();
    if (!fedpod::write_signing_key_files((dir / "owner").string(), owner, true).ok()) {
      throw std::runtime_error("cannot write the bench's signing key");
    }
    auto parsed = fedpod::worker::load_policy_file((dir / "policy.yaml").string());
    if (!parsed.ok()) throw std::runtime_error(parsed.status().to_string());
    std::ofstream(dir / "policy.signed.json") << fedpod::worker::sign_policy(*parsed, owner, std::chrono::hours(24));
    ::setenv("FEDPOD_BENCH_KEYS", dir.c_str(), 1);
  }
  const std::string self = fedpod::self_executable();
  nlohmann::json results = nlohmann::json::array();
  if (!in_process) {
    // What a job's runner costs before its first round: process start, libtorch,
    // bubblewrap's namespaces and the seccomp filter (no model yet), median of 5.
    std::vector<double> starts;
    fedpod::worker::Confinement c;
    for (int i = 0; i < 5; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      c = fedpod::worker::probe_confinement({self, "runner"});
      starts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(starts.begin(), starts.end());
    std::cout << "job runners: " << c.level << (c.namespaces ? "" : " (" + c.why_not + ")")
              << "; start-up of one runner (probe) " << std::fixed << std::setprecision(3) << starts[2]
              << " s, paid once per job at startJob\n";
    std::cout << (no_gate ? "pods' public sockets: in the worker processes (--no-receiving-process)\n"
                  : no_shm ? "pods' public sockets: in receiving processes under a memory limit, tensor frames "
                             "to the worker through the local socket (--no-shared-memory)\n"
                           : "pods' public sockets: in receiving processes under a memory limit, tensor frames to "
                             "the worker through shared memory (as `fedpod worker`)\n");
  } else {
    std::cout << "job runners: off (--in-process): the echo trainer runs in the worker, which also holds "
                 "its public socket (no receiving process)\n";
  }
  std::cout << "round benchmark: P=" << params << " float32 (" << params * 4 / 1e6 << " MB) in " << tensors
            << " tensors, " << rounds << " timed rounds, echo trainer, max_concurrent_uploads " << window
            << ", coordinator threads " << coordinator_threads
            << "\n"
            << "zmq: plain ZeroMQ, no encryption; zmq+CURVE: the same with CURVE; zmq+AES: the same without CURVE,\n"
               "each message sealed per peer with the tensor channel's AES-256-GCM and opened by the other side\n"
               "(the floor of encrypting every pod's copy, with no other fedpod code); fedpod: CURVE, ZAP allow-list, "
               "signed policy, "
            << (curve_only ? "parameters over CURVE (--curve-only)"
                           : "parameters sealed with AES-256-GCM on the tensor channel")
            << ", updates " << update_precision << ", parameters sent as " << broadcast_precision
            << "\nratio: zmq s/round / fedpod s/round (1 = the unencrypted transport's speed); ratio CURVE and "
               "ratio AES: the same against those baselines\n\n"
            << std::left << std::setw(5) << "K" << std::setw(13) << "zmq s/round" << std::setw(11) << "zmq MB/s"
            << std::setw(15) << "zmq+CURVE s" << std::setw(13) << "zmq+AES s" << std::setw(16) << "fedpod s/round"
            << std::setw(13) << "fedpod MB/s" << std::setw(8) << "ratio" << std::setw(14) << "ratio CURVE"
            << std::setw(12) << "ratio AES" << std::setw(14) << "coord RSS MB"
            << "zmq client RSS MB\n";
  for (int k : pods) {
    const std::string p = std::to_string(params), t = std::to_string(tensors), r = std::to_string(rounds);
    nlohmann::json zmq_result, curve_result, aes_result, fedpod_result;
    for (Baseline b : {Baseline::kPlain, Baseline::kCurve, Baseline::kAes}) {
      Servers echo = start_servers("echo", k, dir, data, false, false, b);
      std::vector<std::string> argv = {self, "zmq-client", "--endpoints"};
      std::string joined;
      for (const auto& e : echo.endpoints) joined += (joined.empty() ? "" : ",") + e;
      argv.insert(argv.end(), {joined, "--params", p, "--tensors", t, "--rounds", r, "--transport", baseline_flag(b)});
      (b == Baseline::kPlain ? zmq_result : b == Baseline::kCurve ? curve_result : aes_result) =
          run_child(argv, dir / ("zmq-client-" + std::to_string(k) + "-" + baseline_flag(b) + ".log"));
    }
    nlohmann::json secure_result;
    for (bool with_secagg : {false, true}) {
      if (with_secagg && (!secure || k < 3)) continue;
      Servers workers = start_servers("worker", k, dir, data, in_process, no_gate, Baseline::kPlain, curve_only, no_shm);
      std::string joined;
      for (const auto& e : workers.endpoints) joined += (joined.empty() ? "" : ",") + e;
      const std::string tag = std::to_string(k) + (with_secagg ? "-secagg" : "");
      std::vector<std::string> argv = {self, "coordinator", "--endpoints", joined, "--params", p, "--tensors", t,
                                       "--rounds", r, "--window", std::to_string(window), "--update-precision",
                                       update_precision, "--broadcast-precision", broadcast_precision,
                                       "--out", (dir / ("job-" + tag)).string(),
                                       "--threads", std::to_string(coordinator_threads)};
      if (with_secagg) argv.push_back("--secure-aggregation");
      (with_secagg ? secure_result : fedpod_result) = run_child(argv, dir / ("coordinator-" + tag + ".log"));
    }
    const double bytes = 2.0 * k * params * 4;
    const double zs = zmq_result["seconds_per_round"], cs = curve_result["seconds_per_round"],
                 as = aes_result["seconds_per_round"], fs_ = fedpod_result["seconds_per_round"];
    nlohmann::json row = {{"pods", k},
                          {"params", params},
                          {"tensors", tensors},
                          {"rounds", rounds},
                          {"max_concurrent_uploads", window},
                          {"bytes_per_round", bytes},
                          {"zmq", zmq_result},
                          {"zmq_curve", curve_result},
                          {"zmq_aes", aes_result},
                          {"fedpod", fedpod_result},
                          {"zmq_bytes_per_second", bytes / zs},
                          {"fedpod_bytes_per_second", bytes / fs_},
                          {"ratio_to_zmq", zs / fs_},
                          {"ratio_to_zmq_curve", cs / fs_},
                          {"ratio_to_zmq_aes", as / fs_},
                          {"fedpod_parameters", curve_only ? "curve" : "aes-256-gcm"},
                          {"update_precision", update_precision},
                          {"broadcast_precision", broadcast_precision}};
    if (!secure_result.is_null()) {
      row["fedpod_secure_aggregation"] = secure_result;
      row["secure_to_plain"] = secure_result["seconds_per_round"].get<double>() / fs_;
    }
    results.push_back(row);
    std::cout << std::left << std::fixed << std::setprecision(3) << std::setw(5) << k << std::setw(13) << zs
              << std::setw(11) << std::setprecision(0) << bytes / zs / 1e6 << std::setw(15) << std::setprecision(3)
              << cs << std::setw(13) << as << std::setw(16) << fs_ << std::setw(13) << std::setprecision(0) << bytes / fs_ / 1e6
              << std::setw(8) << std::setprecision(2) << zs / fs_ << std::setw(14) << cs / fs_ << std::setw(12) << as / fs_
              << std::setw(14)
              << std::setprecision(1)
              << fedpod_result["peak_rss_mb"].get<double>() << zmq_result["peak_rss_mb"].get<double>() << "\n"
              << std::flush;
    if (!secure_result.is_null()) {
      const double ss = secure_result["seconds_per_round"];
      std::cout << "     secure aggregation: " << std::setprecision(3) << ss << " s/round, " << std::setprecision(2)
                << ss / fs_ << "x the plain fedpod round, coord RSS " << std::setprecision(1)
                << secure_result["peak_rss_mb"].get<double>() << " MB; steps (s):" << std::setprecision(3);
      for (const char* step : {"advertise", "share", "mask", "unmask", "finish"}) {
        if (secure_result["steps"].contains(step)) std::cout << " " << step << " " << secure_result["steps"][step].get<double>();
      }
      std::cout << "\n" << std::flush;
    }
  }
  if (!json_out.empty()) {
    std::ofstream(json_out) << nlohmann::json{{"machine_cores", std::thread::hardware_concurrency()},
                                              {"coordinator_threads", coordinator_threads},
                                              {"results", results}}
                                   .dump(2)
                            << "\n";
    std::cout << "\nwrote " << json_out << "\n";
  }
  fs::remove_all(dir);
}

}  // namespace

int main(int argc, char** argv) {
  // A pod's job runner, with the echo trainer (worker/runner.h).
  if (argc > 1 && std::string(argv[1]) == "runner") {
    return fedpod::worker::runner_main(argc - 2, argv + 2, fedpod::bench::echo_runtime());
  }
  // A pod's receiving process (worker/gate.h).
  if (argc > 1 && std::string(argv[1]) == "gate") {
    fedpod::tune_malloc_for_large_messages();
    return fedpod::worker::gate_main(argc - 2, argv + 2);
  }
  fedpod::tune_malloc_for_large_messages();
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  CLI::App app{"fedpod whole-round benchmark"};
  app.require_subcommand(1);
  std::string pods = "2,8", endpoint_file, data, endpoints, json_out, out_dir;
  int64_t params = 10'000'000;
  int tensors = 8, rounds = 5, window = 2, coordinator_threads = 1;
  bool in_process = false, no_gate = false, curve_only = false, no_shm = false;
  std::string update_precision = "float32", broadcast_precision = "float32";

  auto* round = app.add_subcommand("round", "Benchmark rounds for each K in --pods against plain ZeroMQ");
  round->add_option("--pods", pods, "comma-separated pod counts")->capture_default_str();
  round->add_option("--params", params, "float32 parameters")->capture_default_str();
  round->add_option("--tensors", tensors, "tensors the parameters are split into")->capture_default_str();
  round->add_option("--rounds", rounds, "timed rounds (one more warms up)")->capture_default_str();
  round->add_option("--json", json_out, "also write the results here");
  round->add_option("--window", window, "the job's max_concurrent_uploads")->capture_default_str();
  round->add_flag("--in-process", in_process,
                  "run the echo trainer inside the worker processes instead of in a confined job runner per job, "
                  "and hold the pod's socket there instead of in a receiving process");
  round->add_flag("--no-receiving-process", no_gate,
                  "hold each pod's public socket in its worker process (pod.yaml receiving_process: false)");
  round->add_flag("--no-shared-memory", no_shm,
                  "tensor frames cross between each pod's receiving process and worker through the local socket, "
                  "not shared memory (pod.yaml transport_shared_memory: 0)");
  round->add_option("--update-precision", update_precision,
                    "how pods send updates: float32, or bfloat16 (their change, half the bytes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  round->add_option("--broadcast-precision", broadcast_precision,
                    "how the coordinator sends the parameters: float32, or bfloat16 (rounded, half the bytes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  round->add_flag("--curve-only", curve_only,
                  "no tensor channel: parameters travel over CURVE too (pod.yaml tensor_listen: off)");
  bool secure = false;
  round->add_option("--coordinator-threads", coordinator_threads,
                    "the coordinator's libtorch threads, as `fedpod coordinator run --threads`")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  round->add_flag("--secure-aggregation", secure,
                  "also run each K >= 3 with secure aggregation (job defaults) and print its time against the "
                  "plain fedpod round");

  auto* worker = app.add_subcommand("worker", "(internal) a pod with the echo trainer");
  worker->add_option("--endpoint-file", endpoint_file)->required();
  worker->add_option("--data", data)->required();
  worker->add_flag("--in-process", in_process);
  worker->add_flag("--no-receiving-process", no_gate);
  worker->add_flag("--curve-only", curve_only);
  worker->add_flag("--no-shared-memory", no_shm);
  auto* echo = app.add_subcommand("echo", "(internal) a plain ZeroMQ echo server");
  echo->add_option("--endpoint-file", endpoint_file)->required();
  std::string transport = "plain";
  echo->add_option("--transport", transport, "plain, curve or aes")
      ->check(CLI::IsMember({"plain", "curve", "aes"}));
  for (auto* sub : {app.add_subcommand("coordinator", "(internal) the fedpod side of one measurement"),
                    app.add_subcommand("zmq-client", "(internal) the plain ZeroMQ side of one measurement")}) {
    sub->add_option("--endpoints", endpoints)->required();
    sub->add_option("--params", params);
    sub->add_option("--tensors", tensors);
    sub->add_option("--rounds", rounds);
    sub->add_option("--out", out_dir);
    sub->add_option("--window", window);
  }
  app.get_subcommand("coordinator")->add_option("--update-precision", update_precision);
  app.get_subcommand("coordinator")->add_option("--broadcast-precision", broadcast_precision);
  app.get_subcommand("coordinator")->add_flag("--secure-aggregation", secure);
  app.get_subcommand("coordinator")->add_option("--threads", coordinator_threads);
  app.get_subcommand("zmq-client")
      ->add_option("--transport", transport, "plain, curve or aes")
      ->check(CLI::IsMember({"plain", "curve", "aes"}));
  CLI11_PARSE(app, argc, argv);
  try {
    if (*round) {
      std::vector<int> ks;
      for (const auto& k : split(pods)) ks.push_back(std::stoi(k));
      run_driver(ks, params, tensors, rounds, window, json_out, in_process, no_gate, curve_only, update_precision,
                 broadcast_precision, secure, no_shm, coordinator_threads);
    } else if (*worker) {
      run_worker(endpoint_file, data, in_process, no_gate, curve_only, no_shm);
    } else if (*echo) {
      run_echo(endpoint_file, parse_baseline(transport));
    } else if (app.got_subcommand("coordinator")) {
      run_coordinator(split(endpoints), params, tensors, rounds, window, out_dir, update_precision,
                      broadcast_precision, secure, coordinator_threads);
    } else {
      run_zmq_client(split(endpoints), params, tensors, rounds, parse_baseline(transport));
    }
  } catch (const std::exception& e) {
    std::cerr << "round bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
