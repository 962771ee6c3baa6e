// Data-parallel local training (worker/data_parallel.h): samples per second of one
// pod's local training with 1 and with 2 cpu replicas, in the same run, and their
// ratio. One replica is train_local, what a one-device pod runs; two replicas split
// every batch and all-reduce their gradients with the cpu collective, each on
// threads / 2 intra-op threads, as a pod with `devices: [cpu, cpu]` does.
//
//   fedpod_data_parallel_bench --threads 2 --repeats 3
//
// Two workloads: the digits mlp of the demo (examples/digits, hidden [64], batch 32:
// small steps, so fixed per-step costs show), and a synthetic one large enough for
// the arithmetic to dominate (default 8192 samples x 256 features, hidden
// [512, 512], batch 256). Each figure is the median of --repeats timed measurements
// (20 epochs of digits, 1 of the synthetic data) after one untimed warm-up.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "fedpod/data/csv.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/zoo.h"
#include "fedpod/worker/data_parallel.h"

namespace {

using Clock = std::chrono::steady_clock;
using fedpod::Hyperparameters;

struct Workload {
  std::string name;
  fedpod::data::Dataset data;
  std::vector<int64_t> input_shape;
  int64_t classes = 10;
  Hyperparameters hp;
  int64_t batch = 32;
  int64_t epochs = 1;  // per measurement: enough that one takes a good fraction of a second
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

std::unique_ptr<fedpod::model::Model> make(const Workload& w) {
  auto m = fedpod::model::make_builtin("mlp");
  torch::manual_seed(1);
  m->create_model(w.input_shape, w.classes, w.hp);
  return m;
}

// Median samples per second of `w.epochs` epochs over `w` with `replicas` cpu replicas.
double samples_per_second(const Workload& w, int replicas, int threads, int repeats) {
  auto primary = make(w);
  std::vector<std::unique_ptr<fedpod::model::Model>> others;
  for (int r = 1; r < replicas; ++r) others.push_back(make(w));
  fedpod::worker::DataParallelOptions options;
  options.threads_per_replica = std::max(1, threads / replicas);
  auto dp = fedpod::worker::DataParallel::create(
      *primary, std::move(others), std::vector<std::string>(replicas, "cpu"), options);
  if (!dp.ok()) throw std::runtime_error(dp.status().to_string());
  fedpod::worker::TrainOptions opts;
  opts.epochs = w.epochs;
  opts.batch_size = w.batch;
  std::vector<double> rates;
  for (int i = 0; i <= repeats; ++i) {
    opts.seed = static_cast<uint64_t>(i);
    const auto start = Clock::now();
    auto stats = (*dp)->train(w.data, opts, w.hp);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (!stats.ok()) throw std::runtime_error(stats.status().to_string());
    if (i > 0)
      rates.push_back(static_cast<double>(stats->samples_seen) / seconds);  // i == 0 warms up
  }
  return median(rates);
}

Workload digits(const std::string& source_dir) {
  std::vector<fedpod::data::Dataset> parts;
  Workload w;
  for (const char* pod : {"pod-a", "pod-b", "pod-c"}) {
    auto table = fedpod::data::read_csv(source_dir + "/examples/digits/" + pod + ".csv",
                                        fedpod::data::CsvOptions(), std::nullopt);
    if (!table.ok()) throw std::runtime_error(table.status().to_string());
    fedpod::data::Datastructure ds;
    ds.target = "label";
    ds.num_classes = 10;
    ds.scale = 1.0 / 16;
    auto splits = fedpod::data::make_splits(*table, ds);
    if (!splits.ok()) throw std::runtime_error(splits.status().to_string());
    parts.push_back(splits->train);
    w.input_shape = splits->input_shape;
  }
  w.name = "digits mlp [64], batch 32";
  w.data = fedpod::data::concat(parts);
  w.hp = Hyperparameters(nlohmann::json{{"hidden", {64}}, {"lr", 0.05}, {"momentum", 0.9}});
  w.batch = 32;
  w.epochs = 20;  // about 0.3 s
  return w;
}

Workload synthetic(int64_t samples, int64_t features, const std::vector<int64_t>& hidden,
                   int64_t batch) {
  Workload w;
  auto gen = at::detail::createCPUGenerator(7);
  w.data.x = torch::randn({samples, features}, gen);
  w.data.y = torch::randint(0, 10, {samples}, gen, torch::kInt64);
  w.input_shape = {features};
  w.hp = Hyperparameters(nlohmann::json{{"hidden", hidden}, {"lr", 0.01}, {"momentum", 0.9}});
  w.batch = batch;
  std::ostringstream name;
  name << "synthetic " << samples << "x" << features << " mlp [";
  for (size_t i = 0; i < hidden.size(); ++i) name << (i ? ", " : "") << hidden[i];
  name << "], batch " << batch;
  w.name = name.str();
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("fedpod data-parallel local training: samples/s with 1 and 2 cpu replicas");
  int threads = 2, repeats = 3;
  int64_t samples = 8192, features = 256, batch = 256;
  std::vector<int64_t> hidden = {512, 512};
  std::string source_dir = FEDPOD_SOURCE_DIR;
  app.add_option("--threads", threads,
                 "the pod's `threads`: 1 replica uses all, 2 replicas threads/2 each")
      ->check(CLI::PositiveNumber);
  app.add_option("--repeats", repeats, "timed measurements per figure (median)")
      ->check(CLI::PositiveNumber);
  app.add_option("--samples", samples, "synthetic: samples")->check(CLI::PositiveNumber);
  app.add_option("--features", features, "synthetic: features")->check(CLI::PositiveNumber);
  app.add_option("--hidden", hidden, "synthetic: hidden widths")->delimiter(',');
  app.add_option("--batch", batch, "synthetic: batch size")->check(CLI::PositiveNumber);
  app.add_option("--source-dir", source_dir, "fedpod's source tree (for examples/digits)");
  CLI11_PARSE(app, argc, argv);

  torch::set_num_threads(threads);
  std::cout << "load average at start: " << load_average() << "; threads " << threads << "\n\n";
  std::vector<Workload> workloads = {digits(source_dir),
                                     synthetic(samples, features, hidden, batch)};
  std::cout << std::left << std::setw(48) << "workload" << std::right << std::setw(14)
            << "1 replica/s" << std::setw(14) << "2 replicas/s" << std::setw(8) << "ratio"
            << "\n";
  for (const auto& w : workloads) {
    const double one = samples_per_second(w, 1, threads, repeats);
    const double two = samples_per_second(w, 2, threads, repeats);
    std::cout << std::left << std::setw(48) << w.name << std::right << std::fixed
              << std::setprecision(0) << std::setw(14) << one << std::setw(14) << two
              << std::setprecision(2) << std::setw(8) << two / one << "\n";
  }
  std::cout << "\nload average at end: " << load_average() << "\n";
  return 0;
}
