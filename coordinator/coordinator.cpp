#include "impl.h"

#include <csignal>

namespace fedpod::coordinator {

// The job's output folder, made if missing and checked writable before any pod is
// asked for anything: a folder that cannot take history.json is a configuration
// error, not a crash at the first write.
static Status prepare_output_dir(const std::string& dir) {
  if (dir.empty()) return Status::invalid("output_dir is empty; name a folder for history.json and the model");
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    return Status::invalid("output_dir '" + dir + "' exists and is not a folder");
  fs::create_directories(dir, ec);
  if (ec) return Status::invalid("output_dir '" + dir + "': cannot create it: " + ec.message());
  const fs::path probe = fs::path(dir) / ".fedpod-write-test";
  {
    std::ofstream f(probe);
    if (!f || !(f << "ok") || !f.flush())
      return Status::invalid("output_dir '" + dir + "' is not writable: " + std::strerror(errno));
  }
  fs::remove(probe, ec);
  return Status();
}

void Coordinator::Impl::set_not_ready(std::string reason) {
  std::lock_guard<std::mutex> lock(phase_mutex);
  not_ready = std::move(reason);
}

std::string Coordinator::Impl::model_label() const {
  if (spec.model.username.empty()) return spec.model.ref;
  const uint32_t v = resolved ? static_cast<uint32_t>(resolved->version.version) : spec.model.version;
  return spec.model.username + "/" + spec.model.ref + ":" + (v ? std::to_string(v) : std::string("latest"));
}

void Coordinator::Impl::record_eval(const std::optional<EvalSummary>& s) {
  if (!s) return;
  job_metrics.global_loss.Add({{"split", s->split}}).Set(s->loss);
  job_metrics.global_accuracy.Add({{"split", s->split}}).Set(s->accuracy);
}

std::string Coordinator::Impl::model_name() const {
  if (spec.model.username.empty()) return spec.model.ref;
  return spec.model.username + "/" + spec.model.ref +
         (spec.model.version ? " version " + std::to_string(spec.model.version) : std::string(" (latest)"));
}

StatusOr<std::unique_ptr<hub::Client>> Coordinator::Impl::hub_client() const {
  HubUrl addr;
  try {
    addr = parse_hub_url(spec.hub_url, "hub");
  } catch (const ConfigError& e) {
    return Status::invalid(e.what());
  }
  addr.ca_file = spec.hub_ca;
  return std::make_unique<hub::Client>(addr, spec.hub_token);
}

Status Coordinator::Impl::resolve_custom() {
  const auto& m = spec.model;
  const std::string what = "model '" + m.username + "/" + m.ref + "' " +
                           (m.version ? "version " + std::to_string(m.version) : std::string("(latest version)"));
  auto made = hub_client();
  if (!made.ok()) return made.status();
  hub::Client& client = **made;
  auto v = client.resolve(m.username, m.ref, m.version);
  if (!v.ok()) {
    return Status(v.status().code(), what + " cannot be resolved on the hub " + spec.hub_url + ": " +
                                         v.status().message());
  }
  if (!model::is_custom_format(v->format)) {
    return Status::invalid(what + ": the hub says its format is '" + v->format + "', not torchscript or plugin");
  }
  if (Status st = prepare_output_dir(spec.output_dir); !st.ok()) {
    config_error = true;
    return st;
  }
  const fs::path dir = fs::path(spec.output_dir) / "artifacts";
  std::error_code made_dir;
  fs::create_directories(dir, made_dir);
  if (made_dir) return Status::invalid("cannot create " + dir.string() + ": " + made_dir.message());
  const std::string path = (dir / (v->sha256 + model::artifact_extension(v->format))).string();
  auto sha = client.download_artifact(m.username, m.ref, v->version, path, v->sha256);
  if (!sha.ok()) return Status(sha.status().code(), what + ": download failed: " + sha.status().message());
  auto bytes = std::make_shared<std::string>();
  {
    std::ifstream f(path, std::ios::binary);
    bytes->assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (!f.good() && !f.eof()) return Status::internal("cannot read " + path);
  }
  // download_artifact checked the hash; check the bytes actually sent, too.
  if (sha256_hex(*bytes) != v->sha256) {
    return Status::bad_message(what + ": " + path + " changed after download (sha256 differs from the hub's " +
                               v->sha256 + ")");
  }
  resolved = Resolved{*v, bytes};
  job_metrics.set_job_info(spec.job_id, model_label());
  history["model"]["resolved"] = {{"username", v->username}, {"ref", v->model_ref}, {"version", v->version},
                                  {"sha256", v->sha256},     {"format", v->format},  {"bytes", v->size},
                                  {"artifact", path}};
  write_history();
  log->info("event=model_resolved model={}/{} version={} format={} sha256={} bytes={}", v->username, v->model_ref,
            v->version, v->format, v->sha256, v->size);
  if (!spec.runner_command.empty()) {
    // Its code runs only in a confined runner, as on the pods.
    worker::RunnerOptions ro;
    ro.command = spec.runner_command;
    ro.limits = spec.sandbox.limits;
    ro.log = log;
    try {
      ro.confinement = worker::probe_confinement(spec.runner_command);
    } catch (const ConfigError& e) {
      return Status::internal(what + ": " + e.what());
    }
    if (!ro.confinement.namespaces) {
      if (spec.sandbox.required) {
        config_error = true;
        return Status::failed_precondition(
            what + ": sandbox: required, but the job runner cannot get namespaces here: " + ro.confinement.why_not +
            " (install bubblewrap and allow unprivileged user namespaces, or set sandbox: auto)");
      }
      log->warn("event=sandbox level={} why=\"{}\" consequence=\"while the model is built, {}\"", ro.confinement.level,
                ro.confinement.why_not, ro.confinement.gap);
      progress << "warning: the custom model is built with confinement " << ro.confinement.level
               << " only: " << ro.confinement.why_not << "\n";
    }
    auto r = worker::load_in_runner(v->username + "/" + v->model_ref + ":" + std::to_string(v->version), v->format,
                                    *bytes, ro, "coordinator");
    if (!r.ok()) return Status(r.status().code(), what + ": " + r.status().message());
    model_runner = std::move(*r);
    declared = model_runner->hyperparameters();
    log->info("event=custom_model_loaded model={}/{} version={} confinement=\"{}\"", v->username, v->model_ref,
              v->version, model_runner->confinement());
    history["model"]["confinement"] = model_runner->confinement();
    return Status();
  }
  auto loaded = load_custom(path, v->format);
  if (!loaded.ok()) return Status(loaded.status().code(), what + ": " + loaded.status().message());
  model = std::move(*loaded);
  history["model"]["confinement"] = "none (in-process)";
  return hyperparameters_of_model();
}

Status Coordinator::Impl::hyperparameters_of_model() {
  try {
    declared = model->hyperparameters();
  } catch (const std::exception& e) {
    return Status::invalid("model " + model_name() + ": hyperparameters() failed: " + e.what());
  }
  return Status();
}

Status Coordinator::Impl::resolve_pod_addresses() {
  std::unique_ptr<hub::Client> client;
  for (auto& p : spec.pods) {
    // A pod's address, and its key when we authenticate, come from the hub unless given.
    if (!p.address.empty() && (!keys || !p.public_key.empty())) continue;
    if (spec.hub_url.empty()) {
      return Status::invalid("pod '" + p.name + "' has no public_key: give pods[].public_key in the job (the pod's .pub "
                             "file) or set hub: so it is looked up");
    }
    if (!client) {
      auto made = hub_client();
      if (!made.ok()) return made.status();
      client = std::move(*made);
    }
    auto info = client->get_pod(p.name);
    if (!info.ok()) {
      return Status(info.status().code(), "pod '" + p.name + "' cannot be resolved on the hub " + spec.hub_url +
                                              ": " + info.status().message());
    }
    if (p.address.empty()) p.address = info->address;
    if (p.public_key.empty()) p.public_key = info->public_key;
    log->info("event=pod_resolved pod={} address={} public_key={}", p.name, p.address, p.public_key);
  }
  return Status();
}

std::vector<size_t> Coordinator::Impl::active_pods() const {
  std::vector<size_t> out;
  for (size_t i = 0; i < pods.size(); ++i) {
    if (pods[i].active) out.push_back(i);
  }
  return out;
}

std::vector<size_t> Coordinator::Impl::pods_with_job() const {
  std::vector<size_t> out;
  for (size_t i : active_pods()) {
    if (!pods[i].needs_rejoin) out.push_back(i);
  }
  return out;
}

std::string Coordinator::Impl::describe_failures(const std::map<size_t, PodRound>& r) const {
  std::string out;
  for (const auto& [i, p] : r) {
    if (p.outcome == "ok") continue;
    if (!out.empty()) out += "; ";
    out += pods[i].addr.name + " " + p.outcome + " (" + p.error + ")";
  }
  return out;
}

std::map<std::string, PodRound> Coordinator::Impl::by_name(const std::map<size_t, PodRound>& r) const {
  std::map<std::string, PodRound> out;
  for (const auto& [i, p] : r) out[pods[i].addr.name] = p;
  return out;
}

Status Coordinator::Impl::take_train_metrics(const Pod& pod, int round, wire::TrainDone::Reader d, PodRound& pr) {
  // history.json's own per-pod fields (report.html reads some of them as text).
  static const std::set<std::string> kReserved = {"outcome",       "error",        "num_samples",
                                                  "seconds",       "train_seconds", "phase",
                                                  "decision",      "train_samples", "validation_samples",
                                                  "test_samples",  "skipped_rows"};
  constexpr size_t kMaxMetrics = 64;
  constexpr size_t kMaxName = 64;
  auto metrics = d.getMetrics();
  if (metrics.size() > kMaxMetrics) {
    return Status::bad_message("trainDone carries " + std::to_string(metrics.size()) + " metrics, at most " +
                               std::to_string(kMaxMetrics));
  }
  for (auto m : metrics) {
    const auto text = m.getName();
    const std::string name(text.begin(), text.size());
    bool plain = !name.empty() && name.size() <= kMaxName && (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_');
    for (char c : name) plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.');
    if (!plain) {
      std::string shown;
      for (char c : name.substr(0, kMaxName)) shown += (c >= 0x20 && c < 0x7f) ? c : '?';
      if (name.size() > kMaxName) shown += "...";
      return Status::bad_message("trainDone metric '" + shown +
                                 "' is not a metric name (a letter or '_', then letters, digits, '_' or '.'; at most " +
                                 std::to_string(kMaxName) + " characters)");
    }
    if (kReserved.count(name)) {
      return Status::bad_message("trainDone metric '" + name +
                                 "' is a name history.json keeps for the coordinator's own fields");
    }
    if (!std::isfinite(m.getValue())) {
      log->warn("event=metric_dropped job={} round={} pod={} metric={} reason=\"not a finite number\"", spec.job_id,
                round, pod.addr.name, name);
      continue;
    }
    pr.metrics[name] = m.getValue();
  }
  const double seconds = d.getSeconds();
  pr.metrics["train_seconds"] = std::isfinite(seconds) && seconds >= 0 ? seconds : 0.0;
  return Status();
}

// A mirrored buffer (an integer or bool buffer: num_batches_tracked, an index table)
// takes the pods' largest value, not a mean, so one pod's value becomes every pod's
// next round. A pod's must be what such a buffer can hold: whole numbers (0 or 1 for a
// bool), within the ±2^24 its float32 slot holds exactly (beyond it every honest pod
// fails to store its own after training), and raised by no more than `most_added`
// above this round's value (the samples the pod may process in a round: a counter of
// steps or of samples grows by at most that), so that one pod cannot push a counter
// to the limit for the others.
static Status check_mirrored(const model::ParamInfo& info, const torch::Tensor& v, const torch::Tensor& base,
                             double most_added) {
  if (v.numel() == 0) return Status();
  auto refuse = [&](const std::string& why) {
    return Status::invalid("buffer '" + info.name + "' (" + std::string(c10::toString(info.dtype)) + "): " + why);
  };
  if (!v.eq(v.round()).all().item<bool>()) return refuse("holds a value that is not a whole number");
  const double lo = v.min().item<double>(), hi = v.max().item<double>();
  if (info.dtype == torch::kBool) {
    if (lo < 0 || hi > 1) return refuse("holds a value other than 0 and 1");
    return Status();
  }
  const double limit = static_cast<double>(model::kMaxMirroredMagnitude);
  if (lo < -limit || hi > limit) {
    return refuse("holds " + std::to_string(static_cast<int64_t>(std::abs(lo) > hi ? lo : hi)) +
                  ", beyond the " + std::to_string(model::kMaxMirroredMagnitude) + " its float32 slot holds exactly");
  }
  const double raised = (v - base).max().item<double>();
  if (raised > most_added) {
    return refuse("raised by " + std::to_string(static_cast<int64_t>(raised)) + " in one round, more than the " +
                  std::to_string(static_cast<int64_t>(most_added)) + " samples the pod may process in a round");
  }
  return Status();
}

// Whether the round's new parameters, and the state its strategy carries on, are
// finite; the error names what is not.
static Status check_aggregate(const torch::Tensor& next, const aggregation::Strategy& strategy) {
  auto finite = [](const torch::Tensor& t) {
    if (t.scalar_type() != torch::kFloat32) return true;  // only float state can overflow
    const torch::Tensor c = t.contiguous();
    return protocol::all_finite(c.data_ptr<float>(), static_cast<size_t>(c.numel()));
  };
  if (!finite(next)) {
    return Status::invalid("the " + strategy.name() + " aggregate of this round's updates is not finite (float32 overflow)");
  }
  for (const auto& t : strategy.state()) {
    if (!finite(t)) {
      return Status::invalid("the state that " + strategy.name() +
                             " carries to the next round is not finite (float32 overflow)");
    }
  }
  return Status();
}

// "pod-a 0.52, pod-b 3.1e+38": each pod's largest absolute value in its update.
static std::string describe_magnitudes(const std::map<std::string, float>& m) {
  std::string out;
  char buf[32];
  for (const auto& [name, v] : m) {
    std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(v));
    out += (out.empty() ? "" : ", ") + name + " " + buf;
  }
  return out.empty() ? "none folded" : out;
}

// "pod-b lacks 'age', 'bmi'; only pod-b has 'zip'" or "the same columns in another
// order (first difference: column 3 is 'b' on pod-a, 'c' on pod-b)".
static std::string describe_difference(const std::vector<std::string>& a, const std::vector<std::string>& b,
                                       const std::string& a_name, const std::string& b_name) {
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (size_t k = 0; k < names.size() && k < 10; ++k) out += (k ? ", '" : "'") + names[k] + "'";
    if (names.size() > 10) out += " and " + std::to_string(names.size() - 10) + " more";
    return out;
  };
  std::vector<std::string> missing, extra;
  const std::set<std::string> sa(a.begin(), a.end()), sb(b.begin(), b.end());
  for (const auto& n : a) {
    if (!sb.count(n)) missing.push_back(n);
  }
  for (const auto& n : b) {
    if (!sa.count(n)) extra.push_back(n);
  }
  std::string out;
  if (!missing.empty()) out += b_name + " lacks " + list(missing);
  if (!extra.empty()) out += (out.empty() ? "" : "; ") + std::string("only ") + b_name + " has " + list(extra);
  if (out.empty()) {
    size_t k = 0;
    while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
    out = "the same columns in another order (column " + std::to_string(k + 1) + " is '" + a[k] + "' on " + a_name +
          ", '" + b[k] + "' on " + b_name + ")";
  }
  return out;
}

