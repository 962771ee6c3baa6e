// fedpod simulate sim.yaml: a federated job over many virtual pods in one process.
//
// sim.yaml is a job.yaml without `pods` and `key_file`, plus a `simulation` section
// (docs/simulation.md):
//
//   simulation:
//     pods: 100                       # virtual pods
//     data:                           # one dataset, split among them
//       format: idx                   # idx (MNIST-format, plain or .gz) | csv
//       train: {images: data/mnist/train-images-idx3-ubyte.gz, labels: data/mnist/train-labels-idx1-ubyte.gz}
//       test: {images: data/mnist/t10k-images-idx3-ubyte.gz, labels: data/mnist/t10k-labels-idx1-ubyte.gz}
//       # csv: train: data/all.csv, test: data/test.csv (header, delimiter as in pod.yaml)
//     partition: {method: shards, shards_per_pod: 2, seed: 0}   # iid | dirichlet | shards
//     threads: 2                      # the shared pool that trains (default: every core)
//     target_accuracy: 0.97           # report the first round whose test accuracy reaches it
//
// Each virtual pod is a real Worker (worker.h) listening on an inproc:// endpoint,
// with its own key, a signed policy giving the simulating user the super-modeller
// role, and an audit log; the coordinator is the real Coordinator. Only the transport
// differs: inproc:// has no CURVE handshake, so the program that made both sides
// names the user (Runtime::inproc_user). Workers run their model work on one shared
// TaskPool, so `threads` bounds what trains at once, whatever the number of pods.
//
// With a test set, each pod also holds an equal, random share of it as held-out rows
// (validation and test at once, data::RowSplit::kHeldOut): every evaluation then
// scores the whole test set, weighted by rows, as the papers report accuracy. Without
// one, each pod splits its own rows by the job's datastructure.split.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>
#include <thread>
#include <yaml-cpp/yaml.h>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/common/signing.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/job_spec.h"
#include "fedpod/data/csv.h"
#include "fedpod/data/idx.h"
#include "fedpod/data/partition.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/worker/policy.h"
#include "fedpod/worker/task_pool.h"
#include "fedpod/worker/worker.h"

namespace fedpod::cli {
namespace {
namespace fs = std::filesystem;

constexpr const char* kUser = "simulator";

struct SimArgs {
  std::string file;
  std::string output_dir;
  std::string log_level = "warn";
  int pods = 0;    // overrides simulation.pods
  int rounds = 0;  // overrides rounds
  bool resume = false;
  bool json = false;
  bool quiet = false;
};

struct DataFiles {
  std::string images, labels;  // idx
  std::string path;            // csv
  bool given() const { return !images.empty() || !path.empty(); }
};

struct Simulation {
  int pods = 0;
  std::string format = "idx";
  DataFiles train, test;
  data::CsvOptions csv;
  data::PartitionSpec partition;
  bool partition_seed_given = false;
  int threads = 0;
  double target_accuracy = 0;  // 0: none
};

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  fs::path path(p);
  return (path.is_absolute() ? path : base / path).lexically_normal().string();
}

template <typename T>
T scalar(const YAML::Node& n, const std::string& where) {
  if (!n.IsScalar()) throw ConfigError(where + ": expected a single value");
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(where + ": '" + n.Scalar() + "' is not of the type this setting takes");
  }
}

DataFiles parse_files(const YAML::Node& n, const std::string& format, const fs::path& base, const std::string& where) {
  DataFiles f;
  if (format == "idx") {
    if (!n.IsMap()) throw ConfigError(where + ": give {images: FILE, labels: FILE} (MNIST-format files)");
    check_keys(n, {"images", "labels"}, where);
    if (!n["images"] || !n["labels"]) throw ConfigError(where + ": needs both images and labels");
    f.images = resolve(base, scalar<std::string>(n["images"], where + ".images"));
    f.labels = resolve(base, scalar<std::string>(n["labels"], where + ".labels"));
  } else {
    f.path = resolve(base, scalar<std::string>(n, where));
  }
  return f;
}

