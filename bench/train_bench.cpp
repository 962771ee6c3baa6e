// Local training throughput, four ways, in one run (samples per second, median of
// --repeats timed measurements after one warm-up):
//
//   bare    a bare libtorch loop on this process's main thread: forward, cross
//           entropy, backward, SGD step with momentum, over the same batches;
//   train   fedpod's train_local (worker/trainer.h) on the main thread;
//   worker  a real `fedpod worker` training the same epochs each round in its job
//           runner, from a coordinator job of --repeats + 1 rounds whose first warms
//           the runner up; samples/s from the pod's own seconds (history.json:
//           pods.<pod>.samples_seen / train_seconds);
//   thread  train_local on a second thread of this process, after the main thread
//           set the thread count (as an embedded Worker's executor trains).
//
// bare, train and worker are interleaved: between two rounds of the worker's job (the
// coordinator runs on this thread and its round_end event calls back) the bench runs
// one bare and one train measurement, so each worker round has a bare measurement
// taken just before it. This machine's speed drifts by more than the effects measured
// (the same bare loop ran at 179k and 298k samples/s in two runs), so the ratio
// columns are medians of these paired ratios, not ratios of medians taken minutes
// apart.
//
// For the digits mlp (hidden [64]) and cnn (channels [16, 32], hidden 64), batch 32,
// SGD lr 0.05 momentum 0.9, every row of examples/digits/digits.csv, with each count
// of --threads. Every ratio is to `bare` with the same threads, in the same run.
//
//   fedpod_train_bench --threads 1,2 --epochs 5 --repeats 3
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <streambuf>
#include <thread>

#include "bench_pod.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/common/signing.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/data/csv.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/zoo.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/worker/policy.h"
#include "fedpod/worker/trainer.h"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using fedpod::Hyperparameters;

struct Workload {
  std::string name;  // the model's ref: mlp or cnn
  Hyperparameters hp;
  fedpod::data::Dataset data;
  std::vector<int64_t> input_shape;
  int64_t classes = 10;
  int64_t batch = 32;
  int64_t epochs = 5;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void check(const fedpod::Status& st) {
  if (!st.ok()) throw std::runtime_error(st.to_string());
}

fedpod::data::Datastructure digits_structure(const std::string& model) {
  fedpod::data::Datastructure ds;
  ds.target = "label";
  ds.num_classes = 10;
  ds.scale = 1.0 / 16;
  ds.split = {0, 0, 0};  // every row trains
  if (model == "cnn") ds.input_shape = {1, 8, 8};
  return ds;
}

Workload digits(const std::string& source_dir, const std::string& model, int64_t epochs) {
  auto table = fedpod::data::read_csv(source_dir + "/examples/digits/digits.csv", fedpod::data::CsvOptions(),
                                      std::nullopt);
  if (!table.ok()) throw std::runtime_error(table.status().to_string());
  auto splits = fedpod::data::make_splits(*table, digits_structure(model));
  if (!splits.ok()) throw std::runtime_error(splits.status().to_string());
  Workload w;
  w.name = model;
  w.data = splits->train;
  w.input_shape = splits->input_shape;
  w.epochs = epochs;
  nlohmann::json hp = {{"optimizer", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}};
  if (model == "mlp") hp["hidden"] = {64};
  if (model == "cnn") {
    hp["channels"] = {16, 32};
    hp["hidden"] = 64;
  }
  w.hp = Hyperparameters(hp);
  return w;
}

std::unique_ptr<fedpod::model::Model> make(const Workload& w) {
  auto m = fedpod::model::make_builtin(w.name);
  torch::manual_seed(1);
  m->create_model(w.input_shape, w.classes, w.hp);
  return m;
}

// Runs `measure` (which returns samples/s) once to warm up, then `repeats` times.
template <typename F>
double rate(int repeats, F measure) {
  std::vector<double> r;
  for (int i = 0; i <= repeats; ++i) {
    const double v = measure(i);
    if (i > 0) r.push_back(v);
  }
  return median(r);
}

// One measurement of the bare loop, samples/s; `seed` picks the batches' order.
double bare_once(const Workload& w, int seed) {
  auto m = make(w);
  std::vector<torch::Tensor> params;
  for (auto& [name, p] : m->named_parameters()) params.push_back(p);
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.05).momentum(0.9));
  m->set_training(true);
  const int64_t n = w.data.size();
  int64_t seen = 0;
  const auto start = Clock::now();
  for (int64_t e = 0; e < w.epochs; ++e) {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed * 1000 + e));
    torch::Tensor order = torch::randperm(n, gen);
    for (int64_t b = 0; b < n; b += w.batch) {
      torch::Tensor idx = order.slice(0, b, std::min(n, b + w.batch));
      torch::Tensor x = w.data.x.index_select(0, idx), y = w.data.y.index_select(0, idx);
      opt.zero_grad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(m->forward(x), y);
      loss.backward();
      opt.step();
      seen += idx.size(0);
    }
  }
  return static_cast<double>(seen) / std::chrono::duration<double>(Clock::now() - start).count();
}

