// Helpers for reading configuration (pod.yaml, job.yaml) and hyperparameters.
//
// Configuration errors are reported as `ConfigError` with the file and the key path
// in the message ("job.yaml: rounds: must be a positive integer, got -1"), so a user
// can fix the file without reading code. Unknown keys are errors: a typo such as
// `min_pod:` must not silently fall back to a default.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace fedpod {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses "30s", "500ms", "2m", "1h", "30d" or a plain number of seconds ("1.5").
// Throws ConfigError naming `what` for anything else, or a negative value.
std::chrono::milliseconds parse_duration(const std::string& text, const std::string& what);

// Parses the YAML file at `path`; throws ConfigError naming the file (and the line,
// for a syntax error) when it cannot be read or parsed, or when, with aliases
// expanded, it nests more than 64 levels or holds more than 100000 values (an alias
// cycle, or aliases of aliases: no later walk of the document could finish).
YAML::Node load_yaml_file(const std::string& path);

// The same over YAML text in memory; `where` names it in errors as the path does.
YAML::Node parse_yaml(const std::string& text, const std::string& where);

// For a yaml-cpp conversion error at `mark` (a value of the wrong type) in the
// document `root`: "threads (line 6): 'many' is not of the type this setting takes"
// ("a list is not ..." for a list),
// naming the key path; a plain "line L, column C: WHAT" when no value is at `mark`.
std::string describe_conversion_error(const YAML::Node& root, const YAML::Mark& mark, const std::string& what);

// Throws ConfigError when `node` (a map) has a key outside `allowed`.
void check_keys(const YAML::Node& node, std::initializer_list<const char*> allowed,
                const std::string& where);

// Converts a YAML scalar/sequence/map into JSON: integers stay integers, "true"/"false"
// become booleans, other scalars become numbers when they parse as such, else strings.
// Throws ConfigError, its message starting with `what`, for a key that is not a name
// (a list or mapping used as a key).
nlohmann::json yaml_to_json(const YAML::Node& node, const std::string& what = "hyperparameters");

// Hyperparameters of a model: a JSON object with typed, validated accessors.
// Immutable after construction; safe to share between threads.
class Hyperparameters {
 public:
  Hyperparameters() : json_(nlohmann::json::object()) {}
  // Throws ConfigError unless `json` is an object.
  explicit Hyperparameters(nlohmann::json json);

  bool has(const std::string& key) const { return json_.contains(key); }
  // Each accessor returns `fallback` when the key is absent and throws ConfigError
  // ("hyperparameter 'lr' must be a number, got \"fast\"") when its type is wrong.
  double number(const std::string& key, double fallback) const;
  int64_t integer(const std::string& key, int64_t fallback) const;
  std::string string(const std::string& key, const std::string& fallback) const;
  bool boolean(const std::string& key, bool fallback) const;
  std::vector<int64_t> integers(const std::string& key, std::vector<int64_t> fallback) const;

  const nlohmann::json& json() const { return json_; }
  std::string dump() const { return json_.dump(); }

 private:
  nlohmann::json json_;
};

}  // namespace fedpod
