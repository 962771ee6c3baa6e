#include "fedpod/worker/task_pool.h"

#include <algorithm>

namespace fedpod::worker {

TaskPool::TaskPool(int threads) {
  threads_.reserve(static_cast<size_t>(std::max(1, threads)));
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { run(); });
}

TaskPool::~TaskPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void TaskPool::post(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

int TaskPool::peak_running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

void TaskPool::run() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      peak_ = std::max(peak_, ++running_);
    }
    task();  // tasks catch their own exceptions (the executor's strand does)
    std::lock_guard<std::mutex> lock(mu_);
    --running_;
  }
}

}  // namespace fedpod::worker
