// detail::Rendezvous: the meeting point the Collective backends share. Internal to
// fedpod_worker.
//
// Each rank deposits its buffer and blocks until every rank has deposited for the
// round (arrive), or meets the others without data (barrier). The last rank to
// arrive checks that every rank passed the same numel, runs the backend's action
// for the round (NCCL: issue the grouped all-reduce) and releases the others.
//
// Reuse: every barrier has a generation; a waiting rank waits for the generation it
// arrived in to end, so a fast rank that already entered the next round's barrier
// cannot release (or be released by) the previous one.
//
// Failure: abort() (or a rank's timeout, or input that does not match) marks the
// rendezvous aborted for good and wakes everyone. A rank whose input was wrong
// throws std::invalid_argument; every other rank throws CollectiveAborted.
//
// Thread safety: all methods may be called concurrently; arrive() and barrier() by
// one thread per rank, in the same order on every rank.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

namespace fedpod::worker::detail {

// What the ranks deposited for one round.
struct Round {
  int64_t numel = 0;           // the same on every rank (checked)
  std::vector<void*> data;     // data[r]: rank r's buffer; valid until rank r's next call
  std::vector<void*> context;  // context[r]: what rank r passed as `context` (NCCL: its stream)
};

class Rendezvous {
 public:
  // `what` names the collective in messages ("cpu all-reduce").
  Rendezvous(int ranks, std::chrono::milliseconds timeout, std::string what);
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  int ranks() const { return ranks_; }

  // Deposits rank's buffer and blocks until all ranks have. The last rank to arrive
  // checks the numels, then runs `on_all(round)` in its own thread, without the
  // lock, while the others still wait; an exception from it aborts the rendezvous
  // (with its what()) and is rethrown in that rank. Returns the round: in every
  // rank when the ranks meet at barrier() before their next arrive() (a rank's next
  // deposit could overwrite it otherwise), else only in the rank that ran on_all.
  // Throws: CollectiveAborted, std::invalid_argument (see the file comment).
  Round arrive(int rank, int64_t numel, void* data, void* context,
               const std::function<void(const Round&)>& on_all);

  // Blocks until all ranks have called barrier(). Throws CollectiveAborted.
  void barrier(int rank);

  // Aborts (the first reason sticks) and wakes every waiting rank.
  void abort(const std::string& why);
  bool aborted() const;

  // Aborts with `message` and throws std::invalid_argument(message): for a rank that
  // found its own input wrong before depositing it.
  [[noreturn]] void fail_input(const std::string& message);

  // Throws CollectiveAborted when aborted.
  void check_not_aborted() const;

 private:
  // Counts rank in; returns true for the last rank (which must then release()).
  bool enter_locked(int rank);
  void release_locked();
  // Waits for generation `gen` to end; throws as described when aborted first, and
  // aborts on timeout. `call` (1-based) numbers the all-reduce in messages.
  void wait_locked(std::unique_lock<std::mutex>& lock, int rank, uint64_t gen, uint64_t call);
  void abort_locked(const std::string& why);
  [[noreturn]] void throw_for_locked(int rank) const;

  const int ranks_;
  const std::chrono::milliseconds timeout_;
  const std::string what_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;      // guarded by mutex_; +1 each time a barrier releases
  uint64_t rounds_ = 0;          // guarded by mutex_; arrive() rounds completed (messages)
  int arrived_ = 0;              // guarded by mutex_; ranks in the current barrier
  std::vector<char> present_;    // guarded by mutex_; present_[r]: r is in the current barrier
  std::vector<int64_t> numel_;   // guarded by mutex_; per rank, current arrive()
  Round round_;                  // guarded by mutex_; filled by arrive()
  bool running_action_ = false;  // guarded by mutex_; the last rank is in on_all
  bool aborted_ = false;         // guarded by mutex_
  std::string why_;              // guarded by mutex_; the first abort reason
  std::vector<char> bad_input_;  // guarded by mutex_; ranks that throw invalid_argument
  std::string bad_message_;      // guarded by mutex_; what they throw
};

}  // namespace fedpod::worker::detail
