// The build check for multi-GPU pods: a machine with the CUDA toolkit's NCCL must
// produce a fedpod with the NCCL backend, so FEDPOD_NCCL=AUTO cannot silently drop
// it (CI fails instead). tests/CMakeLists.txt passes the configure result:
// FEDPOD_NCCL_OPTION (AUTO/ON/OFF), FEDPOD_NCCL_CONFIGURED (0/1) and the paths CMake
// found. Where the backend is built, creating it on a machine without a GPU must fail
// with a clear kInternal error, not crash.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "fedpod/worker/collective.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

constexpr const char* kToolkitNccl = "/usr/local/cuda/include/nccl.h";

bool gpu_present() {
  return std::filesystem::exists("/dev/nvidiactl") || std::filesystem::exists("/dev/nvidia0");
}

TEST(NcclBuildCheck, ToolkitWithNcclMeansTheBackendIsBuilt) {
  // The configure result and the library agree.
  EXPECT_EQ(nccl_available(), FEDPOD_NCCL_CONFIGURED != 0);
  if (!std::filesystem::exists(kToolkitNccl))
    GTEST_SKIP() << "no " << kToolkitNccl << ": nothing to check";
  if (std::string(FEDPOD_NCCL_OPTION) == "OFF") {
    GTEST_SKIP() << "configured with FEDPOD_NCCL=OFF on purpose, although " << kToolkitNccl
                 << " exists";
  }
  EXPECT_TRUE(nccl_available()) << kToolkitNccl
                                << " exists, but this build has no NCCL backend (FEDPOD_NCCL="
                                << FEDPOD_NCCL_OPTION
                                << "; CMake found CUDA toolkit: " << FEDPOD_CUDA_TOOLKIT_FOUND
                                << ", nccl.h: " << FEDPOD_NCCL_INCLUDE_DIR
                                << ", libnccl: " << FEDPOD_NCCL_LIBRARY
                                << "). See the 'fedpod: NCCL backend' line of the CMake output.";
}

TEST(NcclBuildCheck, WithoutAGpuCreatingTheBackendFailsClearly) {
  if (!nccl_available())
    GTEST_SKIP() << "no NCCL backend in this build (collective_test checks its error)";
  if (gpu_present())
    GTEST_SKIP() << "a GPU is present: collective_test's NcclCollectiveTest cases cover it";
  auto made = make_nccl_collective({0});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kInternal) << made.status().to_string();
  EXPECT_CONTAINS(made.status().message(),
                  "nccl backend: CUDA has no usable device (cudaGetDeviceCount failed: ");
}

TEST(NcclBuildCheck, BadDeviceListsAreRejectedBeforeTouchingCuda) {
  if (!nccl_available()) GTEST_SKIP() << "no NCCL backend in this build";
  auto made = make_nccl_collective({});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(made.status().message(), "nccl backend: no devices given");
}

}  // namespace
}  // namespace fedpod::worker
