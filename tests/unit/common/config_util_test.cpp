// Tests for fedpod/common/config_util.h: durations, key checks, YAML -> JSON and
// typed hyperparameter access. Error paths are checked by their message.
#include "fedpod/common/config_util.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <functional>
#include <string>

#include "fedpod/common/names.h"
#include "testutil.h"

namespace fedpod {
namespace {

using std::chrono::milliseconds;

// ---- parse_duration ------------------------------------------------------------------

TEST(ParseDurationTest, AcceptsUnitsAndPlainSeconds) {
  EXPECT_EQ(parse_duration("30s", "t"), milliseconds(30'000));
  EXPECT_EQ(parse_duration("500ms", "t"), milliseconds(500));
  EXPECT_EQ(parse_duration("2m", "t"), milliseconds(120'000));
  EXPECT_EQ(parse_duration("2min", "t"), milliseconds(120'000));
  EXPECT_EQ(parse_duration("1h", "t"), milliseconds(3'600'000));
  EXPECT_EQ(parse_duration("1.5", "t"), milliseconds(1'500));
  EXPECT_EQ(parse_duration("0.25s", "t"), milliseconds(250));
  EXPECT_EQ(parse_duration("0", "t"), milliseconds(0));
}

TEST(ParseDurationTest, RejectsGarbageNamingTheSetting) {
  for (const char* bad : {"abc", "-1s", "5x", "", "s", "nan", "inf", "10 s", "1e400s"}) {
    SCOPED_TRACE(bad);
    std::string msg = testing::config_error([&] { parse_duration(bad, "job.yaml: round_timeout"); });
    EXPECT_CONTAINS(msg, "job.yaml: round_timeout");
    EXPECT_CONTAINS(msg, "expected a duration");
    EXPECT_CONTAINS(msg, std::string("got \"") + bad + "\"");
  }
}

TEST(ParseDurationTest, RejectsDurationTooLargeToRepresent) {
  // Regression: 1e300 hours is finite as a double but overflows int64 milliseconds;
  // llround of it is undefined and used to produce a garbage (negative) duration.
  std::string msg = testing::config_error([] { parse_duration("1e300h", "pod.yaml: timeout"); });
  EXPECT_CONTAINS(msg, "pod.yaml: timeout");
}

// ---- check_keys ----------------------------------------------------------------------

TEST(CheckKeysTest, AcceptsKnownKeys) {
  YAML::Node node = YAML::Load("rounds: 3\nmin_pods: 2\n");
  EXPECT_NO_THROW(check_keys(node, {"rounds", "min_pods", "seed"}, "job.yaml"));
}

TEST(CheckKeysTest, UnknownKeyNamesKeyAndAllowedList) {
  YAML::Node node = YAML::Load("rounds: 3\nmin_pod: 2\n");
  std::string msg = testing::config_error([&] { check_keys(node, {"rounds", "min_pods"}, "job.yaml"); });
  EXPECT_EQ(msg, "job.yaml: unknown key 'min_pod'; did you mean 'min_pods'? (allowed: rounds, min_pods)");
}

TEST(NearestNameTest, SuggestsOnlyCloseNames) {
  const std::vector<std::string> commands = {"worker", "coordinator", "demo", "hub", "access", "audit"};
  EXPECT_EQ(nearest_name("coordinatr", commands), "coordinator");  // one edit
  EXPECT_EQ(nearest_name("wroker", commands), "worker");           // two edits, a 6-letter word
  EXPECT_EQ(nearest_name("train", commands), "");                  // nothing close
  EXPECT_EQ(nearest_name("coord", commands), "coordinator");       // the only command it begins
  EXPECT_EQ(nearest_name("a", commands), "");                      // begins two: no guess
  EXPECT_EQ(nearest_name("optimiser", {"optimizer", "lr"}, 2), "optimizer");
  EXPECT_EQ(nearest_name("lrr", {"optimizer", "lr"}, 0), "");
}

TEST(DescribeConversionErrorTest, NamesTheKeyPathAndLine) {
  const YAML::Node root = YAML::Load("name: p\nprivacy:\n  min_batch_size: lots\nthreads: [1, 2]\n");
  try {
    (void)root["privacy"]["min_batch_size"].as<int>();
    FAIL() << "converted";
  } catch (const YAML::BadConversion& e) {
    EXPECT_EQ(describe_conversion_error(root, e.mark, e.msg),
              "privacy.min_batch_size (line 3): 'lots' is not of the type this setting takes");
  }
  try {
    (void)root["threads"].as<int>();
    FAIL() << "converted";
  } catch (const YAML::BadConversion& e) {
    EXPECT_EQ(describe_conversion_error(root, e.mark, e.msg),
              "threads (line 4): a list is not of the type this setting takes");
  }
}

TEST(CheckKeysTest, NonMappingIsRejected) {
  YAML::Node node = YAML::Load("[1, 2]");
  EXPECT_EQ(testing::config_error([&] { check_keys(node, {"a"}, "pod.yaml: data"); }),
            "pod.yaml: data: expected a mapping");
}

// ---- yaml_to_json --------------------------------------------------------------------

TEST(YamlToJsonTest, ScalarTypes) {
  YAML::Node node = YAML::Load(
      "int: 42\n"
      "neg: -7\n"
      "float: 0.5\n"
      "exp: 1e-3\n"
      "yes_bool: true\n"
      "no_bool: False\n"
      "quoted_num: \"42\"\n"
      "quoted_bool: 'true'\n"
      "word: hello\n"
      "nothing: ~\n");
  nlohmann::json j = yaml_to_json(node);
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j["int"].is_number_integer());
  EXPECT_EQ(j["int"].get<int64_t>(), 42);
  EXPECT_EQ(j["neg"].get<int64_t>(), -7);
  EXPECT_TRUE(j["float"].is_number_float());
  EXPECT_DOUBLE_EQ(j["float"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["exp"].get<double>(), 1e-3);
  EXPECT_EQ(j["yes_bool"], true);
  EXPECT_EQ(j["no_bool"], false);
  EXPECT_TRUE(j["quoted_num"].is_string());
  EXPECT_EQ(j["quoted_num"], "42");
  EXPECT_TRUE(j["quoted_bool"].is_string());
  EXPECT_EQ(j["quoted_bool"], "true");
  EXPECT_EQ(j["word"], "hello");
  EXPECT_TRUE(j["nothing"].is_null());
}

TEST(YamlToJsonTest, ListsAndMapsNest) {
  YAML::Node node =
      YAML::Load("hidden: [32, 16]\nmix: [1, 2.5, x]\nopt: {name: adam, lr: 0.001}\n");
  nlohmann::json j = yaml_to_json(node);
  EXPECT_EQ(j["hidden"], nlohmann::json::array({32, 16}));
  EXPECT_TRUE(j["hidden"][0].is_number_integer());
  ASSERT_EQ(j["mix"].size(), 3u);
  EXPECT_TRUE(j["mix"][0].is_number_integer());
  EXPECT_TRUE(j["mix"][1].is_number_float());
  EXPECT_TRUE(j["mix"][2].is_string());
  EXPECT_EQ(j["opt"]["name"], "adam");
  EXPECT_DOUBLE_EQ(j["opt"]["lr"].get<double>(), 0.001);
}

TEST(YamlToJsonTest, IntegerTooLargeForInt64BecomesDouble) {
  // Regression: strtoll saturates at INT64_MAX for out-of-range digits, and the value
  // used to be kept as 9223372036854775807.
  nlohmann::json j = yaml_to_json(YAML::Load("99999999999999999999"));
  ASSERT_TRUE(j.is_number_float()) << j.dump();
  EXPECT_DOUBLE_EQ(j.get<double>(), 1e20);
}

// ---- Hyperparameters -----------------------------------------------------------------

TEST(HyperparametersTest, TypedGettersAndFallbacks) {
  Hyperparameters hp(nlohmann::json::parse(
      R"({"lr": 0.1, "epochs": 3, "optimizer": "adam", "nesterov": true, "hidden": [32, 16],
          "width": 8})"));
  EXPECT_TRUE(hp.has("lr"));
  EXPECT_FALSE(hp.has("momentum"));
  EXPECT_DOUBLE_EQ(hp.number("lr", 0.01), 0.1);
  EXPECT_DOUBLE_EQ(hp.number("epochs", 0.0), 3.0);  // an integer is a number
  EXPECT_DOUBLE_EQ(hp.number("momentum", 0.9), 0.9);
  EXPECT_EQ(hp.integer("epochs", 1), 3);
  EXPECT_EQ(hp.integer("batch", 64), 64);
  EXPECT_EQ(hp.string("optimizer", "sgd"), "adam");
  EXPECT_EQ(hp.string("loss", "ce"), "ce");
  EXPECT_TRUE(hp.boolean("nesterov", false));
  EXPECT_FALSE(hp.boolean("amsgrad", false));
  EXPECT_EQ(hp.integers("hidden", {}), (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(hp.integers("width", {}), (std::vector<int64_t>{8}));  // a scalar is a list of one
  EXPECT_EQ(hp.integers("channels", {16, 32}), (std::vector<int64_t>{16, 32}));
}

TEST(HyperparametersTest, WrongTypesNameKeyAndValue) {
  Hyperparameters hp(nlohmann::json::parse(
      R"({"lr": "fast", "epochs": 0.5, "optimizer": 3, "nesterov": "yes",
          "hidden": [32, "x"], "channels": {"a": 1}})"));
  EXPECT_EQ(testing::config_error([&] { hp.number("lr", 0); }),
            "hyperparameter 'lr' must be a number, got \"fast\"");
  EXPECT_EQ(testing::config_error([&] { hp.integer("epochs", 0); }),
            "hyperparameter 'epochs' must be an integer, got 0.5");
  EXPECT_EQ(testing::config_error([&] { hp.string("optimizer", ""); }),
            "hyperparameter 'optimizer' must be a string, got 3");
  EXPECT_EQ(testing::config_error([&] { hp.boolean("nesterov", false); }),
            "hyperparameter 'nesterov' must be true or false, got \"yes\"");
  EXPECT_EQ(testing::config_error([&] { hp.integers("hidden", {}); }),
            "hyperparameter 'hidden' must be a list of integers, got [32,\"x\"]");
  EXPECT_EQ(testing::config_error([&] { hp.integers("channels", {}); }),
            "hyperparameter 'channels' must be a list of integers, got {\"a\":1}");
}

TEST(HyperparametersTest, MustBeAnObject) {
  EXPECT_EQ(testing::config_error([] {
              Hyperparameters hp(nlohmann::json::array({1, 2}));
            }),
            "hyperparameters must be a mapping, got [1,2]");
  Hyperparameters from_null(nullptr);
  EXPECT_TRUE(from_null.json().is_object());
  EXPECT_EQ(from_null.dump(), "{}");
}

TEST(HyperparametersTest, FromYaml) {
  Hyperparameters hp(yaml_to_json(YAML::Load("lr: 0.05\nhidden: [8]\nname: \"7\"\n")));
  EXPECT_DOUBLE_EQ(hp.number("lr", 0), 0.05);
  EXPECT_EQ(hp.integers("hidden", {}), std::vector<int64_t>{8});
  EXPECT_EQ(hp.string("name", ""), "7");
}

// ---- Hostile YAML (found by tests/fuzz; the inputs are in tests/fuzz/regressions/) ---

// job_spec/hyperparameters-not-utf8.yaml: yaml-cpp passes bytes through unchecked, and
// dump() (startJob's wire form) threw nlohmann's type_error, even from the
// "must be a mapping" message.
TEST(HyperparametersTest, TextThatIsNotUtf8IsAConfigError) {
  const std::string bad_byte = "\xDF";          // a UTF-8 lead byte with nothing after it
  const std::string replaced = "\xEF\xBF\xBD";  // U+FFFD in the message
  YAML::Node value = YAML::Load("opt: ad" + bad_byte + "m\n");
  EXPECT_EQ(testing::config_error([&] { Hyperparameters hp(yaml_to_json(value)); }),
            "hyperparameters must be UTF-8 text, got {\"opt\":\"ad" + replaced + "m\"}");
  YAML::Node scalar = YAML::Load(bad_byte);
  EXPECT_EQ(testing::config_error([&] { Hyperparameters hp(yaml_to_json(scalar)); }),
            "hyperparameters must be UTF-8 text, got \"" + replaced + "\"");
}

// job_spec/complex-key.yaml, pod_config/complex-key.yaml: "? [a]: 1" is valid YAML;
// as<std::string> on the key threw yaml-cpp's TypedBadConversion, not a ConfigError.
TEST(CheckKeysTest, KeyThatIsAListOrMappingIsAConfigError) {
  YAML::Node list_key = YAML::Load("rounds: 3\n? [a, b]\n: 1\n");
  EXPECT_EQ(testing::config_error([&] { check_keys(list_key, {"rounds"}, "job.yaml"); }),
            "job.yaml: a key must be a name, not a list (line 2)");
  YAML::Node map_key = YAML::Load("? {a: 1}\n: 1\n");
  EXPECT_EQ(testing::config_error([&] { check_keys(map_key, {"a"}, "pod.yaml"); }),
            "pod.yaml: a key must be a name, not a mapping (line 1)");
}

TEST(YamlToJsonTest, KeyThatIsAListIsAConfigError) {
  YAML::Node node = YAML::Load("lr: 0.1\nopt:\n  ? [x]\n  : 1\n");
  EXPECT_EQ(testing::config_error([&] { yaml_to_json(node); }),
            "hyperparameters: a key must be a name, not a list (line 3)");
}

// job_spec/public-key-file-directory.yaml led here: a directory opens as a stream,
// and yaml-cpp let reading it throw std::ios_base::failure.
TEST(LoadYamlFileTest, DirectoryIsAConfigError) {
  testing::TempDir dir;
  const std::string path = dir.path().string();
  EXPECT_EQ(testing::config_error([&] { load_yaml_file(path); }),
            path + ": is a directory, not a YAML file");
}

// job_spec/alias-cycle.yaml: yaml-cpp resolves `*a` inside `&a` to the node itself; a
// walk of it (yaml_to_json, YAML::Dump in an error message) overflowed the stack.
TEST(ParseYamlTest, AliasCycleIsRefused) {
  const std::string yaml = "model:\n  hyperparameters: &a {x: *a}\n";
  EXPECT_EQ(testing::config_error([&] { parse_yaml(yaml, "job.yaml"); }),
            "job.yaml: nested more than 64 levels deep (an alias inside its own anchor?)");
}

// job_spec/alias-expansion.yaml: nine levels of ten aliases are 10^9 values; walking
// them never finished.
TEST(ParseYamlTest, AliasExpansionIsBounded) {
  std::string yaml = "l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";
  for (int i = 1; i <= 8; ++i) {
    std::string prev = "*l" + std::to_string(i - 1);
    yaml += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [" + prev;
    for (int k = 1; k < 10; ++k) yaml += ", " + prev;
    yaml += "]\n";
  }
  EXPECT_EQ(testing::config_error([&] { parse_yaml(yaml, "job.yaml"); }),
            "job.yaml: more than 100000 values once aliases are expanded (aliases of aliases?)");
  // Aliases themselves are fine.
  YAML::Node ok = parse_yaml("a: &x [1, 2]\nb: *x\n", "job.yaml");
  EXPECT_EQ(ok["b"].size(), 2u);
}

}  // namespace
}  // namespace fedpod
