// The NCCL backend (collective.h). Compiled only when CMake found the CUDA toolkit
// and NCCL (FEDPOD_HAVE_NCCL); FEDPOD_TORCH_CUDA when libtorch itself has CUDA.
//
// One process drives every device, so one thread must issue the whole grouped
// all-reduce (NCCL: "the group is required when one thread drives several
// devices"). The ranks meet in a detail::Rendezvous; the last to arrive issues
// ncclGroupStart, one in-place ncclAllReduce(ncclAvg) per device, ncclGroupEnd.
//
// Streams. With a CUDA libtorch each rank passes its own thread's current stream
// for its device (c10::cuda::getCurrentCUDAStream is per thread), and the
// all-reduce is only enqueued there: it runs after that rank's backward kernels and
// before its optimizer step, and nobody waits on the host. Without one, the
// backend owns one stream per device and the issuing rank synchronizes them before
// releasing the others (no tensor can be on a CUDA device in such a build, so this
// path only keeps the backend compiling and linking there).
//
// abort() wakes the ranks and calls ncclCommAbort on every communicator, which also
// stops kernels stuck on the device. If a rank is inside the NCCL calls at that
// moment, the communicators are aborted when it comes out; a host call that never
// returns is not interrupted.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "collective_rendezvous.h"
#include "fedpod/worker/collective.h"

#if FEDPOD_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace fedpod::worker {
namespace {

std::string devices_str(const std::vector<int>& devices) {
  std::string out = "[";
  for (size_t i = 0; i < devices.size(); ++i) out += (i ? ", " : "") + std::to_string(devices[i]);
  return out + "]";
}

// "ncclAllReduce (device 1) failed: unhandled cuda error (run with NCCL_DEBUG=INFO
// for details); last NCCL error: ..."
std::string nccl_message(const std::string& call, ncclResult_t rc) {
  std::string msg = call + " failed: " + ncclGetErrorString(rc);
  const char* last = ncclGetLastError(nullptr);
  if (last != nullptr && *last != '\0') msg += std::string("; last NCCL error: ") + last;
  return msg;
}

std::string cuda_message(const std::string& call, cudaError_t rc) {
  return call + " failed: " + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")";
}

void check_nccl(ncclResult_t rc, const std::string& call) {
  if (rc != ncclSuccess) throw std::runtime_error("nccl all-reduce: " + nccl_message(call, rc));
}

void check_cuda(cudaError_t rc, const std::string& call) {
  if (rc != cudaSuccess) throw std::runtime_error("nccl all-reduce: " + cuda_message(call, rc));
}

class NcclCollective final : public Collective {
 public:
  NcclCollective(std::vector<int> devices, std::vector<ncclComm_t> comms,
                 std::vector<cudaStream_t> streams, const CollectiveOptions& options)
      : devices_(std::move(devices)),
        comms_(std::move(comms)),
        streams_(std::move(streams)),
        rendezvous_(static_cast<int>(devices_.size()), options.timeout, "nccl all-reduce") {}

  ~NcclCollective() override {
    bool destroy = false;
    {
      std::lock_guard<std::mutex> lock(comms_mutex_);
      destroy = !comms_gone_;
      comms_gone_ = true;
    }
    if (destroy) {
      // Finalize flushes queued operations; one thread finalizing several
      // communicators must group the calls, or each waits for the others.
      bool finalized = ncclGroupStart() == ncclSuccess;
      for (ncclComm_t comm : comms_) finalized = finalized && ncclCommFinalize(comm) == ncclSuccess;
      finalized = ncclGroupEnd() == ncclSuccess && finalized;
      for (ncclComm_t comm : comms_) {
        if (finalized) {
          ncclCommDestroy(comm);
        } else {
          ncclCommAbort(comm);
        }
      }
    }
    for (cudaStream_t s : streams_) cudaStreamDestroy(s);
  }

  int size() const override { return static_cast<int>(devices_.size()); }
  const char* backend() const override { return "nccl"; }

  void all_reduce_mean(int rank, torch::Tensor& flat) override {
    check_input(rank, flat);
    void* stream = nullptr;
#if FEDPOD_TORCH_CUDA
    stream =
        c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(devices_[rank])).stream();
#else
    stream = streams_[rank];
#endif
    rendezvous_.arrive(rank, flat.numel(), flat.data_ptr(), stream,
                       [this](const detail::Round& round) { issue(round); });
  }

  void abort(const std::string& why) override {
    rendezvous_.abort(why);
    bool now = false;
    {
      std::lock_guard<std::mutex> lock(comms_mutex_);
      abort_requested_ = true;
      now = !issuing_ && !comms_gone_;
      if (now) comms_gone_ = true;
    }
    if (now) abort_comms();
  }

 private:
  void check_input(int rank, const torch::Tensor& flat) {
    const std::string who = "nccl all-reduce: rank " + std::to_string(rank);
    if (rank < 0 || rank >= size()) {
      rendezvous_.fail_input(who + " is out of range [0, " + std::to_string(size()) + ")");
    }
    if (!flat.defined()) rendezvous_.fail_input(who + " passed an undefined tensor");
    const torch::Device want(torch::kCUDA, static_cast<c10::DeviceIndex>(devices_[rank]));
    if (flat.scalar_type() != torch::kFloat32 || flat.device() != want || !flat.is_contiguous()) {
      rendezvous_.fail_input(who + " passed a " + std::string(c10::toString(flat.scalar_type())) +
                             " tensor on " + flat.device().str() +
                             (flat.is_contiguous() ? "" : " (not contiguous)") +
                             "; expected a contiguous float32 tensor on " + want.str());
    }
  }

