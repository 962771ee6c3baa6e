// pod.yaml's transport settings: max_message_bytes, transport_memory,
// receiving_process and transport_shared_memory (worker/gate.h), their defaults and
// their errors.
#include <gtest/gtest.h>

#include <string>

#include "fedpod/common/signing.h"
#include "fedpod/worker/config.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

class PodConfigTest : public ::testing::Test {
 protected:
  PodConfig parse(const std::string& extra) {
    return parse_pod_config(base() + extra, "pod.yaml", dir_.path().string());
  }
  std::string error(const std::string& extra) {
    return testing::config_error([&] { parse(extra); });
  }
  std::string base() const {
    return "name: pod-a\nlisten: tcp://127.0.0.1:0\ndataset: {path: pod.csv}\nkey_file: pod.key\n"
           "policy: {file: policy.signed.json, signing_key: \"" +
           signing_.public_key + "\"}\n";
  }
  testing::TempDir dir_;
  SigningKeyPair signing_ = generate_signing_keypair();
};

TEST_F(PodConfigTest, MessageBoundsDefaultToTheFrameLimitAndTwoMessagesOfMemory) {
  const PodConfig d = parse("");
  EXPECT_EQ(d.max_message_bytes, d.max_frame_bytes);
  EXPECT_EQ(d.transport_memory, 2 * d.max_message_bytes + 256 * kMiB);
  EXPECT_TRUE(d.receiving_process);

  const PodConfig small = parse("max_frame_bytes: 1048576\n");
  EXPECT_EQ(small.max_message_bytes, 1048576);
  EXPECT_EQ(small.transport_memory, 2 * 1048576 + 256 * kMiB);

  const PodConfig set = parse("max_message_bytes: 64MiB\ntransport_memory: 1GiB\nreceiving_process: false\n");
  EXPECT_EQ(set.max_message_bytes, 64 * kMiB);
  EXPECT_EQ(set.transport_memory, 1024 * kMiB);
  EXPECT_FALSE(set.receiving_process);
}

TEST_F(PodConfigTest, BadMessageBoundsNameTheKey) {
  EXPECT_EQ(error("max_message_bytes: lots\n"),
            "pod.yaml: max_message_bytes: expected a size such as 8GiB or 512MiB, got \"lots\"");
  EXPECT_EQ(error("max_message_bytes: 64MiB\ntransport_memory: 100MiB\n"),
            "pod.yaml: transport_memory: must be at least max_message_bytes + 64MiB (134217728 bytes): the "
            "receiving process holds one whole message");
  EXPECT_EQ(error("receiving_process: maybe\n"), "pod.yaml: receiving_process: expected true or false, got \"maybe\"");
}

TEST_F(PodConfigTest, SharedRingsBetweenReceivingProcessAndWorker) {
  EXPECT_EQ(parse("").transport_shared_memory, 256 * kMiB);
  EXPECT_EQ(parse("transport_shared_memory: 0\n").transport_shared_memory, 0);
  EXPECT_EQ(parse("transport_shared_memory: 1GiB\n").transport_shared_memory, 1024 * kMiB);
  EXPECT_EQ(error("transport_shared_memory: 100KiB\n"),
            "pod.yaml: transport_shared_memory: must be 0 (none) or at least 1MiB, got \"100KiB\"");
  EXPECT_EQ(error("transport_shared_memory: -5\n"),
            "pod.yaml: transport_shared_memory: expected a size such as 8GiB or 512MiB, got \"-5\"");
}

// secure_aggregation: the pod owner's demand on how updates are aggregated.
TEST_F(PodConfigTest, SecureAggregationDemand) {
  EXPECT_FALSE(parse("").secure_aggregation.required);
  EXPECT_TRUE(parse("secure_aggregation: required\n").secure_aggregation.required);
  EXPECT_FALSE(parse("secure_aggregation: optional\n").secure_aggregation.required);
  const PodConfig m = parse("secure_aggregation: {required: true, min_threshold: 4}\n");
  EXPECT_TRUE(m.secure_aggregation.required);
  EXPECT_EQ(m.secure_aggregation.min_threshold, 4u);
  EXPECT_EQ(error("secure_aggregation: always\n"),
            "pod.yaml: secure_aggregation: expected required or optional (or a map {required, min_threshold}), got "
            "\"always\"");
  EXPECT_EQ(error("secure_aggregation: {min_threshold: 1}\n"),
            "pod.yaml: secure_aggregation.min_threshold: must be at least 2 (the protocol's own minimum)");
  EXPECT_NE(error("secure_aggregation: {threshold: 3}\n").find("threshold"), std::string::npos);
}

// privacy: the pod owner's limits on what a job may ask of the data.
TEST_F(PodConfigTest, PrivacyLimitsAndBudget) {
  const PodConfig none = parse("");
  EXPECT_EQ(none.privacy.min_batch_size, 0);
  EXPECT_FALSE(none.privacy.dp_required);
  const PodConfig p = parse(
      "privacy:\n  min_batch_size: 16\n  min_samples_per_update: 500\n  max_local_steps: 40\n"
      "  differential_privacy: {epsilon: 3, delta: 1e-6, min_noise_multiplier: 0.8}\n");
  EXPECT_EQ(p.privacy.min_batch_size, 16);
  EXPECT_EQ(p.privacy.min_samples_per_update, 500);
  EXPECT_EQ(p.privacy.max_local_steps, 40);
  EXPECT_TRUE(p.privacy.dp_required);
  EXPECT_EQ(p.privacy.epsilon_cap, 3);
  EXPECT_EQ(p.privacy.delta, 1e-6);
  EXPECT_EQ(p.privacy.min_noise_multiplier, 0.8);
  EXPECT_NE(p.privacy.ledger.find("state/pod-a.privacy.json"), std::string::npos) << p.privacy.ledger;
  EXPECT_EQ(error("privacy: {min_batch_size: 0}\n"), "pod.yaml: privacy.min_batch_size: must be at least 1, got 0");
  EXPECT_NE(error("privacy: {min_batch: 4}\n").find("min_batch"), std::string::npos);
  EXPECT_EQ(error("privacy: {differential_privacy: {delta: 1e-5}}\n"),
            "pod.yaml: privacy.differential_privacy.epsilon: required: the ε this dataset may spend over all jobs (e.g. 3)");
  EXPECT_NE(error("privacy: {differential_privacy: {epsilon: -1}}\n").find("positive"), std::string::npos);
  EXPECT_NE(error("privacy: {differential_privacy: {epsilon: 3, delta: 2}}\n").find("(0, 1)"), std::string::npos);
  EXPECT_NE(error("privacy: strict\n").find("expected a map"), std::string::npos);
}

}  // namespace
}  // namespace fedpod::worker

namespace fedpod::worker {
namespace {

// tensor_listen's default: listen's address on any free port (never a fixed port+1,
// which would be the next pod's listen port); off for a non-tcp endpoint.
TEST(TensorListenDefault, SameAddressAnyFreePort) {
  EXPECT_EQ(default_tensor_listen("tcp://0.0.0.0:5555"), "tcp://0.0.0.0:*");
  EXPECT_EQ(default_tensor_listen("tcp://127.0.0.1:*"), "tcp://127.0.0.1:*");
  EXPECT_EQ(default_tensor_listen("ipc:///tmp/pod"), "");
  EXPECT_EQ(default_tensor_listen("tcp://nohost"), "");
}

}  // namespace
}  // namespace fedpod::worker
