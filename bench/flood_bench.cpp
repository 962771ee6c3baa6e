// Flood benchmark: what one peer flooding a pod costs the rounds of a job. Two
// `fedpod worker` processes serve digits shares; an in-process coordinator runs a
// small job (mlp, hidden 32) on both, once per variant and repeat, alternating:
//
//   quiet       no flood: the baseline, measured in the same run
//   bad         one authenticated peer (its own process) floods pod-a with bad
//               messages as fast as the pod answers them: garbage envelopes, a kind
//               a pod does not accept, another job's id, and one message in 256
//               with too many frames (16385)
//   bad-small   the same without the too-many-frames messages
//   heartbeats  the same rate of valid requests (heartbeats for another job): what
//               any traffic at that rate costs, for comparison
//
//   fedpod_flood_bench --rounds 5 --repeats 3 [--epochs 1] [--flooder-nice 0] [--json out.json]
//
// For each variant it prints the mean round time, its ratio to quiet, and the flood
// rate: messages pod-a answered per second. The flooder keeps at most --window
// messages unanswered, so the pod's replies never overflow its send queue. On a
// small machine the flooder's own CPU competes with the pods: --flooder-nice 19 runs
// it at the lowest priority, closer to an attacker on another machine.
#include <sys/resource.h>
#include <sys/wait.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench_pod.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/policy.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

void check(const fedpod::Status& st) {
  if (!st.ok()) throw std::runtime_error(st.to_string());
}

// --- the flooder (its own process) -----------------------------------------------

struct FloodArgs {
  std::string endpoint, client_key, server_key, kinds = "bad", out;
  int64_t window = 256;
  int too_many_every = 256;  // 0: never
  int nice = 0;
};