std::vector<size_t> Coordinator::Impl::sample_pods(std::vector<size_t> available, int round) const {
  if (spec.sample_fraction <= 0 && spec.sample_count <= 0) return available;
  const size_t n_avail = available.size();
  size_t n = spec.sample_count > 0 ? static_cast<size_t>(spec.sample_count)
                                   : static_cast<size_t>(std::ceil(spec.sample_fraction * static_cast<double>(n_avail)));
  n = std::min(n_avail, std::max(n, static_cast<size_t>(std::max(spec.min_pods, 1))));
  // From (seed, round) alone: a resumed job draws the same pods for the same round.
  std::mt19937_64 rng(spec.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(round));
  for (size_t k = 0; k < n; ++k) {
    std::uniform_int_distribution<size_t> pick(k, n_avail - 1);
    std::swap(available[k], available[pick(rng)]);
  }
  available.resize(n);
  std::sort(available.begin(), available.end());  // the job's pod order, for aggregation_order: pod
  return available;
}

Status Coordinator::Impl::hello_and_check() {
  const uint64_t rid = next_request++;
  protocol::Outgoing out(spec.job_id, rid);
  out.envelope().getBody().initHello();
  std::vector<size_t> all;
  for (size_t i = 0; i < pods.size(); ++i) all.push_back(i);
  std::map<size_t, data::Schema> schemas;
  auto replies = exchange(out, rid, all, {wire::Envelope::Body::HELLO_REPLY}, Clock::now() + spec.connect_timeout,
                          false, [&](Pod& pod, protocol::Incoming& in) {
                            auto hr = in.envelope().getBody().getHelloReply();
                            schemas[&pod - pods.data()] = protocol::from_wire(hr.getSchema());
                            pod.max_frame_bytes = hr.getMaxFrameBytes();
                            return PodRound{"ok", "", static_cast<int64_t>(hr.getSchema().getNumRows()), 0, {}};
                          });
  std::optional<std::vector<std::string>> features;
  std::string features_from;
  std::vector<data::PodSchema> answered;
  progress << "pods:\n";
  // A pod left out before round 1 is in history.json and the report with its reason:
  // never reached (each cause told apart), its CURVE handshake refused, or its answer.
  nlohmann::json pods_json = nlohmann::json::object();
  std::map<size_t, std::future<Unreached>> diagnoses;  // all at once: at most 2 s in all
  for (auto& [i, r] : replies) {
    if (r.outcome == "timeout" && !pods[i].connected && !stopping()) {
      diagnoses[i] = std::async(std::launch::async, diagnose_unreached, pods[i].addr.address,
                                std::chrono::milliseconds(2000));
    }
  }
  for (auto& [i, r] : replies) {
    if (r.outcome == "ok" || stopping()) continue;
    std::string cause = r.outcome;
    if (r.outcome == "refused" && !pods[i].handshake_error.empty() && !pods[i].secured) {
      cause = "curve_refused";
    } else if (diagnoses.count(i)) {
      const Unreached u = diagnoses[i].get();
      r.outcome = u.outcome;
      r.error = u.reason;
      cause = u.cause;
    } else if (r.outcome == "timeout" && keys && !pods[i].secured) {
      cause = "no_handshake";
      r.error = "TCP connects to " + pods[i].addr.address + ", but no CURVE handshake completed within "
                "connect_timeout: another program listens on that port, or it is not a fedpod worker";
    } else if (r.outcome == "timeout") {
      cause = "no_answer";
      r.error = "connected, but the pod did not answer hello within connect_timeout";
    } else if (!r.code.empty()) {
      cause = r.code;
    }
    pods_json[pods[i].addr.name] = {{"outcome", r.outcome}, {"phase", "hello"}, {"cause", cause}, {"error", r.error}};
    emit({{"event", "pod_left_out"}, {"pod", pods[i].addr.name}, {"phase", "hello"}, {"outcome", r.outcome},
          {"cause", cause}, {"reason", r.error}});
    progress << "  " << pods[i].addr.name << ": left out: " << r.outcome << " (" << cause << "): " << r.error << "\n";
  }
  history["pods"] = pods_json;
  progress << std::flush;
  for (auto& [i, r] : replies) {
    if (r.outcome != "ok") continue;
    auto f = data::resolve_features(schemas[i], spec.datastructure);
    if (!f.ok()) {
      return Status(StatusCode::kSchemaMismatch, "pod " + pods[i].addr.name + ": " + f.status().message());
    }
    if (!features) {
      features = *f;
      features_from = pods[i].addr.name;
    } else if (*features != *f) {
      return Status(StatusCode::kSchemaMismatch, "pod " + pods[i].addr.name + " has features that differ from pod " +
                                                     features_from + "'s: " + describe_difference(*features, *f,
                                                     features_from, pods[i].addr.name) +
                                                     "; list datastructure.features explicitly, or make the pods' "
                                                     "columns the same");
    }
    pods[i].active = true;
    answered.push_back({pods[i].addr.name, &schemas[i]});
    max_rows = std::max<int64_t>(max_rows, r.num_samples);
  }
  int ok = static_cast<int>(active_pods().size());
  if (ok < spec.min_pods) {
    return Status(StatusCode::kUnavailable, std::to_string(ok) + " of " + std::to_string(pods.size()) +
                                                " pods answered hello, min_pods is " + std::to_string(spec.min_pods) +
                                                ": " + describe_failures(replies));
  }
  for (auto& [i, r] : replies) {
    if (r.outcome != "ok") log->warn("event=pod_skipped pod={} reason=\"{}\"", pods[i].addr.name, r.error);
  }
  ds = spec.datastructure;
  ds.features = *features;
  return agree_categories(answered);
}

