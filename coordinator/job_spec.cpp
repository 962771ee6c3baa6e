#include "fedpod/coordinator/job_spec.h"

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <random>
#include <set>
#include <type_traits>

#include "fedpod/aggregation/strategies.h"
#include "fedpod/metrics/metrics.h"
#include "fedpod/common/names.h"
#include "fedpod/model/zoo.h"
#include "fedpod/protocol/curve.h"

namespace fedpod::coordinator {
namespace fs = std::filesystem;
namespace {

std::string generated_job_id() {
  std::time_t now = std::time(nullptr);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::gmtime(&now));
  std::random_device rd;
  char suffix[8];
  std::snprintf(suffix, sizeof suffix, "%04x", static_cast<unsigned>(rd() & 0xffff));
  return std::string("job-") + stamp + "-" + suffix;
}

template <typename T>
T get(const YAML::Node& n, const std::string& where) {
  T v;
  try {
    v = n.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(where + ": has the wrong type (value: " + YAML::Dump(n) + ")");
  }
  // YAML spells NaN and infinity .nan and .inf; no setting of a job means either, and
  // NaN passes every range check written as `x < 0 || x > 1`.
  if constexpr (std::is_floating_point_v<T>) {
    if (!std::isfinite(v)) throw ConfigError(where + ": must be a finite number (value: " + YAML::Dump(n) + ")");
  }
  return v;
}

}  // namespace

