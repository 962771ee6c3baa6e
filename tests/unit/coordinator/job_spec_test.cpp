// Tests for fedpod/coordinator/job_spec.h: job.yaml from text (parse_job_spec) as
// from a file (load_job_spec), and the hostile job files of
// tests/fuzz/regressions/job_spec/ (docs/fuzzing.md), each now a ConfigError that
// names the file and what is wrong, instead of a crash or a foreign exception.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "fedpod/coordinator/job_spec.h"
#include "fedpod/protocol/curve.h"
#include "testutil.h"

namespace fedpod::coordinator {
namespace {

const char* kMinimalJob =
    "model: {ref: mlp}\n"
    "datastructure: {target: label, num_classes: 10, input_shape: [1, 8, 8]}\n"
    "key_file: keys/modeller.key\n"
    "pods: [{name: pod-a, address: 'tcp://127.0.0.1:5555'}]\n";

class JobSpecTest : public ::testing::Test {
 protected:
  // The environment must not fill in what the file leaves out.
  void SetUp() override {
    for (const char* v : {"FEDPOD_HUB", "FEDPOD_TOKEN", "FEDPOD_KEY_FILE"}) ::unsetenv(v);
  }
  static std::string regression(const std::string& name) {
    return testing::source_dir() + "/tests/fuzz/regressions/job_spec/" + name;
  }
  testing::TempDir dir_;
};

TEST_F(JobSpecTest, ParseFromTextMatchesLoadFromFile) {
  const std::string path = dir_.write("job.yaml", kMinimalJob);
  JobSpec from_file = load_job_spec(path);
  JobSpec from_text = parse_job_spec(kMinimalJob, path, dir_.path().string());
  EXPECT_EQ(from_text.model.ref, "mlp");
  EXPECT_EQ(from_text.datastructure.input_shape, (std::vector<int64_t>{1, 8, 8}));
  // Relative paths resolve against base_dir, as against the file's folder.
  EXPECT_EQ(from_text.key_file, (dir_.path() / "keys/modeller.key").lexically_normal().string());
  EXPECT_EQ(from_text.key_file, from_file.key_file);
  EXPECT_EQ(testing::config_error([] {
              parse_job_spec("rounds: [", "inline job", "/");
            }).rfind("inline job: ", 0),
            0u);
}

// hyperparameters-not-utf8.yaml: "hyperparameters: \xDF". Building the "must be a
// mapping" message called json::dump(), which threw nlohmann's type_error 316.
TEST_F(JobSpecTest, RegressionHyperparametersThatAreNotUtf8) {
  const std::string path = regression("hyperparameters-not-utf8.yaml");
  EXPECT_EQ(testing::config_error([&] { load_job_spec(path); }),
            path + ": model.hyperparameters must be UTF-8 text, got \"\xEF\xBF\xBD\"");
}

// complex-key.yaml: the k8s job.yaml with "? - pod-a" (a list as a key) on line 23;
// check_keys let yaml-cpp's TypedBadConversion escape.
TEST_F(JobSpecTest, RegressionKeyThatIsAList) {
  const std::string path = regression("complex-key.yaml");
  EXPECT_EQ(testing::config_error([&] { load_job_spec(path); }),
            path + ": a key must be a name, not a list (line 23)");
}

// alias-cycle.yaml: "hyperparameters: &a {x: *a}" is a node containing itself;
// yaml_to_json recursed until the stack overflowed.
TEST_F(JobSpecTest, RegressionAliasCycle) {
  const std::string path = regression("alias-cycle.yaml");
  EXPECT_EQ(testing::config_error([&] { load_job_spec(path); }),
            path + ": nested more than 64 levels deep (an alias inside its own anchor?)");
}

// alias-expansion.yaml: 503 bytes of aliases of aliases, 10^9 values expanded;
// yaml_to_json never finished.
TEST_F(JobSpecTest, RegressionAliasExpansion) {
  const std::string path = regression("alias-expansion.yaml");
  EXPECT_EQ(testing::config_error([&] { load_job_spec(path); }),
            path + ": more than 100000 values once aliases are expanded (aliases of aliases?)");
}

// public-key-file-directory.yaml: pod-b's "public_key_file: !logal/keys/pod-b.pub" is
// a tag with an empty value, so the path is the job's own folder; reading a folder as a
// key file threw std::ios_base::failure out of yaml-cpp and load_job_spec.
TEST_F(JobSpecTest, RegressionPublicKeyFileThatIsADirectory) {
  // The folder the fuzz target gives it: pod-a's and pod-c's keys exist.
  std::filesystem::create_directories(dir_.path() / "local/keys");
  for (const char* pod : {"pod-a", "pod-c"}) {
    ASSERT_TRUE(protocol::write_key_files((dir_.path() / "local/keys" / pod).string(),
                                          protocol::generate_curve_keypair(), false)
                    .ok());
  }
  const std::string text = testing::read_file(regression("public-key-file-directory.yaml"));
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(testing::config_error([&] { parse_job_spec(text, "job.yaml", dir_.path().string()); }),
            "job.yaml: pods: 'pod-b': public_key_file: key file " + (dir_.path() / "").string() +
                ": is a directory");
}

}  // namespace
}  // namespace fedpod::coordinator
