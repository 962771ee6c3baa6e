#include "fedpod/worker/audit.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "fedpod/common/files.h"
#include "fedpod/common/sha256.h"

namespace fedpod::worker {

const char* const kAuditGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

namespace {

using nlohmann::json;

const char* const kReserved[] = {"seq", "time", "prev", "hash"};

// "2026-11-29T01:00:00.123Z".
std::string now_utc_ms() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::floor<std::chrono::seconds>(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - secs).count();
  std::time_t tt = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

// The hash of an entry whose fields, without "hash", are `body` (already dumped).
std::string entry_hash(const std::string& prev, const std::string& body) {
  return sha256_hex(prev + "\n" + body);
}

std::string short_hash(const std::string& h) { return h.size() > 16 ? h.substr(0, 16) + "..." : h; }

// The result of reading a chain: what verified, and where reading stopped.
struct Scan {
  AuditVerifyResult result;  // ok: every whole line verified (a torn tail aside)
  int64_t valid_bytes = 0;   // bytes of the whole, verified lines
  bool torn = false;         // the file ends in a line without its newline
  int64_t torn_line = 0;
  int64_t torn_bytes = 0;
};

// "" when `line` (number `n`) is the entry that follows `prev` / `seq - 1`; else what
// is wrong with it. Sets `hash` to the entry's hash.
std::string check_entry(const std::string& line, int64_t n, int64_t seq, const std::string& prev,
                        std::string& hash) {
  const std::string at = "line " + std::to_string(n) + ": ";
  if (line.empty()) return at + "empty line (an entry was blanked out)";
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return at + "not JSON (" + std::to_string(line.size()) + " bytes)";
  if (!j.is_object()) return at + "not a JSON object";
  auto h = j.find("hash");
  if (h == j.end() || !h->is_string()) return at + "edited entry: it has no \"hash\" string";
  auto p = j.find("prev");
  if (p == j.end() || !p->is_string()) return at + "edited entry: it has no \"prev\" string";
  auto s = j.find("seq");
  if (s == j.end() || !s->is_number_integer())
    return at + "edited entry: it has no integer \"seq\"";
  const std::string stored = h->get<std::string>();
  const std::string stored_prev = p->get<std::string>();
  const int64_t stored_seq = s->get<int64_t>();
  j.erase("hash");
  std::string body;
  try {
    body = j.dump();
  } catch (const json::exception& e) {
    return at + "not valid JSON text: " + e.what();
  }
  const std::string computed = entry_hash(stored_prev, body);
  if (computed != stored) {
    return at + "edited entry (hash mismatch): seq " + std::to_string(stored_seq) +
           " records hash " + short_hash(stored) + " but its content hashes to " +
           short_hash(computed);
  }
  if (stored_seq != seq) {
    return at + "seq gap: expected seq " + std::to_string(seq) + ", found " +
           std::to_string(stored_seq) +
           (stored_seq > seq ? " (entries were deleted)" : " (entries were repeated or reordered)");
  }
  if (stored_prev != prev) {
    return at + "broken link: prev is " + short_hash(stored_prev) + " but the entry before it " +
           (seq == 1 ? std::string("(none: the first entry's prev is 64 zeros)")
                     : "(seq " + std::to_string(seq - 1) + ") has hash " + short_hash(prev)) +
           " (an entry was deleted, inserted or replaced)";
  }
  hash = stored;
  return "";
}

Scan scan(std::istream& in) {
  Scan s;
  s.result.last_hash = kAuditGenesisHash;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (in.eof()) {  // no newline after it: an interrupted append
      s.torn = true;
      s.torn_line = n;
      s.torn_bytes = static_cast<int64_t>(line.size());
      break;
    }
    std::string hash;
    std::string err = check_entry(line, n, s.result.entries + 1, s.result.last_hash, hash);
    if (!err.empty()) {
      s.result.error = err;
      return s;
    }
    s.result.entries += 1;
    s.result.last_hash = hash;
    s.valid_bytes += static_cast<int64_t>(line.size()) + 1;
  }
  s.result.ok = true;
  return s;
}

}  // namespace

AuditLog::AuditLog(std::string path, int fd, int64_t size, int64_t entries, std::string last_hash)
    : path_(std::move(path)),
      fd_(fd),
      size_(size),
      entries_(entries),
      last_hash_(std::move(last_hash)) {}

AuditLog::~AuditLog() { ::close(fd_); }

