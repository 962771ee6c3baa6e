// Identities for tests: CURVE key pairs for one modeller and any number of pods, an
// owner's Ed25519 signing key, and air-gapped policy files (worker/policy.h format,
// signed with that key) that give the modeller a role.
//
//   testing::TestIdentity id(dir_.path());          // modeller "tester"
//   worker::PodConfig c = ...; id.secure(c);         // pod key, policy file, audit log
//   std::string yaml = base + id.pod_yaml("pod-a");  // the same for a pod.yaml
//   spec.key_file = id.modeller_key_file;            // the coordinator's side
//   spec.pods.push_back({"pod-a", endpoint, id.pod_public_key("pod-a")});
//
// Header-only: tests that use it link fedpod::worker (policies are parsed and signed).
#pragma once

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <regex>
#include <string>

#include "fedpod/common/signing.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/policy.h"
#include "testutil.h"

namespace fedpod::testing {

class TestIdentity {
 public:
  explicit TestIdentity(std::filesystem::path dir, std::string user = "tester")
      : dir_(std::move(dir)), user_(std::move(user)) {
    std::filesystem::create_directories(dir_ / "keys");
    modeller = protocol::generate_curve_keypair();
    owner_signing = generate_signing_keypair();
    modeller_key_file = (dir_ / "keys" / (user_ + ".key")).string();
    check(protocol::write_key_files((dir_ / "keys" / user_).string(), modeller, true));
  }

  const std::string& user() const { return user_; }

  // The pod's key pair, created on first use.
  const protocol::CurveKeyPair& pod_keys(const std::string& pod) {
    auto it = pods_.find(pod);
    if (it == pods_.end()) {
      it = pods_.emplace(pod, protocol::generate_curve_keypair()).first;
      check(protocol::write_key_files((dir_ / "keys" / pod).string(), it->second, true));
    }
    return it->second;
  }
  std::string pod_public_key(const std::string& pod) { return pod_keys(pod).public_key; }
  std::string pod_key_file(const std::string& pod) {
    pod_keys(pod);
    return (dir_ / "keys" / (pod + ".key")).string();
  }

  // Writes the pod's policy: the modeller with `role` ("" = registered, no role), plus
  // `extra` YAML appended verbatim (e.g. a grants: list), as <pod>.policy.yaml and
  // signed with owner_signing as <pod>.policy.signed.json (valid for `ttl`). Returns
  // the signed file's path.
  std::string write_policy(const std::string& pod, const std::string& role, const std::string& extra = "",
                           std::chrono::seconds ttl = std::chrono::hours(24)) {
    std::string y = "pod: " + pod + "\nusers:\n  - {username: " + user_ + ", public_key: \"" + modeller.public_key +
                    "\"}\nroles:\n";
    if (!role.empty()) y += "  - {username: " + user_ + ", role: " + role + "}\n";
    else y += "  []\n";
    y += extra.empty() ? "grants: []\n" : extra;
    const std::string path = (dir_ / (pod + ".policy.yaml")).string();
    std::ofstream(path) << y;
    return sign_policy_file(path, ttl);
  }

  // Signs a policy file (YAML or JSON) as `fedpod policy sign` does, with a version
  // above every earlier one; returns the signed file's path (<base>.signed.json).
  std::string sign_policy_file(const std::string& path, std::chrono::seconds ttl = std::chrono::hours(24)) {
    auto p = worker::load_policy_file(path);
    if (!p.ok()) throw std::runtime_error(p.status().to_string());
    const std::string text = worker::sign_policy(*p, owner_signing, ttl, last_version_ + 1);
    last_version_ = nlohmann::json::parse(nlohmann::json::parse(text)["payload"].get<std::string>())["version"];
    const std::string out = path.substr(0, path.rfind('.')) + ".signed.json";
    std::ofstream(out) << text;
    return out;
  }

  // pod.yaml lines: key_file, an air-gapped policy giving the modeller `role`, audit log.
  std::string pod_yaml(const std::string& pod, const std::string& role = "super-modeller") {
    return "key_file: " + pod_key_file(pod) + "\npolicy: {file: " + write_policy(pod, role) +
           ", signing_key: \"" + owner_signing.public_key + "\"}\naudit_log: " + audit_log(pod) + "\n";
  }
  std::string audit_log(const std::string& pod) const { return (dir_ / (pod + ".audit.log")).string(); }

  // The same for a PodConfig built in code.
  template <typename PodConfig>
  void secure(PodConfig& c, const std::string& role = "super-modeller") {
    c.key_file = pod_key_file(c.name);
    c.policy.file = write_policy(c.name, role);
    c.policy.signing_key = owner_signing.public_key;
    c.audit_log = audit_log(c.name);
  }

