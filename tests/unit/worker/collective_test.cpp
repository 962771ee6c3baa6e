// Tests for fedpod/worker/collective.h: the CPU all-reduce against a reference mean
// (K = 1, 2, 3, 5 ranks as threads; numel 1, 7, 1000003), many rounds in a row,
// abort and timeouts waking waiting ranks, bad input in one rank; and the NCCL
// backend (NcclCollective*), which runs only where libtorch sees CUDA devices and
// the build has NCCL (scripts/gpu-check) and is skipped elsewhere.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "fedpod/worker/collective.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

using namespace std::chrono_literals;

// Runs fn(rank) on one thread per rank; returns what each rank threw (or null).
std::vector<std::exception_ptr> run_ranks(int k, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(k);
  std::vector<std::thread> threads;
  for (int r = 0; r < k; ++r) {
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

// "invalid_argument: <what>", "aborted: <what>", "none" or "other: <what>".
std::string kind_of(const std::exception_ptr& e) {
  if (!e) return "none";
  try {
    std::rethrow_exception(e);
  } catch (const std::invalid_argument& ex) {
    return std::string("invalid_argument: ") + ex.what();
  } catch (const CollectiveAborted& ex) {
    return std::string("aborted: ") + ex.what();
  } catch (const std::exception& ex) {
    return std::string("other: ") + ex.what();
  }
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

TEST(CpuCollectiveTest, MatchesReferenceMeanForRankCountsAndSizes) {
  for (int k : {1, 2, 3, 5}) {
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
      SCOPED_TRACE("k=" + std::to_string(k) + " numel=" + std::to_string(n));
      torch::manual_seed(301);
      std::vector<torch::Tensor> inputs, buffers;
      for (int r = 0; r < k; ++r) {
        inputs.push_back(torch::randn({n}));
        buffers.push_back(inputs.back().clone());
      }
      // Reference: the sum in double, then the mean.
      torch::Tensor sum = torch::zeros({n}, torch::kFloat64);
      for (const auto& t : inputs) sum += t.to(torch::kFloat64);
      const torch::Tensor expected = (sum / k).to(torch::kFloat32);

      auto collective = make_cpu_collective(k);
      ASSERT_EQ(collective->size(), k);
      ASSERT_STREQ(collective->backend(), "cpu");
      auto errors = run_ranks(k, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
      for (int r = 0; r < k; ++r) {
        ASSERT_EQ(kind_of(errors[r]), "none") << "rank " << r;
        EXPECT_TRUE(torch::allclose(buffers[r], expected, /*rtol=*/1e-5, /*atol=*/1e-6))
            << "rank " << r;
        // One thread computes each element and writes it everywhere: replicas agree
        // bit for bit, so their optimizer steps stay identical.
        EXPECT_TRUE(torch::equal(buffers[r], buffers[0])) << "rank " << r;
      }
    }
  }
}

TEST(CpuCollectiveTest, ManyConsecutiveRoundsWithChangingSizes) {
  const int k = 3;
  auto collective = make_cpu_collective(k);
  const int rounds = 2000;
  std::atomic<int> wrong{0};
  auto errors = run_ranks(k, [&](int r) {
    for (int round = 0; round < rounds; ++round) {
      // Every rank passes round*10 + r: the mean is round*10 + 1. Sizes change from
      // round to round (the same on every rank), so a rank that ran ahead into the
      // next round while another still reduced this one would show.
      const int64_t n = 1 + (round * 37) % 101;
      torch::Tensor t = torch::full({n}, static_cast<float>(round * 10 + r));
      collective->all_reduce_mean(r, t);
      if (!torch::equal(t, torch::full({n}, static_cast<float>(round * 10 + 1)))) ++wrong;
    }
  });
  for (int r = 0; r < k; ++r) EXPECT_EQ(kind_of(errors[r]), "none") << "rank " << r;
  EXPECT_EQ(wrong.load(), 0);
}

TEST(CpuCollectiveTest, OneRankOnlyChecksItsInput) {
  auto collective = make_cpu_collective(1);
  torch::Tensor t = torch::arange(5, torch::kFloat32);
  collective->all_reduce_mean(0, t);
  EXPECT_TRUE(torch::equal(t, torch::arange(5, torch::kFloat32)));
  torch::Tensor d = torch::zeros({3}, torch::kFloat64);
  EXPECT_THROW(collective->all_reduce_mean(0, d), std::invalid_argument);
}

TEST(CpuCollectiveTest, EmptyTensorsAndFewerElementsThanRanks) {
  for (int64_t n : {int64_t{0}, int64_t{2}}) {
    const int k = 5;
    auto collective = make_cpu_collective(k);
    std::vector<torch::Tensor> buffers;
    for (int r = 0; r < k; ++r) buffers.push_back(torch::full({n}, static_cast<float>(r)));
    auto errors = run_ranks(k, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
    for (int r = 0; r < k; ++r) {
      ASSERT_EQ(kind_of(errors[r]), "none");
      EXPECT_TRUE(torch::equal(buffers[r], torch::full({n}, 2.0f)));
    }
  }
}

TEST(CpuCollectiveTest, RejectsFewerThanOneRank) {
  EXPECT_THROW(make_cpu_collective(0), std::invalid_argument);
}

// --- Failures: nobody waits forever --------------------------------------------

TEST(CpuCollectiveTest, AbortWakesWaitingRanksAndSticks) {
  const int k = 3;
  auto collective = make_cpu_collective(k);
  std::vector<torch::Tensor> buffers(k, torch::ones({10}));
  for (auto& b : buffers) b = b.clone();
  std::thread aborter([&] {
    std::this_thread::sleep_for(100ms);  // ranks 0 and 1 are waiting for rank 2 by now
    collective->abort("replica 2 failed: CUDA out of memory");
  });
  auto errors = run_ranks(2, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
  aborter.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(kind_of(errors[r]),
              "aborted: collective aborted: replica 2 failed: CUDA out of memory");
  }
  // Every later call throws at once, in every rank; the first reason sticks.
  collective->abort("a second reason");
  try {
    collective->all_reduce_mean(2, buffers[2]);
    FAIL() << "no exception";
  } catch (const CollectiveAborted& e) {
    EXPECT_STREQ(e.what(), "collective aborted: replica 2 failed: CUDA out of memory");
  }
}

TEST(CpuCollectiveTest, WrongNumelThrowsInThatRankAndAbortsTheOthers) {
  const int k = 3;
  auto collective = make_cpu_collective(k);
  std::vector<torch::Tensor> buffers = {torch::zeros({7}), torch::zeros({5}), torch::zeros({7})};
  auto errors = run_ranks(k, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
  const std::string msg =
      "cpu all-reduce: ranks passed different numels (by rank: 7, 5, 7); rank 1 differs from the "
      "majority's 7";
  EXPECT_EQ(kind_of(errors[1]), "invalid_argument: " + msg);
  EXPECT_EQ(kind_of(errors[0]), "aborted: collective aborted: " + msg);
  EXPECT_EQ(kind_of(errors[2]), "aborted: collective aborted: " + msg);
}

TEST(CpuCollectiveTest, WrongNumelWithTwoRanksBlamesTheRankOtherThanZero) {
  // Whatever the arrival order, a tie goes to rank 0's numel.
  for (int attempt = 0; attempt < 20; ++attempt) {
    auto collective = make_cpu_collective(2);
    std::vector<torch::Tensor> buffers = {torch::zeros({4}), torch::zeros({8})};
    auto errors = run_ranks(2, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
    ASSERT_TRUE(starts_with(kind_of(errors[1]), "invalid_argument: ")) << kind_of(errors[1]);
    ASSERT_TRUE(starts_with(kind_of(errors[0]), "aborted: ")) << kind_of(errors[0]);
  }
}

TEST(CpuCollectiveTest, WrongDtypeLayoutOrRankThrowsInThatRankAndAbortsTheOthers) {
  struct Case {
    std::string name;
    std::function<torch::Tensor()> bad;
    int rank;  // what the bad rank passes as its rank
    std::string message;
  };
  const std::vector<Case> cases = {
      {"dtype", [] { return torch::zeros({6}, torch::kFloat64); }, 2,
       "cpu all-reduce: rank 2 passed a Double tensor on cpu, sizes [6], strides [1]; expected a "
       "contiguous "
       "float32 CPU tensor"},
      {"non-contiguous",
       [] {
         return torch::zeros({2, 3}).t();
       },
       2,
       "cpu all-reduce: rank 2 passed a Float tensor on cpu, sizes [3, 2], strides [1, 3]; "
       "expected a "
       "contiguous float32 CPU tensor"},
      {"undefined", [] { return torch::Tensor(); }, 2,
       "cpu all-reduce: rank 2 passed an undefined tensor"},
      {"rank", [] { return torch::zeros({6}); }, 7,
       "cpu all-reduce: rank 7 is out of range [0, 3)"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto collective = make_cpu_collective(3);
    std::vector<torch::Tensor> buffers = {torch::zeros({6}), torch::zeros({6}), c.bad()};
    auto errors =
        run_ranks(3, [&](int r) { collective->all_reduce_mean(r == 2 ? c.rank : r, buffers[r]); });
    EXPECT_EQ(kind_of(errors[2]), "invalid_argument: " + c.message);
    EXPECT_EQ(kind_of(errors[0]), "aborted: collective aborted: " + c.message);
    EXPECT_EQ(kind_of(errors[1]), "aborted: collective aborted: " + c.message);
  }
}

TEST(CpuCollectiveTest, TimeoutAbortsAndNamesTheMissingRank) {
  CollectiveOptions options;
  options.timeout = 200ms;
  auto collective = make_cpu_collective(3, options);
  std::vector<torch::Tensor> buffers = {torch::zeros({4}), torch::zeros({4})};
  const auto start = std::chrono::steady_clock::now();
  auto errors = run_ranks(2, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, 200ms);
  EXPECT_LT(waited, 5s);
  for (int r = 0; r < 2; ++r) {
    const std::string kind = kind_of(errors[r]);
    EXPECT_TRUE(starts_with(kind, "aborted: collective aborted: cpu all-reduce: rank ")) << kind;
    EXPECT_CONTAINS(
        kind,
        " waited 200 ms (CollectiveOptions::timeout) in call 1 for rank 2, which did not arrive");
  }
}

TEST(CpuCollectiveTest, AbortBetweenRoundsFailsTheNextCall) {
  const int k = 2;
  auto collective = make_cpu_collective(k);
  std::vector<torch::Tensor> buffers = {torch::ones({3}), torch::ones({3})};
  auto errors = run_ranks(k, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
  ASSERT_EQ(kind_of(errors[0]), "none");
  collective->abort("job cancelled");
  errors = run_ranks(k, [&](int r) { collective->all_reduce_mean(r, buffers[r]); });
  EXPECT_EQ(kind_of(errors[0]), "aborted: collective aborted: job cancelled");
  EXPECT_EQ(kind_of(errors[1]), "aborted: collective aborted: job cancelled");
}

// --- NCCL: runs where libtorch sees CUDA devices (scripts/gpu-check) ----------
//
// nccl_build_check_test covers the build itself and the no-GPU error.

int cuda_devices() { return static_cast<int>(torch::cuda::device_count()); }

#define FEDPOD_REQUIRE_NCCL_DEVICES(n)                                                       \
  do {                                                                                       \
    if (!nccl_available()) GTEST_SKIP() << "this build has no NCCL backend";                 \
    if (cuda_devices() < (n)) {                                                              \
      GTEST_SKIP() << "needs " << (n) << " CUDA device(s); libtorch sees " << cuda_devices() \
                   << (torch::cuda::is_available() ? "" : " (a CPU libtorch, or no GPU)");   \
    }                                                                                        \
  } while (0)

TEST(NcclCollectiveTest, WithoutNcclTheFactorySaysHowToGetIt) {
  if (nccl_available()) GTEST_SKIP() << "this build has the NCCL backend";
  auto made = make_nccl_collective({0});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(made.status().message(),
            "this fedpod was built without NCCL (FEDPOD_NCCL=OFF or CUDA/NCCL not found)");
}

TEST(NcclCollectiveTest, OneDeviceAllReduceLeavesTheTensor) {
  FEDPOD_REQUIRE_NCCL_DEVICES(1);
  auto made = make_nccl_collective({0});
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  auto& collective = *made;
  EXPECT_STREQ(collective->backend(), "nccl");
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
    torch::manual_seed(301);
    const torch::Tensor input = torch::randn({n});
    torch::Tensor t = input.to(torch::Device(torch::kCUDA, 0));
    collective->all_reduce_mean(0, t);
    EXPECT_TRUE(torch::equal(t.cpu(), input)) << "numel " << n;  // .cpu() waits for the stream
  }
}

TEST(NcclCollectiveTest, TwoDevicesAverageOverManyRounds) {
  FEDPOD_REQUIRE_NCCL_DEVICES(2);
  auto made = make_nccl_collective({0, 1});
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  auto& collective = *made;
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{1000003}}) {
    SCOPED_TRACE("numel " + std::to_string(n));
    torch::manual_seed(301);
    std::vector<torch::Tensor> inputs = {torch::randn({n}), torch::randn({n})};
    const torch::Tensor expected = (inputs[0] + inputs[1]) / 2;
    std::vector<torch::Tensor> results(2);
    auto errors = run_ranks(2, [&](int r) {
      for (int round = 0; round < 20; ++round) {
        torch::Tensor t = inputs[r].to(torch::Device(torch::kCUDA, r));
        collective->all_reduce_mean(r, t);
        results[r] = t.cpu();
      }
    });
    for (int r = 0; r < 2; ++r) {
      ASSERT_EQ(kind_of(errors[r]), "none") << "rank " << r;
      EXPECT_TRUE(torch::allclose(results[r], expected, 1e-5, 1e-6)) << "rank " << r;
    }
  }
}

TEST(NcclCollectiveTest, RejectsATensorOnTheWrongDevice) {
  FEDPOD_REQUIRE_NCCL_DEVICES(1);
  auto made = make_nccl_collective({0});
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  torch::Tensor t = torch::zeros({4});
  try {
    (*made)->all_reduce_mean(0, t);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(),
                 "nccl all-reduce: rank 0 passed a Float tensor on cpu; expected a contiguous "
                 "float32 tensor on cuda:0");
  }
}

TEST(NcclCollectiveTest, RejectsADeviceThatDoesNotExist) {
  FEDPOD_REQUIRE_NCCL_DEVICES(1);
  auto made = make_nccl_collective({0, 4096});
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(made.status().message(), "device cuda:4096 does not exist");
}

TEST(NcclCollectiveTest, AbortWakesAWaitingRank) {
  FEDPOD_REQUIRE_NCCL_DEVICES(2);
  auto made = make_nccl_collective({0, 1});
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  auto& collective = *made;
  torch::Tensor t = torch::ones({16}, torch::Device(torch::kCUDA, 0));
  std::thread aborter([&] {
    std::this_thread::sleep_for(100ms);
    collective->abort("replica 1 failed");
  });
  EXPECT_THROW(collective->all_reduce_mean(0, t), CollectiveAborted);
  aborter.join();
}

}  // namespace
}  // namespace fedpod::worker