Status Coordinator::Impl::agree_categories(const std::vector<data::PodSchema>& answered) {
  std::vector<std::string> columns = ds.features;
  columns.insert(columns.begin(), ds.target);
  auto agreed = data::agree_categories(answered, spec.datastructure, columns);
  if (!agreed.ok()) return agreed.status();
  ds.categories = std::move(*agreed);
  const auto target = ds.categories.find(ds.target);
  if (target != ds.categories.end() && static_cast<int64_t>(target->second.size()) != ds.num_classes) {
    std::string list;
    for (size_t i = 0; i < target->second.size() && i < 12; ++i) list += (i ? ", " : "") + target->second[i];
    if (target->second.size() > 12) list += ", ...";
    return Status(StatusCode::kSchemaMismatch,
                  "datastructure.num_classes is " + std::to_string(ds.num_classes) + ", but the pods declare " +
                      std::to_string(target->second.size()) + " categories of the target '" + ds.target +
                      "' (" + list + "); set num_classes to that, or list the categories in " +
                      "datastructure.categories." + ds.target);
  }
  nlohmann::json cats = nlohmann::json::object();
  for (const auto& [column, values] : ds.categories) {
    const bool listed = spec.datastructure.categories.count(column) > 0;
    cats[column] = {{"values", values}, {"from", listed ? "job" : "pods"}};
    log->info("event=categories_agreed column={} count={} from={}", column, values.size(), listed ? "job" : "pods");
    progress << "categories of '" << column << "': " << values.size()
             << (listed ? " (listed by the job)" : " (the union the pods declare)") << ", coded 0.."
             << values.size() - 1 << " on every pod\n";
  }
  history["datastructure"] = {{"target", ds.target},
                              {"features", ds.features},
                              {"num_classes", ds.num_classes},
                              {"categories", cats}};
  return Status();
}

Status Coordinator::Impl::load_model() {
  if (spec.model.username.empty()) {
    model = make_model(spec.model.ref);
    if (!model) return Status::not_found("model '" + spec.model.ref + "' is not a built-in model");
    FEDPOD_RETURN_IF_ERROR(hyperparameters_of_model());
  } else {
    FEDPOD_RETURN_IF_ERROR(resolve_custom());
  }
  if (!declared) {
    log->warn("event=hyperparameters_unchecked model=\"{}\"", model_name());
    progress << "note: model " << model_name()
             << " does not declare its hyperparameters (Model::hyperparameters), so their names and types are "
                "not checked\n";
    return Status();
  }
  Status st = model::check_hyperparameters(spec.model.hyperparameters, *declared, model_name());
  if (!st.ok()) config_error = true;
  return st;
}

Status Coordinator::Impl::create_model() {
  auto shape = data::resolve_input_shape(ds, static_cast<int64_t>(ds.features.size()));
  if (!shape.ok()) return shape.status();
  if (model_runner) {
    auto built = model_runner->create(*shape, ds.num_classes, spec.model.hyperparameters, spec.seed);
    model_runner.reset();  // the runner ends: no model code stays alive here
    if (!built.ok()) return Status(built.status().code(), "model " + model_name() + ": " + built.status().message());
    layout = std::move(built->layout);
    initial = std::move(built->state);
  } else {
    torch::manual_seed(spec.seed);
    try {
      model->create_model(*shape, ds.num_classes, spec.model.hyperparameters);
    } catch (const ConfigError& e) {
      return Status::invalid("model " + model_name() + ": " + e.what());
    } catch (const c10::Error& e) {
      return Status::invalid("model " + model_name() + ": " + e.what_without_backtrace());
    }
    layout = model->flat().layout();
    initial = model->flat().tensor().clone();
  }
  specs = protocol::tensor_specs(layout);
  return Status();
}

std::map<size_t, PodRound> Coordinator::Impl::send_start_job(std::vector<size_t> targets, std::map<size_t, std::string>& decisions) {
  const uint64_t rid = next_request++;
  std::map<size_t, PodRound> too_small;  // pods whose max_frame_bytes cannot take the artifact
  if (resolved) {
    std::vector<size_t> fit;
    for (size_t i : targets) {
      if (pods[i].max_frame_bytes != 0 && pods[i].max_frame_bytes < resolved->artifact->size()) {
        too_small[i] = {"refused",
                        "the model artifact has " + std::to_string(resolved->artifact->size()) +
                            " bytes, the pod accepts frames of at most " + std::to_string(pods[i].max_frame_bytes) +
                            " (pod.yaml max_frame_bytes)",
                        0, 0, {}};
      } else {
        fit.push_back(i);
      }
    }
    targets = fit;
  }
  // This startJob's half of the tensor channel's key agreement (one key pair for
  // all its pods; each pod answers with its own, so each pair of keys differs).
  protocol::BulkKeyPair tensor_keys;
  auto fill = [&](protocol::Outgoing& out, size_t i) {
    auto sj = out.envelope().getBody().initStartJob();
    auto m = sj.initModel();
    m.setUsername(spec.model.username);
    m.setModelRef(spec.model.ref);
    m.setModelVersion(spec.model.version);
    m.setHyperparameters(spec.model.hyperparameters.dump());
    if (resolved) {
      const auto& v = resolved->version;
      m.setModelVersion(static_cast<uint32_t>(v.version));  // the exact version resolved, never "latest"
      m.setSha256(v.sha256);
      m.setFormat(v.format);
      m.setArtifactBytes(resolved->artifact->size());
      m.setArtifactFrame(out.attach_bytes(resolved->artifact));  // shared by every pod's message: no copy
    }
    protocol::to_wire(ds, sj.initDatastructure());
    sj.setSeed(spec.seed);
    if (keys) {
      const std::string pk = tensor_keys.public_key();
      sj.setTensorKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(pk.data()), pk.size()));
    }
    if (secagg) protocol::secagg::to_wire(*secagg, secagg_id(i), sj.initSecureAggregation());
    // The rounds still to run: a resumed job declares only what it has left.
    auto plan = sj.initPlan();
    plan.setRounds(static_cast<uint32_t>(std::max(1, spec.rounds - (resume_from ? resume_from->round : 0))));
    plan.setLocalEpochs(static_cast<uint32_t>(spec.local_steps > 0 ? 0 : spec.local_epochs));
    plan.setLocalSteps(static_cast<uint32_t>(spec.local_steps));
    plan.setBatchSize(static_cast<uint32_t>(spec.batch_size));
    if (spec.differential_privacy.noise_multiplier > 0) {
      auto dp = sj.initDifferentialPrivacy();
      dp.setNoiseMultiplier(spec.differential_privacy.noise_multiplier);
      dp.setMaxGradNorm(spec.differential_privacy.max_grad_norm);
    }
  };
  // With secure aggregation each pod's startJob names its id in the protocol;
  // otherwise one message serves every pod.
  std::map<size_t, protocol::Outgoing> each;
  std::optional<protocol::Outgoing> shared;
  if (secagg) {
    for (size_t i : targets) fill(each.try_emplace(i, spec.job_id, rid).first->second, i);
  } else {
    shared.emplace(spec.job_id, rid);
    fill(*shared, 0);
  }
  const MessageFor message_for = [&](size_t i) -> protocol::Outgoing& { return secagg ? each.at(i) : *shared; };
  const uint64_t want_params = static_cast<uint64_t>(initial.numel());
  auto replies = exchange_each(message_for, rid, targets, {wire::Envelope::Body::JOB_ACCEPTED},
                          Clock::now() + spec.connect_timeout, false, [&](Pod& pod, protocol::Incoming& in) {
                            auto a = in.envelope().getBody().getJobAccepted();
                            if (a.getNumParameters() != want_params) {
                              return PodRound{"error",
                                              "pod built a model with " + std::to_string(a.getNumParameters()) +
                                                  " parameters, expected " + std::to_string(want_params),
                                              0, 0, {}};
                            }
                            if (Status t = open_tensor_channel(pod, tensor_keys, a); !t.ok()) {
                              return PodRound{"error", t.message(), 0, 0, {}};
                            }
                            // Row counts weigh the pod's updates and evaluations (each is
                            // capped at them): a count no dataset has would lift the caps.
                            for (auto [what, rows] : {std::pair{"trainSamples", a.getTrainSamples()},
                                                      {"validationSamples", a.getValidationSamples()},
                                                      {"testSamples", a.getTestSamples()}}) {
                              if (rows > kMaxPodRows) {
                                return PodRound{"error",
                                                std::string("jobAccepted reports ") + std::to_string(rows) + " " + what +
                                                    ", more rows than one pod may have (" +
                                                    std::to_string(kMaxPodRows) + ")",
                                                0, 0, {}};
                              }
                            }
                            pod.train_samples = static_cast<int64_t>(a.getTrainSamples());
                            pod.validation_samples = static_cast<int64_t>(a.getValidationSamples());
                            pod.test_samples = static_cast<int64_t>(a.getTestSamples());
                            pod.uploads_when_done = a.getUploadsWhenDone();
                            decisions[&pod - pods.data()] = peer_text(a.getDecision().cStr(), 1024);
                            return PodRound{"ok", "", static_cast<int64_t>(a.getTrainSamples()), 0,
                                            {{"validation_samples", double(a.getValidationSamples())},
                                             {"test_samples", double(a.getTestSamples())},
                                             {"skipped_rows", double(a.getSkippedRows())}}};
                          });
  replies.insert(too_small.begin(), too_small.end());
  count_responses(replies);
  return replies;
}