// One measurement of train_local, samples/s, on this thread or on a new one.
double train_once(const Workload& w, int seed, bool on_thread) {
  auto m = make(w);
  fedpod::worker::TrainOptions opts;
  opts.epochs = w.epochs;
  opts.batch_size = w.batch;
  opts.seed = static_cast<uint64_t>(seed);
  fedpod::StatusOr<fedpod::worker::TrainStats> stats = fedpod::Status::internal("not run");
  double seconds = 0;
  auto run = [&] {
    const auto start = Clock::now();
    stats = fedpod::worker::train_local(*m, w.data, opts, w.hp);
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  };
  if (on_thread) {
    std::thread t(run);
    t.join();
  } else {
    run();
  }
  if (!stats.ok()) throw std::runtime_error(stats.status().to_string());
  return static_cast<double>(stats->samples_seen) / seconds;
}

using Pod = fedpod::bench::BenchPod;

// The coordinator's event stream (one JSON object per line, written on the thread
// that runs the job): calls `between` with the round number after each round_end but
// the last, before the coordinator starts the next round.
class RoundBreaks : public std::streambuf {
 public:
  RoundBreaks(int rounds, std::function<void(int)> between) : rounds_(rounds), between_(std::move(between)) {}

 protected:
  int_type overflow(int_type c) override {
    if (c == traits_type::eof()) return traits_type::not_eof(c);
    if (c != '\n') {
      line_ += static_cast<char>(c);
      return c;
    }
    const auto e = nlohmann::json::parse(line_, nullptr, false);
    line_.clear();
    if (e.is_object() && e.value("event", "") == "round_end") {
      const int round = e.value("round", 0);
      if (round < rounds_) between_(round);
    }
    return c;
  }

 private:
  int rounds_;
  std::function<void(int)> between_;
  std::string line_;
};

// After its last parallel region an OpenMP team's idle helpers spin (libgomp: up to
// GOMP_SPINCOUNT pause instructions, 10-20 ms on this machine) before they sleep. A
// measurement that starts while the other process's helpers spin shares the cores
// with them: on two cores that cost the mlp's short worker rounds 10 % (worker / bare
// 0.87-0.90 without the pause, 0.98 with it). No pod shares its machine with a
// bench, so each side waits for the other's helpers to sleep.
constexpr std::chrono::milliseconds kSettle{100};

struct Interleaved {
  std::vector<double> bare, train, worker;  // samples/s, index i: measurement i + 1
};

// One job of `repeats` + 1 rounds on `pod`: the first warms the pod's job runner up (a
// fresh process: its OpenMP and BLAS threads, first touches of the model and the
// data), as one bare and one train run before the job warm this process up. After
// round r (1..repeats) this thread measures bare and train once; worker round r + 1
// follows at once, so measurement i of each column ran within seconds of the others.
Interleaved interleaved(const Workload& w, int repeats, const Pod& pod, int threads, const fs::path& dir) {
  Interleaved out;
  (void)bare_once(w, 0);
  (void)train_once(w, 0, false);
  fedpod::coordinator::JobSpec spec;
  spec.job_id = "train-" + w.name + "-t" + std::to_string(threads);
  spec.model.ref = w.name;
  spec.model.hyperparameters = w.hp;
  spec.datastructure = digits_structure(w.name);
  spec.rounds = repeats + 1;
  spec.local_epochs = static_cast<int>(w.epochs);
  spec.batch_size = static_cast<int>(w.batch);
  spec.eval_every = 0;
  spec.checkpoint = false;  // no file writer competing with the next measurement
  spec.seed = 1;
  spec.round_timeout = 600s;
  spec.connect_timeout = 60s;
  spec.output_dir = (dir / spec.job_id).string();
  spec.key_file = (dir / "modeller.key").string();
  spec.pods.push_back({"pod", pod.endpoint, pod.public_key});
  fedpod::coordinator::validate(spec, "train bench");
  zmq::context_t ctx(1);
  std::ostringstream progress;
  fedpod::coordinator::Coordinator c(ctx, spec, fedpod::make_logger("coordinator", "warn"), progress);
  RoundBreaks breaks(spec.rounds, [&](int round) {
    std::this_thread::sleep_for(kSettle);  // the runner's idle OpenMP helpers stop spinning
    out.bare.push_back(bare_once(w, round));
    out.train.push_back(train_once(w, round, false));
    std::this_thread::sleep_for(kSettle);  // and this process's, before the worker's round
  });
  std::ostream events(&breaks);
  c.set_event_stream(&events);
  auto result = c.run();
  if (!result.ok()) throw std::runtime_error("job " + spec.job_id + ": " + result.status().to_string());
  std::ifstream in(result->history_path);
  const auto history = nlohmann::json::parse(in);
  for (size_t r = 1; r < history["rounds"].size(); ++r) {
    const auto& p = history["rounds"][r]["pods"]["pod"];
    out.worker.push_back(p["samples_seen"].get<double>() / p["train_seconds"].get<double>());
  }
  if (out.worker.size() != out.bare.size() || out.worker.empty()) {
    throw std::runtime_error("job " + spec.job_id + ": " + std::to_string(out.worker.size()) + " timed rounds for " +
                             std::to_string(out.bare.size()) + " bare measurements");
  }
  return out;
}