Simulation parse_simulation(const YAML::Node& n, const fs::path& base, const std::string& where) {
  if (!n || !n.IsMap()) {
    throw ConfigError(where + ": simulation: required, a map with pods, data and partition (docs/simulation.md)");
  }
  check_keys(n, {"pods", "data", "partition", "threads", "target_accuracy"}, where + ": simulation");
  Simulation s;
  if (!n["pods"]) throw ConfigError(where + ": simulation.pods: required (the number of virtual pods)");
  s.pods = scalar<int>(n["pods"], where + ": simulation.pods");
  const YAML::Node d = n["data"];
  if (!d || !d.IsMap()) throw ConfigError(where + ": simulation.data: required, with format and train");
  check_keys(d, {"format", "train", "test", "header", "delimiter"}, where + ": simulation.data");
  if (d["format"]) s.format = scalar<std::string>(d["format"], where + ": simulation.data.format");
  if (s.format != "idx" && s.format != "csv") {
    throw ConfigError(where + ": simulation.data.format: '" + s.format + "' is not idx or csv");
  }
  if (!d["train"]) throw ConfigError(where + ": simulation.data.train: required");
  s.train = parse_files(d["train"], s.format, base, where + ": simulation.data.train");
  if (d["test"]) s.test = parse_files(d["test"], s.format, base, where + ": simulation.data.test");
  if (d["header"]) s.csv.header = scalar<bool>(d["header"], where + ": simulation.data.header");
  if (d["delimiter"]) {
    const auto delim = scalar<std::string>(d["delimiter"], where + ": simulation.data.delimiter");
    if (delim.size() != 1) throw ConfigError(where + ": simulation.data.delimiter: one character, got '" + delim + "'");
    s.csv.delimiter = delim[0];
  }
  if (const YAML::Node p = n["partition"]) {
    if (p.IsScalar()) {
      s.partition.method = p.Scalar();
    } else if (p.IsMap()) {
      check_keys(p, {"method", "alpha", "shards_per_pod", "min_rows", "seed"}, where + ": simulation.partition");
      if (p["method"]) s.partition.method = scalar<std::string>(p["method"], where + ": simulation.partition.method");
      if (p["alpha"]) s.partition.alpha = scalar<double>(p["alpha"], where + ": simulation.partition.alpha");
      if (p["shards_per_pod"]) {
        s.partition.shards_per_pod = scalar<int64_t>(p["shards_per_pod"], where + ": simulation.partition.shards_per_pod");
      }
      if (p["min_rows"]) s.partition.min_rows = scalar<int64_t>(p["min_rows"], where + ": simulation.partition.min_rows");
      if (p["seed"]) {
        s.partition.seed = scalar<uint64_t>(p["seed"], where + ": simulation.partition.seed");
        s.partition_seed_given = true;
      }
    } else {
      throw ConfigError(where + ": simulation.partition: a method name (iid, dirichlet, shards) or a map");
    }
  }
  if (n["threads"]) s.threads = scalar<int>(n["threads"], where + ": simulation.threads");
  if (n["target_accuracy"]) {
    s.target_accuracy = scalar<double>(n["target_accuracy"], where + ": simulation.target_accuracy");
    if (!(s.target_accuracy > 0 && s.target_accuracy <= 1)) {
      throw ConfigError(where + ": simulation.target_accuracy: a fraction in (0, 1], e.g. 0.97");
    }
  }
  return s;
}

data::Table read_table(const Simulation& s, const DataFiles& f, const std::string& what) {
  auto t = s.format == "idx" ? data::read_idx(f.images, f.labels) : data::read_csv(f.path, s.csv);
  if (!t.ok()) throw ConfigError("simulation.data." + what + ": " + t.status().message());
  if (t->skipped_rows > 0) {
    throw ConfigError("simulation.data." + what + ": " + std::to_string(t->skipped_rows) + " bad rows, the first: " +
                      (t->skipped_reasons.empty() ? std::string("?") : t->skipped_reasons.front()));
  }
  return std::move(*t);
}

std::vector<int64_t> label_codes(const data::Table& t, const std::string& target) {
  const int col = t.schema.find(target);
  if (col < 0) throw ConfigError("datastructure.target: the data has no column '" + target + "'");
  torch::Tensor c = t.values.select(1, col).contiguous();
  const double* v = c.data_ptr<double>();
  std::vector<int64_t> labels(static_cast<size_t>(c.numel()));
  for (size_t i = 0; i < labels.size(); ++i) {
    if (!(v[i] >= 0) || v[i] != std::floor(v[i])) {
      throw ConfigError("datastructure.target: row " + std::to_string(i + 1) + " of the training data has label " +
                        std::to_string(v[i]) + "; partitioning needs class codes 0, 1, 2, ...");
    }
    labels[i] = static_cast<int64_t>(v[i]);
  }
  return labels;
}

