#include "fedpod/worker/config.h"

#include <torch/cuda.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "fedpod/common/config_util.h"
#include "fedpod/common/signing.h"

namespace fedpod::worker {
namespace fs = std::filesystem;

namespace {

// "cpu, cuda:0, cuda:1": what `devices` may name on this machine.
std::string visible_devices(int cuda_device_count) {
  std::string s = "cpu";
  for (int i = 0; i < cuda_device_count; ++i) s += ", cuda:" + std::to_string(i);
  if (cuda_device_count == 0) s += " (no CUDA device is visible to this pod)";
  return s;
}

// The ordinal of "cuda:N", or -1 for any other name.
int cuda_ordinal(const std::string& d) {
  if (d.rfind("cuda:", 0) != 0 || d.size() == 5 || d.size() > 9) return -1;
  const std::string n = d.substr(5);
  if (n.find_first_not_of("0123456789") != std::string::npos) return -1;
  if (n.size() > 1 && n[0] == '0') return -1;
  return std::stoi(n);
}

}  // namespace

std::vector<std::string> resolve_devices(const std::vector<std::string>& requested, int cuda_device_count) {
  if (requested.empty() || (requested.size() == 1 && requested[0] == "auto")) {
    if (cuda_device_count <= 0) return {"cpu"};
    std::vector<std::string> all;
    for (int i = 0; i < cuda_device_count; ++i) all.push_back("cuda:" + std::to_string(i));
    return all;
  }
  std::string list;
  for (const auto& d : requested) list += (list.empty() ? "" : ", ") + d;
  int cpus = 0;
  std::vector<bool> seen(static_cast<size_t>(std::max(cuda_device_count, 0)), false);
  for (const auto& d : requested) {
    if (d == "cpu") {
      ++cpus;
      continue;
    }
    if (d == "auto") throw ConfigError("devices: auto stands alone (devices: auto), not inside a list [" + list + "]");
    const int ordinal = cuda_ordinal(d);
    if (ordinal < 0) {
      throw ConfigError("devices: '" + d + "' is not a device name (expected auto, cpu or cuda:N); devices here: " +
                        visible_devices(cuda_device_count));
    }
    if (ordinal >= cuda_device_count) {
      throw ConfigError("devices: '" + d + "' does not exist on this machine; devices here: " +
                        visible_devices(cuda_device_count));
    }
    if (seen[ordinal]) {
      throw ConfigError("devices: '" + d + "' is listed twice in [" + list +
                        "]; one replica per GPU (several replicas are allowed only on cpu)");
    }
    seen[ordinal] = true;
  }
  if (cpus > 0 && cpus < static_cast<int>(requested.size())) {
    throw ConfigError("devices: [" + list + "] mixes cpu and cuda devices; the replicas of a pod train in step, so "
                      "list only cuda devices (one replica per GPU) or only cpu");
  }
  return requested;
}

std::vector<std::string> resolve_devices(const std::vector<std::string>& requested) {
  return resolve_devices(requested, static_cast<int>(torch::cuda::device_count()));
}

namespace {

// "8GiB", "512MiB", "1024KiB" or a number of bytes.
int64_t parse_bytes(const std::string& text, const std::string& where) {
  size_t end = 0;
  double v = 0;
  try {
    v = std::stod(text, &end);
  } catch (const std::exception&) {
    end = 0;
  }
  std::string unit = text.substr(end);
  while (!unit.empty() && unit.front() == ' ') unit.erase(unit.begin());
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  if (unit == "KiB") scale = 1024.0;
  if (unit == "MiB") scale = 1024.0 * 1024;
  if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  if (end == 0 || scale == 0 || !(v > 0) || v * scale > 9e18) {
    throw ConfigError(where + ": expected a size such as 8GiB or 512MiB, got \"" + text + "\"");
  }
  return static_cast<int64_t>(v * scale);
}

// true or false (YAML's spellings: yes/no, on/off too); errors name `where`.
bool parse_bool(const YAML::Node& n, const std::string& where) {
  bool b = false;
  if (n.IsScalar() && YAML::convert<bool>::decode(n, b)) return b;
  throw ConfigError(where + ": expected true or false, got \"" + (n.IsScalar() ? n.Scalar() : "a " + std::string(n.IsMap() ? "mapping" : "list")) + "\"");
}

// The body of load_pod_config and parse_pod_config: `where` names the source in
// errors; relative paths in it resolve against `base`.
PodConfig pod_config_from_yaml(const YAML::Node& root, const std::string& where,
                               const fs::path& base) {
  check_keys(root, {"name", "listen", "dataset", "devices", "threads", "job_idle_timeout",
                    "max_frame_bytes", "custom_models", "log_level", "key_file", "policy", "audit_log",
                    "metrics_listen", "sandbox", "audit_publish", "max_message_bytes", "transport_memory", "transport_shared_memory",
                    "receiving_process", "tensor_listen", "secure_aggregation", "privacy"},
             where);
  PodConfig c;
  try {
    if (!root["name"] || root["name"].as<std::string>().empty()) throw ConfigError(where + ": name: required");
    c.name = root["name"].as<std::string>();
    // The name is part of file names (state/NAME.policy.json) and of hub URLs.
    if (c.name.size() > 63 || c.name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
                                  std::string::npos || c.name[0] == '.')
      throw ConfigError(where + ": name: '" + c.name +
                        "' must be 1 to 63 letters, digits, '_', '.' or '-', not starting with '.' (pods registered on "
                        "a hub: lowercase, starting with a letter)");
    if (!root["listen"]) throw ConfigError(where + ": listen: required (e.g. tcp://0.0.0.0:5555)");
    c.listen = root["listen"].as<std::string>();
    check_listen_endpoint(c.listen, where + ": listen");
    c.tensor_listen = default_tensor_listen(c.listen);
    if (root["tensor_listen"]) {
      const std::string t = root["tensor_listen"].as<std::string>();
      if (t == "off") {
        c.tensor_listen.clear();
      } else if (t.rfind("tcp://", 0) != 0 || t.rfind(':') <= 6) {
        throw ConfigError(where + ": tensor_listen: '" + t + "' is not tcp://HOST:PORT or off");
      } else {
        check_listen_endpoint(t, where + ": tensor_listen");
        c.tensor_listen = t;
      }
    }
    auto ds = root["dataset"];
    if (!ds) throw ConfigError(where + ": dataset: required");
    check_keys(ds, {"path", "format", "labels", "header", "delimiter", "on_bad_row", "schema"}, where + ": dataset");
    if (!ds["path"]) throw ConfigError(where + ": dataset.path: required");
    fs::path data_path = ds["path"].as<std::string>();
    if (data_path.is_relative()) data_path = base / data_path;
    c.dataset_path = data_path.lexically_normal().string();
    if (ds["format"]) c.dataset_format = ds["format"].as<std::string>();
    if (c.dataset_format != "csv" && c.dataset_format != "idx") {
      throw ConfigError(where + ": dataset.format: expected csv or idx, got \"" + c.dataset_format + "\"");
    }
    if (c.dataset_format == "idx") {
      if (!ds["labels"]) throw ConfigError(where + ": dataset.labels: required with format: idx (the labels file)");
      for (const char* csv_only : {"header", "delimiter", "on_bad_row", "schema"}) {
        if (ds[csv_only]) throw ConfigError(where + ": dataset." + csv_only + ": applies to CSV files, not format: idx");
      }
      fs::path labels = ds["labels"].as<std::string>();
      if (labels.is_relative()) labels = base / labels;
      c.dataset_labels = labels.lexically_normal().string();
    } else if (ds["labels"]) {
      throw ConfigError(where + ": dataset.labels: only with format: idx (a CSV file holds its labels)");
    }
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
        if (devices.empty()) throw ConfigError(where + ": devices: empty list; write auto or name the devices");
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
    if (root["audit_publish"]) {
      c.audit_publish = parse_duration(root["audit_publish"].as<std::string>(), where + ": audit_publish");
      if (c.audit_publish.count() < 1000) throw ConfigError(where + ": audit_publish: at least 1s");
    }
    if (root["job_idle_timeout"]) {
      c.job_idle_timeout = parse_duration(root["job_idle_timeout"].as<std::string>(), where + ": job_idle_timeout");
    }
    if (root["max_frame_bytes"]) {
      c.max_frame_bytes = root["max_frame_bytes"].as<int64_t>();
      if (c.max_frame_bytes <= 0) throw ConfigError(where + ": max_frame_bytes: must be positive");
    }
    c.max_message_bytes = c.max_frame_bytes;
    if (root["max_message_bytes"]) {
      c.max_message_bytes = parse_bytes(root["max_message_bytes"].as<std::string>(), where + ": max_message_bytes");
    }
    if (root["receiving_process"]) c.receiving_process = parse_bool(root["receiving_process"], where + ": receiving_process");
    c.transport_memory = 2 * c.max_message_bytes + (int64_t{256} << 20);
    if (root["transport_memory"]) {
      c.transport_memory = parse_bytes(root["transport_memory"].as<std::string>(), where + ": transport_memory");
      if (c.transport_memory < c.max_message_bytes + (int64_t{64} << 20)) {
        throw ConfigError(where + ": transport_memory: must be at least max_message_bytes + 64MiB (" +
                          std::to_string(c.max_message_bytes + (int64_t{64} << 20)) +
                          " bytes): the receiving process holds one whole message");
      }
    }
    if (root["transport_shared_memory"]) {
      const std::string v = root["transport_shared_memory"].as<std::string>();
      c.transport_shared_memory = v == "0" ? 0 : parse_bytes(v, where + ": transport_shared_memory");
      if (c.transport_shared_memory != 0 && c.transport_shared_memory < (int64_t{1} << 20)) {
        throw ConfigError(where + ": transport_shared_memory: must be 0 (none) or at least 1MiB, got \"" + v + "\"");
      }
    }
    if (root["custom_models"]) {
      auto v = root["custom_models"].as<std::string>();
      if (v == "policy") {
        c.custom_models = CustomModels::kPolicy;
      } else if (v == "refuse") {
        c.custom_models = CustomModels::kRefuse;
      } else if (v == "allow_unauthenticated") {
        throw ConfigError(where + ": custom_models: allow_unauthenticated is gone: pods now authenticate modellers "
                          "with CURVE and decide by roles and grants (docs/permissions.md); use policy or refuse");
      } else {
        throw ConfigError(where + ": custom_models: expected policy or refuse, got \"" + v + "\"");
      }
    }
    if (auto sa = root["secure_aggregation"]) {
      const std::string w = where + ": secure_aggregation";
      if (sa.IsScalar()) {
        const std::string v = sa.as<std::string>();
        if (v != "required" && v != "optional") {
          throw ConfigError(w + ": expected required or optional (or a map {required, min_threshold}), got \"" + v + "\"");
        }
        c.secure_aggregation.required = v == "required";
      } else if (sa.IsMap()) {
        check_keys(sa, {"required", "min_threshold"}, w);
        if (sa["required"]) c.secure_aggregation.required = sa["required"].as<bool>();
        if (sa["min_threshold"]) {
          const int t = sa["min_threshold"].as<int>();
          if (t < 2) throw ConfigError(w + ".min_threshold: must be at least 2 (the protocol's own minimum)");
          c.secure_aggregation.min_threshold = static_cast<uint32_t>(t);
        }
      } else {
        throw ConfigError(w + ": expected required, optional or a map {required, min_threshold}");
      }
    }
    if (auto sb = root["sandbox"]) c.sandbox = parse_sandbox(sb, where + ": sandbox");
    auto resolve_path = [&](const std::string& p) {
      fs::path f = p;
      if (f.is_relative()) f = base / f;
      return f.lexically_normal().string();
    };
    if (auto pv = root["privacy"]) {
      const std::string w = where + ": privacy";
      if (!pv.IsMap()) throw ConfigError(w + ": expected a map {min_batch_size, min_samples_per_update, max_local_steps, differential_privacy}");
      check_keys(pv, {"min_batch_size", "min_samples_per_update", "max_local_steps", "differential_privacy"}, w);
      auto positive = [&](const char* key) -> int64_t {
        if (!pv[key]) return 0;
        const int64_t v = pv[key].as<int64_t>();
        if (v < 1) throw ConfigError(w + "." + key + ": must be at least 1, got " + std::to_string(v));
        return v;
      };
      c.privacy.min_batch_size = positive("min_batch_size");
      c.privacy.min_samples_per_update = positive("min_samples_per_update");
      c.privacy.max_local_steps = positive("max_local_steps");
      if (auto dp = pv["differential_privacy"]) {
        const std::string wd = w + ".differential_privacy";
        if (!dp.IsMap()) throw ConfigError(wd + ": expected a map {epsilon, delta, min_noise_multiplier, ledger}");
        check_keys(dp, {"epsilon", "delta", "min_noise_multiplier", "ledger"}, wd);
        if (!dp["epsilon"]) throw ConfigError(wd + ".epsilon: required: the ε this dataset may spend over all jobs (e.g. 3)");
        c.privacy.dp_required = true;
        c.privacy.epsilon_cap = dp["epsilon"].as<double>();
        if (!(c.privacy.epsilon_cap > 0) || !std::isfinite(c.privacy.epsilon_cap)) {
          throw ConfigError(wd + ".epsilon: must be a positive number, got " + dp["epsilon"].as<std::string>());
        }
        if (dp["delta"]) {
          c.privacy.delta = dp["delta"].as<double>();
          if (!(c.privacy.delta > 0 && c.privacy.delta < 1)) {
            throw ConfigError(wd + ".delta: must be in (0, 1), got " + dp["delta"].as<std::string>());
          }
        }
        if (dp["min_noise_multiplier"]) {
          c.privacy.min_noise_multiplier = dp["min_noise_multiplier"].as<double>();
          if (!(c.privacy.min_noise_multiplier >= 0) || !std::isfinite(c.privacy.min_noise_multiplier)) {
            throw ConfigError(wd + ".min_noise_multiplier: must be a non-negative number");
          }
        }
        c.privacy.ledger = resolve_path(dp["ledger"] ? dp["ledger"].as<std::string>() : "state/" + c.name + ".privacy.json");
      }
    }
    if (!root["key_file"]) {
      throw ConfigError(where + ": key_file: required: this pod's CURVE key pair (create one with `fedpod keys "
                        "generate --out keys/" + c.name + "`)");
    }
    c.key_file = resolve_path(root["key_file"].as<std::string>());
    auto pol = root["policy"];
    if (!pol || !pol.IsMap()) {
      throw ConfigError(where + ": policy: required: `policy: {hub: https://HUB:PORT, token_file: FILE, signing_key: "
                        "KEY}` or, for an air-gapped pod, `policy: {file: policy.signed.json, signing_key: KEY}`");
    }
    check_keys(pol, {"hub", "hub_ca", "token_file", "refresh", "max_staleness", "cache", "file", "signing_key", "signing_key_file"},
               where + ": policy");
    if (pol["signing_key"] && pol["signing_key_file"]) {
      throw ConfigError(where + ": policy: give signing_key or signing_key_file, not both");
    }
    if (pol["signing_key"]) {
      c.policy.signing_key = pol["signing_key"].as<std::string>();
    } else if (pol["signing_key_file"]) {
      const std::string kf = resolve_path(pol["signing_key_file"].as<std::string>());
      auto k = read_signing_key_file(kf);
      if (!k.ok()) throw ConfigError(where + ": policy.signing_key_file: " + k.status().message());
      c.policy.signing_key = k->public_key;
    } else {
      throw ConfigError(where + ": policy.signing_key: required: the Ed25519 public key the pod's policy must be "
                        "signed with (the hub's: `fedpod hub signing-key`; or, for a policy file, its owner's "
                        ".sign.pub: `fedpod keys generate-signing`), so that a policy altered on the way is refused");
    }
    if (!is_signing_public_key(c.policy.signing_key)) {
      throw ConfigError(where + ": policy.signing_key: '" + c.policy.signing_key +
                        "' is not a base64 Ed25519 public key (44 characters, as in a .sign.pub file)");
    }
    if (pol["hub"] && pol["file"]) throw ConfigError(where + ": policy: give hub or file, not both");
    if (!pol["hub"] && !pol["file"]) throw ConfigError(where + ": policy: needs hub (with token_file) or file");
    if (pol["file"]) {
      for (const char* k : {"token_file", "hub_ca", "refresh", "max_staleness", "cache"}) {
        if (pol[k]) throw ConfigError(where + ": policy." + k + ": only for a policy from the hub");
      }
      c.policy.file = resolve_path(pol["file"].as<std::string>());
    } else {
      c.policy.hub_url = pol["hub"].as<std::string>();
      c.policy.hub = parse_hub_url(c.policy.hub_url, where + ": policy.hub");
      if (pol["hub_ca"]) c.policy.hub.ca_file = resolve_path(pol["hub_ca"].as<std::string>());
      else if (const char* env = std::getenv("FEDPOD_HUB_CA"); env && *env) c.policy.hub.ca_file = env;
      if (pol["token_file"]) {
        const std::string tf = resolve_path(pol["token_file"].as<std::string>());
        std::ifstream in(tf);
        if (!in) throw ConfigError(where + ": policy.token_file: cannot read " + tf);
        std::getline(in, c.policy.token);
        while (!c.policy.token.empty() && std::isspace(static_cast<unsigned char>(c.policy.token.back())))
          c.policy.token.pop_back();
        if (c.policy.token.empty()) throw ConfigError(where + ": policy.token_file: " + tf + " is empty");
      } else if (const char* env = std::getenv("FEDPOD_TOKEN"); env && *env) {
        c.policy.token = env;
      } else {
        throw ConfigError(where + ": policy.token_file: required with policy.hub (the pod's own token: `fedpod "
                          "pod token " + c.name + " --out " + c.name + ".token`; or set FEDPOD_TOKEN)");
      }
      check_pod_token(c.policy.token, c.name, where + ": policy.token_file");
      if (pol["refresh"]) c.policy.refresh = parse_duration(pol["refresh"].as<std::string>(), where + ": policy.refresh");
      if (pol["max_staleness"]) {
        c.policy.max_staleness = parse_duration(pol["max_staleness"].as<std::string>(), where + ": policy.max_staleness");
      }
      if (c.policy.refresh.count() <= 0) throw ConfigError(where + ": policy.refresh: must be positive");
      if (c.policy.max_staleness < c.policy.refresh) {
        throw ConfigError(where + ": policy.max_staleness: must be at least policy.refresh");
      }
      c.policy.cache_path = resolve_path(pol["cache"] ? pol["cache"].as<std::string>() : "state/" + c.name + ".policy.json");
    }
    c.audit_log = resolve_path(root["audit_log"] ? root["audit_log"].as<std::string>() : "state/" + c.name + ".audit.log");
    if (root["metrics_listen"]) c.metrics_listen = root["metrics_listen"].as<std::string>();
    if (root["log_level"]) c.log_level = root["log_level"].as<std::string>();
  } catch (const YAML::BadConversion& e) {
    throw ConfigError(where + ": " + describe_conversion_error(root, e.mark, e.msg));
  } catch (const YAML::Exception& e) {
    throw ConfigError(where + ": " + e.what());
  }
  return c;
}

}  // namespace

void check_listen_endpoint(const std::string& endpoint, const std::string& where) {
  const std::string usage = " (expected tcp://HOST:PORT with PORT 1-65535, or * or 0 for any free port, e.g. "
                            "tcp://0.0.0.0:5555)";
  if (endpoint.rfind("ipc://", 0) == 0 && endpoint.size() > 6) return;
  if (endpoint.rfind("tcp://", 0) != 0) throw ConfigError(where + ": '" + endpoint + "' is not a tcp:// address" + usage);
  const size_t colon = endpoint.rfind(':');
  const std::string host = colon > 6 ? endpoint.substr(6, colon - 6) : "";
  const std::string port = colon > 6 ? endpoint.substr(colon + 1) : "";
  if (host.empty() || port.empty()) throw ConfigError(where + ": '" + endpoint + "' has no host or no port" + usage);
  if (port == "*" || port == "0") return;
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
      std::stoi(port) > 65535) {
    throw ConfigError(where + ": port '" + port + "' of '" + endpoint + "' is not a TCP port" + usage);
  }
}

