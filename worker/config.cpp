#include "fedpod/worker/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <thread>

#include "fedpod/common/config_util.h"

namespace fedpod::worker {
namespace fs = std::filesystem;

std::vector<std::string> resolve_devices(const std::vector<std::string>& requested) {
  if (requested.empty() || (requested.size() == 1 && requested[0] == "auto")) return {"cpu"};
  for (const auto& d : requested) {
    if (d != "cpu") {
      throw ConfigError("devices: '" + d + "' does not exist on this machine (this build trains on cpu)");
    }
  }
  if (requested.size() > 1) {
    throw ConfigError("devices: " + std::to_string(requested.size()) +
                      " devices listed; data-parallel training across devices is not available in "
                      "this build, list one");
  }
  return requested;
}

PodConfig load_pod_config(const std::string& path) {
  YAML::Node root = load_yaml_file(path);
  const std::string where = path;
  check_keys(root, {"name", "listen", "dataset", "devices", "threads", "job_idle_timeout",
                    "max_frame_bytes", "custom_models", "log_level"},
             where);
  PodConfig c;
  try {
    if (!root["name"] || root["name"].as<std::string>().empty()) throw ConfigError(where + ": name: required");
    c.name = root["name"].as<std::string>();
    if (!root["listen"]) throw ConfigError(where + ": listen: required (e.g. tcp://0.0.0.0:5555)");
    c.listen = root["listen"].as<std::string>();
    auto ds = root["dataset"];
    if (!ds) throw ConfigError(where + ": dataset: required");
    check_keys(ds, {"path", "header", "delimiter", "on_bad_row", "schema"}, where + ": dataset");
    if (!ds["path"]) throw ConfigError(where + ": dataset.path: required");
    fs::path data_path = ds["path"].as<std::string>();
    if (data_path.is_relative()) data_path = fs::absolute(path).parent_path() / data_path;
    c.dataset_path = data_path.lexically_normal().string();
    if (ds["header"]) c.csv.header = ds["header"].as<bool>();
    if (ds["delimiter"]) {
      auto d = ds["delimiter"].as<std::string>();
      if (d.size() != 1) throw ConfigError(where + ": dataset.delimiter: must be one character");
      c.csv.delimiter = d[0];
    }
    if (ds["on_bad_row"]) {
      auto p = ds["on_bad_row"].as<std::string>();
      if (p == "error") {
        c.csv.on_bad_row = data::BadRowPolicy::kError;
      } else if (p == "skip") {
        c.csv.on_bad_row = data::BadRowPolicy::kSkip;
      } else {
        throw ConfigError(where + ": dataset.on_bad_row: expected error or skip, got \"" + p + "\"");
      }
    }
    if (ds["schema"]) {
      if (!ds["schema"].IsSequence()) throw ConfigError(where + ": dataset.schema: expected a list of columns");
      data::Schema schema;
      for (const auto& col : ds["schema"]) {
        check_keys(col, {"name", "type", "categories"}, where + ": dataset.schema");
        data::Column column;
        if (!col["name"]) throw ConfigError(where + ": dataset.schema: every column needs a name");
        column.name = col["name"].as<std::string>();
        std::string type = col["type"] ? col["type"].as<std::string>() : "numeric";
        if (type == "numeric") {
          column.type = data::ColumnType::kNumeric;
        } else if (type == "categorical") {
          column.type = data::ColumnType::kCategorical;
        } else {
          throw ConfigError(where + ": dataset.schema: column '" + column.name +
                            "': type must be numeric or categorical, got \"" + type + "\"");
        }
        if (col["categories"]) column.categories = col["categories"].as<std::vector<std::string>>();
        schema.columns.push_back(std::move(column));
      }
      c.schema = std::move(schema);
    }
    std::vector<std::string> devices;
    if (root["devices"]) {
      if (root["devices"].IsSequence()) {
        devices = root["devices"].as<std::vector<std::string>>();
      } else {
        devices = {root["devices"].as<std::string>()};
      }
    }
    try {
      c.devices = resolve_devices(devices);
    } catch (const ConfigError& e) {
      throw ConfigError(where + ": " + e.what());
    }
    if (root["threads"]) {
      c.threads = root["threads"].as<int>();
      if (c.threads < 0) throw ConfigError(where + ": threads: must be >= 0");
    }
    if (root["job_idle_timeout"]) {
      c.job_idle_timeout = parse_duration(root["job_idle_timeout"].as<std::string>(), where + ": job_idle_timeout");
    }
    if (root["max_frame_bytes"]) {
      c.max_frame_bytes = root["max_frame_bytes"].as<int64_t>();
      if (c.max_frame_bytes <= 0) throw ConfigError(where + ": max_frame_bytes: must be positive");
    }
    if (root["custom_models"]) {
      auto v = root["custom_models"].as<std::string>();
      if (v == "refuse") {
        c.custom_models = CustomModels::kRefuse;
      } else if (v == "allow_unauthenticated") {
        c.custom_models = CustomModels::kAllowUnauthenticated;
      } else {
        throw ConfigError(where + ": custom_models: expected refuse or allow_unauthenticated, got \"" + v + "\"");
      }
    }
    if (root["log_level"]) c.log_level = root["log_level"].as<std::string>();
  } catch (const YAML::Exception& e) {
    throw ConfigError(where + ": " + e.what());
  }
  return c;
}

}  // namespace fedpod::worker
