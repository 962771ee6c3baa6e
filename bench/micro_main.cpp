// Runs the micro-benchmarks, then prints each benchmark's throughput as a ratio to
// its memcpy baseline from the same run (a baseline is the run whose name is the
// benchmark's with its first component replaced by "Memcpy").
#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <cstdio>
#include <map>
#include <string>
#include <thread>

namespace {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.run_type != Run::RT_Iteration || r.error_occurred) continue;
      auto it = r.counters.find("bytes_per_second");
      if (it != r.counters.end()) rates_[r.benchmark_name()] = it->second.value;
      times_[r.benchmark_name()] = r.GetAdjustedRealTime();
    }
  }

  void PrintRatios() const {
    std::printf("\nthroughput relative to memcpy of the same bytes (same run):\n");
    for (const auto& [name, rate] : rates_) {
      if (name.rfind("BM_Memcpy", 0) == 0) continue;
      const size_t slash = name.find('/');
      if (slash == std::string::npos) continue;
      auto base = rates_.find("BM_Memcpy" + name.substr(slash));
      if (base == rates_.end()) continue;
      std::printf("  %-40s %8.2f GB/s  memcpy %8.2f GB/s  ratio %.2f\n", name.c_str(), rate / 1e9,
                  base->second / 1e9, rate / base->second);
    }
    // DP-SGD's steps (dp_bench.cpp) as multiples of the non-private steps.
    bool header = false;
    for (const auto& [name, time] : times_) {
      if (name.rfind("BM_Dp", 0) != 0) continue;
      const size_t slash = name.find('/');
      auto base = times_.find("BM_TrainSteps" + name.substr(slash));
      if (slash == std::string::npos || base == times_.end() || base->second <= 0) continue;
      if (!header) std::printf("\nDP-SGD step time relative to the non-private step (same run, same batches):\n");
      header = true;
      std::printf("  %-40s %8.3f ms  non-private %8.3f ms  ratio %.2f\n", name.c_str(), time,
                  base->second, time / base->second);
    }
  }

 private:
  std::map<std::string, double> rates_;
  std::map<std::string, double> times_;
};

}  // namespace

int main(int argc, char** argv) {
  // libtorch defaults to one intra-op thread on small machines: use every core, as
  // the coordinator does.
  torch::set_num_threads(static_cast<int>(std::thread::hardware_concurrency()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
