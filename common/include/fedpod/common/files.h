// Durable file writes shared by the hub's artifact store, the pod's policy cache and
// audit log: a file replaced so that a crash at any point leaves the old content or
// the new, never a mix, and directory entries that survive a power loss.
// Stateless functions; safe from any thread.
#pragma once

#include <string>

namespace fedpod {

// Writes `data` to `path` atomically and durably: a temp file (mode 0600) in the same
// directory, named ".<file name>.tmp-XXXXXX", fsync, rename over `path`, fsync of the
// directory. Returns "" or what went wrong; a failed write removes its temp file.
std::string write_file_durably(const std::string& path, const std::string& data);

// fsync of a directory ("" for the current one), so that the entries created or
// renamed in it are durable. Returns "" or what went wrong.
std::string fsync_dir(const std::string& dir);

// Removes the temp files that write_file_durably calls in `dir` left behind when a
// crash interrupted them: those of `file_name` (".<file_name>.tmp-*"), or of any
// file when `file_name` is empty. Only for a directory no other process is writing
// to. Returns how many were removed; a directory that cannot be read removes none.
int remove_interrupted_writes(const std::string& dir, const std::string& file_name = "");

}  // namespace fedpod
