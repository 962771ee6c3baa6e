#include "fedpod/worker/engine.h"

#include <torch/torch.h>

#include "fedpod/common/names.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/hyperparameters.h"
#include "fedpod/worker/data_parallel.h"

namespace fedpod::worker {

int64_t JobEngine::numel() const {
  int64_t n = 0;
  for (const auto& p : layout_) n += p.numel;
  return n;
}

namespace {

class LocalEngine : public JobEngine {
 public:
  Status init(const EngineSpec& spec, const data::Table& table, const Runtime& runtime) {
    spec_ = spec;
    runtime_ = runtime;
    const std::string what = "pod " + spec.pod + ": model " + spec.ref;
    if (spec.threads > 0) torch::set_num_threads(spec.threads);
    std::vector<std::unique_ptr<model::Model>> replicas;
    for (size_t r = 0; r < spec.devices.size(); ++r) {
      std::unique_ptr<model::Model> m;
      if (spec.format.empty()) {
        m = runtime.make_model(spec.ref);
        if (!m) {
          return Status::not_found("model '" + spec.ref + "' is not a built-in model (built-ins: " +
                                   join_names(model::builtin_names()) + "); custom models need the model hub");
        }
      } else {
        auto loaded = runtime.load_custom(spec.artifact_path, spec.format);
        if (!loaded.ok()) {
          return Status(loaded.status().code(), "custom model " + spec.ref + ": " + loaded.status().message());
        }
        m = std::move(*loaded);
      }
      replicas.push_back(std::move(m));
    }
    // The coordinator checked them too; a pod does not rely on that.
    std::optional<model::HyperparameterSpec> declared;
    try {
      declared = replicas.front()->hyperparameters();
    } catch (const std::exception& e) {
      return Status::invalid(what + ": hyperparameters() failed: " + e.what());
    }
    if (declared) {
      Status hp_ok = model::check_hyperparameters(spec.hp, *declared, spec.ref);
      if (!hp_ok.ok()) return Status(hp_ok.code(), "pod " + spec.pod + ": " + hp_ok.message());
    }
    auto splits = data::make_splits(table, spec.ds);
    if (!splits.ok()) return splits.status();
    splits_ = std::move(*splits);
    for (auto& replica : replicas) {
      torch::manual_seed(spec.seed);  // identical replicas (the global parameters overwrite them anyway)
      try {
        replica->create_model(splits_.input_shape, spec.ds.num_classes, spec.hp);
      } catch (const ConfigError& e) {
        return Status::invalid(what + ": " + e.what());
      } catch (const c10::Error& e) {
        return Status::invalid(what + ": " + e.what_without_backtrace());
      }
    }
    model_ = std::move(replicas.front());
    replicas.erase(replicas.begin());
    if (spec.devices.size() > 1) {
      DataParallelOptions dpo;
      dpo.threads_per_replica = spec.threads_per_replica;
      auto dp = DataParallel::create(*model_, std::move(replicas), spec.devices, dpo);
      if (!dp.ok()) return Status(dp.status().code(), what + ": " + dp.status().message());
      dp_ = std::move(*dp);
      allreduce = dp_->backend();
    } else {
      Status moved = move_to_device(*model_, spec.devices.front());
      if (!moved.ok()) return Status(moved.code(), what + ": " + moved.message());
    }
    layout_ = model_->flat().layout();
    train_size = splits_.train.size();
    validation_size = splits_.validation.size();
    test_size = splits_.test.size();
    this->replicas = static_cast<int>(spec.devices.size());
    return Status();
  }

  ~LocalEngine() override {
    dp_.reset();  // borrows model_
  }

  Status write_state(const std::vector<torch::Tensor>& tensors) override {
    if (tensors.size() != layout_.size()) {
      return Status::invalid("expected " + std::to_string(layout_.size()) + " tensors, got " +
                             std::to_string(tensors.size()));
    }
    torch::NoGradGuard no_grad;
    torch::Tensor& flat = model_->flat().writable();
    for (size_t i = 0; i < layout_.size(); ++i) {
      flat.narrow(0, layout_[i].offset, layout_[i].numel).copy_(tensors[i].reshape({-1}));
    }
    model_->restore_buffers();  // integer buffers: from their float32 slots
    return Status();
  }

  std::pair<torch::Tensor, std::shared_ptr<void>> read_state() override {
    auto& flat = model_->flat();
    if (flat.tensor().is_cpu()) return {flat.tensor(), flat.pin()};  // zero-copy, pinned until sent
    torch::Tensor host = flat.tensor().to(torch::kCPU);  // a model on a GPU: one copy to host memory
    return {host, std::make_shared<torch::Tensor>(host)};
  }

  bool share_state(const torch::Tensor& region) override {
    if (dp_ || !model_->flat().tensor().is_cpu()) return false;
    model_->flat().rehome_into(region);
    return true;
  }

  void state_written() override { model_->restore_buffers(); }

  StatusOr<TrainStats> train(const TrainOptions& options, const std::atomic<bool>* cancel) override {
    // torch's generator (dropout, random augmentations) starts each round from the
    // same state whether or not the job was restarted in between: a resumed job
    // trains as an uninterrupted one does.
    torch::manual_seed(options.seed);
    return dp_ ? dp_->train(splits_.train, options, spec_.hp, cancel)
               : runtime_.train(*model_, splits_.train, options, spec_.hp, cancel);
  }

  StatusOr<EvalStats> evaluate(Split split, int64_t batch_size, const std::atomic<bool>*) override {
    const data::Dataset& d = split == Split::kTest         ? splits_.test
                             : split == Split::kValidation ? splits_.validation
                                                           : splits_.train;
    return worker::evaluate(*model_, d, batch_size, split == Split::kTest);
  }

 private:
  EngineSpec spec_;
  Runtime runtime_;
  data::Splits splits_;
  std::unique_ptr<model::Model> model_;  // replica 0
  std::unique_ptr<DataParallel> dp_;     // borrows model_; null with one device
};

}  // namespace

StatusOr<std::unique_ptr<JobEngine>> make_local_engine(const EngineSpec& spec, const data::Table& table,
                                                       const Runtime& runtime) {
  auto engine = std::make_unique<LocalEngine>();
  Status st = engine->init(spec, table, runtime);
  if (!st.ok()) return st;
  return std::unique_ptr<JobEngine>(std::move(engine));
}

}  // namespace fedpod::worker
