#include "collective_rendezvous.h"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <utility>

#include "fedpod/worker/collective.h"

namespace fedpod::worker::detail {
namespace {

std::string join(const std::vector<int64_t>& values) {
  std::string out;
  for (size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + std::to_string(values[i]);
  return out;
}

}  // namespace

Rendezvous::Rendezvous(int ranks, std::chrono::milliseconds timeout, std::string what)
    : ranks_(ranks),
      timeout_(timeout),
      what_(std::move(what)),
      present_(ranks, 0),
      numel_(ranks, 0),
      bad_input_(ranks, 0) {
  round_.data.assign(ranks, nullptr);
  round_.context.assign(ranks, nullptr);
}

Round Rendezvous::arrive(int rank, int64_t numel, void* data, void* context,
                         const std::function<void(const Round&)>& on_all) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (aborted_) throw_for_locked(rank);
  if (present_[rank]) {
    const std::string msg =
        what_ + ": rank " + std::to_string(rank) +
        " called all_reduce_mean again before the round ended (one thread per rank)";
    abort_locked(msg);
    throw std::invalid_argument(msg);
  }
  numel_[rank] = numel;
  round_.data[rank] = data;
  round_.context[rank] = context;
  const uint64_t gen = generation_;
  if (!enter_locked(rank)) {
    wait_locked(lock, rank, gen, rounds_ + 1);
    return round_;  // stable until the ranks' next arrive(): see the header
  }

  // Last to arrive: every numel must agree. The majority's numel is the reference
  // (rank 0's on a tie), so the rank(s) that differ are the ones told their input is
  // wrong, whatever order the ranks arrived in.
  std::map<int64_t, int> counts;
  for (int64_t n : numel_) ++counts[n];
  if (counts.size() > 1) {
    int64_t ref = numel_[0];
    int best = counts[ref];
    for (const auto& [n, c] : counts) {
      if (c > best) ref = n, best = c;
    }
    std::vector<int64_t> bad;
    for (int r = 0; r < ranks_; ++r) {
      if (numel_[r] != ref) bad_input_[r] = 1, bad.push_back(r);
    }
    bad_message_ = what_ + ": ranks passed different numels (by rank: " + join(numel_) + "); rank" +
                   (bad.size() > 1 ? "s " : " ") + join(bad) + " differ" +
                   (bad.size() > 1 ? "" : "s") + " from the majority's " + std::to_string(ref);
    abort_locked(bad_message_);
    throw_for_locked(rank);
  }
  round_.numel = numel;
  Round round = round_;
  if (on_all) {
    running_action_ = true;
    lock.unlock();
    try {
      on_all(round);
    } catch (const std::exception& e) {
      lock.lock();
      running_action_ = false;
      abort_locked(e.what());
      throw;
    } catch (...) {
      lock.lock();
      running_action_ = false;
      abort_locked(what_ + ": rank " + std::to_string(rank) +
                   " failed with a non-standard exception");
      throw;
    }
    lock.lock();
    running_action_ = false;
  }
  if (aborted_) throw_for_locked(rank);  // abort() came while on_all ran
  ++rounds_;
  release_locked();
  return round;
}

void Rendezvous::barrier(int rank) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (aborted_) throw_for_locked(rank);
  const uint64_t gen = generation_;
  if (enter_locked(rank)) {
    release_locked();
  } else {
    wait_locked(lock, rank, gen, rounds_);
  }
}

void Rendezvous::abort(const std::string& why) {
  std::lock_guard<std::mutex> lock(mutex_);
  abort_locked(why);
}

bool Rendezvous::aborted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return aborted_;
}

void Rendezvous::fail_input(const std::string& message) {
  abort(message);
  throw std::invalid_argument(message);
}

void Rendezvous::check_not_aborted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (aborted_) throw_for_locked(-1);
}

bool Rendezvous::enter_locked(int rank) {
  present_[rank] = 1;
  return ++arrived_ == ranks_;
}

void Rendezvous::release_locked() {
  arrived_ = 0;
  std::fill(present_.begin(), present_.end(), 0);
  ++generation_;
  cv_.notify_all();
}

void Rendezvous::wait_locked(std::unique_lock<std::mutex>& lock, int rank, uint64_t gen,
                             uint64_t call) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (generation_ == gen && !aborted_) {
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && generation_ == gen &&
        !aborted_) {
      std::string waiting_for;
      if (running_action_) {
        waiting_for = "the last rank to issue the reduction";
      } else {
        std::vector<int64_t> missing;
        for (int r = 0; r < ranks_; ++r) {
          if (!present_[r]) missing.push_back(r);
        }
        waiting_for = std::string(missing.size() > 1 ? "ranks " : "rank ") + join(missing) +
                      ", which did not arrive";
      }
      abort_locked(what_ + ": rank " + std::to_string(rank) + " waited " +
                   std::to_string(timeout_.count()) + " ms (CollectiveOptions::timeout) in call " +
                   std::to_string(call) + " for " + waiting_for);
    }
  }
  if (generation_ == gen) throw_for_locked(rank);
}

void Rendezvous::abort_locked(const std::string& why) {
  if (!aborted_) {
    aborted_ = true;
    why_ = why;
  }
  cv_.notify_all();
}

void Rendezvous::throw_for_locked(int rank) const {
  if (rank >= 0 && rank < ranks_ && bad_input_[rank]) throw std::invalid_argument(bad_message_);
  throw CollectiveAborted("collective aborted: " + why_);
}

}  // namespace fedpod::worker::detail
