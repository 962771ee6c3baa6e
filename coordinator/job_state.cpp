#include "impl.h"

#include <ctime>

namespace fedpod::coordinator {

void Coordinator::Impl::write_history() {
  (void)finish_round_files();
  write_file_atomic(history_path, json_text(history, 2) + "\n");
  write_file_atomic(report_path, render_report(history));
}

Status Coordinator::Impl::write_round_files(int round, const torch::Tensor& global, const aggregation::Strategy& strategy) {
  RoundFiles f;
  f.round = round;
  if (spec.checkpoint) f.checkpoint = make_checkpoint(round, global, strategy);
  // The history less its rounds, and the rounds not handed over yet (see RoundFiles).
  f.head = nlohmann::json::object();
  for (auto it = history.begin(); it != history.end(); ++it) {
    if (it.key() != "rounds") f.head[it.key()] = it.value();
  }
  if (const auto rounds = history.find("rounds"); rounds != history.end()) {
    for (size_t i = rounds_handed_over; i < rounds->size(); ++i) f.new_rounds.push_back((*rounds)[i]);
    rounds_handed_over = rounds->size();
  }
  std::lock_guard<std::mutex> lock(files_mu);
  if (files_pending) {
    job_metrics.checkpoints_skipped.Increment();
    log->info("event=round_files_skipped job={} round={} replaced_by={} reason=\"the writer is still writing or resting\"",
              spec.job_id, files_pending->round, round);
    // Its files are replaced, its rounds are not: they go first.
    nlohmann::json rounds = std::move(files_pending->new_rounds);
    for (auto& r : f.new_rounds) rounds.push_back(std::move(r));
    f.new_rounds = std::move(rounds);
  }
  files_pending = std::move(f);
  if (!files_thread.joinable()) files_thread = std::thread([this] { write_files_loop(); });
  files_cv.notify_all();
  return files_error;
}

namespace {
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
}  // namespace

void Coordinator::Impl::write_files_loop() {
  std::unique_lock<std::mutex> lock(files_mu);
  Clock::time_point rest_until = Clock::now();
  for (;;) {
    files_cv.wait(lock, [&] { return files_pending.has_value() || files_stop; });
    if (!files_pending) return;  // stopping, nothing left to write
    // The rest after the last write; a job that ends or waits for its files cuts it
    // short. Rounds that end meanwhile replace what waits.
    files_cv.wait_until(lock, rest_until, [&] { return files_stop || files_flush > 0; });
    RoundFiles f = std::move(*files_pending);
    files_pending.reset();
    files_busy = true;
    lock.unlock();
    const double cpu_start = thread_cpu_seconds();
    Status st = write_files(f);
    const double cpu = thread_cpu_seconds() - cpu_start;
    rest_until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(kFilesRestFactor * cpu));
    lock.lock();
    files_busy = false;
    if (!st.ok() && files_error.ok()) {
      log->error("event=round_files_failed job={} error=\"{}\"", spec.job_id, st.message());
      files_error = st;
    }
    files_cv.notify_all();
  }
}

namespace {
// Swaps two values now and again when it goes out of scope, a throw included.
struct SwapBack {
  nlohmann::json& a;
  nlohmann::json& b;
  SwapBack(nlohmann::json& x, nlohmann::json& y) : a(x), b(y) { std::swap(a, b); }
  ~SwapBack() { std::swap(a, b); }
  SwapBack(const SwapBack&) = delete;
  SwapBack& operator=(const SwapBack&) = delete;
};
}  // namespace

Status Coordinator::Impl::write_files(RoundFiles& f) {
  // The whole history: the head with every round so far. The writer's rounds are lent
  // to it for the write, never copied, and come back whatever happens to the write.
  for (auto& r : f.new_rounds) written_rounds.push_back(std::move(r));
  nlohmann::json& doc = f.head;
  SwapBack rounds_lent(doc["rounds"], written_rounds);
  try {
    if (f.checkpoint) {
      const auto start = Clock::now();
      SwapBack history_lent(f.checkpoint->history, doc);
      write_checkpoint(checkpoint_path, *f.checkpoint);
      job_metrics.checkpoint_seconds.Observe(std::chrono::duration<double>(Clock::now() - start).count());
    }
  } catch (const std::exception& e) {
    return Status::internal("round " + std::to_string(f.round) + ": cannot write the checkpoint: " + e.what());
  }
  try {
    write_file_atomic(history_path, json_text(doc, 2) + "\n");
    write_file_atomic(report_path, render_report(doc));
  } catch (const std::exception& e) {
    return Status::internal("round " + std::to_string(f.round) + ": cannot write " + history_path + ": " + e.what());
  }
  return Status();
}

Status Coordinator::Impl::finish_round_files() {
  std::unique_lock<std::mutex> lock(files_mu);
  ++files_flush;
  files_cv.notify_all();
  files_cv.wait(lock, [&] { return !files_pending && !files_busy; });
  --files_flush;
  return files_error;
}