void validate(JobSpec& s, const std::string& where, bool (*is_known_model)(const std::string&)) {
  if (s.job_id.empty()) {
    s.job_id = generated_job_id();
    s.job_id_generated = true;
  }
  if (std::string why = check_job_id(s.job_id); !why.empty()) throw ConfigError(where + ": job_id: " + why);
  if (s.model.ref.empty()) throw ConfigError(where + ": model.ref: required");
  if (s.model.username.empty() && !is_known_model(s.model.ref)) {
    throw ConfigError(where + ": model.ref: '" + s.model.ref +
                      "' is not a built-in model (" + join_names(model::builtin_names()) +
                      "); give model.username for a hub model");
  }
  if (s.model.username.empty() && model::is_builtin(s.model.ref)) {
    auto declared = model::make_builtin(s.model.ref)->hyperparameters();
    if (declared) {
      Status st = model::check_hyperparameters(s.model.hyperparameters, *declared, s.model.ref);
      if (!st.ok()) throw ConfigError(where + ": model.hyperparameters: " + st.message());
    }
  }
  if (!s.model.username.empty()) {
    if (s.hub_url.empty()) {
      throw ConfigError(where + ": model.username: the custom model '" + s.model.username + "/" + s.model.ref +
                        "' is resolved through the model hub: set hub: https://host:port in the job (or FEDPOD_HUB)");
    }
  }
  if (!s.hub_url.empty()) parse_hub_url(s.hub_url, where + ": hub");
  if (s.datastructure.target.empty()) throw ConfigError(where + ": datastructure.target: required");
  {
    auto& ds = s.datastructure;
    const auto target_categories = ds.categories.find(ds.target);
    if (target_categories != ds.categories.end()) {
      const auto k = static_cast<int64_t>(target_categories->second.size());
      if (ds.num_classes == 0) ds.num_classes = k;
      if (ds.num_classes != k) {
        throw ConfigError(where + ": datastructure.num_classes: " + std::to_string(ds.num_classes) + ", but " +
                          "datastructure.categories." + ds.target + " lists " + std::to_string(k) +
                          " categories; they must agree (or leave num_classes out)");
      }
    }
    if (ds.num_classes < 2) {
      throw ConfigError(where + ": datastructure.num_classes: required, at least 2 (or list the target's "
                        "categories in datastructure.categories." + ds.target + ")");
    }
  }
  if (s.pods.empty()) throw ConfigError(where + ": pods: list at least one pod");
  std::set<std::string> names;
  for (const auto& p : s.pods) {
    if (p.name.empty()) throw ConfigError(where + ": pods: every pod needs a name");
    if (p.address.empty() && s.hub_url.empty()) {
      throw ConfigError(where + ": pods: '" + p.name +
                        "' has no address: give one, or set hub: so pod names resolve through the hub");
    }
    if (!names.insert(p.name).second) throw ConfigError(where + ": pods: '" + p.name + "' is listed twice");
    if (!p.address.empty() && p.address.rfind("tcp://", 0) != 0 && p.address.rfind("ipc://", 0) != 0 &&
        p.address.rfind("inproc://", 0) != 0) {
      throw ConfigError(where + ": pods: '" + p.name + "': address '" + p.address +
                        "' is not tcp://HOST:PORT (the pod's listen address, e.g. tcp://10.0.0.5:5555)");
    }
    if (!p.public_key.empty() && !protocol::is_z85_key(p.public_key)) {
      throw ConfigError(where + ": pods: '" + p.name + "': public_key must be 40 Z85 characters (the pod's .pub file)");
    }
  }
  if (s.rounds < 1) throw ConfigError(where + ": rounds: must be at least 1");
  if (s.local_epochs < 0 || s.local_steps < 0 || (s.local_epochs == 0 && s.local_steps == 0)) {
    throw ConfigError(where + ": local_epochs / local_steps: one must be positive");
  }
  if (s.batch_size < 1) throw ConfigError(where + ": batch_size: must be at least 1");
  if (s.min_pods == 0) s.min_pods = static_cast<int>(s.pods.size());
  if (s.min_pods < 1 || s.min_pods > static_cast<int>(s.pods.size())) {
    throw ConfigError(where + ": min_pods: must be between 1 and the number of pods (" +
                      std::to_string(s.pods.size()) + ")");
  }
  if (s.round_timeout.count() <= 0) throw ConfigError(where + ": round_timeout: must be positive");
  if (s.max_concurrent_uploads < 1) throw ConfigError(where + ": max_concurrent_uploads: must be at least 1");
  if (s.heartbeat_interval.count() <= 0) throw ConfigError(where + ": heartbeat_interval: must be positive");
  if (s.heartbeat_timeout.count() < 0 ||
      (s.heartbeat_timeout.count() > 0 && s.heartbeat_timeout < 2 * s.heartbeat_interval)) {
    throw ConfigError(where + ": heartbeat_timeout: must be 0 (off) or at least twice heartbeat_interval");
  }
  if (s.eval_every < 0) throw ConfigError(where + ": eval_every: must be >= 0");
  if (s.aggregation_order != "arrival" && s.aggregation_order != "pod") {
    throw ConfigError(where + ": aggregation_order: '" + s.aggregation_order + "' is not arrival or pod");
  }
  if (s.update_precision != "float32" && s.update_precision != "bfloat16") {
    throw ConfigError(where + ": update_precision: '" + s.update_precision + "' is not float32 or bfloat16");
  }
  if (s.broadcast_precision != "float32" && s.broadcast_precision != "bfloat16") {
    throw ConfigError(where + ": broadcast_precision: '" + s.broadcast_precision + "' is not float32 or bfloat16");
  }
  if (s.secure_aggregation.enabled) {
    const auto& sa = s.secure_aggregation;
    if (s.update_precision != "float32") {
      throw ConfigError(where + ": secure_aggregation: pods send a masked fixed-point update; update_precision " +
                        s.update_precision + " does not apply (remove it or set float32)");
    }
    if (s.broadcast_precision != "float32") {
      throw ConfigError(where + ": secure_aggregation: pods mask their change to the exact float32 parameters; "
                        "broadcast_precision " + s.broadcast_precision + " does not apply (remove it or set float32)");
    }
    if (!(sa.clip > 0) || !std::isfinite(sa.clip)) throw ConfigError(where + ": secure_aggregation.clip: must be a positive number");
    if (sa.modulus_bits != 0 && sa.modulus_bits != 32 && sa.modulus_bits != 64) {
      throw ConfigError(where + ": secure_aggregation.modulus_bits: must be 32, 64 or auto");
    }
    const uint32_t pods = static_cast<uint32_t>(s.pods.size());
    if (sa.threshold != 0 && (sa.threshold < 2 || sa.threshold > pods)) {
      throw ConfigError(where + ": secure_aggregation.threshold: must be between 2 and the number of pods (" +
                        std::to_string(pods) + ")");
    }
    if (pods < 3) {
      throw ConfigError(where + ": secure_aggregation: needs at least 3 pods (with 2, each pod could subtract its own "
                        "update from the sum and learn the other's)");
    }
  }
  if (auto made = aggregation::make_strategy(s.strategy, s.strategy_options); !made.ok()) {
    throw ConfigError(where + ": " + made.status().message());
  }
  if ((s.sample_fraction > 0 || s.sample_count > 0) && s.secure_aggregation.enabled) {
    throw ConfigError(where + ": sample: client sampling does not work with secure_aggregation yet (its key "
                      "agreement is set up for every pod of the job); drop one of them");
  }
  if (aggregation::holds_all_updates(s.strategy) && s.secure_aggregation.enabled) {
    throw ConfigError(where + ": strategy " + s.strategy + " needs every pod's update, and secure_aggregation "
                      "reveals only their sum: choose one (a robust aggregate, or secure aggregation with fedavg or "
                      "a server optimizer)");
  }
  const auto& sp = s.datastructure.split;
  if (sp.validation < 0 || sp.test < 0 || sp.validation + sp.test >= 1) {
    throw ConfigError(where + ": datastructure.split: fractions must be >= 0 and sum to less than 1");
  }
  if (!(s.datastructure.scale > 0)) throw ConfigError(where + ": datastructure.scale: must be positive");
  if (!s.metrics_listen.empty()) {
    std::string host;
    int port = 0;
    Status st = metrics::parse_listen_address(s.metrics_listen, host, port);
    if (!st.ok()) throw ConfigError(where + ": metrics_listen: " + st.message());
  }
}

