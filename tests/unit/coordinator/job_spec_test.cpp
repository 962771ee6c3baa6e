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

// update_precision: float32 by default; bfloat16 on request; anything else named.
TEST_F(JobSpecTest, UpdatePrecision) {
  EXPECT_EQ(parse_job_spec(kMinimalJob, "job.yaml", "/").update_precision, "float32");
  EXPECT_EQ(parse_job_spec(std::string(kMinimalJob) + "update_precision: bfloat16\n", "job.yaml", "/").update_precision,
            "bfloat16");
  const std::string e = testing::config_error(
      [] { parse_job_spec(std::string(kMinimalJob) + "update_precision: float16\n", "job.yaml", "/"); });
  EXPECT_NE(e.find("update_precision: 'float16' is not float32 or bfloat16"), std::string::npos) << e;
}

// broadcast_precision: the same choices for the parameters sent to the pods.
TEST_F(JobSpecTest, BroadcastPrecision) {
  EXPECT_EQ(parse_job_spec(kMinimalJob, "job.yaml", "/").broadcast_precision, "float32");
  EXPECT_EQ(parse_job_spec(std::string(kMinimalJob) + "broadcast_precision: bfloat16\n", "job.yaml", "/").broadcast_precision,
            "bfloat16");
  const std::string e = testing::config_error(
      [] { parse_job_spec(std::string(kMinimalJob) + "broadcast_precision: half\n", "job.yaml", "/"); });
  EXPECT_NE(e.find("broadcast_precision: 'half' is not float32 or bfloat16"), std::string::npos) << e;
}

// secure_aggregation: true, or a map of its settings; what cannot work is refused.
// differential_privacy: DP-SGD's noise multiplier and clipping norm, both positive.
TEST_F(JobSpecTest, DifferentialPrivacySettings) {
  const std::string base = "model: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\n"
                           "key_file: keys/modeller.key\npods: [{name: a, address: 'tcp://127.0.0.1:1'}]\n";
  EXPECT_EQ(parse_job_spec(base, "job.yaml", "/").differential_privacy.noise_multiplier, 0);
  const JobSpec on = parse_job_spec(base + "differential_privacy: {noise_multiplier: 1.1, max_grad_norm: 0.5}\n",
                                    "job.yaml", "/");
  EXPECT_EQ(on.differential_privacy.noise_multiplier, 1.1);
  EXPECT_EQ(on.differential_privacy.max_grad_norm, 0.5);
  EXPECT_EQ(parse_job_spec(base + "differential_privacy: {noise_multiplier: 2}\n", "job.yaml", "/")
                .differential_privacy.max_grad_norm,
            1.0);
  auto error = [&](const std::string& extra) {
    return testing::config_error([&] { parse_job_spec(base + extra, "job.yaml", "/"); });
  };
  EXPECT_EQ(error("differential_privacy: {max_grad_norm: 1}\n"),
            "job.yaml: differential_privacy.noise_multiplier: required (e.g. 1.1)");
  EXPECT_NE(error("differential_privacy: {noise_multiplier: 0}\n").find("positive"), std::string::npos);
  EXPECT_NE(error("differential_privacy: {noise_multiplier: 1, max_grad_norm: -1}\n").find("max_grad_norm"),
            std::string::npos);
  EXPECT_NE(error("differential_privacy: {noise_multiplier: 1, epsilon: 3}\n").find("epsilon"), std::string::npos);
  EXPECT_NE(error("differential_privacy: true\n").find("expected a map"), std::string::npos);
}