data::Table subset(const data::Table& t, const std::vector<int64_t>& rows) {
  data::Table out;
  out.schema = t.schema;
  torch::Tensor idx = torch::from_blob(const_cast<int64_t*>(rows.data()), {static_cast<int64_t>(rows.size())},
                                       torch::kInt64);
  out.values = t.values.index_select(0, idx);
  out.schema.num_rows = out.values.size(0);
  return out;
}

std::string pod_name(int i, int pods) {
  const int width = std::max(3, static_cast<int>(std::to_string(pods).size()));
  std::ostringstream o;
  o << "pod-" << std::setw(width) << std::setfill('0') << i;
  return o.str();
}

// A key pair kept under `dir` across runs (a resumed simulation uses the same ones).
protocol::CurveKeyPair keys_in(const fs::path& dir, const std::string& name) {
  const std::string base = (dir / name).string();
  if (fs::exists(base + ".key")) {
    auto k = protocol::read_key_file(base + ".key");
    if (!k.ok()) throw ConfigError(k.status().message());
    return *k;
  }
  auto k = protocol::generate_curve_keypair();
  Status st = protocol::write_key_files(base, k, true);
  if (!st.ok()) throw ConfigError(st.message());
  return k;
}

// RLIMIT_NOFILE up to its hard limit: each ZeroMQ socket holds a file descriptor, and a
// simulation opens several per pod.
void raise_open_files(int64_t needed) {
  rlimit r{};
  if (::getrlimit(RLIMIT_NOFILE, &r) != 0) return;
  if (r.rlim_cur != RLIM_INFINITY && static_cast<int64_t>(r.rlim_cur) < needed) {
    r.rlim_cur = r.rlim_max == RLIM_INFINITY ? static_cast<rlim_t>(needed) : std::min<rlim_t>(r.rlim_max, static_cast<rlim_t>(needed));
    ::setrlimit(RLIMIT_NOFILE, &r);
    ::getrlimit(RLIMIT_NOFILE, &r);
  }
  if (r.rlim_cur != RLIM_INFINITY && static_cast<int64_t>(r.rlim_cur) < needed) {
    throw ConfigError("simulation.pods: this many pods need about " + std::to_string(needed) +
                      " open files, but the limit is " + std::to_string(r.rlim_cur) +
                      " (raise it with ulimit -n, or simulate fewer pods)");
  }
}

int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return 0;
}

nlohmann::json setup_json(const Simulation& s) {
  return {{"pods", s.pods},
          {"format", s.format},
          {"train", s.format == "idx" ? s.train.images + " + " + s.train.labels : s.train.path},
          {"test", !s.test.given() ? std::string() : s.format == "idx" ? s.test.images + " + " + s.test.labels : s.test.path},
          {"partition",
           {{"method", s.partition.method},
            {"alpha", s.partition.alpha},
            {"shards_per_pod", s.partition.shards_per_pod},
            {"min_rows", s.partition.min_rows},
            {"seed", s.partition.seed}}}};
}