Status Coordinator::Impl::start_job() {
  job_sent = true;
  std::map<size_t, std::string> decisions;
  auto replies = send_start_job(active_pods(), decisions);
  // Pods left out at hello are already there.
  nlohmann::json pods_json = history.value("pods", nlohmann::json::object());
  // Each pod's decision, before any training: who admitted the job on what basis,
  // and why the others refused.
  for (auto& [i, r] : replies) {
    if (r.outcome != "ok") {
      emit({{"event", "pod_left_out"}, {"pod", pods[i].addr.name}, {"phase", "startJob"}, {"outcome", r.outcome},
            {"cause", r.code.empty() ? r.outcome : r.code}, {"reason", r.error}});
    } else {
      emit({{"event", "pod_accepted"}, {"pod", pods[i].addr.name}, {"train_samples", r.num_samples},
            {"decision", decisions[i]}, {"tensor_channel", pods[i].sealed ? "aes-256-gcm" : "curve"}});
    }
    if (r.outcome != "ok") {
      pods[i].active = false;
      log->warn("event=job_refused pod={} reason=\"{}\"", pods[i].addr.name, r.error);
      const std::string cause = r.code.empty() ? r.outcome : r.code;
      std::string why = r.error;
      if (why.rfind(cause + ": ", 0) == 0) why = why.substr(cause.size() + 2);  // said once
      progress << "  " << pods[i].addr.name << ": left out: " << r.outcome << " (" << cause << "): " << why << "\n";
    } else {
      progress << "  " << pods[i].addr.name << ": accepted"
               << (decisions[i].empty() ? std::string() : " (" + decisions[i] + ")") << ", " << r.num_samples
               << " training rows, parameters " << (pods[i].sealed ? "sealed with AES-256-GCM" : "over CURVE")
               << "\n";
    }
    pods_json[pods[i].addr.name] = {{"outcome", r.outcome}, {"phase", "startJob"}, {"train_samples", r.num_samples}};
    if (r.outcome == "ok") pods_json[pods[i].addr.name]["tensor_channel"] = pods[i].sealed ? "aes-256-gcm" : "curve";
    if (!decisions[i].empty()) pods_json[pods[i].addr.name]["decision"] = decisions[i];
    if (!r.error.empty()) pods_json[pods[i].addr.name]["error"] = r.error;
    if (r.outcome != "ok") pods_json[pods[i].addr.name]["cause"] = r.code.empty() ? r.outcome : r.code;
    for (const auto& [k, v] : r.metrics) pods_json[pods[i].addr.name][k] = v;
  }
  history["pods"] = pods_json;
  int ok = static_cast<int>(active_pods().size());
  if (ok < spec.min_pods) {
    return Status(StatusCode::kUnavailable, std::to_string(ok) + " pods accepted the job, min_pods is " +
                                                std::to_string(spec.min_pods) + ": " + describe_failures(replies));
  }
  return Status();
}

std::map<size_t, PodRound> Coordinator::Impl::rejoin_pods(int round) {
  std::vector<size_t> flagged, targets;
  for (size_t i : active_pods()) {
    if (pods[i].needs_rejoin) flagged.push_back(i);
  }
  // Just lost: ZeroMQ may still be reconnecting (it retries at most every 2 s), so
  // give such pods one grace period; a pod that stays away costs no more rounds.
  auto pending_reconnect = [&] {
    for (size_t i : flagged) {
      drain_monitor(pods[i]);
      if (!pods[i].connected && pods[i].rejoin_attempts == 0) return true;
    }
    return false;
  };
  const auto grace_until = Clock::now() + kRejoinGrace;
  while (pending_reconnect() && Clock::now() < grace_until && !stopping()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::map<size_t, PodRound> away;  // still gone: recorded as unreachable, not dropped silently
  for (size_t i : flagged) {
    ++pods[i].rejoin_attempts;
    if (pods[i].connected) {
      targets.push_back(i);
    } else {
      away[i] = {"unreachable", "not connected since it was lost; it takes the job again once it is back", 0, 0, {}};
    }
  }
  if (targets.empty()) return away;
  std::map<size_t, std::string> decisions;
  auto replies = send_start_job(targets, decisions);
  replies.insert(away.begin(), away.end());
  for (auto& [i, r] : replies) {
    Pod& pod = pods[i];
    if (r.outcome == "ok") {
      pod.needs_rejoin = false;
      pod.rejoin_attempts = 0;
      job_metrics.rejoins.Add({{"pod", pod.addr.name}}).Increment();
      log->info("event=pod_rejoined job={} round={} pod={} train_samples={}", spec.job_id, round, pod.addr.name,
                r.num_samples);
      progress << "  " << pod.addr.name << " rejoined before "
               << (round > spec.rounds ? std::string("the test evaluation") : "round " + std::to_string(round))
               << std::endl;
    } else {
      log->warn("event=pod_rejoin_failed job={} round={} pod={} outcome={} reason=\"{}\"", spec.job_id, round,
                pod.addr.name, r.outcome, r.error);
    }
  }
  return replies;
}

bool Coordinator::Impl::lost_job_or_link(const PodRound& r) {
  return r.outcome == "disconnected" || r.outcome == "silent" || r.outcome == "unreachable" ||
         (r.outcome == "error" && r.code == to_string(StatusCode::kFailedPrecondition));
}

void Coordinator::Impl::mark_rejoins(const std::map<size_t, PodRound>& replies) {
  for (const auto& [i, r] : replies) {
    if (!lost_job_or_link(r)) continue;
    if (!pods[i].needs_rejoin) pods[i].rejoin_attempts = 0;
    pods[i].needs_rejoin = true;
  }
}

std::optional<EvalSummary> Coordinator::Impl::evaluate(const torch::Tensor& global, int round, wire::Split split) {
  const uint64_t rid = next_request++;
  protocol::Outgoing out(spec.job_id, rid);
  auto ev = out.envelope().getBody().initEvaluate();
  ev.setRound(static_cast<uint32_t>(round));
  ev.setSplit(split);
  ev.setBatchSize(256);
  out.attach(ev.initTensors(specs.size()), protocol::parameter_views(global, layout));
  auto replies = exchange(out, rid, pods_with_job(), {wire::Envelope::Body::EVAL_RESULT},
                          Clock::now() + spec.round_timeout, true, [&](Pod& pod, protocol::Incoming& in) {
                            auto r = in.envelope().getBody().getEvalResult();
                            // Written as comparisons that NaN fails: a NaN accuracy would
                            // make the job's weighted accuracy NaN (null in history.json).
                            const double loss = r.getLoss(), accuracy = r.getAccuracy();
                            if (!std::isfinite(loss) || !(accuracy >= 0 && accuracy <= 1)) {
                              char why[160];
                              std::snprintf(why, sizeof why,
                                            "evaluation result out of range: loss %g (must be finite), accuracy %g "
                                            "(must be in [0, 1])",
                                            loss, accuracy);
                              return PodRound{"error", why, 0, 0, {}};
                            }
                            // Weighted by the rows it claims, capped at those of the split
                            // it reported in jobAccepted, as a training update is: a pod
                            // cannot outvote the others' evaluation by claiming more.
                            auto weight = static_cast<int64_t>(std::min<uint64_t>(r.getNumSamples(), INT64_MAX));
                            const int64_t rows = split == wire::Split::TEST ? pod.test_samples : pod.validation_samples;
                            if (weight > rows) {
                              log->warn("event=eval_weight_capped job={} round={} pod={} split={} claimed_samples={} "
                                        "split_samples={}",
                                        spec.job_id, round, pod.addr.name,
                                        split == wire::Split::TEST ? "test" : "validation", weight, rows);
                              weight = rows;
                            }
                            return PodRound{"ok", "", weight, 0, {{"loss", loss}, {"accuracy", accuracy}}};
                          },
                          nullptr, nullptr, /*heartbeats=*/true);
  count_responses(replies);
  mark_rejoins(replies);
  EvalSummary s;
  s.split = split == wire::Split::TEST ? "test" : "validation";
  long double loss = 0, acc = 0;  // as a round's train loss: finite values, any size
  for (auto& [i, r] : replies) {
    if (r.outcome != "ok" || r.num_samples == 0) continue;
    s.num_samples += r.num_samples;
    loss += static_cast<long double>(r.metrics["loss"]) * r.num_samples;
    acc += static_cast<long double>(r.metrics["accuracy"]) * r.num_samples;
  }
  s.pods = by_name(replies);
  if (s.num_samples == 0) return std::nullopt;
  s.loss = static_cast<double>(loss / s.num_samples);
  s.accuracy = static_cast<double>(acc / s.num_samples);
  record_eval(s);
  return s;
}

void Coordinator::Impl::emit(nlohmann::json e) {
  if (!events) return;
  e["time"] = now_utc();
  e["job_id"] = spec.job_id;
  (*events) << json_text(e) << '\n' << std::flush;
}

// "1m05s", "42s": a duration for the console.
static std::string human_seconds(double s) {
  const long total = std::lround(std::max(0.0, s));
  if (total < 60) return std::to_string(total) + "s";
  const long h = total / 3600, m = (total % 3600) / 60, sec = total % 60;
  std::ostringstream o;
  if (h) o << h << "h" << std::setw(2) << std::setfill('0') << m << "m";
  else o << m << "m" << std::setw(2) << std::setfill('0') << sec << "s";
  return o.str();
}

static nlohmann::json pod_json(const std::string& name, const PodRound& r) {
  nlohmann::json p = {{"pod", name}, {"outcome", r.outcome}, {"num_samples", r.num_samples}, {"seconds", r.seconds}};
  if (!r.error.empty()) p["error"] = r.error;
  for (const auto& [k, v] : r.metrics) p[k] = v;
  return p;
}

static std::string signal_name(int sig) {
  switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "signal " + std::to_string(sig);
  }
}