TEST_F(JobSpecTest, SecureAggregationSettings) {
  const std::string three = "model: {ref: mlp}\ndatastructure: {target: label, num_classes: 10}\n"
                            "key_file: keys/modeller.key\npods: [{name: a, address: 'tcp://127.0.0.1:1'}, "
                            "{name: b, address: 'tcp://127.0.0.1:2'}, {name: c, address: 'tcp://127.0.0.1:3'}]\n";
  EXPECT_FALSE(parse_job_spec(three, "job.yaml", "/").secure_aggregation.enabled);
  const JobSpec on = parse_job_spec(three + "secure_aggregation: true\n", "job.yaml", "/");
  EXPECT_TRUE(on.secure_aggregation.enabled);
  EXPECT_EQ(on.secure_aggregation.threshold, 0u);  // resolved from the pod count when the job starts
  EXPECT_EQ(on.secure_aggregation.modulus_bits, 0u);
  const JobSpec set = parse_job_spec(
      three + "secure_aggregation: {threshold: 2, neighbours: 2, clip: 0.5, modulus_bits: 64}\n", "job.yaml", "/");
  EXPECT_TRUE(set.secure_aggregation.enabled);
  EXPECT_EQ(set.secure_aggregation.threshold, 2u);
  EXPECT_EQ(set.secure_aggregation.neighbours, 2u);
  EXPECT_DOUBLE_EQ(set.secure_aggregation.clip, 0.5);
  EXPECT_EQ(set.secure_aggregation.modulus_bits, 64u);
  auto error = [&](const std::string& extra, const std::string& base) {
    return testing::config_error([&] { parse_job_spec(base + extra, "job.yaml", "/"); });
  };
  EXPECT_CONTAINS(error("secure_aggregation: true\n", kMinimalJob), "secure_aggregation: needs at least 3 pods");
  EXPECT_CONTAINS(error("secure_aggregation: true\nupdate_precision: bfloat16\n", three),
                  "update_precision bfloat16 does not apply");
  EXPECT_CONTAINS(error("secure_aggregation: true\nbroadcast_precision: bfloat16\n", three),
                  "broadcast_precision bfloat16 does not apply");
  EXPECT_CONTAINS(error("secure_aggregation: {threshold: 9}\n", three),
                  "secure_aggregation.threshold: must be between 2 and the number of pods (3)");
  EXPECT_CONTAINS(error("secure_aggregation: {clip: -1}\n", three), "secure_aggregation.clip: must be a positive number");
  EXPECT_CONTAINS(error("secure_aggregation: {modulus_bits: 16}\n", three),
                  "secure_aggregation.modulus_bits: '16' is not 32, 64 or auto");
  EXPECT_CONTAINS(error("secure_aggregation: {treshold: 3}\n", three), "treshold");
}

// sandbox: how the coordinator's runner confines a custom model while it is built.
TEST_F(JobSpecTest, SandboxSettingsForTheCoordinatorsRunner) {
  JobSpec d = parse_job_spec(kMinimalJob, "job.yaml", "/");
  EXPECT_FALSE(d.sandbox.required);
  EXPECT_TRUE(d.runner_command.empty());  // set by `fedpod coordinator run`, never by the file
  JobSpec s = parse_job_spec(std::string(kMinimalJob) + "sandbox: {level: required, memory: 3GiB, load_timeout: 20s}\n",
                             "job.yaml", "/");
  EXPECT_TRUE(s.sandbox.required);
  EXPECT_EQ(s.sandbox.limits.memory_bytes, int64_t{3} << 30);
  EXPECT_EQ(s.sandbox.limits.load_timeout, std::chrono::seconds(20));
  EXPECT_TRUE(parse_job_spec(std::string(kMinimalJob) + "sandbox: required\n", "job.yaml", "/").sandbox.required);
  EXPECT_CONTAINS(testing::config_error([] {
                    parse_job_spec(std::string(kMinimalJob) + "sandbox: strict\n", "job.yaml", "/");
                  }),
                  "job.yaml: sandbox: expected auto or required, got \"strict\"");
  EXPECT_CONTAINS(testing::config_error([] {
                    parse_job_spec(std::string(kMinimalJob) + "sandbox: {memory: 10MiB}\n", "job.yaml", "/");
                  }),
                  "job.yaml: sandbox.memory: must be at least 256MiB");
  EXPECT_CONTAINS(testing::config_error([] {
                    parse_job_spec(std::string(kMinimalJob) + "sandbox: {levle: auto}\n", "job.yaml", "/");
                  }),
                  "levle");
}

TEST_F(JobSpecTest, CategoriesSetNumClassesAndAreChecked) {
  auto job = [](const std::string& ds) {
    return std::string("model: {ref: mlp}\ndatastructure: ") + ds +
           "\nkey_file: k.key\npods: [{name: pod-a, address: 'tcp://127.0.0.1:5555'}]\n";
  };
  JobSpec s = parse_job_spec(job("{target: label, categories: {label: [dog, cat, bird]}}"), "job.yaml", "/");
  EXPECT_EQ(s.datastructure.num_classes, 3);  // from the list
  EXPECT_EQ(s.datastructure.categories.at("label"), (std::vector<std::string>{"dog", "cat", "bird"}));
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{target: label, num_classes: 4, categories: {label: [dog, cat, bird]}}"),
                             "job.yaml", "/");
            }),
            "job.yaml: datastructure.num_classes: 4, but datastructure.categories.label lists 3 categories; they "
            "must agree (or leave num_classes out)");
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{target: label, categories: {label: [dog, cat, dog]}}"), "job.yaml", "/");
            }),
            "job.yaml: datastructure.categories.label: 'dog' is listed twice");
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{target: label, num_classes: 2, categories: {city: []}}"), "job.yaml", "/");
            }),
            "job.yaml: datastructure.categories.city: list at least one category");
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{target: label, num_classes: 2, categories: [a, b]}"), "job.yaml", "/");
            }),
            "job.yaml: datastructure.categories: must map a column to its categories, e.g. {label: [cat, dog]}");
  EXPECT_EQ(testing::config_error([&] { parse_job_spec(job("{target: label}"), "job.yaml", "/"); }),
            "job.yaml: datastructure.num_classes: required, at least 2 (or list the target's categories in "
            "datastructure.categories.label)");
}