void simulate(const SimArgs& args) {
  const auto started = std::chrono::steady_clock::now();
  const fs::path file = fs::absolute(args.file);
  const fs::path base = file.parent_path();
  YAML::Node root = load_yaml_file(file.string());
  if (!root.IsMap()) throw ConfigError(file.string() + ": expected a map (a job.yaml with a simulation section)");
  Simulation sim = parse_simulation(root["simulation"], base, file.string());
  if (args.pods > 0) sim.pods = args.pods;
  if (sim.pods < 1 || sim.pods > 100000) {
    throw ConfigError(file.string() + ": simulation.pods: between 1 and 100000, got " + std::to_string(sim.pods));
  }
  for (const char* key : {"pods", "key_file"}) {
    if (root[key]) {
      throw ConfigError(file.string() + ": " + key + ": not used by fedpod simulate, which makes its own virtual pods" +
                        " and keys (simulation.pods sets how many)");
    }
  }
  root.remove("simulation");
  if (args.rounds > 0) root["rounds"] = args.rounds;
  // Deadlines for pods that may wait behind others for the shared pool: generous
  // unless the file sets them.
  if (!root["connect_timeout"]) root["connect_timeout"] = std::to_string(std::max(30, sim.pods / 10)) + "s";
  if (!root["round_timeout"]) root["round_timeout"] = "30m";
  if (!root["heartbeat_timeout"]) root["heartbeat_timeout"] = "5m";

  const std::string output_dir = !args.output_dir.empty()                 ? args.output_dir
                                 : root["output_dir"] ? root["output_dir"].as<std::string>()
                                                      : std::string("out");
  const fs::path state = fs::absolute(fs::path(output_dir) / "simulation");
  fs::create_directories(state / "keys");
  fs::permissions(state / "keys", fs::perms::owner_all, fs::perm_options::replace);

  // Identities: the simulating user and every pod, each pod with a policy signed by
  // a key made for this run.
  const protocol::CurveKeyPair modeller = keys_in(state / "keys", kUser);
  const SigningKeyPair owner = generate_signing_keypair();
  std::vector<std::string> names;
  std::vector<protocol::CurveKeyPair> pod_keys;
  YAML::Node pods_node(YAML::NodeType::Sequence);
  for (int i = 1; i <= sim.pods; ++i) {
    names.push_back(pod_name(i, sim.pods));
    pod_keys.push_back(keys_in(state / "keys", names.back()));
    YAML::Node p;
    p["name"] = names.back();
    p["address"] = "inproc://fedpod-sim-" + names.back();
    p["public_key"] = pod_keys.back().public_key;
    pods_node.push_back(p);
  }
  root["pods"] = pods_node;
  root["key_file"] = (state / "keys" / (std::string(kUser) + ".key")).string();
  root["output_dir"] = output_dir;
  YAML::Emitter emit;
  emit << root;
  coordinator::JobSpec spec = coordinator::parse_job_spec(emit.c_str(), file.string(), base.string());
  spec.resume = args.resume;
  if (!sim.partition_seed_given) sim.partition.seed = spec.seed;

  // A resumed simulation must split the data as the run it continues did.
  const nlohmann::json setup = setup_json(sim);
  const fs::path setup_file = state / "setup.json";
  if (args.resume && fs::exists(setup_file)) {
    std::ifstream in(setup_file);
    const auto saved = nlohmann::json::parse(in, nullptr, false);
    if (saved != setup) {
      throw ConfigError(file.string() + ": --resume: the simulation differs from the run in " + output_dir +
                        " (" + setup_file.string() + "): pods, data and partition must be the same");
    }
  }
  { std::ofstream(setup_file) << setup.dump(2) << "\n"; }

  std::ostream none(nullptr);
  std::ostream& human = args.json || args.quiet ? none : std::cout;
  std::ostream& hints = args.json || args.quiet ? std::cerr : std::cout;

  // The data, partitioned.
  data::Table train = read_table(sim, sim.train, "train");
  std::optional<data::Table> test;
  if (sim.test.given()) {
    test = read_table(sim, sim.test, "test");
    std::vector<std::string> a, b;
    for (const auto& c : train.schema.columns) a.push_back(c.name);
    for (const auto& c : test->schema.columns) b.push_back(c.name);
    if (a != b) throw ConfigError("simulation.data.test: its columns differ from the training data's");
  }
  const auto labels = label_codes(train, spec.datastructure.target);
  auto parts = data::partition(labels, sim.pods, sim.partition);
  if (!parts.ok()) throw ConfigError("simulation.partition: " + parts.status().message());
  std::vector<std::vector<int64_t>> test_parts(static_cast<size_t>(sim.pods));
  if (test) {
    data::PartitionSpec even;  // an equal random share of the test set for every pod
    even.seed = sim.partition.seed + 1;
    if (test->values.size(0) < sim.pods) {
      throw ConfigError("simulation.data.test: " + std::to_string(test->values.size(0)) + " rows for " +
                        std::to_string(sim.pods) + " pods; every pod needs at least one");
    }
    std::vector<int64_t> zeros(static_cast<size_t>(test->values.size(0)), 0);
    test_parts = *data::partition(zeros, sim.pods, even);
  }
  std::vector<std::shared_ptr<const data::Table>> tables;
  size_t fewest = SIZE_MAX, most = 0;
  for (int i = 0; i < sim.pods; ++i) {
    data::Table t = subset(train, (*parts)[static_cast<size_t>(i)]);
    fewest = std::min(fewest, (*parts)[static_cast<size_t>(i)].size());
    most = std::max(most, (*parts)[static_cast<size_t>(i)].size());
    if (test) {
      data::Table held = subset(*test, test_parts[static_cast<size_t>(i)]);
      t.row_split.assign(static_cast<size_t>(t.values.size(0)), static_cast<uint8_t>(data::RowSplit::kTrain));
      t.row_split.resize(t.row_split.size() + static_cast<size_t>(held.values.size(0)),
                         static_cast<uint8_t>(data::RowSplit::kHeldOut));
      t.values = torch::cat({t.values, held.values});
      t.schema.num_rows = t.values.size(0);
    }
    tables.push_back(std::make_shared<const data::Table>(std::move(t)));
  }
  const int64_t train_rows = train.values.size(0);
  train = data::Table();  // the pods hold their own copies now

  // The virtual pods.
  const int threads = sim.threads > 0 ? sim.threads : std::max(1u, std::thread::hardware_concurrency());
  raise_open_files(int64_t{12} * sim.pods + 256);
  zmq::context_t ctx(1);
  ctx.set(zmq::ctxopt::max_sockets, 12 * sim.pods + 256);
  auto pool = std::make_shared<worker::TaskPool>(threads);
  Logger pod_log = make_logger("pods", args.log_level);
  // The pods serve until this scope ends, however it ends (the coordinator's errors
  // are exceptions too).
  struct Serving {
    std::atomic<bool> stop{false};
    std::vector<std::unique_ptr<worker::Worker>> workers;
    std::vector<std::thread> threads;
    ~Serving() {
      stop = true;
      for (auto& t : threads) t.join();
      workers.clear();
    }
  } pods;
  auto& workers = pods.workers;
  for (int i = 0; i < sim.pods; ++i) {
    const std::string& name = names[static_cast<size_t>(i)];
    worker::Policy policy;
    policy.pod = name;
    policy.users[kUser] = modeller.public_key;
    policy.roles[kUser] = worker::Role::kSuperModeller;
    policy.build_key_index();
    const std::string policy_file = (state / (name + ".policy.signed.json")).string();
    { std::ofstream(policy_file) << worker::sign_policy(policy, owner, std::chrono::hours(24 * 365)); }
    worker::PodConfig c;
    c.name = name;
    c.listen = "inproc://fedpod-sim-" + name;
    c.table = tables[static_cast<size_t>(i)];
    c.devices = {"cpu"};
    c.threads = 1;  // each task trains on one pool thread
    c.receiving_process = false;
    c.tensor_listen = "";
    c.key_file = (state / "keys" / (name + ".key")).string();
    c.policy.file = policy_file;
    c.policy.signing_key = owner.public_key;
    c.audit_log = (state / (name + ".audit.log")).string();
    c.log_level = args.log_level;
    worker::Runtime rt;
    rt.pool = pool;
    rt.inproc_user = kUser;
    workers.push_back(std::make_unique<worker::Worker>(ctx, std::move(c), pod_log, rt));
  }
  tables.clear();
  pods.threads.reserve(workers.size());
  for (auto& w : workers) pods.threads.emplace_back([&w, &pods] { w->serve(pods.stop); });

  human << "simulating " << sim.pods << " pods in this process: " << train_rows << " training rows split "
        << sim.partition.method << " (" << fewest << " to " << most << " rows a pod)";
  if (test) human << ", " << test->values.size(0) << " held-out test rows scored at every evaluation (val_acc)";
  human << "; " << threads << " training thread(s)\n";

  Logger log = make_logger("coordinator", args.log_level);
  spec.runner_command = {self_executable(), "runner"};
  int exit_code = 0;
  nlohmann::json summary;
  {
    coordinator::Coordinator c(ctx, spec, log, human);
    if (args.json) c.set_event_stream(&std::cout);
    c.set_stop_flag(&job_stop_signal());
    install_job_stop_handlers();
    auto result = c.run();
    if (c.job_stopped()) {
      hints << "to continue it: fedpod simulate " << args.file << " --resume"
            << (args.output_dir.empty() ? std::string() : " --output-dir " + args.output_dir) << std::endl;
      exit_code = 128 + job_stop_signal().load();
    } else if (!result.ok()) {
      std::cerr << "fedpod: simulation " << spec.job_id << " failed: " << result.status().to_string() << "\n";
      exit_code = c.job_config_error() ? kExitConfig : kExitFailed;
    } else {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::ifstream in(result->history_path);
      const auto history = nlohmann::json::parse(in, nullptr, false);
      int reached = 0;
      double best = 0;
      if (history.is_object()) {
        for (const auto& r : history.value("rounds", nlohmann::json::array())) {
          if (!r.contains("eval") || !r["eval"].is_object()) continue;
          const double acc = r["eval"].value("accuracy", 0.0);
          best = std::max(best, acc);
          if (sim.target_accuracy > 0 && reached == 0 && acc >= sim.target_accuracy) reached = r.value("round", 0);
        }
      }
      summary = {{"job_id", spec.job_id},
                 {"pods", sim.pods},
                 {"sampled_per_round", spec.sample_count > 0 ? spec.sample_count
                                       : spec.sample_fraction > 0
                                           ? static_cast<int>(std::max<double>(spec.min_pods, std::ceil(spec.sample_fraction * sim.pods)))
                                           : sim.pods},
                 {"partition", setup["partition"]},
                 {"strategy", spec.strategy},
                 {"rounds", result->rounds_completed},
                 {"test_accuracy", result->test_accuracy},
                 {"test_loss", result->test_loss},
                 {"best_evaluation_accuracy", best},
                 {"seconds", seconds},
                 {"rounds_per_minute", seconds > 0 ? result->rounds_completed * 60.0 / seconds : 0.0},
                 {"peak_rss_bytes", peak_rss_bytes()},
                 {"training_threads", threads},
                 {"peak_concurrent_tasks", pool->peak_running()}};
      if (sim.target_accuracy > 0) {
        summary["target_accuracy"] = sim.target_accuracy;
        summary["reached_at_round"] = reached == 0 ? nlohmann::json(nullptr) : nlohmann::json(reached);
      }
      std::ofstream(fs::path(output_dir) / "simulation.json") << summary.dump(2) << "\n";
      std::ostringstream line;
      line << std::fixed << std::setprecision(2) << "simulation done: " << result->rounds_completed << " rounds in "
           << seconds << " s (" << summary["rounds_per_minute"].get<double>() << " rounds/min), test accuracy "
           << result->test_accuracy * 100 << "%, peak RSS " << peak_rss_bytes() / (1 << 20) << " MiB";
      if (sim.target_accuracy > 0) {
        line << "; " << sim.target_accuracy * 100 << "% "
             << (reached ? "reached at round " + std::to_string(reached) : std::string("not reached"));
      }
      hints << line.str() << "\n" << (fs::path(output_dir) / "simulation.json").string() << "\n";
    }
  }
  if (exit_code != 0) throw CommandExit{exit_code};
}

}  // namespace

