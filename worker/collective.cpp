// The NCCL entry points of a build without the NCCL backend (collective.h); with
// it, collective_nccl.cpp defines them instead.
#include "fedpod/worker/collective.h"

#if !defined(FEDPOD_HAVE_NCCL)

namespace fedpod::worker {

bool nccl_available() { return false; }

StatusOr<std::unique_ptr<Collective>> make_nccl_collective(const std::vector<int>& devices,
                                                           const CollectiveOptions& options) {
  return Status::failed_precondition(
      "this fedpod was built without NCCL (FEDPOD_NCCL=OFF or CUDA/NCCL not found)");
}

}  // namespace fedpod::worker

#endif
