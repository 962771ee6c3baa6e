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
  // Waits for exit; returns the status as from waitpid, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout);
  bool running();

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// Makes glibc serve allocations of `threshold` bytes or more with mmap, so that a
// freed received update goes back to the OS at once. Without it glibc raises its
// mmap threshold after the first large free and serves later update buffers from
// its heaps, where fragmentation makes a coordinator's peak memory grow with the
// number of pods it hears from. Call once, early in main.
void use_mmap_for_large_allocations(size_t threshold = size_t{1} << 20);

// The path of the running executable (for re-launching it in another mode).
std::string self_executable();

}  // namespace fedpod
