#include "fedpod/common/config_util.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

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
  }
  // The bound keeps llround defined: int64 milliseconds span about 292 million years.
  if (end == begin || scale_ms == 0 || !std::isfinite(value) || value < 0 ||
      value * scale_ms >= 9.2e18) {
    throw ConfigError(what + ": expected a duration such as 30s, 500ms or 2m, got \"" + text +
                      "\"");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(value * scale_ms)));
}

YAML::Node load_yaml_file(const std::string& path) {
  try {
    return YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

void check_keys(const YAML::Node& node, std::initializer_list<const char*> allowed,
                const std::string& where) {
  if (!node.IsMap()) throw ConfigError(where + ": expected a mapping");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    bool ok = false;
    std::string list;
    for (const char* a : allowed) {
      if (key == a) ok = true;
      list += list.empty() ? a : std::string(", ") + a;
    }
    if (!ok) throw ConfigError(where + ": unknown key '" + key + "' (allowed: " + list + ")");
  }
}

nlohmann::json yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& item : node) arr.push_back(yaml_to_json(item));
      return arr;
    }
    case YAML::NodeType::Map: {
      nlohmann::json obj = nlohmann::json::object();
      for (const auto& kv : node) obj[kv.first.as<std::string>()] = yaml_to_json(kv.second);
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