std::string default_tensor_listen(const std::string& listen) {
  if (listen.rfind("tcp://", 0) != 0) return "";
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon <= 6) return "";
  // Any free port: the pod names it in jobAccepted. A fixed port+1 would collide
  // with the next pod's `listen` when several pods use consecutive ports.
  return listen.substr(0, colon + 1) + "*";
}

void check_pod_token(const std::string& token, const std::string& pod, const std::string& where) {
  if (token.rfind("pod_", 0) == 0) return;
  throw ConfigError(where + ": this is not a pod token: a pod reads its policy with its own read-only token, so that "
                    "whoever reads the pod's files cannot act as its owner on the hub. Make one with `fedpod pod token " +
                    pod + " --out " + pod + ".token` (as the owner) and use that file; then the owner's token can "
                    "leave this machine");
}

SandboxConfig parse_sandbox(const YAML::Node& sb, const std::string& w) {
  SandboxConfig c;
  auto level = [&](const std::string& v) {
    if (v == "required") {
      c.required = true;
    } else if (v != "auto") {
      throw ConfigError(w + ": expected auto or required, got \"" + v + "\"");
    }
  };
  if (sb.IsScalar()) {
    level(sb.as<std::string>());
  } else if (sb.IsMap()) {
    check_keys(sb, {"level", "memory", "step_timeout", "load_timeout", "open_files"}, w);
    if (sb["level"]) level(sb["level"].as<std::string>());
    if (sb["memory"]) c.limits.memory_bytes = parse_bytes(sb["memory"].as<std::string>(), w + ".memory");
    if (sb["step_timeout"]) c.limits.step_timeout = parse_duration(sb["step_timeout"].as<std::string>(), w + ".step_timeout");
    if (sb["load_timeout"]) c.limits.load_timeout = parse_duration(sb["load_timeout"].as<std::string>(), w + ".load_timeout");
    if (sb["open_files"]) {
      c.limits.open_files = sb["open_files"].as<int>();
      if (c.limits.open_files < 32) throw ConfigError(w + ".open_files: must be at least 32");
    }
    if (c.limits.memory_bytes < (int64_t{256} << 20)) {
      throw ConfigError(w + ".memory: must be at least 256MiB (libtorch alone needs about that)");
    }
    if (c.limits.step_timeout.count() <= 0 || c.limits.load_timeout.count() <= 0) {
      throw ConfigError(w + ": timeouts must be positive");
    }
  } else {
    throw ConfigError(w + ": expected auto, required, or a map (level, memory, step_timeout, ...)");
  }
  return c;
}

PodConfig load_pod_config(const std::string& path) {
  return pod_config_from_yaml(load_yaml_file(path), path, fs::absolute(path).parent_path());
}

PodConfig parse_pod_config(const std::string& yaml, const std::string& where,
                           const std::string& base_dir) {
  return pod_config_from_yaml(parse_yaml(yaml, where), where, fs::path(base_dir));
}

}  // namespace fedpod::worker
