// Collective: the all-reduce that keeps a pod's data-parallel replicas in step.
//
// A pod with several devices trains one replica of the model per device, each on
// its own thread and its own shard of every batch. After backward, every replica
// calls all_reduce_mean() with its gradients packed in one flat float32 tensor on
// its device; when the call returns, every replica's tensor holds the element-wise
// mean over the replicas, so identical optimizer steps keep the replicas identical.
//
// Backends:
//   cpu   in-process, between the replica threads (tests, `devices: [cpu, cpu]`).
//         Every rank deposits its tensor, then each rank averages its 1/K slice
//         across all ranks' tensors and writes the mean into every rank's tensor
//         (reduce-scatter and all-gather in one pass), so K threads share the work.
//         Every element is summed in rank order by one thread, so all replicas get
//         bit-identical values.
//   nccl  one NCCL communicator per CUDA device (ncclCommInitAll), a grouped
//         all-reduce (ncclAvg) on the devices' streams. Built when CMake finds the
//         CUDA toolkit and NCCL (option FEDPOD_NCCL=AUTO|ON|OFF); see nccl_available().
//         With a CUDA-enabled libtorch the all-reduce is enqueued on each rank's
//         current c10 CUDA stream (as seen by that rank's thread), so it runs after
//         the rank's backward kernels and before its optimizer step, and the call
//         returns without waiting for the GPU. Without one (Debian's CPU libtorch)
//         the backend compiles, but no tensor can be on a CUDA device.
//
// Threading: all_reduce_mean(rank, ...) is called concurrently, once per round of
// calls, by exactly one thread per rank in [0, size()). abort() may be called from
// any thread: it wakes every blocked rank and makes this and every later call throw
// CollectiveAborted, so one failing replica cannot leave the others waiting forever.
// A rank that waits longer than CollectiveOptions::timeout for the others aborts the
// collective itself, naming the ranks that did not arrive. After an abort the
// Collective is finished: make a new one for the next job.
//
// Lifetime: destroy a Collective only after every rank's call has returned.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "fedpod/common/status.h"

namespace fedpod::worker {

// Thrown by all_reduce_mean() in every rank once the collective is aborted (by
// abort(), a timeout, another rank's bad input or a failed NCCL call). what() says
// why: "collective aborted: <reason>".
class CollectiveAborted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CollectiveOptions {
  // How long a rank waits in all_reduce_mean() for the other ranks to arrive. The
  // ranks run the same batch shapes, so they arrive within one step of each other;
  // a rank still missing after this long is stuck (a hung device, a deadlock), and
  // waiting for it would hang the pod's job forever. On timeout the waiting rank
  // aborts the collective, naming the missing ranks.
  std::chrono::milliseconds timeout = std::chrono::minutes(10);
};

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "cpu" or "nccl"
  // Blocks until every rank has called, then leaves the mean of all ranks' `flat` in
  // each rank's `flat` (same numel and dtype float32 on every rank; contiguous; on
  // the CPU for "cpu", on this rank's device for "nccl").
  // Throws: std::invalid_argument in the rank whose input is wrong (dtype, layout,
  //   device, rank out of range; for a numel that differs, the ranks not in the
  //   majority, rank 0's side winning a tie), and the collective is aborted, so the
  //   other ranks throw CollectiveAborted; CollectiveAborted after abort() or a
  //   timeout; std::runtime_error naming the NCCL call that failed (the collective is
  //   then aborted too).
  virtual void all_reduce_mean(int rank, torch::Tensor& flat) = 0;
  // Wakes every blocked rank; this and every later all_reduce_mean() throws
  // CollectiveAborted(why). The first reason sticks. NCCL: also ncclCommAbort.
  virtual void abort(const std::string& why) = 0;
};

// The in-process CPU backend for `ranks` (>= 1) replica threads. With one rank the
// call only checks its input. Throws std::invalid_argument for ranks < 1.
std::unique_ptr<Collective> make_cpu_collective(int ranks, const CollectiveOptions& options = {});

// True when this build includes the NCCL backend.
bool nccl_available();

// The NCCL backend over CUDA devices `devices` (ordinals; rank i uses devices[i]).
// Returns kFailedPrecondition when this build has no NCCL backend; kInvalidArgument
// for an empty list, a repeated or negative ordinal, or one past the devices CUDA
// reports; kInternal naming the CUDA or NCCL call and its error otherwise (no CUDA
// device or driver, ncclCommInitAll failing).
StatusOr<std::unique_ptr<Collective>> make_nccl_collective(const std::vector<int>& devices,
                                                           const CollectiveOptions& options = {});

}  // namespace fedpod::worker