// A built-in model's hyperparameters are checked when job.yaml is read (exit 2),
// before anything is contacted.
// YAML's .nan and .inf are numbers to yaml-cpp. NaN passes a range check written as
// `x < 0 || x > 1` (split fractions of NaN then made row counts out of NaN), so every
// number of job.yaml must be finite.
TEST_F(JobSpecTest, NaNAndInfinityAreRefusedWhereverANumberIsRead) {
  const std::string base = kMinimalJob;
  auto error = [&](const std::string& extra) {
    return testing::config_error([&] { parse_job_spec(base + extra, "job.yaml", "/"); });
  };
  const std::string job = "model: {ref: mlp}\nkey_file: keys/modeller.key\n"
                          "pods: [{name: pod-a, address: 'tcp://127.0.0.1:5555'}]\n";
  auto split_error = [&](const std::string& split) {
    return testing::config_error([&] {
      parse_job_spec(job + "datastructure: {target: label, num_classes: 10, split: " + split + "}\n", "job.yaml", "/");
    });
  };
  EXPECT_EQ(split_error("{validation: .nan}"),
            "job.yaml: datastructure.split.validation: must be a finite number (value: .nan)");
  EXPECT_EQ(split_error("{validation: 0.1, test: .NaN}"),
            "job.yaml: datastructure.split.test: must be a finite number (value: .NaN)");
  EXPECT_EQ(split_error("{test: -.inf}"), "job.yaml: datastructure.split.test: must be a finite number (value: -.inf)");
  EXPECT_EQ(error("sample: {fraction: .nan}\n"), "job.yaml: sample.fraction: must be a finite number (value: .nan)");
  EXPECT_EQ(error("strategy: {name: fedprox, mu: .inf}\n"), "job.yaml: strategy.mu: must be a finite number (value: .inf)");
  // Finite numbers still read.
  EXPECT_DOUBLE_EQ(parse_job_spec(job + "datastructure: {target: label, num_classes: 10, split: {validation: 0.25}}\n",
                                  "job.yaml", "/")
                       .datastructure.split.validation,
                   0.25);
}

TEST_F(JobSpecTest, BuiltinModelHyperparametersAreChecked) {
  auto job = [](const std::string& model) {
    return "model: " + model + "\ndatastructure: {target: label, num_classes: 10}\nkey_file: k.key\n" +
           "pods: [{name: pod-a, address: 'tcp://127.0.0.1:5555'}]\n";
  };
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{ref: mlp, hyperparameters: {optimiser: sgd, lr: fast}}"), "job.yaml", "/");
            }),
            "job.yaml: model.hyperparameters: model mlp: hyperparameter 'lr' must be a number, got \"fast\"; unknown "
            "hyperparameter 'optimiser' (did you mean 'optimizer'?); accepted: batch_norm, batch_size, dropout, "
            "hidden, lr, momentum, optimizer, weight_decay");
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{ref: cnn, hyperparameters: {optimizer: adagrad}}"), "job.yaml", "/");
            }),
            "job.yaml: model.hyperparameters: model cnn: hyperparameter 'optimizer' must be one of sgd, adam, "
            "adamw, got \"adagrad\"; accepted: batch_norm, batch_size, channels, hidden, lr, momentum, optimizer, "
            "weight_decay");
  // logreg has only the common ones; a far-off name gets no suggestion.
  EXPECT_EQ(testing::config_error([&] {
              parse_job_spec(job("{ref: logreg, hyperparameters: {hidden: [8]}}"), "job.yaml", "/");
            }),
            "job.yaml: model.hyperparameters: model logreg: unknown hyperparameter 'hidden'; accepted: batch_size, "
            "lr, momentum, optimizer, weight_decay");
  JobSpec ok = parse_job_spec(job("{ref: mlp, hyperparameters: {hidden: [8, 4], lr: 1, batch_norm: true}}"),
                              "job.yaml", "/");
  EXPECT_EQ(ok.model.hyperparameters.integers("hidden", {}), (std::vector<int64_t>{8, 4}));
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