Status Coordinator::Impl::stop_status() const {
  return Status(StatusCode::kUnavailable, "stopped by " + signal_name(stop_flag ? stop_flag->load() : 0) +
                                               " after round " + std::to_string(result.rounds_completed));
}

StatusOr<std::map<std::string, PodRound>> Coordinator::Impl::end_job_on_pods(const std::string& reason) {
  FEDPOD_RETURN_IF_ERROR(resolve_pod_addresses());
  connect_pods();
  const uint64_t rid = next_request++;
  protocol::Outgoing out(spec.job_id, rid);
  out.envelope().getBody().initEndJob().setReason(reason);
  std::vector<size_t> all;
  for (size_t i = 0; i < pods.size(); ++i) all.push_back(i);
  auto replies = exchange(out, rid, all, {wire::Envelope::Body::JOB_ENDED}, Clock::now() + spec.connect_timeout,
                          false, [](Pod&, protocol::Incoming&) { return PodRound{"ok", "", 0, 0, {}}; });
  close_pods();
  return by_name(replies);
}

void Coordinator::Impl::end_job(const std::string& reason) {
  const uint64_t rid = next_request++;
  protocol::Outgoing out(spec.job_id, rid);
  out.envelope().getBody().initEndJob().setReason(reason);
  exchange(out, rid, active_pods(), {wire::Envelope::Body::JOB_ENDED}, Clock::now() + std::chrono::seconds(5), true,
           [](Pod&, protocol::Incoming&) { return PodRound{"ok", "", 0, 0, {}}; });
}

StatusOr<RunResult> Coordinator::Impl::run() {
  if (Status st = prepare_output_dir(spec.output_dir); !st.ok()) {
    config_error = true;
    set_not_ready("the job failed before training: " + st.to_string());
    return st;
  }
  checkpoint_path = (fs::path(spec.output_dir) / "checkpoint.bin").string();
  if (spec.resume) {
    // A checkpoint that cannot be used changes nothing on disk.
    Status st = load_resume();
    if (!st.ok()) {
      config_error = true;  // nothing was started: the command line or the files are wrong
      log->error("event=resume_failed job={} error=\"{}\"", spec.job_id, st.to_string());
      set_not_ready("the job failed before training: " + st.to_string());
      return st;
    }
  } else if (spec.checkpoint && fs::exists(checkpoint_path)) {
    log->warn("event=checkpoint_replaced path={} hint=\"run with --resume to continue that job instead\"",
              checkpoint_path);
    progress << "note: starting over; " << checkpoint_path
             << " from an earlier run will be replaced (--resume continues it instead)" << std::endl;
  }
  history_path = (fs::path(spec.output_dir) / "history.json").string();
  model_path = (fs::path(spec.output_dir) / "model.pt").string();
  report_path = (fs::path(spec.output_dir) / "report.html").string();
  history = {{"job_id", spec.job_id},
             {"model", {{"username", spec.model.username}, {"ref", spec.model.ref}, {"version", spec.model.version},
                        {"hyperparameters", spec.model.hyperparameters.json()}}},
             {"strategy", spec.strategy},
             {"strategy_options", spec.strategy_options},
             {"update_precision", spec.update_precision},
             {"broadcast_precision", spec.broadcast_precision},
             {"status", "running"},
             {"rounds", nlohmann::json::array()},
             {"discarded_replies_by_reason", nlohmann::json::object()}};
  for (const char* reason : kDiscardReasons) history["discarded_replies_by_reason"][reason] = 0;
  if (spec.differential_privacy.noise_multiplier > 0) {
    // Each pod's ε is the pod's own accounting (its trainDone metrics), per round
    // under rounds[].pods and, latest, here.
    history["differential_privacy"] = {{"noise_multiplier", spec.differential_privacy.noise_multiplier},
                                       {"max_grad_norm", spec.differential_privacy.max_grad_norm},
                                       {"epsilon", nlohmann::json::object()}};
  }
  if (resume_from) {
    // The history as of the checkpoint's round; the rounds after it are redone.
    history = resume_from->history;
    history["status"] = "running";
    history.erase("error");
    history.erase("test");
    history["resumed"].push_back({{"after_round", resume_from->round}, {"at", now_utc()}});
  }
  set_not_ready("resolving the pods' addresses");
  Status st = resolve_pod_addresses();
  if (st.ok()) {
    connect_pods();
    st = run_job();
  }
  if (!st.ok() && stopping()) {
    stopped = true;
    const int sig = stop_flag->load();
    set_not_ready("the job was stopped");
    // The pods first: each ends the job (its training is cancelled) and is free for
    // the next one at once, not after its job_idle_timeout.
    ignore_stop = true;
    if (job_sent) {
      progress << "stopping: telling " << active_pods().size() << " pod(s) to end job " << spec.job_id << std::endl;
      end_job("stopped by its coordinator (" + signal_name(sig) + ")");
    }
    history["status"] = "stopped";
    history["stopped"] = {{"signal", signal_name(sig)}, {"at", now_utc()}, {"after_round", result.rounds_completed}};
    history.erase("error");
    log->warn("event=job_stopped job={} signal={} after_round={}", spec.job_id, signal_name(sig),
              result.rounds_completed);
    write_history();  // after the last completed round's checkpoint, which a resume needs
    close_pods();
    emit({{"event", "job_end"}, {"status", "stopped"}, {"signal", signal_name(sig)},
          {"rounds_completed", result.rounds_completed}, {"history", history_path}});
    progress << "job " << spec.job_id << " stopped (" << signal_name(sig) << ") after round "
             << result.rounds_completed << "/" << spec.rounds << "; the pods ended it";
    if (spec.checkpoint && result.rounds_completed > 0) {
      progress << "; the checkpoint after round " << result.rounds_completed << " is in " << checkpoint_path;
    }
    progress << std::endl;
    return st;
  }
  if (!st.ok()) {
    {
      std::lock_guard<std::mutex> lock(phase_mutex);
      if (!not_ready.empty()) not_ready = "the job failed before training: " + st.to_string();
    }
    history["status"] = "failed";
    history["error"] = st.to_string();
    log->error("event=job_failed job={} error=\"{}\"", spec.job_id, st.to_string());
    if (job_sent) end_job("coordinator failed: " + st.message());
    write_history();
    close_pods();
    emit({{"event", "job_end"}, {"status", "failed"}, {"error", st.to_string()},
          {"rounds_completed", result.rounds_completed}, {"history", history_path}});
    return st;
  }
  close_pods();
  emit({{"event", "job_end"}, {"status", "completed"}, {"rounds_completed", result.rounds_completed},
        {"test_accuracy", result.test_accuracy}, {"test_loss", result.test_loss}, {"history", history_path},
        {"model", model_path}, {"report", report_path}});
  return result;
}

void Coordinator::Impl::record_epsilon(const RoundRecord& rec, int round) {
  if (!history.contains("differential_privacy")) return;
  for (const auto& [name, p] : rec.pods) {
    auto eps = p.metrics.find("epsilon");
    if (eps == p.metrics.end()) continue;
    auto delta = p.metrics.find("delta");
    history["differential_privacy"]["epsilon"][name] = {
        {"epsilon", eps->second}, {"delta", delta == p.metrics.end() ? 0.0 : delta->second}, {"round", round}};
  }
}

