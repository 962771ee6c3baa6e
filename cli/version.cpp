// fedpod --version / fedpod version: the version and what this build can do.
#include <openssl/crypto.h>
#include <torch/version.h>
#include <unistd.h>
#include <zmq.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "commands.h"
#include "fedpod/worker/collective.h"

namespace fedpod::cli {
namespace {

// The first executable `name` on PATH; "" when there is none.
std::string on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// The BLAS libtorch's matrix products run on: Debian's libtorch links the generic
// libblas.so.3, which is the slow reference implementation unless an optimized one
// (OpenBLAS) provides it through update-alternatives.
std::string blas_in_use() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  std::string found;
  while (std::getline(maps, line)) {
    if (line.find("openblas") != std::string::npos) return "OpenBLAS";
    if (line.find("libmkl") != std::string::npos) return "MKL";
    if (line.find("/blis") != std::string::npos) return "BLIS";
    if (line.find("/blas/libblas.so") != std::string::npos) found = "reference";
  }
  if (found == "reference") {
    return "reference BLAS (slow: training runs about 10x faster with apt-get install libopenblas0-openmp)";
  }
  return "unknown";
}

}  // namespace

std::string version_text() {
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  const std::string bwrap = on_path("bwrap");
  std::ostringstream out;
  out << "fedpod " << FEDPOD_VERSION << "\n"
      << "  libtorch  " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH << "\n"
      << "  nccl      " << (worker::nccl_available() ? "yes (multi-GPU pods all-reduce with NCCL)" : "no (built without CUDA/NCCL)")
      << "\n"
      << "  zeromq    " << major << "." << minor << "." << patch << (zmq_has("curve") ? ", CURVE" : ", no CURVE")
      << "\n"
      << "  tls       " << OpenSSL_version(OPENSSL_VERSION) << "\n"
      << "  sandbox   "
      << (bwrap.empty() ? std::string("seccomp; bubblewrap not found (job runners get no namespaces: sandbox: required refuses to start)")
                        : "bubblewrap (" + bwrap + ") + seccomp")
      << "\n"
      << "  blas      " << blas_in_use() << "\n";
  return out.str();
}

}  // namespace fedpod::cli