// Floods `endpoint` until SIGTERM; writes {sent, replies, seconds} to args.out.
int run_flood(const FloodArgs& args) {
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  if (args.nice != 0) setpriority(PRIO_PROCESS, 0, args.nice);
  auto keys = fedpod::protocol::read_key_file(args.client_key);
  check(keys.status());
  fedpod::protocol::SocketOptions opts;
  opts.curve_client_public = keys->public_key;
  opts.curve_client_secret = keys->secret_key;
  opts.curve_server_public = args.server_key;
  opts.linger = 0ms;
  zmq::context_t ctx(1);
  zmq::socket_t s = fedpod::protocol::make_dealer(ctx, args.endpoint, opts);
  const std::string junk(40, '\xAB');
  fedpod::protocol::Outgoing wrong_kind("", 1);
  wrong_kind.envelope().getBody().initJobAccepted();
  fedpod::protocol::Outgoing wrong_job("someone-elses-job", 2);
  wrong_job.envelope().getBody().initFetchResult().setRound(1);
  fedpod::protocol::Outgoing heartbeat("someone-elses-job", 3);
  heartbeat.envelope().getBody().initHeartbeat();
  int64_t sent = 0, replies = 0;
  std::vector<zmq::message_t> in;
  auto collect = [&](std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (fedpod::protocol::poll(&item, 1, timeout) == 0) return false;
    bool too_many;
    if (!fedpod::protocol::recv_frames(s, in, 64, too_many)) return false;
    ++replies;
    return true;
  };
  const bool bad = args.kinds == "bad";
  const auto start = Clock::now();
  for (int64_t i = 0; !g_stop.load(); ++i) {
    while (sent - replies >= args.window && !g_stop.load()) collect(100ms);
    std::vector<zmq::message_t> frames;
    const bool too_many =
        bad && args.too_many_every > 0 && i % args.too_many_every == args.too_many_every - 1;
    if (!bad) {
      frames = heartbeat.frames();
    } else if (too_many) {
      frames = wrong_kind.frames();
      for (size_t n = frames.size(); n < fedpod::protocol::Limits().max_frames + 1; ++n)
        frames.emplace_back();
    } else if (i % 3 == 0) {
      frames.emplace_back(junk.data(), junk.size());
    } else if (i % 3 == 1) {
      frames = wrong_kind.frames();
    } else {
      frames = wrong_job.frames();
    }
    if (fedpod::protocol::send_frames(s, frames)) ++sent;
    while (collect(0ms)) {
    }
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const auto until = Clock::now() + 10s;
  while (replies < sent && Clock::now() < until) collect(100ms);
  std::ofstream(args.out)
      << nlohmann::json{{"sent", sent}, {"replies", replies}, {"seconds", seconds}}.dump() << "\n";
  return 0;
}

// --- the driver ------------------------------------------------------------------

using Pod = fedpod::bench::BenchPod;

// A `fedpod worker` on examples/digits/NAME.csv that gives `modeller` the
// general-modeller role.
Pod start_pod(const std::string& fedpod_bin, const fs::path& dir, const std::string& name,
              const fedpod::protocol::CurveKeyPair& modeller, const std::string& log_level) {
  return fedpod::bench::start_bench_pod(fedpod_bin, dir, name,
                                        std::string(FEDPOD_SOURCE_DIR) + "/examples/digits/" + name + ".csv", 1,
                                        modeller, log_level);
}

struct Args {
  int rounds = 5;
  int epochs = 1;
  int repeats = 3;
  int64_t window = 256;
  int flooder_nice = 0;
  std::string pod_log_level = "info";
  std::string fedpod_bin = FEDPOD_BIN;
  std::string json_out;
};

struct Variant {
  std::string name, kinds;
  int too_many_every;
};

int run(const Args& args) {
  const fs::path dir =
      fs::temp_directory_path() / ("fedpod-flood-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const auto modeller = fedpod::protocol::generate_curve_keypair();
  check(fedpod::protocol::write_key_files((dir / "modeller").string(), modeller, true));
  std::vector<Pod> pods;
  pods.push_back(start_pod(args.fedpod_bin, dir, "pod-a", modeller, args.pod_log_level));
  pods.push_back(start_pod(args.fedpod_bin, dir, "pod-b", modeller, args.pod_log_level));
  const std::vector<Variant> variants = {{"quiet", "", 0},
                                         {"bad", "bad", 256},
                                         {"bad-small", "bad", 0},
                                         {"heartbeats", "heartbeat", 0}};

  std::cout << "flood benchmark: 2 pods (digits, mlp hidden 32, " << args.epochs
            << " local epochs, pod log level " << args.pod_log_level << "), " << args.rounds
            << " rounds per job, " << args.repeats
            << " jobs per variant; flooder: one process at pod-a, window " << args.window
            << ", nice " << args.flooder_nice << "\n\n"
            << std::left << std::setw(14) << "job" << std::setw(16) << "mean s/round"
            << std::setw(12) << "messages"
            << "messages/s\n";
  struct Sum {
    double seconds = 0, rate = 0;
  };
  std::map<std::string, Sum> sums;
  nlohmann::json jobs = nlohmann::json::array();
  for (int rep = 0; rep < args.repeats; ++rep) {
    for (const auto& v : variants) {
      fedpod::coordinator::JobSpec spec;
      spec.job_id = v.name + "-" + std::to_string(rep);
      spec.model.ref = "mlp";
      spec.model.hyperparameters =
          fedpod::Hyperparameters(nlohmann::json{{"hidden", {32}}, {"lr", 0.1}});
      spec.datastructure.target = "label";
      spec.datastructure.num_classes = 10;
      spec.datastructure.scale = 1.0 / 16;
      spec.rounds = args.rounds;
      spec.local_epochs = args.epochs;
      spec.round_timeout = 300s;
      spec.connect_timeout = 60s;
      spec.output_dir = (dir / spec.job_id).string();
      spec.key_file = (dir / "modeller.key").string();
      for (const auto& p : pods) spec.pods.push_back({p.name, p.endpoint, p.public_key});
      fedpod::coordinator::validate(spec, "flood bench");

      std::unique_ptr<fedpod::Process> flooder;
      const std::string flood_out = (dir / (spec.job_id + ".flood.json")).string();
      if (!v.kinds.empty()) {
        flooder = std::make_unique<fedpod::Process>(
            std::vector<std::string>{fedpod::self_executable(), "flood", "--endpoint",
                                     pods[0].endpoint, "--client-key", spec.key_file,
                                     "--server-key", pods[0].public_key, "--kinds", v.kinds,
                                     "--too-many-every", std::to_string(v.too_many_every),
                                     "--window", std::to_string(args.window), "--nice",
                                     std::to_string(args.flooder_nice), "--out", flood_out},
            (dir / (spec.job_id + ".flood.log")).string());
        std::this_thread::sleep_for(500ms);  // under way before the job starts
      }
      double mean = 0;
      {
        zmq::context_t ctx(1);
        std::ostringstream progress;
        fedpod::coordinator::Coordinator c(ctx, spec, fedpod::make_logger("coordinator", "warn"),
                                           progress);
        auto result = c.run();
        if (!result.ok()) {
          std::cerr << "flood bench: job " << spec.job_id << ": " << result.status().to_string()
                    << "\n";
          return 1;
        }
        mean = result->mean_round_seconds;
      }
      nlohmann::json f = {{"sent", 0}, {"replies", 0}, {"seconds", 0}};
      if (flooder) {
        flooder->kill(SIGTERM);
        flooder->wait(30s);
        std::ifstream in(flood_out);
        if (in) f = nlohmann::json::parse(in);
      }
      const double seconds = f["seconds"].get<double>();
      const double rate = seconds > 0 ? f["replies"].get<double>() / seconds : 0;
      sums[v.name].seconds += mean;
      sums[v.name].rate += rate;
      jobs.push_back({{"job", spec.job_id},
                      {"variant", v.name},
                      {"mean_round_seconds", mean},
                      {"flood", f},
                      {"messages_per_second", rate}});
      std::cout << std::left << std::setw(14) << spec.job_id << std::setw(16) << std::fixed
                << std::setprecision(4) << mean << std::setw(12) << f["replies"].get<int64_t>()
                << std::setprecision(0) << rate << "\n";
    }
  }
  std::cout << "\n"
            << std::left << std::setw(14) << "variant" << std::setw(16) << "mean s/round"
            << std::setw(18) << "ratio to quiet"
            << "messages/s answered by pod-a\n";
  nlohmann::json summary;
  const double quiet = sums["quiet"].seconds / args.repeats;
  for (const auto& v : variants) {
    const double mean = sums[v.name].seconds / args.repeats,
                 rate = sums[v.name].rate / args.repeats;
    summary[v.name] = {{"mean_round_seconds", mean},
                       {"ratio_to_quiet", mean / quiet},
                       {"messages_per_second", rate}};
    std::cout << std::left << std::setw(14) << v.name << std::setw(16) << std::setprecision(4)
              << mean << std::setw(18) << std::setprecision(2) << mean / quiet
              << std::setprecision(0) << rate << "\n";
  }
  if (!args.json_out.empty()) {
    std::ofstream(args.json_out) << nlohmann::json{{"rounds", args.rounds},
                                                   {"epochs", args.epochs},
                                                   {"repeats", args.repeats},
                                                   {"window", args.window},
                                                   {"flooder_nice", args.flooder_nice},
                                                   {"pod_log_level", args.pod_log_level},
                                                   {"summary", summary},
                                                   {"jobs", jobs}}
                                        .dump(2)
                                 << "\n";
  }
  for (auto& p : pods) p.process->kill(SIGTERM);
  for (auto& p : pods) p.process->wait(10s);
  std::error_code ec;
  fs::remove_all(dir, ec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("fedpod flood benchmark: round time with and without a peer flooding one pod");
  Args args;
  app.add_option("--rounds", args.rounds, "rounds per job")->check(CLI::PositiveNumber);
  app.add_option("--epochs", args.epochs, "local epochs per round")->check(CLI::PositiveNumber);
  app.add_option("--repeats", args.repeats, "jobs per variant (variants alternate)")
      ->check(CLI::PositiveNumber);
  app.add_option("--window", args.window, "most unanswered flood messages")
      ->check(CLI::PositiveNumber);
  app.add_option("--flooder-nice", args.flooder_nice, "the flooder process's nice value (0..19)");
  app.add_option("--pod-log-level", args.pod_log_level,
                 "the pods' --log-level (info, as deployed; warn; error)");
  app.add_option("--fedpod", args.fedpod_bin, "the fedpod binary that runs the pods");
  app.add_option("--json", args.json_out, "also write the results here");
  FloodArgs flood;
  auto* role = app.add_subcommand("flood", "(internal) the flooding peer, until SIGTERM");
  role->add_option("--endpoint", flood.endpoint)->required();
  role->add_option("--client-key", flood.client_key)->required();
  role->add_option("--server-key", flood.server_key)->required();
  role->add_option("--kinds", flood.kinds, "bad | heartbeat");
  role->add_option("--too-many-every", flood.too_many_every);
  role->add_option("--window", flood.window);
  role->add_option("--nice", flood.nice);
  role->add_option("--out", flood.out)->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*role) return run_flood(flood);
    return run(args);
  } catch (const std::exception& e) {
    std::cerr << "flood bench: " << e.what() << "\n";
    return 1;
  }
}