StatusOr<std::unique_ptr<AuditLog>> AuditLog::open(const std::string& path, Logger log) {
  if (!log) log = null_logger();
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status(StatusCode::kUnavailable,
                  "audit log " + path + ": cannot open: " + std::strerror(errno));
  // The file's name in its directory, durable before any append reports success: a
  // log created just before a power loss could otherwise vanish with its entries.
  const std::string dir_error = fsync_dir(std::filesystem::path(path).parent_path().string());
  if (!dir_error.empty()) {
    ::close(fd);
    return Status(StatusCode::kUnavailable, "audit log " + path + ": " + dir_error);
  }
  struct stat st {};
  if (::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
    log->warn("audit log {} is readable or writable by others (mode {:o}); it should be 0600", path,
              st.st_mode & 0777);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ::close(fd);
    return Status(StatusCode::kUnavailable,
                  "audit log " + path + ": cannot read: " + std::strerror(errno));
  }
  Scan s = scan(in);
  if (!s.result.ok) {
    ::close(fd);
    return Status::invalid(
        "audit log " + path + ": " + s.result.error +
        "; the chain is broken, so nothing more is appended to it (run `fedpod audit verify " +
        path + "`, keep the file as evidence and start a new log)");
  }
  if (s.torn) {
    if (::ftruncate(fd, s.valid_bytes) != 0 || ::fsync(fd) != 0) {
      Status err(
          StatusCode::kUnavailable,
          "audit log " + path + ": cannot cut off the torn last line: " + std::strerror(errno));
      ::close(fd);
      return err;
    }
    log->warn(
        "audit log {}: cut off a torn last line (line {}, {} bytes without a newline) left by an "
        "interrupted append; {} entries remain",
        path, s.torn_line, s.torn_bytes, s.result.entries);
  }
  return std::unique_ptr<AuditLog>(
      new AuditLog(path, fd, s.valid_bytes, s.result.entries, s.result.last_hash));
}

Status AuditLog::append(nlohmann::json fields) {
  if (!fields.is_object())
    return Status::invalid("audit entry must be a JSON object, got " + fields.dump());
  for (const char* key : kReserved) {
    if (fields.contains(key))
      return Status::invalid(std::string("audit entry: field '") + key + "' is set by the log");
  }
  std::lock_guard<std::mutex> lk(mu_);
  if (!broken_.ok()) return broken_;
  fields["seq"] = entries_ + 1;
  fields["time"] = now_utc_ms();
  fields["prev"] = last_hash_;
  std::string body;
  try {
    body = fields.dump();
  } catch (const json::exception& e) {
    return Status::invalid(std::string("audit entry cannot be written as JSON: ") + e.what());
  }
  const std::string hash = entry_hash(last_hash_, body);
  fields["hash"] = hash;
  const std::string line = fields.dump() + "\n";

  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string err = std::strerror(errno);
      if (::ftruncate(fd_, size_) != 0) {
        broken_ =
            Status::internal("audit log " + path_ + ": a write failed (" + err +
                             ") and the partial entry could not be removed: no further appends");
        return broken_;
      }
      return Status::internal("audit log " + path_ + ": cannot append: " + err);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd_) != 0) {
    // After a failed fsync the kernel may have dropped the dirty pages: what is on
    // disk is unknown, so stop rather than chain onto it.
    broken_ = Status::internal("audit log " + path_ + ": fsync failed (" + std::strerror(errno) +
                               "): no further appends");
    return broken_;
  }
  size_ += static_cast<int64_t>(line.size());
  entries_ += 1;
  last_hash_ = hash;
  return Status();
}

int64_t AuditLog::entries() const {
  std::lock_guard<std::mutex> lk(mu_);
  return entries_;
}

std::string AuditLog::last_hash() const {
  std::lock_guard<std::mutex> lk(mu_);
  return last_hash_;
}

std::pair<int64_t, std::string> AuditLog::head() const {
  std::lock_guard<std::mutex> lk(mu_);
  return {entries_, last_hash_};
}

AuditVerifyResult verify_audit_log(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    AuditVerifyResult r;
    r.last_hash = kAuditGenesisHash;
    r.error = "cannot read: " + std::string(std::strerror(errno));
    return r;
  }
  Scan s = scan(in);
  if (s.result.ok && s.torn) {
    s.result.ok = false;
    s.result.error =
        "line " + std::to_string(s.torn_line) +
        ": torn last line: " + std::to_string(s.torn_bytes) +
        " bytes without a newline, from an append interrupted by a crash (the " +
        std::to_string(s.result.entries) +
        " entries before it verify; the worker cuts it off when it next opens the log)";
  }
  return s.result;
}

std::vector<std::string> audit_log_hashes(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path, std::ios::binary);
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json e = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (e.is_discarded() || !e.is_object() || !e.contains("hash") || !e["hash"].is_string()) break;
    out.push_back(e["hash"].get<std::string>());
  }
  return out;
}

}  // namespace fedpod::worker