namespace {

// The body of load_job_spec and parse_job_spec: `w` names the source in errors;
// relative key_file and public_key_file paths resolve against `base`.
JobSpec job_spec_from_yaml(const YAML::Node& root, const std::string& w, const fs::path& base) {
  check_keys(root, {"job_id", "model", "datastructure", "pods", "hub_ca", "rounds", "local_epochs", "local_steps",
                    "batch_size", "min_pods", "round_timeout", "connect_timeout", "heartbeat_interval", "heartbeat_timeout", "checkpoint", "eval_every", "max_concurrent_uploads", "sample", "strategy", "aggregation_order", "update_precision", "broadcast_precision", "secure_aggregation", "differential_privacy",
                    "seed", "output_dir", "hub", "hub_token", "key_file", "metrics_listen",
                    "sandbox"},
             w);
  JobSpec s;
  if (root["job_id"]) s.job_id = get<std::string>(root["job_id"], w + ": job_id");
  auto m = root["model"];
  if (!m) throw ConfigError(w + ": model: required");
  check_keys(m, {"ref", "model_ref", "username", "version", "model_version", "hyperparameters"}, w + ": model");
  if (m["ref"] && m["model_ref"]) throw ConfigError(w + ": model: give ref or model_ref, not both");
  if (m["version"] && m["model_version"]) throw ConfigError(w + ": model: give version or model_version, not both");
  if (m["ref"]) s.model.ref = get<std::string>(m["ref"], w + ": model.ref");
  if (m["model_ref"]) s.model.ref = get<std::string>(m["model_ref"], w + ": model.model_ref");
  if (m["username"]) s.model.username = get<std::string>(m["username"], w + ": model.username");
  if (m["version"]) s.model.version = get<uint32_t>(m["version"], w + ": model.version");
  if (m["model_version"]) s.model.version = get<uint32_t>(m["model_version"], w + ": model.model_version");
  if (root["hub"]) {
    s.hub_url = get<std::string>(root["hub"], w + ": hub");
  } else if (const char* env = std::getenv("FEDPOD_HUB")) {
    s.hub_url = env;
  }
  if (root["hub_ca"]) {
    fs::path ca = get<std::string>(root["hub_ca"], w + ": hub_ca");
    if (ca.is_relative()) ca = base / ca;
    s.hub_ca = ca.lexically_normal().string();
  } else if (const char* env = std::getenv("FEDPOD_HUB_CA"); env && *env) {
    s.hub_ca = env;
  }
  if (root["hub_token"]) {
    s.hub_token = get<std::string>(root["hub_token"], w + ": hub_token");
  } else if (const char* env = std::getenv("FEDPOD_TOKEN")) {
    s.hub_token = env;
  }
  if (root["key_file"]) {
    fs::path kf = get<std::string>(root["key_file"], w + ": key_file");
    if (kf.string().rfind("~/", 0) == 0 && std::getenv("HOME")) kf = fs::path(std::getenv("HOME")) / kf.string().substr(2);
    if (kf.is_relative()) kf = base / kf;
    s.key_file = kf.lexically_normal().string();
  } else if (const char* env = std::getenv("FEDPOD_KEY_FILE"); env && *env) {
    s.key_file = env;
  }
  if (m["hyperparameters"]) {
    try {
      s.model.hyperparameters = Hyperparameters(yaml_to_json(m["hyperparameters"]));
    } catch (const ConfigError& e) {
      throw ConfigError(w + ": model." + e.what());
    }
  }
  auto d = root["datastructure"];
  if (!d) throw ConfigError(w + ": datastructure: required");
  check_keys(d, {"target", "features", "ignore", "input_shape", "num_classes", "scale", "split", "categories"},
             w + ": datastructure");
  auto& ds = s.datastructure;
  if (d["target"]) ds.target = get<std::string>(d["target"], w + ": datastructure.target");
  if (d["features"]) ds.features = get<std::vector<std::string>>(d["features"], w + ": datastructure.features");
  if (d["ignore"]) ds.ignore = get<std::vector<std::string>>(d["ignore"], w + ": datastructure.ignore");
  if (d["input_shape"]) ds.input_shape = get<std::vector<int64_t>>(d["input_shape"], w + ": datastructure.input_shape");
  if (d["num_classes"]) ds.num_classes = get<int64_t>(d["num_classes"], w + ": datastructure.num_classes");
  if (d["scale"]) ds.scale = get<double>(d["scale"], w + ": datastructure.scale");
  if (d["categories"]) {
    const auto c = d["categories"];
    const std::string cw = w + ": datastructure.categories";
    if (!c.IsMap()) throw ConfigError(cw + ": must map a column to its categories, e.g. {label: [cat, dog]}");
    for (const auto& item : c) {
      const std::string column = get<std::string>(item.first, cw);
      const std::string iw = cw + "." + column;
      if (!item.second.IsSequence()) throw ConfigError(iw + ": must be a list of categories, e.g. [cat, dog]");
      auto values = get<std::vector<std::string>>(item.second, iw);
      if (values.empty()) throw ConfigError(iw + ": list at least one category");
      std::set<std::string> seen;
      for (const auto& v : values) {
        if (!seen.insert(v).second) throw ConfigError(iw + ": '" + v + "' is listed twice");
      }
      ds.categories[column] = std::move(values);
    }
  }
  if (auto sp = d["split"]) {
    check_keys(sp, {"validation", "test", "seed"}, w + ": datastructure.split");
    if (sp["validation"]) ds.split.validation = get<double>(sp["validation"], w + ": datastructure.split.validation");
    if (sp["test"]) ds.split.test = get<double>(sp["test"], w + ": datastructure.split.test");
    if (sp["seed"]) ds.split.seed = get<uint64_t>(sp["seed"], w + ": datastructure.split.seed");
  }
  auto pods = root["pods"];
  if (!pods || !pods.IsSequence()) throw ConfigError(w + ": pods: required, a list of {name, address} (or names registered on the hub)");
  for (const auto& p : pods) {
    if (p.IsScalar()) {  // a bare name: its address comes from the hub
      s.pods.push_back({p.as<std::string>(), "", ""});
      continue;
    }
    check_keys(p, {"name", "address", "public_key", "public_key_file"}, w + ": pods");
    PodAddress a;
    if (p["name"]) a.name = get<std::string>(p["name"], w + ": pods.name");
    if (p["address"]) a.address = get<std::string>(p["address"], w + ": pods.address");
    if (p["public_key"]) a.public_key = get<std::string>(p["public_key"], w + ": pods.public_key");
    if (p["public_key_file"]) {
      if (p["public_key"]) throw ConfigError(w + ": pods: '" + a.name + "': give public_key or public_key_file, not both");
      fs::path f = get<std::string>(p["public_key_file"], w + ": pods.public_key_file");
      if (f.is_relative()) f = base / f;
      auto k = protocol::read_key_file(f.lexically_normal().string());
      if (!k.ok()) throw ConfigError(w + ": pods: '" + a.name + "': public_key_file: " + k.status().message());
      a.public_key = k->public_key;
    }
    s.pods.push_back(a);
  }
  if (root["rounds"]) s.rounds = get<int>(root["rounds"], w + ": rounds");
  if (root["local_epochs"]) s.local_epochs = get<int>(root["local_epochs"], w + ": local_epochs");
  if (root["local_steps"]) {
    s.local_steps = get<int>(root["local_steps"], w + ": local_steps");
    if (!root["local_epochs"]) s.local_epochs = 0;
  }
  if (root["batch_size"]) s.batch_size = get<int>(root["batch_size"], w + ": batch_size");
  if (root["min_pods"]) s.min_pods = get<int>(root["min_pods"], w + ": min_pods");
  if (root["round_timeout"]) s.round_timeout = parse_duration(get<std::string>(root["round_timeout"], w), w + ": round_timeout");
  if (root["connect_timeout"]) s.connect_timeout = parse_duration(get<std::string>(root["connect_timeout"], w), w + ": connect_timeout");
  if (root["heartbeat_interval"]) {
    s.heartbeat_interval =
        parse_duration(get<std::string>(root["heartbeat_interval"], w), w + ": heartbeat_interval");
  }
  if (root["heartbeat_timeout"]) {
    const std::string t = get<std::string>(root["heartbeat_timeout"], w + ": heartbeat_timeout");
    s.heartbeat_timeout = t == "0" ? std::chrono::milliseconds(0) : parse_duration(t, w + ": heartbeat_timeout");
  }
  if (root["checkpoint"]) s.checkpoint = get<bool>(root["checkpoint"], w + ": checkpoint");
  if (root["eval_every"]) s.eval_every = get<int>(root["eval_every"], w + ": eval_every");
  if (const YAML::Node sm = root["sample"]) {
    if (!sm.IsMap()) throw ConfigError(w + ": sample: give {fraction: F} or {count: N}");
    check_keys(sm, {"fraction", "count"}, w + ": sample");
    if (sm["fraction"] && sm["count"]) throw ConfigError(w + ": sample: give fraction or count, not both");
    if (sm["fraction"]) s.sample_fraction = get<double>(sm["fraction"], w + ": sample.fraction");
    if (sm["count"]) s.sample_count = get<int>(sm["count"], w + ": sample.count");
    if (sm["fraction"] && !(s.sample_fraction > 0 && s.sample_fraction <= 1)) {
      throw ConfigError(w + ": sample.fraction: must be in (0, 1], got " + std::to_string(s.sample_fraction));
    }
    if (sm["count"] && s.sample_count < 1) {
      throw ConfigError(w + ": sample.count: must be at least 1, got " + std::to_string(s.sample_count));
    }
  }
  if (root["max_concurrent_uploads"]) s.max_concurrent_uploads = get<int>(root["max_concurrent_uploads"], w + ": max_concurrent_uploads");
  if (root["strategy"] && root["strategy"].IsMap()) {
    const YAML::Node st = root["strategy"];
    if (!st["name"]) throw ConfigError(w + ": strategy: give its name (strategy: {name: fedadam, ...})");
    s.strategy = get<std::string>(st["name"], w + ": strategy.name");
    for (const auto& kv : st) {
      const std::string key = get<std::string>(kv.first, w + ": strategy: an option's name");
      if (key == "name") continue;
      s.strategy_options[key] = get<double>(kv.second, w + ": strategy." + key);
    }
  } else if (root["strategy"]) {
    s.strategy = get<std::string>(root["strategy"], w + ": strategy");
  }
  if (root["aggregation_order"]) {
    s.aggregation_order = get<std::string>(root["aggregation_order"], w + ": aggregation_order");
  }
  if (root["update_precision"]) {
    s.update_precision = get<std::string>(root["update_precision"], w + ": update_precision");
  }
  if (root["broadcast_precision"]) {
    s.broadcast_precision = get<std::string>(root["broadcast_precision"], w + ": broadcast_precision");
  }
  if (auto sa = root["secure_aggregation"]) {
    const std::string sw = w + ": secure_aggregation";
    if (sa.IsScalar()) {
      s.secure_aggregation.enabled = get<bool>(sa, sw);
    } else if (sa.IsMap()) {
      check_keys(sa, {"enabled", "threshold", "neighbours", "clip", "modulus_bits"}, sw);
      s.secure_aggregation.enabled = sa["enabled"] ? get<bool>(sa["enabled"], sw + ".enabled") : true;
      if (sa["threshold"]) s.secure_aggregation.threshold = get<uint32_t>(sa["threshold"], sw + ".threshold");
      if (sa["neighbours"]) s.secure_aggregation.neighbours = get<uint32_t>(sa["neighbours"], sw + ".neighbours");
      if (sa["clip"]) s.secure_aggregation.clip = get<double>(sa["clip"], sw + ".clip");
      if (sa["modulus_bits"]) {
        const std::string b = get<std::string>(sa["modulus_bits"], sw + ".modulus_bits");
        if (b == "auto") s.secure_aggregation.modulus_bits = 0;
        else if (b == "32") s.secure_aggregation.modulus_bits = 32;
        else if (b == "64") s.secure_aggregation.modulus_bits = 64;
        else throw ConfigError(sw + ".modulus_bits: '" + b + "' is not 32, 64 or auto");
      }
    } else {
      throw ConfigError(sw + ": expected true, false or a map {threshold, neighbours, clip, modulus_bits}");
    }
  }
  if (auto dp = root["differential_privacy"]) {
    const std::string dw = w + ": differential_privacy";
    if (!dp.IsMap()) throw ConfigError(dw + ": expected a map {noise_multiplier, max_grad_norm}");
    check_keys(dp, {"noise_multiplier", "max_grad_norm"}, dw);
    if (!dp["noise_multiplier"]) throw ConfigError(dw + ".noise_multiplier: required (e.g. 1.1)");
    s.differential_privacy.noise_multiplier = get<double>(dp["noise_multiplier"], dw + ".noise_multiplier");
    if (dp["max_grad_norm"]) s.differential_privacy.max_grad_norm = get<double>(dp["max_grad_norm"], dw + ".max_grad_norm");
    const auto& d = s.differential_privacy;
    if (!(d.noise_multiplier > 0) || !std::isfinite(d.noise_multiplier)) {
      throw ConfigError(dw + ".noise_multiplier: must be a positive number (the noise's std over the clipping norm)");
    }
    if (!(d.max_grad_norm > 0) || !std::isfinite(d.max_grad_norm)) {
      throw ConfigError(dw + ".max_grad_norm: must be a positive number");
    }
  }
  if (root["seed"]) s.seed = get<uint64_t>(root["seed"], w + ": seed");
  if (root["output_dir"]) s.output_dir = get<std::string>(root["output_dir"], w + ": output_dir");
  if (root["metrics_listen"]) s.metrics_listen = get<std::string>(root["metrics_listen"], w + ": metrics_listen");
  if (root["sandbox"]) s.sandbox = worker::parse_sandbox(root["sandbox"], w + ": sandbox");
  validate(s, w);
  return s;
}

}  // namespace

JobSpec load_job_spec(const std::string& path) {
  return job_spec_from_yaml(load_yaml_file(path), path, fs::absolute(path).parent_path());
}

JobSpec parse_job_spec(const std::string& yaml, const std::string& where, const std::string& base_dir) {
  return job_spec_from_yaml(parse_yaml(yaml, where), where, fs::path(base_dir));
}

}  // namespace fedpod::coordinator