void add_simulate(CLI::App& app) {
  auto args = std::make_shared<SimArgs>();
  auto* sim = app.add_subcommand(
      "simulate",
      "Run a job over many virtual pods in this process: one dataset partitioned among them (iid, Dirichlet, label "
      "shards), the same worker and coordinator code as real pods over inproc:// endpoints");
  sim->add_option("file", args->file, "simulation file: a job.yaml with a simulation section (docs/simulation.md)")
      ->required()
      ->check(CLI::ExistingFile);
  sim->add_option("-o,--output-dir", args->output_dir, "where history.json, report.html and simulation.json go");
  sim->add_option("--pods", args->pods, "number of virtual pods (overrides simulation.pods)")->check(kPositive);
  sim->add_option("--rounds", args->rounds, "rounds (overrides the file)")->check(kPositive);
  sim->add_flag("--resume", args->resume, "continue from <output_dir>/checkpoint.bin");
  sim->add_option("--log-level", args->log_level, "debug | info | warn | error (default warn)");
  auto* json = sim->add_flag("--json", args->json, "stream the job's events on stdout, one JSON object per line");
  sim->add_flag("-q,--quiet", args->quiet, "print no progress")->excludes(json);
  sim->callback([args] { simulate(*args); });
}

}  // namespace fedpod::cli
