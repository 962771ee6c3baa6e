// TaskPool: a fixed set of threads that run the model work (training, evaluation)
// of many Workers in one process, as `fedpod simulate` runs hundreds
// of virtual pods. Each Worker's tasks still run one at a time and in order (its
// executor is a strand on the pool), but at most `threads` tasks run at once,
// whatever the number of Workers: 1,000 virtual pods on 2 cores train 2 at a time
// instead of 1,000 threads contending for them.
//
// A Worker without a pool (Runtime::pool null, `fedpod worker`) runs its tasks on a
// thread of its own.
//
// Thread-safe. The pool must outlive every Worker using it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace fedpod::worker {

class TaskPool {
 public:
  explicit TaskPool(int threads);
  ~TaskPool();  // runs what is queued, then joins
  TaskPool(const TaskPool&) = delete;
  TaskPool& operator=(const TaskPool&) = delete;

  void post(std::function<void()> task);
  int threads() const { return static_cast<int>(threads_.size()); }
  // The most tasks that ran at the same time so far (for tests and reports).
  int peak_running() const;

 private:
  void run();

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  int running_ = 0, peak_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace fedpod::worker