Status Coordinator::Impl::run_job() {
  set_not_ready("loading the model");
  FEDPOD_RETURN_IF_ERROR(load_model());
  if (stopping()) return stop_status();
  set_not_ready("contacting the pods (hello)");
  FEDPOD_RETURN_IF_ERROR(hello_and_check());
  if (stopping()) return stop_status();
  FEDPOD_RETURN_IF_ERROR(resolve_secure_aggregation());
  set_not_ready("creating the model");
  FEDPOD_RETURN_IF_ERROR(create_model());
  if (stopping()) return stop_status();
  set_not_ready("starting the job on the pods");
  FEDPOD_RETURN_IF_ERROR(start_job());
  if (stopping()) return stop_status();
  set_not_ready("");
  torch::Tensor global = initial.clone();
  log->info("event=job_started job={} model={} parameters={} pods={}", spec.job_id, model_name(),
            global.numel(), active_pods().size());
  {
    std::vector<std::string> names;
    for (size_t i : active_pods()) names.push_back(pods[i].addr.name);
    emit({{"event", "job_start"}, {"model", model_label()}, {"parameters", global.numel()}, {"rounds", spec.rounds},
          {"pods", names}, {"first_round", resume_from ? resume_from->round + 1 : 1}});
  }
  auto made = aggregation::make_strategy(spec.strategy, spec.strategy_options);
  if (!made.ok()) {
    config_error = true;
    return made.status();
  }
  std::unique_ptr<aggregation::Strategy> strategy = std::move(*made);
  torch::Tensor widened;  // bfloat16 updates, back in float32 (update_precision: bfloat16)
  {
    // Integer buffers (num_batches_tracked) take the pods' maximum, not a mean; float
    // buffers (batch-norm statistics) the plain mean under a server optimizer.
    std::vector<aggregation::Range> max_ranges, average_ranges;
    for (const auto& info : layout) {
      if (info.kind == model::EntryKind::kMirroredBuffer) max_ranges.push_back({info.offset, info.numel});
      if (info.kind == model::EntryKind::kBuffer) average_ranges.push_back({info.offset, info.numel});
    }
    strategy->set_max_ranges(std::move(max_ranges));
    strategy->set_average_ranges(std::move(average_ranges));
  }
  int first_round = 1;
  if (resume_from) {
    if (Status st = restore_checkpoint(global, *strategy); !st.ok()) {
      config_error = true;  // the checkpoint does not fit this job: nothing was trained
      return st;
    }
    first_round = resume_from->round + 1;
    progress << "resumed job " << spec.job_id << " after round " << resume_from->round << " from "
             << checkpoint_path << std::endl;
    result.rounds_completed = resume_from->round;
  }
  for (int round = first_round; round <= spec.rounds; ++round) {
    const auto start = Clock::now();
    // Pods that lost the job or the link take it again first; one that cannot sits
    // this round out, with the reason.
    std::map<size_t, PodRound> rejoin = rejoin_pods(round);
    const std::vector<size_t> targets = sample_pods(pods_with_job(), round);
    std::vector<std::string> rejoined;
    for (const auto& [i, r] : rejoin) {
      if (r.outcome == "ok") rejoined.push_back(pods[i].addr.name);
    }
    const uint64_t rid = next_request++;
    current_round = round;
    round_discarded = 0;
    protocol::Outgoing out(spec.job_id, rid);
    auto t = out.envelope().getBody().initTrain();
    t.setRound(static_cast<uint32_t>(round));
    t.setLocalEpochs(static_cast<uint32_t>(spec.local_steps > 0 ? 0 : spec.local_epochs));
    t.setLocalSteps(static_cast<uint32_t>(spec.local_steps));
    t.setBatchSize(static_cast<uint32_t>(spec.batch_size));
    const bool bf16_updates = spec.update_precision == "bfloat16";
    t.setUpdateDtype(bf16_updates ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
    t.setProximalMu(aggregation::proximal_mu(spec.strategy, spec.strategy_options));
    // When every pod of the round fits in the upload window at once, each gets its
    // slot with train and sends its parameters right after trainDone: one exchange
    // (fetchResult and its way through the pod) less per pod. In pod order the
    // uploads must wait their turn; secure aggregation masks first.
    const bool upload_when_done =
        !secagg && spec.aggregation_order != "pod" &&
        static_cast<int64_t>(targets.size()) <= static_cast<int64_t>(spec.max_concurrent_uploads) &&
        std::all_of(targets.begin(), targets.end(), [&](size_t i) { return pods[i].uploads_when_done; });
    t.setUploadWhenDone(upload_when_done);
    // One buffer for every pod: each frame references `global` (or its one bfloat16
    // copy), none copies it. The float32 parameters stay here: a pod's bfloat16
    // change is added back to them, so what rounding took off is not lost.
    std::vector<protocol::NamedTensor> broadcast = protocol::parameter_views(global, layout);
    const bool bf16_params = spec.broadcast_precision == "bfloat16";
    if (bf16_params) {
      for (auto& n : broadcast) n.tensor = protocol::round_to_bf16(n.tensor);
    }
    t.setParamsDtype(bf16_params ? wire::DType::BFLOAT16 : wire::DType::FLOAT32);
    out.attach(t.initTensors(specs.size()), std::move(broadcast));
    const uint64_t broadcast_bytes = out.payload_bytes();  // per pod
    strategy->begin_round(global);
    double round_aggregation_seconds = 0;  // this round's folds and finish()
    std::map<std::string, float> round_magnitudes;  // each folded update's largest |value|
    // bfloat16 changes are added to these parameters: their largest magnitudes, per
    // tensor, bound the sums (one pass a round, not one per pod).
    std::vector<float> global_magnitudes;
    if (bf16_updates) {
      for (const auto& p : layout) {
        global_magnitudes.push_back(protocol::largest_magnitude(global.data_ptr<float>() + p.offset,
                                                                static_cast<size_t>(p.numel)));
      }
    }
    // Long double: a pod may report any finite loss (1e308), and the weighted sum of
    // finite values must not overflow to an infinity that history.json cannot hold.
    long double loss_sum = 0;
    int64_t loss_weight = 0;
    // Pods report trainDone; their parameters are pulled with fetchResult, at most
    // `max_concurrent_uploads` at a time, so received-but-unfolded updates never
    // hold more than that many models in memory, whatever the number of pods.
    std::map<size_t, PodRound> done;  // trainDone metadata, by pod
    std::map<size_t, uint64_t> claimed_samples;  // trainDone's numSamples, before the cap
    std::deque<size_t> ready;
    std::set<size_t> fetching;  // pods whose upload is asked for (or granted with train)
    if (upload_when_done) fetching.insert(targets.begin(), targets.end());
    protocol::Outgoing fetch(spec.job_id, rid);
    fetch.envelope().getBody().initFetchResult().setRound(static_cast<uint32_t>(round));
    // Called before each poll with the pods still pending: an upload slot frees when
    // its pod answers, fails or disconnects.
    auto start_fetches = [&](const std::vector<size_t>& pending) {
      if (spec.aggregation_order == "pod") {
        forget_finished_uploads(pending, fetching);
        // One upload at a time, in the job's pod order: the next pod still in the
        // round is fetched once it is done training, and nobody after it before.
        if (!fetching.empty()) return;
        for (size_t i : targets) {
          if (std::find(pending.begin(), pending.end(), i) == pending.end()) continue;  // folded, or out
          if (!done.count(i)) return;
          if (send_to(pods[i], fetch)) fetching.insert(i);
          return;
        }
        return;
      }
      fill_upload_window(pending, fetching, ready, fetch);
    };
    size_t sent = 0;  // pods the round's train request went out to
    open_round = round;
    {
      std::vector<std::string> names;
      for (size_t i : targets) names.push_back(pods[i].addr.name);
      emit({{"event", "round_start"}, {"round", round}, {"rounds", spec.rounds}, {"pods", names}});
    }
    // Each pod's result as it is known; and, in a long round, every 10 s who is
    // still training (the console and round_waiting).
    std::set<size_t> reported;
    auto next_status = start + std::chrono::seconds(10);
    struct ResetHooks {  // the hooks capture this round's locals: gone with them
      Impl& impl;
      ~ResetHooks() {
        impl.settled_hook = nullptr;
        impl.waiting_hook = nullptr;
      }
    } reset_hooks{*this};
    // One pod_result per pod and round, whichever comes first: as it settles in the
    // exchange, or from the round's outcomes once it closed.
    auto report_result = [&](size_t i, const PodRound& r) {
      if (!reported.insert(i).second) return;
      nlohmann::json e = pod_json(pods[i].addr.name, r);
      e["event"] = "pod_result";
      e["round"] = round;
      emit(std::move(e));
    };
    settled_hook = report_result;
    waiting_hook = [&](const std::vector<size_t>& pending) {
      const auto now = Clock::now();
      if (now < next_status || pending.empty()) return;
      next_status = now + std::chrono::seconds(10);
      const double elapsed = std::chrono::duration<double>(now - start).count();
      std::vector<std::string> names;
      for (size_t i : pending) names.push_back(pods[i].addr.name);
      const size_t asked = targets.size();
      progress << "  round " << round << "/" << spec.rounds << ": " << asked - pending.size() << "/" << asked
               << " pods answered, waiting for ";
      for (size_t k = 0; k < names.size() && k < 8; ++k) progress << (k ? ", " : "") << names[k];
      if (names.size() > 8) progress << " and " << names.size() - 8 << " more";
      progress << " (" << human_seconds(elapsed) << ")" << std::endl;
      emit({{"event", "round_waiting"}, {"round", round}, {"answered", asked - pending.size()},
            {"waiting", names}, {"elapsed_seconds", elapsed}});
    };
    if (secagg) settled_hook = nullptr;  // its exchanges are phases, not results
    auto replies = secagg ? secure_round(round, rid, targets, out, start, global, *strategy, loss_sum, loss_weight,
                                         round_aggregation_seconds, sent)
                          : exchange(
        out, rid, targets, {wire::Envelope::Body::TRAIN_DONE, wire::Envelope::Body::TRAIN_RESULT},
        start + spec.round_timeout, true,
        [&](Pod& pod, protocol::Incoming& in) -> std::optional<PodRound> {
          const size_t i = static_cast<size_t>(&pod - pods.data());
          auto body = in.envelope().getBody();
          // receive() discarded other jobs' replies and those for closed or folded
          // rounds: a round other than this one is a round not started yet.
          if (body.which() == wire::Envelope::Body::TRAIN_DONE) {
            auto d = body.getTrainDone();
            if (d.getRound() != static_cast<uint32_t>(round)) {
              return PodRound{"error",
                              "trainDone for round " + std::to_string(d.getRound()) + ", the coordinator is in round " +
                                  std::to_string(round),
                              0, 0, {}};
            }
            if (done.count(i)) {  // the first one stands; its parameters are being fetched
              discard(pod, kDuplicate, in.envelope(), rid);
              return std::nullopt;
            }
            if (d.getNumSamples() == 0) return PodRound{"error", "trained on no samples", 0, 0, {}};
            // An update weighs what the pod trained on, and no more than the training
            // rows it reported when it accepted the job: a pod cannot outvote the
            // others by claiming more samples than it has.
            const uint64_t claimed = d.getNumSamples();
            int64_t weight = static_cast<int64_t>(std::min<uint64_t>(claimed, static_cast<uint64_t>(std::numeric_limits<int64_t>::max())));
            if (pod.train_samples == 0) {
              return PodRound{"error", "trainDone from a pod whose jobAccepted reported no training rows", 0, 0, {}};
            }
            if (weight > pod.train_samples) {
              weight = pod.train_samples;
              job_metrics.weight_capped.Add({{"pod", pod.addr.name}}).Increment();
              auto& capped = history["update_weight_capped"][pod.addr.name];
              capped = capped.is_number() ? capped.get<int64_t>() + 1 : 1;
              log->warn("event=update_weight_capped job={} round={} pod={} claimed_samples={} train_samples={}",
                        spec.job_id, round, pod.addr.name, claimed, pod.train_samples);
            }
            claimed_samples[i] = claimed;
            PodRound pr{"ok", "", weight, 0, {}};
            if (Status st = take_train_metrics(pod, round, d, pr); !st.ok()) {
              return PodRound{"error", st.message(), 0, 0, {}};
            }
            done[i] = std::move(pr);
            if (!upload_when_done) ready.push_back(i);
            return std::nullopt;  // parameters still to fetch, or on their way
          }
          auto r = body.getTrainResult();
          if (r.getRound() != static_cast<uint32_t>(round)) {
            return PodRound{"error",
                            "trainResult for round " + std::to_string(r.getRound()) + ", the coordinator is in round " +
                                std::to_string(round),
                            0, 0, {}};
          }
          // Only a trainResult the coordinator asked for is read: one pushed before its
          // fetchResult would bypass max_concurrent_uploads, which bounds memory.
          if (!fetching.count(i)) {
            discard(pod, kUnfetched, in.envelope(), rid);
            return std::nullopt;
          }
          if (!done.count(i)) return PodRound{"error", "trainResult before trainDone", 0, 0, {}};
          const int64_t n = done[i].num_samples;  // capped at the pod's training rows
          if (r.getNumSamples() != claimed_samples[i]) {
            return PodRound{"error",
                            "trainResult has num_samples " + std::to_string(r.getNumSamples()) +
                                ", its trainDone said " + std::to_string(claimed_samples[i]),
                            0, 0, {}};
          }
          // A bfloat16 update is the pod's change to this round's parameters; it is
          // added back to them in float32 before it is folded.
          if (r.getDelta() != bf16_updates) {
            return PodRound{"error",
                            std::string("trainResult ") + (r.getDelta() ? "is" : "is not") +
                                " a bfloat16 change, the job asked for update_precision " + spec.update_precision,
                            0, 0, {}};
          }
          // The finite check also measures each tensor's largest value, which the
          // strategy needs to refuse an update whose weighted sum would overflow.
          std::vector<float> magnitudes;
          auto tensors = in.take_tensors(r.getTensors(), specs, true,
                                         bf16_updates ? wire::DType::BFLOAT16 : wire::DType::FLOAT32, &magnitudes);
          if (!tensors.ok()) return PodRound{"error", tensors.status().message(), 0, 0, {}};
          for (const auto& t : *tensors) job_metrics.bytes_received.Increment(static_cast<double>(t.nbytes()));
          std::vector<aggregation::Segment> segments;
          for (size_t k = 0; k < layout.size(); ++k) {
            torch::Tensor v = (*tensors)[k].view({-1});
            float largest = magnitudes[k];
            if (bf16_updates) {
              // |parameter + change| is at most the sum of their largest magnitudes
              // (each at most 0.8 % low): refused while that sum could reach float32's
              // limit, so no widened value is infinite.
              const double bound = (static_cast<double>(global_magnitudes[k]) + largest) * 1.01;
              if (bound >= std::numeric_limits<float>::max()) {
                char why[200];
                std::snprintf(why, sizeof why,
                              "tensor '%s': its bfloat16 change (largest value %.3g) added to the round's "
                              "parameters could overflow float32",
                              layout[k].name.c_str(), static_cast<double>(largest));
                return PodRound{"error", why, 0, 0, {}};
              }
              largest = static_cast<float>(bound);
              // Widened into one buffer that every pod's update reuses: fold() reads
              // its segments only during the call.
              if (!widened.defined()) widened = torch::empty({global.numel()}, torch::kFloat32);
              torch::Tensor into = widened.narrow(0, layout[k].offset, layout[k].numel);
              protocol::add_bf16_delta_into(global.narrow(0, layout[k].offset, layout[k].numel), v, into);
              v = into;
            }
            if (layout[k].kind == model::EntryKind::kMirroredBuffer) {
              if (Status st = check_mirrored(layout[k], v, global.narrow(0, layout[k].offset, layout[k].numel),
                                             most_samples_per_round(pod));
                  !st.ok()) {
                return PodRound{"error", st.message(), 0, 0, {}};
              }
            }
            segments.push_back({layout[k].offset, v, largest});
          }
          float update_largest = 0;
          for (const auto& seg : segments) update_largest = std::max(update_largest, seg.max_abs);
          const auto fold_start = Clock::now();
          Status folded = strategy->fold(segments, static_cast<double>(n));
          const double fold_seconds = std::chrono::duration<double>(Clock::now() - fold_start).count();
          aggregation_seconds += fold_seconds;
          round_aggregation_seconds += fold_seconds;
          if (!folded.ok()) return PodRound{"error", folded.message(), 0, 0, {}};
          folded_updates.insert({round, i});  // anything else for (round, pod) is a duplicate
          round_magnitudes[pods[i].addr.name] = update_largest;
          PodRound pr = done[i];
          if (pr.metrics.count("train_loss")) {
            loss_sum += static_cast<long double>(pr.metrics["train_loss"]) * n;
            loss_weight += n;
          }
          return pr;
        },
        // Uploading (trained, slot held) pods are exempt from the silence check.
        start_fetches, &sent, /*heartbeats=*/true,
        [&](size_t i) { return fetching.count(i) > 0 && done.count(i) > 0; });
    // Closed: whatever arrives for this round from now on is discarded, not folded.
    open_round = 0;
    last_closed_round = round;
    waiting_hook = nullptr;
    // Secure aggregation's exchanges are phases: its pods are reported here.
    for (const auto& [i, r] : replies) report_result(i, r);
    for (const auto& [i, r] : rejoin) {
      if (r.outcome != "ok") report_result(i, r);
    }
    settled_hook = nullptr;
    // Stopped: this round is not completed; a resume redoes it from the checkpoint
    // of the last completed one.
    if (stopping()) return stop_status();
    for (const auto& [i, r] : rejoin) {
      if (r.outcome != "ok") replies[i] = r;  // sat out: its rejoin's outcome is its answer
    }
    mark_rejoins(replies);
    job_metrics.bytes_sent.Increment(static_cast<double>(sent) * static_cast<double>(broadcast_bytes));
    count_responses(replies);
    RoundRecord rec;
    rec.round = round;
    rec.pods_asked = static_cast<int>(replies.size());
    rec.pods = by_name(replies);
    for (auto& [i, r] : replies) {
      if (r.outcome == "ok") ++rec.pods_answered;
      else log->warn("event=pod_failed round={} pod={} outcome={} reason=\"{}\"", round, pods[i].addr.name, r.outcome, r.error);
    }
    if (loss_weight > 0) rec.train_loss = static_cast<double>(loss_sum / loss_weight);
    if (rec.pods_answered < spec.min_pods) {
      rec.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      history["rounds"].push_back(to_json(rec));
      history["rounds"].back()["discarded_replies"] = round_discarded;
      if (secagg) history["rounds"].back()["secure_aggregation"] = secagg_steps;
      if (!rejoined.empty()) history["rounds"].back()["rejoined"] = rejoined;
    if (spec.sample_fraction > 0 || spec.sample_count > 0) {
      std::vector<std::string> sampled;
      for (size_t i : targets) sampled.push_back(pods[i].addr.name);
      history["rounds"].back()["sampled"] = sampled;
    }
      record_epsilon(rec, round);  // the pods that trained spent it, round failed or not
      // The checkpoint of the last completed round stays as it was.
      const std::string resume_hint =
          spec.checkpoint && round > 1
              ? "; the checkpoint after round " + std::to_string(round - 1) + " is intact: `fedpod coordinator run " +
                    "--resume` continues from it once enough pods are back"
              : "";
      return Status(StatusCode::kUnavailable,
                    "round " + std::to_string(round) + "/" + std::to_string(spec.rounds) + ": " +
                        std::to_string(rec.pods_answered) + " of " + std::to_string(rec.pods_asked) +
                        " pods answered, min_pods is " + std::to_string(spec.min_pods) + ": " +
                        describe_failures(replies) + resume_hint);
    }
    const auto finish_start = Clock::now();
    auto next = strategy->finish();
    if (!next.ok()) return next.status();
    // Never published nor checkpointed: parameters that are not finite, which every pod
    // would refuse and every later round inherit. FedAvg refuses the updates that could
    // overflow it (the pod's outcome says so); a strategy whose arithmetic can still
    // overflow (a server optimizer's squared steps, a robust rule's sums) ends here.
    if (Status st = check_aggregate(*next, *strategy); !st.ok()) {
      log->error("event=aggregate_not_finite job={} round={} strategy={}", spec.job_id, round, spec.strategy);
      const std::string resume_hint =
          spec.checkpoint && round > 1
              ? "; the checkpoint after round " + std::to_string(round - 1) + " is intact" : "";
      return Status::bad_message("round " + std::to_string(round) + "/" + std::to_string(spec.rounds) + ": " +
                                 st.message() + "; pods' largest values this round: " +
                                 describe_magnitudes(round_magnitudes) + "; nothing of the round was applied" +
                                 resume_hint);
    }
    global = std::move(*next);
    round_aggregation_seconds += std::chrono::duration<double>(Clock::now() - finish_start).count();
    job_metrics.aggregation.Observe(round_aggregation_seconds);
    rec.train_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const bool eval_now = (spec.eval_every > 0 && round % spec.eval_every == 0) || round == spec.rounds;
    if (eval_now) rec.eval = evaluate(global, round, wire::Split::VALIDATION);
    if (stopping()) return stop_status();
    rec.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    history["rounds"].push_back(to_json(rec));
    // Replies discarded while this round was open, its validation included.
    history["rounds"].back()["discarded_replies"] = round_discarded;
    if (secagg) history["rounds"].back()["secure_aggregation"] = secagg_steps;
    // How the updates came back: granted with train (every pod fit the upload
    // window), or asked for with fetchResult.
    history["rounds"].back()["uploads"] = upload_when_done ? "with_train" : "fetched";
    if (!rejoined.empty()) history["rounds"].back()["rejoined"] = rejoined;
    if (spec.sample_fraction > 0 || spec.sample_count > 0) {
      std::vector<std::string> sampled;
      for (size_t i : targets) sampled.push_back(pods[i].addr.name);
      history["rounds"].back()["sampled"] = sampled;
    }
    record_epsilon(rec, round);
    // First the checkpoint, then history.json: a crash between the two leaves a
    // history one round behind, which the resumed run rewrites from the checkpoint.
    if (spec.checkpoint) history["checkpoint"] = {{"path", checkpoint_path}, {"round", round}};
    Status files = write_round_files(round, global, *strategy);
    if (!files.ok()) return files;
    progress << "round " << round << "/" << spec.rounds << "  pods " << rec.pods_answered << "/" << rec.pods_asked;
    if (rec.train_loss) progress << "  train_loss " << fmt(*rec.train_loss);
    if (rec.eval) progress << "  val_loss " << fmt(rec.eval->loss) << "  val_acc " << fmt(rec.eval->accuracy);
    progress << "  " << fmt(rec.seconds, 2) << "s";
    // The time left, from this run's rounds so far (a resumed run counts its own).
    run_seconds += rec.seconds;
    ++run_rounds;
    const double eta = run_seconds / run_rounds * (spec.rounds - round);
    if (round < spec.rounds) progress << "  ETA " << human_seconds(eta);
    progress << std::endl;
    {
      nlohmann::json e = {{"event", "round_end"},       {"round", round},
                          {"rounds", spec.rounds},      {"pods_answered", rec.pods_answered},
                          {"pods_asked", rec.pods_asked}, {"seconds", rec.seconds},
                          {"eta_seconds", eta}};
      if (rec.train_loss) e["train_loss"] = *rec.train_loss;
      if (rec.eval) {
        e["val_loss"] = rec.eval->loss;
        e["val_accuracy"] = rec.eval->accuracy;
        emit({{"event", "evaluation"}, {"split", "validation"}, {"round", round}, {"loss", rec.eval->loss},
              {"accuracy", rec.eval->accuracy}, {"num_samples", rec.eval->num_samples}});
      }
      emit(std::move(e));
    }
    result.rounds_completed = round;
    job_metrics.rounds_completed.Increment();
    job_metrics.round_duration.Observe(rec.seconds);
  }
  // Pods that lost the job in the last round take it again to evaluate.
  rejoin_pods(spec.rounds + 1);
  auto test = evaluate(global, spec.rounds, wire::Split::TEST);
  if (stopping()) return stop_status();
  end_job("completed");
  save_parameters(model_path, global, layout);
  double total_seconds = 0;  // over every round of the job, resumed runs included
  for (const auto& r : history["rounds"]) total_seconds += r.value("seconds", 0.0);
  result.mean_round_seconds = history["rounds"].empty() ? 0 : total_seconds / history["rounds"].size();
  result.history_path = history_path;
  result.model_path = model_path;
  result.report_path = report_path;
  if (test) {
    result.test_loss = test->loss;
    result.test_accuracy = test->accuracy;
    result.test_samples = test->num_samples;
    history["test"] = to_json(*test);
    emit({{"event", "evaluation"}, {"split", "test"}, {"loss", test->loss}, {"accuracy", test->accuracy},
          {"num_samples", test->num_samples}, {"pods", history["test"]["pods"]}});
    progress << "test  loss " << fmt(test->loss) << "  accuracy " << fmt(test->accuracy) << "  samples "
             << test->num_samples << std::endl;
  } else {
    history["test"] = nullptr;
    progress << "test  no pod returned a test evaluation" << std::endl;
  }
  if (history.contains("differential_privacy")) {
    progress << "privacy  ";
    for (const auto& [name, e] : history["differential_privacy"]["epsilon"].items()) {
      progress << name << " ε " << fmt(e.value("epsilon", 0.0)) << " (δ " << e.value("delta", 0.0) << ")  ";
    }
    progress << "(each pod's own accounting of this job)" << std::endl;
  }
  history["status"] = "completed";
  history["mean_round_seconds"] = result.mean_round_seconds;
  write_history();
  if (Status st = finish_round_files(); !st.ok()) return st;
  progress << "wrote " << history_path << ", " << model_path << " and " << report_path << std::endl;
  return Status();
}

Coordinator::Coordinator(zmq::context_t& ctx, JobSpec spec, Logger log, std::ostream& progress,
                         ModelFactory make_model, CustomLoader load_custom)
    : impl_(std::make_unique<Impl>(ctx, std::move(spec), std::move(log), progress, std::move(make_model),
                                   std::move(load_custom))) {}

Coordinator::~Coordinator() = default;

StatusOr<RunResult> Coordinator::run() { return impl_->run(); }

std::shared_ptr<prometheus::Registry> Coordinator::registry() const { return impl_->registry; }

bool Coordinator::job_config_error() const { return impl_->config_error; }

void Coordinator::set_stop_flag(const std::atomic<int>* flag) { impl_->stop_flag = flag; }

void Coordinator::set_event_stream(std::ostream* out) { impl_->events = out; }

bool Coordinator::job_stopped() const { return impl_->stopped; }

StatusOr<std::map<std::string, PodRound>> Coordinator::end_job_on_pods(const std::string& reason) {
  return impl_->end_job_on_pods(reason);
}

void Coordinator::set_step_observer(StepObserver observer) { impl_->step_observer = std::move(observer); }

int Coordinator::metrics_port() const { return impl_->metrics_server ? impl_->metrics_server->port() : 0; }

StatusOr<nlohmann::json> fit(zmq::context_t& ctx, JobSpec job, const ModelReference& model,
                             const std::vector<std::string>& pod_identifiers, Logger log, std::ostream* progress) {
  job.model.username = model.username;
  job.model.ref = model.model_ref;
  job.model.version = model.model_version;
  job.model.hyperparameters = Hyperparameters(model.hyperparameters);
  job.pods.clear();
  for (const auto& id : pod_identifiers) {
    const auto at = id.find('@');
    job.pods.push_back(at == std::string::npos ? PodAddress{id, "", ""}
                                              : PodAddress{id.substr(0, at), id.substr(at + 1), ""});
  }
  validate(job, "fit");
  std::ostringstream quiet;
  Coordinator c(ctx, job, std::move(log), progress ? *progress : quiet);
  auto result = c.run();
  if (!result.ok()) return result.status();
  std::ifstream in(result->history_path);
  return nlohmann::json::parse(in);
}

}  // namespace fedpod::coordinator
