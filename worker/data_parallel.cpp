#include "fedpod/worker/data_parallel.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/torch.h>

#include <cmath>
#include <system_error>
#include <thread>

namespace fedpod::worker {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

bool is_cuda(const std::string& device) { return device.rfind("cuda:", 0) == 0; }

// Contiguous shard r of K over a batch of b samples: floor(b/K) each, the first
// b % K one larger. Returns {offset, count}.
std::pair<int64_t, int64_t> shard(int64_t b, int64_t k, int64_t r) {
  const int64_t base = b / k, extra = b % k;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

}  // namespace

Status move_to_device(model::Model& model, const std::string& device) {
  try {
    const torch::Device d(device);
    const torch::Tensor& flat = model.flat().tensor();
    if (flat.defined() && flat.device() == d) return Status();
    torch::NoGradGuard no_grad;
    auto params = model.named_parameters();
    auto buffers = model.named_buffers();
    for (auto& [name, p] : params) p.set_data(p.data().to(d));
    for (auto& [name, b] : buffers) b.set_data(b.data().to(d));  // batch-norm statistics move too
    model.flat().adopt(params, buffers);
  } catch (const c10::Error& e) {
    return Status::internal("cannot move the model to " + device + ": " +
                            e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::internal("cannot move the model to " + device + ": " + e.what());
  }
  return Status();
}

struct DataParallel::ReplicaResult {
  Status status;
  bool aborted_by_peer = false;  // stopped because another replica aborted the collective
  int64_t steps = 0;
  int64_t samples = 0;
  int64_t correct = 0;
  double loss_sum = 0;
};

DataParallel::DataParallel(model::Model& primary, std::vector<std::unique_ptr<model::Model>> others,
                           std::vector<std::string> devices, DataParallelOptions options)
    : primary_(primary),
      others_(std::move(others)),
      devices_(std::move(devices)),
      options_(options) {}

DataParallel::~DataParallel() = default;

StatusOr<std::unique_ptr<DataParallel>> DataParallel::create(
    model::Model& primary, std::vector<std::unique_ptr<model::Model>> others,
    std::vector<std::string> devices, DataParallelOptions options) {
  if (devices.empty() || devices.size() != others.size() + 1) {
    return Status::invalid(
        "data-parallel training needs one device per replica: " + std::to_string(devices.size()) +
        " devices for " + std::to_string(others.size() + 1) + " replicas");
  }
  const auto& layout = primary.flat().layout();
  for (size_t r = 0; r < others.size(); ++r) {
    if (!others[r]) return Status::invalid("replica " + std::to_string(r + 1) + " is missing");
    const auto& other = others[r]->flat().layout();
    if (other.size() != layout.size()) {
      return Status::invalid("replica " + std::to_string(r + 1) + " has " +
                             std::to_string(other.size()) + " parameters, replica 0 has " +
                             std::to_string(layout.size()) +
                             "; every replica must be built the same way");
    }
    for (size_t i = 0; i < layout.size(); ++i) {
      if (other[i].name != layout[i].name || other[i].shape != layout[i].shape) {
        return Status::invalid("replica " + std::to_string(r + 1) + "'s parameter " +
                               std::to_string(i) + " is '" + other[i].name + "' " +
                               shape_string(other[i].shape) + ", replica 0's is '" +
                               layout[i].name + "' " + shape_string(layout[i].shape) +
                               "; every replica must be built the same way");
      }
    }
  }
  std::unique_ptr<DataParallel> dp(
      new DataParallel(primary, std::move(others), std::move(devices), options));
  const int k = dp->size();
  dp->grads_.resize(k);
  dp->grad_views_.resize(k);
  dp->params_.resize(k);
  for (int r = 0; r < k; ++r) {
    model::Model& m = dp->replica(r);
    Status moved = move_to_device(m, dp->devices_[r]);
    if (!moved.ok())
      return Status(moved.code(), "replica " + std::to_string(r) + ": " + moved.message());
    // One replica trains with train_local, whose optimizer zero_grad() detaches
    // gradients in place, which libtorch refuses for views: no gradient buffer.
    if (k == 1) break;
    try {
      // Gradients for the parameters only: they come first in the layout, buffers after.
      torch::Tensor grads = torch::zeros({m.flat().param_numel()}, m.flat().tensor().options());
      for (auto& [name, p] : m.named_parameters()) dp->params_[r].push_back(p);
      for (const auto& info : m.flat().layout()) {
        if (!info.is_parameter()) break;
        dp->grad_views_[r].push_back(grads.narrow(0, info.offset, info.numel).view(info.shape));
      }
      dp->grads_[r] = std::move(grads);
    } catch (const c10::Error& e) {
      return Status::internal("replica " + std::to_string(r) + " (" + dp->devices_[r] +
                              "): cannot allocate its gradients: " + e.what_without_backtrace());
    }
    if (dp->params_[r].size() != dp->grad_views_[r].size()) {
      return Status::invalid(
          "replica " + std::to_string(r) + " lists " + std::to_string(dp->params_[r].size()) +
          " parameters but its flat buffer holds " + std::to_string(dp->grad_views_[r].size()));
    }
    dp->point_grads(r);
  }
  if (k > 1) FEDPOD_RETURN_IF_ERROR(dp->make_collective());
  return dp;
}

Status DataParallel::make_collective() {
  bool all_cuda = true, any_cuda = false;
  std::vector<int> ordinals;
  for (const auto& d : devices_) {
    all_cuda = all_cuda && is_cuda(d);
    any_cuda = any_cuda || is_cuda(d);
    if (is_cuda(d)) ordinals.push_back(std::stoi(d.substr(5)));
  }
  try {
    if (all_cuda && nccl_available()) {
      auto c = make_nccl_collective(ordinals);
      if (!c.ok())
        return Status(c.status().code(),
                      "cannot set up NCCL for the pod's GPUs: " + c.status().message());
      collective_ = std::move(*c);
      stage_on_host_ = false;
    } else {
      collective_ = make_cpu_collective(size());
      stage_on_host_ = any_cuda;
    }
  } catch (const std::exception& e) {
    return Status::internal(std::string("cannot set up the all-reduce between replicas: ") +
                            e.what());
  }
  return Status();
}

std::string DataParallel::backend() const {
  if (!collective_) return "none";
  return std::string(collective_->backend()) + (stage_on_host_ ? " via host memory" : "");
}

void DataParallel::point_grads(int r) {
  // A frozen parameter keeps no gradient, so optimizers skip it as they would on one
  // device; its slice of the buffer stays zero.
  for (size_t i = 0; i < params_[r].size(); ++i) {
    if (params_[r][i].requires_grad()) params_[r][i].mutable_grad() = grad_views_[r][i];
  }
}

DataParallel::ReplicaResult DataParallel::run_replica(int r, const data::Dataset& data,
                                                      const TrainOptions& options,
                                                      const Hyperparameters& hp,
                                                      const std::atomic<bool>* cancel) {
  ReplicaResult res;
  const std::string who = "replica " + std::to_string(r) + " (" + devices_[r] + "): ";
  // Ends this replica with `st` and wakes the others.
  auto fail = [&](Status st) {
    res.status = Status(st.code(), who + st.message());
    collective_->abort(res.status.message());
  };
  try {
    if (options_.threads_per_replica > 0) at::set_num_threads(options_.threads_per_replica);
    model::Model& m = replica(r);
    const torch::Device device(devices_[r]);
    const int64_t k = size();
    torch::Tensor& grads = grads_[r];
    std::vector<torch::Tensor>& params = params_[r];
    std::vector<torch::Tensor>& views = grad_views_[r];
    m.set_training(true);
    auto optimizer = m.configure_optimizers(hp);
    ProximalTerm proximal(m, options.proximal_mu);  // every replica starts from the same parameters
    point_grads(r);
    data::BatchIterator batches(data, options.batch_size, /*shuffle=*/true, options.seed);
    torch::Tensor x, y;
    const bool by_steps = options.steps > 0;
    int64_t epoch = 0;
    while (by_steps ? res.steps < options.steps : epoch < options.epochs) {
      if (!batches.next(x, y)) {
        ++epoch;
        batches.reset();
        continue;
      }
      if (cancel && cancel->load()) {  // the pod's, not this replica's: no prefix
        res.status = Status::failed_precondition("cancelled");
        collective_->abort("cancelled");
        return res;
      }
      const int64_t b = y.size(0);
      const auto [offset, n] = shard(b, k, r);
      grads.zero_();
      torch::Tensor loss;  // read after the step: on a GPU, .item() waits for the device
      int64_t count = 0;
      if (n > 0) {
        torch::Tensor xs = x.narrow(0, offset, n), ys = y.narrow(0, offset, n);
        if (!device.is_cpu()) {
          xs = xs.to(device);
          ys = ys.to(device);
        }
        model::StepOutput out = m.training_step(xs, ys);
        out.loss.backward();
        loss = out.loss.detach();
        count = out.count;
        res.correct += out.correct;
        res.samples += out.count;
        // A model that set a gradient of its own (or none) gets the buffer back.
        torch::NoGradGuard no_grad;
        for (size_t i = 0; i < params.size(); ++i) {
          if (!params[i].requires_grad()) continue;
          const torch::Tensor& g = params[i].grad();
          if (g.defined() && g.data_ptr() == views[i].data_ptr()) continue;
          if (g.defined()) views[i].copy_(g);
          params[i].mutable_grad() = views[i];
        }
      }
      if (n * k != b) grads.mul_(static_cast<double>(n * k) / static_cast<double>(b));
      try {
        if (stage_on_host_) {
          torch::Tensor host = grads.to(torch::kCPU);
          collective_->all_reduce_mean(r, host);
          grads.copy_(host);
        } else {
          collective_->all_reduce_mean(r, grads);
        }
      } catch (const CollectiveAborted&) {
        throw;
      } catch (const std::exception& e) {  // bad input or a failed NCCL call: not the model's fault
        fail(Status::internal(std::string("gradient all-reduce (") + collective_->backend() +
                              ") failed: " + e.what()));
        return res;
      }
      proximal.add_to_gradients();  // after the mean: the same on every replica
      optimizer->step();
      if (loss.defined()) {
        const double value = loss.item<double>();
        if (!std::isfinite(value)) {
          fail(Status::invalid("training loss became " + std::to_string(value) + " at step " +
                               std::to_string(res.steps) + "; lower the learning rate"));
          return res;
        }
        res.loss_sum += value * count;
      }
      ++res.steps;
    }
  } catch (const CollectiveAborted& e) {
    res.status = Status::internal(e.what());
    res.aborted_by_peer = true;
  } catch (const ConfigError& e) {
    fail(Status::invalid(e.what()));
  } catch (const c10::Error& e) {
    fail(Status::internal(std::string("model failed while training: ") +
                          e.what_without_backtrace()));
  } catch (const std::exception& e) {  // e.g. an error raised inside a scripted model
    fail(Status::internal(std::string("model failed while training: ") + e.what()));
  } catch (...) {
    fail(
        Status::internal("model failed while training: an exception that is not a std::exception"));
  }
  return res;
}

StatusOr<TrainStats> DataParallel::train(const data::Dataset& data, const TrainOptions& options,
                                         const Hyperparameters& hp,
                                         const std::atomic<bool>* cancel) {
  // DP-SGD runs on the first replica alone: its per-example clipping and noise are
  // defined on whole batches (privacy/dp_sgd.h).
  if (size() == 1 || options.dp.enabled()) return train_local(primary_, data, options, hp, cancel);
  if (data.size() == 0) return Status::failed_precondition("the training split is empty");
  if (options.batch_size <= 0) return Status::invalid("batch_size must be positive");
  if (options.steps <= 0 && options.epochs <= 0)
    return Status::invalid("train for at least one epoch or step");
  if (!collective_) FEDPOD_RETURN_IF_ERROR(make_collective());
  try {
    // Every replica starts from replica 0's parameters: the global ones of this round.
    torch::NoGradGuard no_grad;
    const torch::Tensor& source = primary_.flat().tensor();
    for (int r = 1; r < size(); ++r) {
      replica(r).flat().writable().copy_(source);
      replica(r).restore_buffers();
    }
  } catch (const c10::Error& e) {
    return Status::internal(std::string("cannot copy the parameters to the replicas: ") +
                            e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::internal(std::string("cannot copy the parameters to the replicas: ") + e.what());
  }
  const int caller_threads = at::get_num_threads();
  std::vector<ReplicaResult> results(size());
  {
    std::vector<std::thread> threads;
    threads.reserve(size());
    try {
      for (int r = 0; r < size(); ++r) {
        threads.emplace_back([&, r] { results[r] = run_replica(r, data, options, hp, cancel); });
      }
    } catch (const std::system_error& e) {  // the started replicas wait for the others: wake them
      const std::string why =
          "cannot start replica " + std::to_string(threads.size()) + "'s thread: " + e.what();
      collective_->abort(why);
      for (auto& t : threads) t.join();
      collective_.reset();
      if (options_.threads_per_replica > 0) at::set_num_threads(caller_threads);
      return Status::internal(why);
    }
    for (auto& t : threads) t.join();
  }
  // set_num_threads also sets the process default that new threads start with.
  if (options_.threads_per_replica > 0) at::set_num_threads(caller_threads);

  // The first replica that failed by itself explains the round; the others only
  // stopped because it aborted the collective.
  const ReplicaResult* failed = nullptr;
  for (const auto& res : results) {
    if (!res.status.ok() && (!failed || (failed->aborted_by_peer && !res.aborted_by_peer)))
      failed = &res;
  }
  if (failed) {
    collective_.reset();  // aborted for good; the next round makes a new one
    return failed->status;
  }
  FEDPOD_RETURN_IF_ERROR(agree_on_buffers());
  TrainStats stats;
  stats.steps = results[0].steps;
  double loss_sum = 0;
  int64_t correct = 0;
  for (const auto& res : results) {
    stats.samples_seen += res.samples;
    loss_sum += res.loss_sum;
    correct += res.correct;
  }
  if (stats.samples_seen > 0) {
    stats.loss = loss_sum / stats.samples_seen;
    stats.accuracy = static_cast<double>(correct) / stats.samples_seen;
  }
  return stats;
}

Status DataParallel::agree_on_buffers() {
  // Each replica's batch-norm statistics saw only its shards; what leaves the pod is
  // their mean (float32 buffers) and maximum (integer buffers), in replica 0.
  model::FlatParameters& flat = primary_.flat();
  const int64_t begin = flat.param_numel(), count = flat.numel() - begin;
  if (count == 0) return Status();
  try {
    torch::NoGradGuard no_grad;
    for (int r = 0; r < size(); ++r) replica(r).capture_buffers();
    const torch::Device device = flat.tensor().device();
    std::vector<torch::Tensor> others;
    for (int r = 1; r < size(); ++r) others.push_back(replica(r).flat().tensor().narrow(0, begin, count).to(device));
    for (const auto& info : flat.layout()) {
      if (info.is_parameter() || info.numel == 0) continue;
      torch::Tensor dst = flat.writable().narrow(0, info.offset, info.numel);
      for (const auto& o : others) {
        torch::Tensor src = o.narrow(0, info.offset - begin, info.numel);
        if (info.kind == model::EntryKind::kBuffer) {
          dst.add_(src);
        } else {
          torch::maximum_out(dst, dst, src);
        }
      }
      if (info.kind == model::EntryKind::kBuffer) dst.div_(static_cast<double>(size()));
    }
    primary_.restore_buffers();
  } catch (const c10::Error& e) {
    return Status::internal(std::string("cannot average the replicas' buffers: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return Status::internal(std::string("cannot average the replicas' buffers: ") + e.what());
  }
  return Status();
}

}  // namespace fedpod::worker
