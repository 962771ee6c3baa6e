#include "bench_pod.h"

#include <chrono>
#include <fstream>
#include <stdexcept>
#include <vector>

#include "fedpod/common/signing.h"
#include "fedpod/worker/policy.h"

namespace fedpod::bench {

BenchPod start_bench_pod(const std::string& fedpod_bin, const std::filesystem::path& dir, const std::string& name,
                         const std::string& dataset_path, int threads, const protocol::CurveKeyPair& modeller,
                         const std::string& log_level) {
  BenchPod pod;
  pod.name = name;
  const auto keys = protocol::generate_curve_keypair();
  pod.public_key = keys.public_key;
  Status st = protocol::write_key_files((dir / name).string(), keys, true);
  if (!st.ok()) throw std::runtime_error(st.to_string());
  std::ofstream(dir / (name + ".policy.yaml"))
      << "pod: " << name << "\nusers:\n  - {username: bench, public_key: \"" << modeller.public_key
      << "\"}\nroles:\n  - {username: bench, role: general-modeller}\ngrants: []\n";
  // Signed by a bench owner's key, which the pod pins (docs/permissions.md).
  const auto owner = generate_signing_keypair();
  auto parsed = worker::load_policy_file((dir / (name + ".policy.yaml")).string());
  if (!parsed.ok()) throw std::runtime_error(parsed.status().to_string());
  std::ofstream(dir / (name + ".policy.signed.json")) << worker::sign_policy(*parsed, owner, std::chrono::hours(24));
  const std::filesystem::path config = dir / (name + ".yaml");
  std::ofstream(config) << "name: " << name << "\nlisten: tcp://127.0.0.1:*\ndataset:\n  path: " << dataset_path
                        << "\nthreads: " << threads << "\nkey_file: " << (dir / name).string()
                        << ".key\npolicy: {file: " << (dir / (name + ".policy.signed.json")).string()
                        << ", signing_key: \"" << owner.public_key
                        << "\"}\naudit_log: " << (dir / (name + ".audit.log")).string() << "\n";
  const std::string endpoint_file = (dir / (name + ".endpoint")).string();
  pod.process = std::make_unique<Process>(
      std::vector<std::string>{fedpod_bin, "worker", "--config", config.string(), "--endpoint-file", endpoint_file,
                               "--log-level", log_level},
      (dir / (name + ".log")).string());
  pod.endpoint = wait_for_word(endpoint_file, std::chrono::seconds(60), pod.process.get());
  if (pod.endpoint.empty()) {
    throw std::runtime_error(name + " did not start; see " + (dir / (name + ".log")).string());
  }
  return pod;
}

}  // namespace fedpod::bench