  // Runs in the last rank to arrive, while the others wait.
  void issue(const detail::Round& round) {
    {
      std::lock_guard<std::mutex> lock(comms_mutex_);
      if (abort_requested_ || comms_gone_) return;  // the rendezvous throws CollectiveAborted(why)
      issuing_ = true;
    }
    try {
      check_nccl(ncclGroupStart(), "ncclGroupStart");
      for (size_t r = 0; r < comms_.size(); ++r) {
        const ncclResult_t rc =
            ncclAllReduce(round.data[r], round.data[r], static_cast<size_t>(round.numel), ncclFloat,
                          ncclAvg, comms_[r], static_cast<cudaStream_t>(round.context[r]));
        if (rc != ncclSuccess) {
          ncclGroupEnd();
          check_nccl(rc, "ncclAllReduce (rank " + std::to_string(r) + ", device " +
                             std::to_string(devices_[r]) + ", " + std::to_string(round.numel) +
                             " floats)");
        }
      }
      check_nccl(ncclGroupEnd(),
                 "ncclGroupEnd (all-reduce over devices " + devices_str(devices_) + ")");
#if !FEDPOD_TORCH_CUDA
      for (size_t r = 0; r < streams_.size(); ++r) {
        check_cuda(cudaStreamSynchronize(streams_[r]),
                   "cudaStreamSynchronize (device " + std::to_string(devices_[r]) + ")");
      }
#endif
    } catch (...) {
      // A failed NCCL call leaves the communicators in an unknown state: abort them
      // (the rendezvous aborts the collective with this error).
      {
        std::lock_guard<std::mutex> lock(comms_mutex_);
        abort_requested_ = true;
      }
      finish_issue();
      throw;
    }
    finish_issue();
  }

  // Leaves the NCCL calls; aborts the communicators if abort() came meanwhile.
  void finish_issue() {
    bool now = false;
    {
      std::lock_guard<std::mutex> lock(comms_mutex_);
      issuing_ = false;
      now = abort_requested_ && !comms_gone_;
      if (now) comms_gone_ = true;
    }
    if (now) abort_comms();
  }

  void abort_comms() {
    for (ncclComm_t comm : comms_) ncclCommAbort(comm);
  }

  const std::vector<int> devices_;
  const std::vector<ncclComm_t> comms_;  // comms_[r] for devices_[r]; freed once (destroy or abort)
  const std::vector<cudaStream_t> streams_;  // owned; empty with a CUDA libtorch
  detail::Rendezvous rendezvous_;

  std::mutex comms_mutex_;
  bool issuing_ = false;          // guarded by comms_mutex_: a rank is inside the NCCL calls
  bool abort_requested_ = false;  // guarded by comms_mutex_
  bool comms_gone_ = false;       // guarded by comms_mutex_: aborted or destroyed
};

}  // namespace

bool nccl_available() { return true; }

StatusOr<std::unique_ptr<Collective>> make_nccl_collective(const std::vector<int>& devices,
                                                           const CollectiveOptions& options) {
  if (devices.empty()) return Status::invalid("nccl backend: no devices given");
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    // Without a driver, CUDA says "driver version is insufficient": say what it means.
    const bool no_driver = rc == cudaErrorInsufficientDriver || rc == cudaErrorNoDevice;
    return Status::internal(
        "nccl backend: CUDA has no usable device (" + cuda_message("cudaGetDeviceCount", rc) +
        (no_driver ? "; no NVIDIA GPU or driver on this machine? check nvidia-smi" : "") + ")");
  }
  if (count == 0)
    return Status::internal(
        "nccl backend: CUDA has no usable device (cudaGetDeviceCount: 0 devices)");
  std::vector<int> seen;
  for (int d : devices) {
    if (d < 0 || d >= count) {
      return Status::invalid("nccl backend: device cuda:" + std::to_string(d) +
                             " does not exist (CUDA reports " + std::to_string(count) + " device" +
                             (count == 1 ? "" : "s") + ")");
    }
    if (std::find(seen.begin(), seen.end(), d) != seen.end()) {
      return Status::invalid("nccl backend: device cuda:" + std::to_string(d) +
                             " is listed twice in " + devices_str(devices) +
                             " (one rank per device)");
    }
    seen.push_back(d);
  }

  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  const ncclResult_t nrc =
      ncclCommInitAll(comms.data(), static_cast<int>(devices.size()), devices.data());
  if (nrc != ncclSuccess) {
    return Status::internal(
        "nccl backend: " +
        nccl_message("ncclCommInitAll over devices " + devices_str(devices), nrc));
  }

  std::vector<cudaStream_t> streams;
#if !FEDPOD_TORCH_CUDA
  int previous = 0;
  cudaGetDevice(&previous);
  for (int d : devices) {
    cudaStream_t s = nullptr;
    cudaError_t src = cudaSetDevice(d);
    if (src == cudaSuccess) src = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (src != cudaSuccess) {
      for (cudaStream_t made : streams) cudaStreamDestroy(made);
      for (ncclComm_t comm : comms) ncclCommDestroy(comm);
      cudaSetDevice(previous);
      return Status::internal("nccl backend: " +
                              cuda_message("cudaStreamCreate on device " + std::to_string(d), src));
    }
    streams.push_back(s);
  }
  cudaSetDevice(previous);
#endif
  return std::unique_ptr<Collective>(
      std::make_unique<NcclCollective>(devices, std::move(comms), std::move(streams), options));
}

}  // namespace fedpod::worker
