// fedpod demo: three pods with label-skewed shares of the digits data, a coordinator,
// and a centralized baseline on the pooled data, all on this machine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <thread>

#include "commands.h"
#include "fedpod/common/log.h"
#include "fedpod/common/process.h"
#include "fedpod/common/hub_url.h"
#include "fedpod/common/signing.h"
#include "fedpod/hub/client.h"
#include "fedpod/hub/tls.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/coordinator/history.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/zoo.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/worker/policy.h"
#include "fedpod/worker/trainer.h"

namespace fedpod::cli {
namespace {
namespace fs = std::filesystem;

struct DemoArgs {
  std::string data_dir = FEDPOD_DEFAULT_DATA_DIR;
  std::string out_dir = "out/demo";
  int rounds = 10;
  std::string update_precision = "float32";
  std::string broadcast_precision = "float32";
  std::string log_level = "warn";
  double dp_noise_multiplier = 0;  // 0: no differential privacy
  double dp_max_grad_norm = 1.0;
  double privacy_budget = 0;       // the pods' epsilon cap; 0: none
};

const char* kPods[] = {"pod-a", "pod-b", "pod-c"};

// Worker processes, stopped with SIGTERM (then reaped) when the demo ends.
class Children {
 public:
  ~Children() {
    for (auto& p : procs_) p->kill(SIGTERM);
    for (auto& p : procs_) p->wait(std::chrono::seconds(10));
  }
  void spawn(std::vector<std::string> argv, const std::string& log_file) {
    argv[0] = self_executable();
    procs_.push_back(std::make_unique<Process>(argv, log_file));
  }
  Process& operator[](size_t i) { return *procs_[i]; }