  // DEALER options that authenticate as the modeller to `pod`.
  protocol::SocketOptions client_options(const std::string& pod) {
    protocol::SocketOptions o;
    o.curve_client_public = modeller.public_key;
    o.curve_client_secret = modeller.secret_key;
    o.curve_server_public = pod_public_key(pod);
    return o;
  }

  protocol::CurveKeyPair modeller;
  std::string modeller_key_file;
  SigningKeyPair owner_signing;  // the pods' owner: signs their policy files

 private:
  static void check(const Status& st) {
    if (!st.ok()) throw std::runtime_error(st.to_string());
  }

  std::filesystem::path dir_;
  std::string user_;
  std::map<std::string, protocol::CurveKeyPair> pods_;
  int64_t last_version_ = 0;
};

// A `fedpod worker` process serving one of the digits shares (examples/digits/NAME.csv)
// with `id`'s identities: the modeller has `role` on it. `extra_yaml` is appended to
// its pod.yaml (devices:, metrics_listen:, custom_models: ...). Its config, endpoint
// file and log (`log_name`, default NAME.log) live in `dir`. `host` places it: a
// command prefix (e.g. NetNs::exec_prefix() for a network namespace) and the address
// it listens on; with host.wait false it returns at once (start several pods, then
// wait_for_endpoint() on each).
struct PodProcess {
  std::string name;
  std::string endpoint;    // empty when the worker did not start; `log` says why
  std::string public_key;  // its CURVE server key, for the job's pods list
  std::string log;
  std::string endpoint_file;  // where the worker writes its bound endpoint
  std::unique_ptr<Process> process;
};

struct PodHost {
  std::vector<std::string> exec_prefix;  // argv put before `fedpod worker ...`
  std::string listen_host = "127.0.0.1";
  bool wait = true;  // wait for the endpoint before returning
};

// The pid of `pod`'s receiving process (worker/gate.h), from its log: the one it
// started with, or the latest that replaced it; -1 when the log names none.
inline pid_t receiving_process_pid(const PodProcess& pod) {
  const std::string log = read_file(pod.log);
  const std::regex started(R"(event=transport pod=\S+ receiving_process=(\d+))");
  const std::regex restarted(R"(event=transport_restarted .* pid=(\d+))");
  pid_t pid = -1;
  for (const auto* re : {&started, &restarted}) {
    for (auto it = std::sregex_iterator(log.begin(), log.end(), *re); it != std::sregex_iterator(); ++it) {
      pid = static_cast<pid_t>(std::stol((*it)[1]));
    }
  }
  return pid;
}

// Waits (up to 60 s, or until the worker exits) for the endpoint a pod started with
// host.wait false writes; pod.endpoint stays empty when it does not.
inline void wait_for_endpoint(PodProcess& pod) {
  pod.endpoint = wait_for_word(pod.endpoint_file, std::chrono::seconds(60), pod.process.get());
}

// A `fedpod worker` named `name` serving the CSV file `csv`, as start_digits_pod
// below; `dataset_yaml` is put under `dataset:` (lines indented by two spaces, e.g.
// "  schema:\n    - {name: label, type: categorical}\n").
inline PodProcess start_csv_pod(const TempDir& dir, TestIdentity& id, const std::string& name, const std::string& csv,
                                const std::string& role = "general-modeller", const std::string& extra_yaml = "",
                                const std::string& log_name = "", const PodHost& host = {},
                                const std::string& dataset_yaml = "") {
  PodProcess pod;
  pod.name = name;
  pod.public_key = id.pod_public_key(name);
  const std::string config =
      dir.write(name + ".yaml", "name: " + name + "\nlisten: tcp://" + host.listen_host + ":*\ndataset:\n  path: " +
                                    csv + "\n" + dataset_yaml + "threads: 1\n" +
                                    id.pod_yaml(name, role) + extra_yaml);
  pod.endpoint_file = (dir.path() / (name + ".endpoint")).string();
  std::filesystem::remove(pod.endpoint_file);
  pod.log = (dir.path() / (log_name.empty() ? name + ".log" : log_name)).string();
  std::vector<std::string> argv = host.exec_prefix;
  argv.insert(argv.end(), {fedpod_bin(), "worker", "--config", config, "--endpoint-file", pod.endpoint_file});
  pod.process = std::make_unique<Process>(argv, pod.log);
  if (host.wait) wait_for_endpoint(pod);
  return pod;
}

inline PodProcess start_digits_pod(const TempDir& dir, TestIdentity& id, const std::string& name,
                                   const std::string& role = "general-modeller", const std::string& extra_yaml = "",
                                   const std::string& log_name = "", const PodHost& host = {}) {
  return start_csv_pod(dir, id, name, source_dir() + "/examples/digits/" + name + ".csv", role, extra_yaml, log_name,
                       host);
}

}  // namespace fedpod::testing
