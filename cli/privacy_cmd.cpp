// fedpod privacy status POD_YAML: the privacy budget a pod has spent on its dataset,
// per job and in total, from its ledger (worker/privacy_guard.h).
// fedpod privacy epsilon: the ε a DP-SGD job would spend, before running it.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/privacy/accountant.h"
#include "fedpod/privacy/dp_sgd.h"
#include "fedpod/worker/config.h"
#include "fedpod/worker/privacy_guard.h"

namespace fedpod::cli {
namespace {

std::string num(double v, int digits = 4) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

void print_status(const nlohmann::json& s) {
  std::printf("ledger   %s\n", s["ledger"].get<std::string>().c_str());
  std::printf("delta    %g\n", s["delta"].get<double>());
  std::printf("%-24s %-10s %-9s %-10s %-6s %-13s %-9s %s\n", "job", "user", "state", "q", "sigma", "steps done/plan",
              "epsilon", "started");
  for (const auto& j : s["jobs"]) {
    const std::string steps = std::to_string(j["steps_done"].get<int64_t>()) + "/" +
                              std::to_string(j["steps_planned"].get<int64_t>());
    std::printf("%-24s %-10s %-9s %-10s %-6s %-13s %-9s %s\n", j["job"].get<std::string>().c_str(),
                j["user"].get<std::string>().c_str(), j["state"].get<std::string>().c_str(),
                num(j["sample_rate"].get<double>(), 5).c_str(), num(j["noise_multiplier"].get<double>(), 2).c_str(),
                steps.c_str(), num(j["epsilon"].get<double>()).c_str(), j["started"].get<std::string>().c_str());
  }
  std::printf("spent    epsilon %s (the jobs composed; their epsilons added up: %s)\n",
              num(s["epsilon_spent"].get<double>()).c_str(), num(s["epsilon_sum_of_jobs"].get<double>()).c_str());
  if (s.contains("epsilon_cap")) {
    std::printf("budget   epsilon %s, left %s\n", num(s["epsilon_cap"].get<double>()).c_str(),
                num(s["epsilon_left"].get<double>()).c_str());
  }
  std::printf("(reserved: running, or the pod stopped during the job; charged for every step it planned)\n");
}

}  // namespace

void add_privacy(CLI::App& app) {
  auto* privacy = app.add_subcommand("privacy", "Differential privacy: a pod's spent budget, and what a job would spend");
  privacy->require_subcommand(1);

  struct StatusArgs {
    std::string pod_yaml;
    bool json = false;
  };
  auto sa = std::make_shared<StatusArgs>();
  auto* status = privacy->add_subcommand(
      "status", "The epsilon a pod has spent on its dataset, per job and in total, against its budget (pod.yaml "
                "privacy.differential_privacy); read from the pod's ledger, also while it runs");
  status->add_option("pod_yaml", sa->pod_yaml, "the pod's pod.yaml")->required();
  status->add_flag("--json", sa->json, "print the ledger's summary as JSON");
  status->callback([sa] {
    worker::PodConfig c;
    try {
      c = worker::load_pod_config(sa->pod_yaml);
    } catch (const ConfigError& e) {
      std::cerr << "fedpod: privacy status: " << e.what() << "\n";
      throw CommandExit{kExitConfig};
    }
    if (!c.privacy.dp_required) {
      std::cerr << "fedpod: privacy status: " << sa->pod_yaml << " sets no privacy.differential_privacy: this pod keeps no privacy "
                << "budget (docs/privacy.md)\n";
      throw CommandExit{kExitConfig};
    }
    auto ledger = worker::PrivacyLedger::open(c.privacy.ledger, c.privacy.delta);
    if (!ledger.ok()) {
      std::cerr << "fedpod: privacy status: " << ledger.status().message() << "\n";
      throw CommandExit{kExitFailed};
    }
    nlohmann::json s = (*ledger)->summary(c.privacy.epsilon_cap);
    s["pod"] = c.name;
    if (sa->json) {
      std::cout << s.dump(2) << "\n";
    } else {
      std::printf("pod      %s\n", c.name.c_str());
      print_status(s);
    }
  });

  struct EpsArgs {
    int64_t rows = 0, batch_size = 0, epochs = 1, steps = 0, rounds = 1;
    double sigma = 0, delta = 1e-5;
  };
  auto ea = std::make_shared<EpsArgs>();
  auto* eps = privacy->add_subcommand(
      "epsilon", "The epsilon (at delta) a DP-SGD job spends on a pod: Poisson sampling at batch_size/rows, "
                 "RDP accounting (docs/privacy.md)");
  eps->add_option("--rows", ea->rows, "rows of the pod's training split")->required()->check(kPositive);
  eps->add_option("--batch-size", ea->batch_size, "the job's batch_size")->required()->check(kPositive);
  eps->add_option("--noise-multiplier", ea->sigma, "the job's differential_privacy.noise_multiplier")
      ->required()
      ->check(kPositive);
  eps->add_option("--rounds", ea->rounds, "the job's rounds")->capture_default_str()->check(kPositive);
  eps->add_option("--epochs", ea->epochs, "local_epochs per round")->capture_default_str()->check(kPositive);
  eps->add_option("--steps", ea->steps, "local_steps per round (instead of --epochs)")->check(kPositive);
  eps->add_option("--delta", ea->delta, "delta")->capture_default_str()->check(CLI::Range(1e-300, 0.999999));
  eps->callback([ea] {
    const double q = std::min(1.0, static_cast<double>(ea->batch_size) / static_cast<double>(ea->rows));
    const int64_t steps = ea->rounds * privacy::steps_per_round(ea->epochs, ea->steps, ea->batch_size, ea->rows);
    const privacy::Epsilon e = privacy::dp_sgd_epsilon(q, ea->sigma, steps, ea->delta);
    std::printf("epsilon %s at delta %g (order %g): %lld steps at sampling rate %s, noise multiplier %g\n",
                num(e.epsilon).c_str(), ea->delta, e.order, static_cast<long long>(steps), num(q, 5).c_str(), ea->sigma);
  });
}

}  // namespace fedpod::cli
