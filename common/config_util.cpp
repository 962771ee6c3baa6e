#include "fedpod/common/config_util.h"

#include "fedpod/common/names.h"
#include "fedpod/common/peer_text.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <ios>

namespace fedpod {

std::chrono::milliseconds parse_duration(const std::string& text, const std::string& what) {
  const char* begin = text.c_str();
  char* end = nullptr;
  double value = std::strtod(begin, &end);
  std::string unit(end);
  double scale_ms = 0;
  if (unit.empty() || unit == "s") {
    scale_ms = 1000;
  } else if (unit == "ms") {
    scale_ms = 1;
  } else if (unit == "m" || unit == "min") {
    scale_ms = 60'000;
  } else if (unit == "h") {
    scale_ms = 3'600'000;
  } else if (unit == "d") {
    scale_ms = 86'400'000;
  }
  // The bound keeps llround defined: int64 milliseconds span about 292 million years.
  if (end == begin || scale_ms == 0 || !std::isfinite(value) || value < 0 ||
      value * scale_ms >= 9.2e18) {
    throw ConfigError(what + ": expected a duration such as 30s, 500ms, 2m, 12h or 30d, got \"" + text +
                      "\"");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(value * scale_ms)));
}

namespace {

// Bounds on a loaded document, counted with aliases expanded. yaml-cpp resolves an
// alias to the anchored node itself, so `&a [*a]` is a cycle and ten levels of ten
// aliases are 10^10 nodes: every later walk (key checks, yaml_to_json, YAML::Dump in
// an error message) would overflow the stack or never finish
// (tests/fuzz/regressions/job_spec/alias-*.yaml).
// Real job.yaml and pod.yaml files have a few hundred nodes, nested < 10 deep.
constexpr int kMaxYamlDepth = 64;
constexpr int64_t kMaxYamlNodes = 100'000;

void check_yaml_bounds(const YAML::Node& node, int depth, int64_t& nodes,
                       const std::string& where) {
  if (depth > kMaxYamlDepth) {
    throw ConfigError(where + ": nested more than " + std::to_string(kMaxYamlDepth) +
                      " levels deep (an alias inside its own anchor?)");
  }
  if (++nodes > kMaxYamlNodes) {
    throw ConfigError(where + ": more than " + std::to_string(kMaxYamlNodes) +
                      " values once aliases are expanded (aliases of aliases?)");
  }
  if (node.IsMap()) {
    for (const auto& kv : node) {
      check_yaml_bounds(kv.first, depth + 1, nodes, where);
      check_yaml_bounds(kv.second, depth + 1, nodes, where);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_yaml_bounds(item, depth + 1, nodes, where);
  }
}

YAML::Node checked(YAML::Node root, const std::string& where) {
  int64_t nodes = 0;
  check_yaml_bounds(root, 0, nodes, where);
  return root;
}

}  // namespace

YAML::Node load_yaml_file(const std::string& path) {
  // A directory opens as a stream on Linux; reading it throws std::ios_base::failure
  // out of yaml-cpp, not a YAML::Exception.
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(path + ": is a directory, not a YAML file");
  if (!std::filesystem::exists(path, ec)) throw ConfigError(path + ": no such file");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ": " + e.what());
  } catch (const std::ios_base::failure& e) {
    throw ConfigError(path + ": cannot read: " + e.what());
  }
  return checked(root, path);
}

namespace {
// The key path of the value at `mark` under `node` ("privacy.min_batch_size",
// "dataset.schema[2].type"); false when none is there.
bool key_at(const YAML::Node& node, const YAML::Mark& mark, const std::string& path, int depth, std::string* out,
            std::string* value) {
  if (depth > 64) return false;
  const YAML::Mark m = node.Mark();
  if (node.IsScalar() && m.line == mark.line && m.column == mark.column) {
    *out = path;
    *value = "'" + node.Scalar() + "'";
    return true;
  }
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "?";
      if (key_at(kv.second, mark, path.empty() ? key : path + "." + key, depth + 1, out, value)) return true;
    }
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i)
      if (key_at(node[i], mark, path + "[" + std::to_string(i) + "]", depth + 1, out, value)) return true;
  }
  if ((node.IsMap() || node.IsSequence()) && m.line == mark.line && m.column == mark.column) {
    *out = path;
    *value = node.IsMap() ? "a mapping" : "a list";
    return true;
  }
  return false;
}
}  // namespace

std::string describe_conversion_error(const YAML::Node& root, const YAML::Mark& mark, const std::string& what) {
  std::string path, value;
  if (!mark.is_null() && key_at(root, mark, "", 0, &path, &value) && !path.empty()) {
    return path + " (line " + std::to_string(mark.line + 1) + "): " + value + " is not of the type this setting takes";
  }
  if (mark.is_null()) return what;
  return "line " + std::to_string(mark.line + 1) + ", column " + std::to_string(mark.column + 1) + ": " + what;
}

YAML::Node parse_yaml(const std::string& text, const std::string& where) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(where + ": " + e.what());
  }
  return checked(root, where);
}