// The median of a[i] / b[i].
double paired_ratio(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> r;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) r.push_back(a[i] / b[i]);
  return median(r);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("fedpod local training throughput: a bare libtorch loop, train_local, and a real worker");
  std::vector<int> threads = {1, 2};
  std::vector<std::string> models = {"mlp", "cnn"};
  int repeats = 3;
  int64_t epochs = 5;
  std::string source_dir = FEDPOD_SOURCE_DIR, fedpod_bin = FEDPOD_BIN, json_out;
  app.add_option("--threads", threads, "libtorch intra-op threads (the pod's `threads`)")->delimiter(',');
  app.add_option("--models", models, "built-in models: mlp, cnn")->delimiter(',');
  app.add_option("--repeats", repeats, "timed measurements per figure (median)")->check(CLI::PositiveNumber);
  app.add_option("--epochs", epochs, "epochs over the 1797 digits rows per measurement")
      ->check(CLI::PositiveNumber);
  app.add_option("--source-dir", source_dir, "fedpod's source tree (examples/digits)");
  app.add_option("--fedpod", fedpod_bin, "the fedpod binary that runs the pod");
  app.add_option("--json", json_out, "also write the results here");
  CLI11_PARSE(app, argc, argv);
  try {
    const fs::path dir = fs::temp_directory_path() / ("fedpod-train-bench-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const auto modeller = fedpod::protocol::generate_curve_keypair();
    check(fedpod::protocol::write_key_files((dir / "modeller").string(), modeller, true));
    std::cout << "local training, samples/s (median of " << repeats << "), " << epochs
              << " epochs of examples/digits/digits.csv, batch 32, SGD momentum 0.9\n"
              << "ratios: to `bare` (a bare libtorch loop on the main thread) with the same threads; train and\n"
              << "worker: median of ratios to the bare run just before each (interleaved); thread: of medians\n\n"
              << std::left << std::setw(6) << "model" << std::setw(9) << "threads" << std::right << std::setw(11)
              << "bare/s" << std::setw(11) << "train/s" << std::setw(11) << "worker/s" << std::setw(11) << "thread/s"
              << std::setw(8) << "train" << std::setw(8) << "worker" << std::setw(8) << "thread\n";
    nlohmann::json results = nlohmann::json::array();
    for (int t : threads) {
      Pod pod = fedpod::bench::start_bench_pod(fedpod_bin, dir, "pod-t" + std::to_string(t),
                                               source_dir + "/examples/digits/digits.csv", t, modeller, "warn");
      for (const auto& name : models) {
        const Workload w = digits(source_dir, name, epochs);
        torch::set_num_threads(t);
        const Interleaved m = interleaved(w, repeats, pod, t, dir);
        const double thread = rate(repeats, [&](int seed) { return train_once(w, seed, true); });
        const double bare = median(m.bare), train = median(m.train), worker = median(m.worker);
        results.push_back({{"model", name},
                           {"threads", t},
                           {"bare", bare},
                           {"train_local", train},
                           {"train_local_thread", thread},
                           {"worker", worker},
                           {"bare_runs", m.bare},
                           {"train_local_runs", m.train},
                           {"worker_runs", m.worker},
                           {"train_ratio", paired_ratio(m.train, m.bare)},
                           {"thread_ratio", thread / bare},
                           {"worker_ratio", paired_ratio(m.worker, m.bare)}});
        std::cout << std::left << std::setw(6) << name << std::setw(9) << t << std::right << std::fixed
                  << std::setprecision(0) << std::setw(11) << bare << std::setw(11) << train << std::setw(11)
                  << worker << std::setw(11) << thread << std::setprecision(2) << std::setw(8)
                  << paired_ratio(m.train, m.bare) << std::setw(8) << paired_ratio(m.worker, m.bare) << std::setw(8)
                  << thread / bare << "\n"
                  << std::flush;
      }
      pod.process->kill(SIGTERM);
      pod.process->wait(10s);
    }
    if (!json_out.empty()) {
      std::ofstream(json_out) << nlohmann::json{{"machine_cores", std::thread::hardware_concurrency()},
                                                {"results", results}}
                                     .dump(2)
                              << "\n";
    }
    std::error_code ec;
    fs::remove_all(dir, ec);
  } catch (const std::exception& e) {
    std::cerr << "train bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
