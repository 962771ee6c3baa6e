// The in-process CPU all-reduce (collective.h).
//
// One call: every rank deposits its buffer (rendezvous), each rank averages its
// 1/K slice across the K buffers and writes the mean into all K of them, and the
// ranks meet again, so no buffer is touched after its rank has returned. Each byte
// is read once and written once, spread over the K threads: the same traffic as
// K memcpys of one buffer each (see BENCHMARKS.md, BM_CpuAllReduce).
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "collective_rendezvous.h"
#include "fedpod/worker/collective.h"

namespace fedpod::worker {
namespace {

// Elements per block: 2048 floats (8 KiB) stay in L1 while the block's mean is
// written to the K buffers. Full blocks have a compile-time length, which lets GCC
// vectorize the loops at -O2 (its "very cheap" cost model wants a known trip count).
constexpr int64_t kBlock = 2048;

// Averages elements [at, at + len) over the k >= 2 buffers into every buffer,
// summing in rank order so every replica gets the same bits. The first and last
// additions are fused with the copy into `acc` and the division.
__attribute__((always_inline)) inline void mean_block(float* const* bufs, int k, int64_t at,
                                                      int64_t len, float* __restrict acc) {
  const float count = static_cast<float>(k);
  const float* __restrict b0 = bufs[0] + at;
  const float* __restrict b1 = bufs[1] + at;
  if (k == 2) {
    for (int64_t j = 0; j < len; ++j) acc[j] = (b0[j] + b1[j]) / count;
  } else {
    for (int64_t j = 0; j < len; ++j) acc[j] = b0[j] + b1[j];
    for (int r = 2; r < k - 1; ++r) {
      const float* __restrict src = bufs[r] + at;
      for (int64_t j = 0; j < len; ++j) acc[j] += src[j];
    }
    const float* __restrict last = bufs[k - 1] + at;
    for (int64_t j = 0; j < len; ++j) acc[j] = (acc[j] + last[j]) / count;
  }
  for (int r = 0; r < k; ++r)
    std::memcpy(bufs[r] + at, acc, static_cast<size_t>(len) * sizeof(float));
}

void mean_slice(float* const* bufs, int k, int64_t lo, int64_t hi) {
  alignas(64) float acc[kBlock];
  int64_t at = lo;
  for (; at + kBlock <= hi; at += kBlock) mean_block(bufs, k, at, kBlock, acc);
  if (at < hi) mean_block(bufs, k, at, hi - at, acc);
}

std::string describe(const torch::Tensor& t) {
  std::string out =
      std::string(c10::toString(t.scalar_type())) + " tensor on " + t.device().str() + ", sizes [";
  for (size_t i = 0; i < t.sizes().size(); ++i)
    out += (i ? ", " : "") + std::to_string(t.sizes()[i]);
  out += "], strides [";
  for (size_t i = 0; i < t.strides().size(); ++i)
    out += (i ? ", " : "") + std::to_string(t.strides()[i]);
  return out + "]";
}

class CpuCollective final : public Collective {
 public:
  CpuCollective(int ranks, const CollectiveOptions& options)
      : rendezvous_(ranks, options.timeout, "cpu all-reduce") {}

  int size() const override { return rendezvous_.ranks(); }
  const char* backend() const override { return "cpu"; }

  void all_reduce_mean(int rank, torch::Tensor& flat) override {
    const int k = size();
    check_input(rank, flat);
    if (k == 1) {  // the mean of one tensor is itself
      rendezvous_.check_not_aborted();
      return;
    }
    const detail::Round round =
        rendezvous_.arrive(rank, flat.numel(), flat.data_ptr<float>(), nullptr, nullptr);
    std::vector<float*> bufs(k);
    for (int r = 0; r < k; ++r) bufs[r] = static_cast<float*>(round.data[r]);
    const int64_t n = round.numel;
    mean_slice(bufs.data(), k, n * rank / k, n * (rank + 1) / k);
    rendezvous_.barrier(rank);
  }

  void abort(const std::string& why) override { rendezvous_.abort(why); }

 private:
  void check_input(int rank, const torch::Tensor& flat) {
    const std::string who = "cpu all-reduce: rank " + std::to_string(rank);
    if (rank < 0 || rank >= size()) {
      rendezvous_.fail_input(who + " is out of range [0, " + std::to_string(size()) + ")");
    }
    if (!flat.defined()) rendezvous_.fail_input(who + " passed an undefined tensor");
    if (flat.scalar_type() != torch::kFloat32 || !flat.is_cpu() || !flat.is_contiguous()) {
      rendezvous_.fail_input(who + " passed a " + describe(flat) +
                             "; expected a contiguous float32 CPU tensor");
    }
  }

  detail::Rendezvous rendezvous_;
};

}  // namespace

std::unique_ptr<Collective> make_cpu_collective(int ranks, const CollectiveOptions& options) {
  if (ranks < 1)
    throw std::invalid_argument("make_cpu_collective: ranks = " + std::to_string(ranks) +
                                "; need >= 1");
  return std::make_unique<CpuCollective>(ranks, options);
}

}  // namespace fedpod::worker
