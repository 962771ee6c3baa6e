// AuditLog: a pod's append-only, hash-chained record of access decisions.
//
// One JSON object per line. Each entry is the caller's fields plus:
//   seq   1, 2, 3, ... with no gaps
//   time  when it was appended, UTC with milliseconds: "2026-11-29T01:00:00.123Z"
//   prev  the previous entry's hash; 64 zeros for the first entry
//   hash  sha256_hex(prev + "\n" + E.dump()), where E is the entry without "hash",
//         dumped by nlohmann::json (keys sorted, no spaces)
// so editing, deleting or reordering any entry breaks the chain from that line on,
// and `fedpod audit verify FILE` says where. The chain shows tampering by someone
// who cannot also recompute every later hash; to detect that too, keep a copy of a
// recent `last hash` (from `fedpod audit verify`) somewhere the pod cannot write.
//
// Suggested fields (what `fedpod audit show` prints): event ("job_start", ...),
// user, model, version, decision ("allowed"/"refused"), reason (the Decision's
// metric label), basis or message, job.
//
// Durability: append() writes the whole line with one write() and fsyncs before it
// returns, so an entry reported as appended survives a crash (a process kill, and a
// power loss on storage that honours fsync; open() fsyncs the log's directory so a
// new log's name is durable too). A crash mid-append can leave a torn last line (no
// trailing newline); open() cuts it off with a warning, since its append never
// reported success. The worker appends a startJob decision before it replies, so a
// decision the client heard about is in the log
// (tests/integration/crash_safety_test.cpp kills a pod mid-stream to check).
//
// Thread safety: an AuditLog is safe to use from any thread; appends are serialised.
// One process should have a file open at a time (nothing enforces it).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "fedpod/common/log.h"
#include "fedpod/common/status.h"

namespace fedpod::worker {

class AuditLog {
 public:
  // Opens `path` for appending, creating it with mode 0600, and verifies the chain
  // already in it. A torn last line is cut off (logged as a warning); any other break
  // (an edited or deleted entry, a line that is not JSON) is kInvalidArgument naming
  // the file and line, and nothing is appended to a broken log. kUnavailable when the
  // file cannot be opened.
  static StatusOr<std::unique_ptr<AuditLog>> open(const std::string& path, Logger log);

  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Appends one entry made of `fields` (a JSON object) plus seq, time, prev and hash,
  // and fsyncs before returning. kInvalidArgument when `fields` is not an object,
  // sets one of those four keys, or holds a string that is not UTF-8. A failed write
  // is undone (the file is truncated back); if even that fails, the log refuses every
  // later append with the first error (kInternal).
  Status append(nlohmann::json fields);

  // Entries in the log (the last seq).
  int64_t entries() const;
  // The last entry's hash (64 zeros for an empty log).
  std::string last_hash() const;
  // Both at once (an append between two calls would pair one entry's count with
  // another's hash).
  std::pair<int64_t, std::string> head() const;
  const std::string& path() const { return path_; }

 private:
  AuditLog(std::string path, int fd, int64_t size, int64_t entries, std::string last_hash);

  const std::string path_;
  const int fd_;
  mutable std::mutex mu_;  // guards the fields below
  int64_t size_;           // bytes of whole entries in the file
  int64_t entries_;
  std::string last_hash_;
  Status broken_;  // sticky: set when a failed append could not be undone
};

struct AuditVerifyResult {
  bool ok = false;
  int64_t entries = 0;    // entries that verified (all of them when ok)
  std::string last_hash;  // hash of the last verified entry (64 zeros for none)
  // When !ok: the line number and what is wrong, e.g. "line 3: edited entry: ...
  // (hash mismatch)", "line 4: broken link: ...", "line 3: seq gap: ...",
  // "line 2: not JSON: ...", "line 9: torn last line: ...".
  std::string error;
};

// Reads and checks the whole chain at `path` without changing the file.
AuditVerifyResult verify_audit_log(const std::string& path);

// The `hash` of each entry of the log at `path` in order (hashes[i] is entry i+1's),
// as far as the lines parse; for comparing a log with published heads. Reads the file.
std::vector<std::string> audit_log_hashes(const std::string& path);

// "0000...0000": the `prev` of the first entry.
extern const char* const kAuditGenesisHash;

}  // namespace fedpod::worker
