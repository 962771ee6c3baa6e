// Private temporary directories that do not outlive a killed process for long.
//
// A pod keeps the sockets between it and its receiving process, and the custom-model
// files it loads in process, in a directory of its own under the temporary directory
// ($TMPDIR, else /tmp). Its destructor removes it, but a process killed with SIGKILL
// (the OOM killer, a forced pod deletion, a test) runs no destructor. So the owner
// holds an advisory lock (flock) on the directory for as long as it lives: the kernel
// drops it when the process dies, however it dies, and the next TempDir::create with
// the same prefix removes the abandoned ones.
#pragma once

#include <chrono>
#include <string>

#include "fedpod/common/status.h"

namespace fedpod {

class TempDir {
 public:
  // Makes <temp>/<prefix>XXXXXX, mode 0700, locked by this process, after removing
  // the abandoned directories of the same prefix (remove_abandoned_temp_dirs).
  // kInternal naming the directory when it cannot be made or locked.
  static StatusOr<TempDir> create(const std::string& prefix);

  TempDir() = default;
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Removes the directory and everything in it, then drops the lock.
  ~TempDir();

  const std::string& path() const { return path_; }
  bool empty() const { return path_.empty(); }

 private:
  void reset();
  std::string path_;
  int fd_ = -1;  // open on the directory, holding the lock; close-on-exec
};

// Removes the directories <temp>/<prefix>XXXXXX that belong to this user, that no
// living process holds (see TempDir) and that were last changed more than `min_age`
// ago (a directory another process has just made and not yet locked is young).
// Symbolic links, other users' directories and other names are left alone. Returns
// how many were removed.
int remove_abandoned_temp_dirs(const std::string& prefix,
                               std::chrono::seconds min_age = std::chrono::seconds(60));

}  // namespace fedpod
