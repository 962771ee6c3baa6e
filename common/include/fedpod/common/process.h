// A child process, for launchers (the demo, benchmarks) and tests.
//
// Runs `argv` (argv[0] is the program path) with stdout and stderr appended to a
// log file. The destructor kills (SIGKILL) and reaps a child that is still running,
// so no process outlives its owner. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace fedpod {

class Process {
 public:
  // Throws std::runtime_error when the program cannot be started.
  Process(const std::vector<std::string>& argv, const std::string& log_file);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void kill(int signal);
  // Waits for exit; returns the status as from waitpid, or -1 on timeout. After
  // running() has seen the child exit, returns that exit's status at once.
  int wait(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;  // the waitpid status, once reaped_
};

// Waits until the file at `path` holds a first whitespace-separated word (e.g. an
// endpoint a child writes once it listens) and returns it. Returns "" after
// `timeout`, or as soon as `watch` (when given) has exited.
std::string wait_for_word(const std::string& path, std::chrono::milliseconds timeout, Process* watch = nullptr);

// Tunes glibc malloc for processes that receive large messages on one thread
// (ZeroMQ's I/O thread) and free them on another: one malloc arena for every
// thread, so a freed update buffer is reused by the next one instead of piling up
// in the I/O thread's arena. Measured with fedpod_round_bench (K=2..32, P=10M):
// without it the coordinator's peak RSS grew by ~60 MB from 2 to 32 pods; with it
// by ~20 MB, and rounds ran faster (no fresh pages to fault in). Serving large
// buffers with mmap instead bounded memory too, but cost ~30% of round throughput
// in page faults. Buffers up to 32 MiB also stay in the heap once freed (up to 512
// MiB free at its top is kept): at 10M parameters x 8 pods this took the round from
// 0.97 to 0.78-0.84 s and plain ZeroMQ from 0.23 to 0.13-0.15 s (2 cores). Call
// once, first thing in main, before any thread starts.
void tune_malloc_for_large_messages();

// The path of the running executable (for re-launching it in another mode).
std::string self_executable();

}  // namespace fedpod
