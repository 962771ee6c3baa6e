// DataParallel: a pod's local training across its devices, one model replica each.
//
// A pod with `devices: [cpu, cpu]` or `[cuda:0, cuda:1]` (config.h) keeps K replicas
// of the job's model, built and created identically, each on its device. A round
// starts every replica from replica 0's parameters (where the worker loads the
// global ones) and trains them in lockstep, each on its own thread:
//
//   every step, every replica draws the same batch from an identically seeded
//   BatchIterator (the batch train_local would draw), takes its contiguous shard,
//   runs training_step and backward, all-reduces its gradients with the others
//   through a Collective (collective.h), and steps its own optimizer;
//
// so the replicas stay identical and replica 0 ends where one model trained on the
// whole batches would (up to float rounding). Replica 0 is what the worker sends
// back; the other replicas only help.
//
// Gradients: each replica's parameter gradients are views into one flat float32
// buffer on its device, allocated once in the FlatParameters layout; the buffer is
// zeroed before every step in place of the optimizer's zero_grad (libtorch's detaches
// gradients in place, which it refuses for views) and is what the all-reduce works
// on, so no packing happens. A gradient the model replaced with a
// tensor of its own is copied into the buffer and re-pointed at it.
//
// Uneven batches: a batch of b samples splits into K contiguous shards of floor(b/K)
// samples, the first b % K of them one larger (a last batch smaller than K leaves
// some shards empty). Replica r's gradient, the mean over its n_r samples, is scaled
// by n_r * K / b before the all-reduce's mean over K, so the result is
// sum_r (n_r / b) * grad_r: the mean over the whole batch, what one replica would
// compute. A replica with an empty shard skips forward and backward and contributes
// zeros, but still joins the all-reduce.
//
// Collective backends: the in-process cpu one for cpu replicas; nccl when every
// device is a GPU and nccl_available(); otherwise GPUs fall back to the cpu backend
// through host memory (slow, but correct).
//
// Threads: train() blocks its caller while K threads train. Each replica thread calls
// at::set_num_threads(options.threads_per_replica) first (the worker passes the pod's
// `threads` divided by K, at least 1), and train() restores the caller's count after.
// A DataParallel is used by one thread at a time (the worker's executor thread).
//
// Failures: a replica that throws (or whose loss is not finite, or that sees
// `cancel`) aborts the collective, which wakes the others blocked in the all-reduce;
// train() then returns that replica's error naming it and its device, e.g.
// "replica 1 (cpu): model failed while training: ...". The next train() gets a
// fresh collective and starts from the parameters it is given, so a failed round
// leaves nothing behind.
//
// Buffers (batch-norm statistics): moving a replica to a GPU moves its buffers with
// its parameters. Each replica's statistics see only its shards; after the last
// step, before the update leaves the pod, replica 0's float32 buffers become the
// mean over the replicas and its integer buffers the maximum, so the pod sends one
// agreed state.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "fedpod/common/config_util.h"
#include "fedpod/common/status.h"
#include "fedpod/data/dataset.h"
#include "fedpod/model/model.h"
#include "fedpod/worker/collective.h"
#include "fedpod/worker/trainer.h"

namespace fedpod::worker {

struct DataParallelOptions {
  // Intra-op threads of each replica's thread (at::set_num_threads); 0 leaves
  // libtorch's setting alone. The worker passes max(1, threads / K), where threads
  // is pod.yaml's `threads` (every core when 0): K replicas share the pod's cores
  // instead of each taking all of them, which oversubscribes the CPUs.
  int threads_per_replica = 0;
};

// Moves `model`'s parameters (and its flat buffer) to `device` ("cpu", "cuda:N"),
// keeping their values and layout; nothing happens when they are there already.
// Returns kInternal naming the device when libtorch cannot (no CUDA in this build).
Status move_to_device(model::Model& model, const std::string& device);

class DataParallel {
 public:
  // Takes replica 0 (`primary`, borrowed: it must outlive this object) and replicas
  // 1..K-1 (`others`, owned), all already created with create_model the same way,
  // and one device per replica. Moves each replica to its device, allocates the
  // gradient buffers and sets up the collective (with one replica: neither, and
  // train() is train_local).
  // Returns: kInvalidArgument when the devices do not match the replicas or a
  // replica's parameters differ from replica 0's (names, shapes); kInternal when a
  // replica cannot be moved to its device; make_nccl_collective's error, prefixed,
  // when NCCL cannot be set up for the GPUs.
  static StatusOr<std::unique_ptr<DataParallel>> create(
      model::Model& primary, std::vector<std::unique_ptr<model::Model>> others,
      std::vector<std::string> devices, DataParallelOptions options = {});
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // Trains all replicas as described above, from replica 0's current parameters.
  // `options`, `hp` and `cancel` mean what they mean to train_local (trainer.h), and
  // with one replica this is train_local itself. Returns replica 0's steps and, over
  // all replicas, the samples seen and the sample-weighted mean loss and accuracy.
  // Errors: train_local's, with a replica's own prefixed "replica R (DEVICE): ".
  StatusOr<TrainStats> train(const data::Dataset& data, const TrainOptions& options,
                             const Hyperparameters& hp, const std::atomic<bool>* cancel = nullptr);

  int size() const { return static_cast<int>(devices_.size()); }
  model::Model& replica(int r) { return r == 0 ? primary_ : *others_[r - 1]; }
  const std::string& device(int r) const { return devices_[r]; }
  // "cpu", "nccl" or "cpu via host memory": how gradients are all-reduced.
  std::string backend() const;

 private:
  struct ReplicaResult;
  DataParallel(model::Model& primary, std::vector<std::unique_ptr<model::Model>> others,
               std::vector<std::string> devices, DataParallelOptions options);
  Status make_collective();
  void point_grads(int r);
  // After a round: replica 0's buffers become the replicas' mean (float32) and
  // maximum (integer); see above.
  Status agree_on_buffers();
  ReplicaResult run_replica(int r, const data::Dataset& data, const TrainOptions& options,
                            const Hyperparameters& hp, const std::atomic<bool>* cancel);

  model::Model& primary_;
  std::vector<std::unique_ptr<model::Model>> others_;
  std::vector<std::string> devices_;
  DataParallelOptions options_;
  // Per replica: the flat gradient buffer, its views (one per parameter, in the
  // layout), and the parameter tensors whose gradients they are.
  std::vector<torch::Tensor> grads_;
  std::vector<std::vector<torch::Tensor>> grad_views_;
  std::vector<std::vector<torch::Tensor>> params_;
  std::unique_ptr<Collective> collective_;  // null after a failed round until the next
  bool stage_on_host_ = false;              // GPUs without NCCL: all-reduce a host copy
};

}  // namespace fedpod::worker