namespace {
// A map key as a string. Keys may be any YAML node ("? [a, b]: 1"), but ours are names:
// as<std::string> would throw yaml-cpp's exception, not a ConfigError (found by tests/fuzz).
std::string key_name(const YAML::Node& key, const std::string& where) {
  if (!key.IsScalar()) {
    const YAML::Mark mark = key.Mark();
    throw ConfigError(
        where + ": a key must be a name, not a " +
        (key.IsMap()        ? "mapping"
         : key.IsSequence() ? "list"
                            : "null") +
        (mark.is_null() ? std::string() : " (line " + std::to_string(mark.line + 1) + ")"));
  }
  return key.Scalar();
}
}  // namespace

void check_keys(const YAML::Node& node, std::initializer_list<const char*> allowed,
                const std::string& where) {
  if (!node.IsMap()) throw ConfigError(where + ": expected a mapping");
  for (const auto& kv : node) {
    const std::string key = key_name(kv.first, where);
    bool ok = false;
    std::string list;
    std::vector<std::string> names;
    for (const char* a : allowed) {
      if (key == a) ok = true;
      list += list.empty() ? a : std::string(", ") + a;
      names.emplace_back(a);
    }
    if (ok) continue;
    const std::string near = nearest_name(key, names, 2);
    throw ConfigError(where + ": unknown key '" + key + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?") +
                      " (allowed: " + list + ")");
  }
}

nlohmann::json yaml_to_json(const YAML::Node& node, const std::string& what) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : node) arr.push_back(yaml_to_json(item, what));
      return arr;
    }
    case YAML::NodeType::Map: {
      nlohmann::json obj = nlohmann::json::object();
      for (const auto& kv : node) obj[key_name(kv.first, what)] = yaml_to_json(kv.second, what);
      return obj;
    }
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted scalar: keep it a string
  if (s == "true" || s == "True") return true;
  if (s == "false" || s == "False") return false;
  if (!s.empty()) {
    char* end = nullptr;
    errno = 0;
    long long i = std::strtoll(s.c_str(), &end, 10);
    if (*end == '\0' && errno != ERANGE) return static_cast<int64_t>(i);  // else a double
    double d = std::strtod(s.c_str(), &end);
    if (*end == '\0' && std::isfinite(d)) return d;
  }
  return s;
}

Hyperparameters::Hyperparameters(nlohmann::json json) : json_(std::move(json)) {
  if (json_.is_null()) json_ = nlohmann::json::object();
  // dump() (startJob's wire form, history.json) throws for a string that is not UTF-8,
  // and yaml-cpp passes job.yaml's bytes through unchecked: refuse such text here, as
  // a ConfigError, rather than as a json exception later (found by tests/fuzz).
  try {
    (void)json_.dump();
  } catch (const nlohmann::json::type_error&) {
    throw ConfigError("hyperparameters must be UTF-8 text, got " +
                      json_text(json_));
  }
  if (!json_.is_object()) throw ConfigError("hyperparameters must be a mapping, got " + json_.dump());
}

namespace {
[[noreturn]] void wrong_type(const std::string& key, const char* want, const nlohmann::json& got) {
  throw ConfigError("hyperparameter '" + key + "' must be " + want + ", got " + got.dump());
}
}  // namespace

double Hyperparameters::number(const std::string& key, double fallback) const {
  auto it = json_.find(key);
  if (it == json_.end()) return fallback;
  if (!it->is_number() || !std::isfinite(it->get<double>())) wrong_type(key, "a number", *it);
  return it->get<double>();
}

int64_t Hyperparameters::integer(const std::string& key, int64_t fallback) const {
  auto it = json_.find(key);
  if (it == json_.end()) return fallback;
  if (!it->is_number_integer()) wrong_type(key, "an integer", *it);
  return it->get<int64_t>();
}

std::string Hyperparameters::string(const std::string& key, const std::string& fallback) const {
  auto it = json_.find(key);
  if (it == json_.end()) return fallback;
  if (!it->is_string()) wrong_type(key, "a string", *it);
  return it->get<std::string>();
}

bool Hyperparameters::boolean(const std::string& key, bool fallback) const {
  auto it = json_.find(key);
  if (it == json_.end()) return fallback;
  if (!it->is_boolean()) wrong_type(key, "true or false", *it);
  return it->get<bool>();
}

std::vector<int64_t> Hyperparameters::integers(const std::string& key,
                                               std::vector<int64_t> fallback) const {
  auto it = json_.find(key);
  if (it == json_.end()) return fallback;
  if (it->is_number_integer()) return {it->get<int64_t>()};
  if (!it->is_array()) wrong_type(key, "a list of integers", *it);
  std::vector<int64_t> out;
  for (const auto& v : *it) {
    if (!v.is_number_integer()) wrong_type(key, "a list of integers", *it);
    out.push_back(v.get<int64_t>());
  }
  return out;
}

}  // namespace fedpod
