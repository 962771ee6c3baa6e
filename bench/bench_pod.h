// A real `fedpod worker` for benchmarks: its own key pair, a policy signed by a bench
// owner's key that gives the bench modeller the general-modeller role, and pod.yaml
// in `dir`; started with --endpoint-file and waited for.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "fedpod/common/process.h"
#include "fedpod/protocol/curve.h"

namespace fedpod::bench {

struct BenchPod {
  std::string name, endpoint, public_key;
  std::unique_ptr<Process> process;  // killed (SIGKILL) when the BenchPod goes
};

// Throws std::runtime_error (naming the log) when the worker does not start in 60 s.
BenchPod start_bench_pod(const std::string& fedpod_bin, const std::filesystem::path& dir, const std::string& name,
                         const std::string& dataset_path, int threads, const protocol::CurveKeyPair& modeller,
                         const std::string& log_level);

}  // namespace fedpod::bench
