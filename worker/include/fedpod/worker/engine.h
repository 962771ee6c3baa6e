// JobEngine: the model code of one job on a pod, behind one interface.
//
// A pod's worker keeps the network, identity, policy and audit; what runs the job's
// model (building it, splitting the data, training, scoring) is a JobEngine:
//   - LocalEngine (make_local_engine): in this process. It is what a job runner
//     process runs (runner.h), and what a program embedding a Worker with its own
//     Runtime hooks runs (tests, benchmarks);
//   - the runner engine (start_runner, runner.h): the same LocalEngine in a separate,
//     confined process, reached over a private socket and a shared-memory region.
//     `fedpod worker` always uses it.
//
// The model state travels as one float32 vector in layout() order (parameters, then
// buffers): the worker writes the global state with write_state() before train()
// and evaluate(), and reads the trained one with read_state().
//
// Threading: one thread at a time (the worker's executor).
#pragma once

#include <torch/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "fedpod/common/config_util.h"
#include "fedpod/common/status.h"
#include "fedpod/data/csv.h"
#include "fedpod/data/schema.h"
#include "fedpod/model/custom.h"
#include "fedpod/model/zoo.h"
#include "fedpod/worker/trainer.h"

namespace fedpod::worker {

class TaskPool;

// What a pod runs for a job: how a model reference becomes a model, and how a round
// trains it. The defaults are the built-in zoo, the TorchScript/plugin loaders and
// train_local. Programs embedding a Worker (the benchmarks) may substitute their
// own; nothing in pod.yaml or in a message can select anything else.
//
// runner_command: how model code is run. Empty (the default for an embedded Worker):
// in the worker's own process, with the hooks above. Non-empty: the argv of a job
// runner (runner.h), e.g. {"/usr/bin/fedpod", "runner"}; `fedpod worker` sets it to
// itself, so a pod never runs model code in its own process.
struct Runtime {
  std::function<std::unique_ptr<model::Model>(const std::string& ref)> make_model = model::make_builtin;
  std::function<StatusOr<std::unique_ptr<model::Model>>(const std::string& path, const std::string& format)>
      load_custom = model::load_custom;
  std::function<StatusOr<TrainStats>(model::Model&, const data::Dataset&, const TrainOptions&,
                                     const Hyperparameters&, const std::atomic<bool>*)>
      train = train_local;
  std::vector<std::string> runner_command;
  // How the pod's public socket is held: empty (an embedded Worker), in this
  // process; else the argv of the receiving process that owns it under a memory
  // limit (gate.h; `fedpod worker` uses {fedpod, "gate"}).
  std::vector<std::string> gate_command;
  // Where the worker's tasks (training, evaluation, fetching a result) run: null, on a
  // thread of the worker's own; else on this pool, shared with the other Workers of
  // the process (task_pool.h; `fedpod simulate`).
  std::shared_ptr<TaskPool> pool;
  // For a Worker listening on an inproc:// endpoint only (`fedpod simulate`): the
  // user as whom messages from that endpoint are taken. inproc:// carries no CURVE
  // handshake, and only code in this process can reach it, so the program that made
  // both the Worker and its coordinator vouches for who they are; the pod's policy
  // still decides what that user may run. Ignored on any other transport, and
  // nothing in pod.yaml or a message can set it.
  std::string inproc_user;
};

enum class Split { kTrain = 0, kValidation = 1, kTest = 2 };

// What a job's engine is built from.
struct EngineSpec {
  std::string ref;            // a built-in model's name; for a custom model, its name in messages
  std::string format;         // "" for a built-in model, else "torchscript" or "plugin"
  std::string artifact_path;  // custom models: the artifact file to load
  Hyperparameters hp;
  data::Datastructure ds;
  uint64_t seed = 0;
  std::vector<std::string> devices = {"cpu"};
  int threads_per_replica = 1;  // intra-op threads of each replica (pods with several devices)
  int threads = 0;              // intra-op threads of the process (0: leave as is)
  std::string pod;              // the pod's name, for messages
};

class JobEngine {
 public:
  virtual ~JobEngine() = default;

  // Copies `tensors` (one per layout() entry, of its shape) into the model state.
  virtual Status write_state(const std::vector<torch::Tensor>& tensors) = 0;
  // The model state as a CPU float32 vector, and what keeps its memory valid and
  // unchanged while frames point into it.
  virtual std::pair<torch::Tensor, std::shared_ptr<void>> read_state() = 0;
  // One round of local training; kFailedPrecondition "cancelled" when `cancel` turns true.
  virtual StatusOr<TrainStats> train(const TrainOptions& options, const std::atomic<bool>* cancel) = 0;
  // Scores a split with the current state.
  virtual StatusOr<EvalStats> evaluate(Split split, int64_t batch_size, const std::atomic<bool>* cancel) = 0;

  // In a runner: moves the model state into `region` (the memory shared with the
  // worker), so that the worker's writes are the model's parameters and training
  // writes the update in place, with no copy on either side. False when the model
  // cannot live there (on a GPU, or several replicas): then write_state/read_state
  // copy. After the worker wrote a shared region, call state_written().
  virtual bool share_state(const torch::Tensor& region) { return false; }
  virtual void state_written() {}

  const std::vector<model::ParamInfo>& layout() const { return layout_; }
  int64_t numel() const;
  int64_t train_size = 0, validation_size = 0, test_size = 0;
  int replicas = 1;
  std::string allreduce = "none";
  std::string confinement = "none";  // how the model code is confined (runner.h)

 protected:
  std::vector<model::ParamInfo> layout_;
};

// Builds the job's model(s) in this process: loads the model (built-in by make_model,
// custom from spec.artifact_path by load_custom), checks the hyperparameters against
// what it declares, makes the splits of `table`, creates one replica per device and
// moves them there. Errors name the pod and the model.
StatusOr<std::unique_ptr<JobEngine>> make_local_engine(const EngineSpec& spec, const data::Table& table,
                                                       const Runtime& runtime);

}  // namespace fedpod::worker