void Coordinator::Impl::stop_round_files() {
  {
    std::lock_guard<std::mutex> lock(files_mu);
    files_stop = true;
    files_cv.notify_all();
  }
  if (files_thread.joinable()) files_thread.join();
}

torch::Tensor Coordinator::Impl::rng_state() {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void Coordinator::Impl::set_rng_state(const torch::Tensor& state) {
  auto gen = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

nlohmann::json Coordinator::Impl::fingerprint() const {
  nlohmann::json names = nlohmann::json::array();
  for (const auto& p : spec.pods) names.push_back(p.name);
  nlohmann::json f = {{"model",
           {{"username", spec.model.username},
            {"ref", spec.model.ref},
            {"version", resolved ? static_cast<int64_t>(resolved->version.version) : int64_t{spec.model.version}},
            {"sha256", resolved ? resolved->version.sha256 : std::string()},
            {"hyperparameters", spec.model.hyperparameters.json()}}},
          {"datastructure",
           {{"target", ds.target},
            {"features", ds.features},
            {"input_shape", ds.input_shape},
            {"num_classes", ds.num_classes},
            {"scale", ds.scale},
            {"split", {{"validation", ds.split.validation}, {"test", ds.split.test}, {"seed", ds.split.seed}}}}},
          {"strategy", spec.strategy},
          {"seed", spec.seed},
          {"local_epochs", spec.local_steps > 0 ? 0 : spec.local_epochs},
          {"local_steps", spec.local_steps},
          {"batch_size", spec.batch_size},
          {"pods", names}};
  // Only when there are any, so that checkpoints of numeric-label jobs written before
  // categories were agreed still resume.
  if (!ds.categories.empty()) f["datastructure"]["categories"] = ds.categories;
  // Likewise: only when given, so that checkpoints from before strategy options resume.
  if (!spec.strategy_options.empty()) f["strategy_options"] = spec.strategy_options;
  if (spec.sample_fraction > 0) f["sample"] = {{"fraction", spec.sample_fraction}};
  if (spec.sample_count > 0) f["sample"] = {{"count", spec.sample_count}};
  return f;
}

Status Coordinator::Impl::load_resume() {
  auto c = read_checkpoint(checkpoint_path);
  if (!c.ok()) {
    if (c.status().code() == StatusCode::kNotFound) {
      return Status::failed_precondition("--resume: no checkpoint at " + checkpoint_path +
                                         "; run the job without --resume to start it");
    }
    return Status(c.status().code(), "--resume: " + c.status().message());
  }
  if (!spec.job_id_generated && spec.job_id != c->job_id) {
    return Status::invalid("--resume: " + checkpoint_path + " is job '" + c->job_id + "', the job file says '" +
                           spec.job_id + "'");
  }
  spec.job_id = c->job_id;
  // A hub model resolved to "latest" stays on the version the job started with.
  if (!spec.model.username.empty() && spec.model.version == 0) {
    spec.model.version = c->fingerprint.value("/model/version"_json_pointer, 0u);
  }
  job_metrics.set_job_info(spec.job_id, model_label());
  log->info("event=resuming job={} after_round={} checkpoint={}", c->job_id, c->round, checkpoint_path);
  resume_from = std::move(*c);
  return Status();
}

Status Coordinator::Impl::restore_checkpoint(torch::Tensor& global, aggregation::Strategy& strategy) {
  const Checkpoint& c = *resume_from;
  const std::string diff = fingerprint_difference(c.fingerprint, fingerprint());
  if (!diff.empty()) {
    return Status::invalid("--resume: the job changed since its checkpoint (" + checkpoint_path + "): " + diff +
                           "; resume it with the job file it started with, or start a new job");
  }
  if (c.parameters.numel() != global.numel()) {
    return Status::invalid("--resume: " + checkpoint_path + " has " + std::to_string(c.parameters.numel()) +
                           " parameters, the model has " + std::to_string(global.numel()));
  }
  global = c.parameters.clone();
  FEDPOD_RETURN_IF_ERROR(strategy.restore(c.strategy_state));
  try {
    set_rng_state(c.rng_state);
  } catch (const c10::Error& e) {
    return Status::bad_message("--resume: " + checkpoint_path + ": bad generator state: " + e.what_without_backtrace());
  }
  next_request = std::max(next_request, c.next_request);
  last_closed_round = c.round;  // nothing for those rounds is taken again
  return Status();
}

Checkpoint Coordinator::Impl::make_checkpoint(int round, const torch::Tensor& global, const aggregation::Strategy& strategy) {
  Checkpoint c;
  c.job_id = spec.job_id;
  c.round = round;
  c.next_request = next_request;
  c.strategy = spec.strategy;
  c.fingerprint = fingerprint();
  c.parameters = global;
  c.rng_state = rng_state();
  for (const auto& t : strategy.state()) c.strategy_state.push_back(t.clone());
  return c;
}

}  // namespace fedpod::coordinator