 private:
  std::vector<std::unique_ptr<Process>> procs_;
};

// A free TCP port on loopback for a pod to listen on (registered on the hub before
// the pod starts). Another program could take it in between; the pod then fails to
// start and the demo names its log.
int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("demo: cannot find a free port on 127.0.0.1");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

const char* kHyperparameters = "{hidden: [64], optimizer: sgd, lr: 0.05, momentum: 0.9}";

// The same model, hyperparameters and splits as the federated job, trained on the
// union of the pods' train splits and scored on the union of their test splits.
double centralized_accuracy(const coordinator::JobSpec& spec, const std::vector<std::string>& csvs, int epochs) {
  std::vector<data::Dataset> train, test;
  data::Splits first;
  for (const auto& csv : csvs) {
    auto table = data::read_csv(csv, data::CsvOptions());
    if (!table.ok()) throw std::runtime_error(table.status().to_string());
    auto splits = data::make_splits(*table, spec.datastructure);
    if (!splits.ok()) throw std::runtime_error(splits.status().to_string());
    train.push_back(splits->train);
    test.push_back(splits->test);
    first = *splits;
  }
  data::Dataset pooled_train = data::concat(train), pooled_test = data::concat(test);
  auto model = model::make_builtin(spec.model.ref);
  torch::manual_seed(spec.seed);
  model->create_model(first.input_shape, spec.datastructure.num_classes, spec.model.hyperparameters);
  worker::TrainOptions opts;
  opts.epochs = epochs;
  opts.batch_size = spec.batch_size;
  opts.seed = spec.seed;
  auto stats = worker::train_local(*model, pooled_train, opts, spec.model.hyperparameters);
  if (!stats.ok()) throw std::runtime_error(stats.status().to_string());
  auto eval = worker::evaluate(*model, pooled_test, 256, /*test=*/true);
  if (!eval.ok()) throw std::runtime_error(eval.status().to_string());
  return eval->accuracy;
}

void run_demo(const DemoArgs& args) {
  const fs::path out = fs::absolute(args.out_dir);
  fs::create_directories(out / "pods");
  fs::create_directories(out / "logs");
  for (const auto& f : {"pods/pod-a.endpoint", "pods/pod-b.endpoint", "pods/pod-c.endpoint"}) fs::remove(out / f);
  torch::set_num_threads(1);

  // A hub, as a real deployment has one: over TLS with a development CA, fresh every
  // run. Users and pods register on it, the pods' owner grants the modeller the
  // general-modeller role (which runs built-in models), and each pod reads its signed
  // policy from it with its own pod token and anchors its audit log there.
  auto check = [](const Status& st) {
    if (!st.ok()) throw std::runtime_error(st.to_string());
  };
  auto value = [](auto r) {
    if (!r.ok()) throw std::runtime_error(r.status().to_string());
    return *std::move(r);
  };
  const auto tls = value(hub::make_dev_ca((out / "tls").string(), {"127.0.0.1", "localhost"}, 30));
  fs::remove_all(out / "hub");
  for (const auto& e : fs::directory_iterator(out / "pods")) fs::remove_all(e.path());
  Children children;
  const std::string hub_port_file = (out / "hub.port").string();
  fs::remove(hub_port_file);
  children.spawn({"fedpod", "hub", "serve", "--data-dir", (out / "hub").string(), "--listen", "127.0.0.1:0",
                  "--port-file", hub_port_file, "--tls-cert", tls.cert, "--tls-key", tls.key, "--log-level", "warn"},
                 (out / "logs" / "hub.log").string());
  const std::string hub_port = wait_for_word(hub_port_file, std::chrono::seconds(60), &children[0]);
  if (hub_port.empty()) throw std::runtime_error("the demo hub did not start; see " + (out / "logs" / "hub.log").string());
  HubUrl hub_url = parse_hub_url("https://127.0.0.1:" + hub_port, "demo hub");
  hub_url.ca_file = tls.ca_cert;

  fs::create_directories(out / "keys");
  const auto modeller = protocol::generate_curve_keypair();
  const auto owner = protocol::generate_curve_keypair();
  check(protocol::write_key_files((out / "keys" / "demo").string(), modeller, true));
  check(protocol::write_key_files((out / "keys" / "owner").string(), owner, true));
  const std::string demo_token = value(hub::Client(hub_url).register_user("demo", modeller.public_key, modeller.secret_key));
  hub::Client owner_hub(hub_url, value(hub::Client(hub_url).register_user("owner", owner.public_key, owner.secret_key)));
  const std::string hub_signing_key = value(owner_hub.get_signing_key());  // read over verified TLS

  std::vector<std::string> csvs;
  for (size_t i = 0; i < 3; ++i) {
    const std::string name = kPods[i];
    const std::string csv = fs::absolute(fs::path(args.data_dir) / (name + ".csv")).string();
    if (!fs::exists(csv)) throw ConfigError("demo data not found: " + csv + " (use --data)");
    csvs.push_back(csv);
    const auto pod_key = protocol::generate_curve_keypair();
    check(protocol::write_key_files((out / "keys" / name).string(), pod_key, true));
    const std::string address = "tcp://127.0.0.1:" + std::to_string(free_tcp_port());
    check(owner_hub.register_pod(name, address, pod_key.public_key, nlohmann::json::object()));
    check(owner_hub.grant_role(name, "demo", "general-modeller").status());
    const std::string token_file = (out / "keys" / (name + ".token")).string();
    {
      std::ofstream t(token_file);
      t << value(owner_hub.create_pod_token(name)) << "\n";
    }
    fs::permissions(token_file, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    const fs::path config = out / "pods" / (name + ".yaml");
    std::ofstream(config) << "name: " << name << "\nlisten: " << address << "\ndataset:\n  path: " << csv
                          << "\nthreads: 1\nlog_level: info\nkey_file: " << (out / "keys" / (name + ".key")).string()
                          << "\npolicy:\n  hub: " << hub_url.to_string() << "\n  hub_ca: " << tls.ca_cert
                          << "\n  token_file: " << token_file << "\n  signing_key: \"" << hub_signing_key
                          << "\"\n  cache: " << (out / "pods" / (name + ".policy.json")).string()
                          << "\naudit_log: " << (out / "pods" / (name + ".audit.log")).string() << "\n";
    if (args.privacy_budget > 0) {
      std::ofstream(config, std::ios::app) << "privacy:\n  differential_privacy: {epsilon: " << args.privacy_budget
                                           << ", delta: 1e-5, ledger: " << (out / "pods" / (name + ".privacy.json")).string()
                                           << "}\n";
    }
    const std::string log = (out / "logs" / (name + ".log")).string();
    children.spawn({"fedpod", "worker", "--config", config.string(), "--endpoint-file",
                    (out / "pods" / (name + ".endpoint")).string()},
                   log);
  }
  for (size_t i = 0; i < 3; ++i) {
    const std::string log = (out / "logs" / (std::string(kPods[i]) + ".log")).string();
    std::string endpoint = wait_for_word((out / "pods" / (std::string(kPods[i]) + ".endpoint")).string(),
                                         std::chrono::seconds(60), &children[i + 1]);
    if (endpoint.empty()) throw std::runtime_error("a demo worker did not start; see " + log);
  }

  const fs::path job_file = out / "job.yaml";
  {
    std::ofstream job(job_file);
    job << "job_id: digits-demo\n"
        << "model:\n  ref: mlp\n  hyperparameters: " << kHyperparameters << "\n"
        << "datastructure:\n  target: label\n  num_classes: 10\n  scale: 0.0625\n"
        << "  split: {validation: 0.1, test: 0.2, seed: 7}\n"
        << "hub: " << hub_url.to_string() << "\nhub_ca: " << tls.ca_cert << "\nhub_token: " << demo_token
        << "\npods: [pod-a, pod-b, pod-c]   # addresses and keys from the hub\n";
    job << "key_file: " << (out / "keys" / "demo.key").string() << "\n";
    job << "rounds: " << args.rounds << "\nlocal_epochs: 1\nbatch_size: 32\nmin_pods: 2\n"
        << "round_timeout: 60s\neval_every: 1\nseed: 1\noutput_dir: " << out.string() << "\n"
        << "update_precision: " << args.update_precision << "\n"
        << "broadcast_precision: " << args.broadcast_precision << "\n";
    if (args.dp_noise_multiplier > 0) {
      job << "differential_privacy: {noise_multiplier: " << args.dp_noise_multiplier
          << ", max_grad_norm: " << args.dp_max_grad_norm << "}\n";
    }
  }
  std::cout << "demo: 3 pods (label-skewed digits shares) on loopback, " << args.rounds
            << " rounds of FedAvg on an MLP\n"
            << "      hub " << hub_url.to_string() << " over TLS (development CA " << tls.ca_cert
            << "); pods read their signed policies with their own tokens\n";
  coordinator::JobSpec spec = coordinator::load_job_spec(job_file.string());
  zmq::context_t ctx(1);
  coordinator::Coordinator coord(ctx, spec, make_logger("coordinator", args.log_level), std::cout);
  auto result = coord.run();
  if (!result.ok()) {
    std::cerr << "fedpod: demo job failed: " << result.status().to_string() << "\n";
    throw CommandExit{kExitFailed};
  }
  const double central = centralized_accuracy(spec, csvs, args.rounds * spec.local_epochs);
  std::cout << std::fixed << std::setprecision(4) << "\nfederated   test accuracy " << result->test_accuracy << "  ("
            << result->test_samples << " test samples across 3 pods, " << std::setprecision(3)
            << result->mean_round_seconds << " s per round)\n"
            << std::setprecision(4) << "centralized test accuracy " << central
            << "  (same model and splits, pooled data, " << args.rounds * spec.local_epochs << " epochs)\n";
  nlohmann::json summary = {{"federated_test_accuracy", result->test_accuracy},
                            {"centralized_test_accuracy", central},
                            {"test_samples", result->test_samples},
                            {"rounds", result->rounds_completed},
                            {"update_precision", args.update_precision},
                            {"broadcast_precision", args.broadcast_precision},
                            {"mean_round_seconds", result->mean_round_seconds}};
  if (args.dp_noise_multiplier > 0) {
    const auto h = nlohmann::json::parse(std::ifstream(result->history_path), nullptr, false);
    summary["differential_privacy"] = h.is_object() && h.contains("differential_privacy") ? h["differential_privacy"]
                                                                                            : nlohmann::json(nullptr);
  }
  coordinator::write_file_atomic((out / "demo.json").string(), summary.dump(2) + "\n");
}

}  // namespace

void add_demo(CLI::App& app) {
  auto args = std::make_shared<DemoArgs>();
  auto* cmd = app.add_subcommand("demo", "Train on the digits data across 3 local pods and compare with "
                                         "centralized training");
  cmd->add_option("--data", args->data_dir, "folder with pod-a.csv, pod-b.csv, pod-c.csv")->capture_default_str();
  cmd->add_option("-o,--out", args->out_dir, "output folder")->capture_default_str();
  cmd->add_option("--rounds", args->rounds, "federated rounds")->capture_default_str()->check(kPositive);
  cmd->add_option("--log-level", args->log_level, "coordinator log level")->capture_default_str();
  cmd->add_option("--update-precision", args->update_precision,
                  "how pods send updates: float32, or bfloat16 (half the bytes; job.yaml update_precision)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  cmd->add_option("--broadcast-precision", args->broadcast_precision,
                  "how the parameters go to the pods: float32, or bfloat16 (half the bytes; job.yaml "
                  "broadcast_precision)")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "bfloat16"}));
  cmd->add_option("--dp-noise-multiplier", args->dp_noise_multiplier,
                  "train with DP-SGD at this noise multiplier (job.yaml differential_privacy; docs/privacy.md)")
      ->check(kPositive);
  cmd->add_option("--dp-max-grad-norm", args->dp_max_grad_norm, "DP-SGD's per-example clipping norm")
      ->capture_default_str()
      ->check(kPositive);
  cmd->add_option("--privacy-budget", args->privacy_budget,
                  "give every pod this epsilon budget (pod.yaml privacy.differential_privacy, delta 1e-5): the pods "
                  "then refuse jobs without DP or beyond the budget")
      ->check(kPositive);
  cmd->callback([args] { run_demo(*args); });
}

}  // namespace fedpod::cli
