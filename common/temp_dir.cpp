#include "fedpod/common/temp_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <system_error>

namespace fedpod {
namespace {

namespace fs = std::filesystem;

constexpr size_t kRandomChars = 6;  // mkdtemp's XXXXXX

bool abandoned(const fs::path& dir, std::chrono::seconds min_age) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) return false;
  if (std::time(nullptr) - st.st_mtime < min_age.count()) return false;
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat opened;
  // The same directory that was looked at, still ours; then nobody may hold it.
  const bool ours = ::fstat(fd, &opened) == 0 && opened.st_ino == st.st_ino && opened.st_dev == st.st_dev &&
                    opened.st_uid == ::geteuid();
  const bool unheld = ours && ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);  // drops the lock taken just now
  return unheld;
}

}  // namespace

int remove_abandoned_temp_dirs(const std::string& prefix, std::chrono::seconds min_age) {
  std::error_code ec;
  const fs::path temp = fs::temp_directory_path(ec);
  if (ec) return 0;
  int removed = 0;
  for (fs::directory_iterator it(temp, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() != prefix.size() + kRandomChars || name.compare(0, prefix.size(), prefix) != 0) continue;
    if (!abandoned(it->path(), min_age)) continue;
    std::error_code rm;
    if (fs::remove_all(it->path(), rm) > 0 && !rm) ++removed;
  }
  return removed;
}

StatusOr<TempDir> TempDir::create(const std::string& prefix) {
  (void)remove_abandoned_temp_dirs(prefix);
  std::error_code ec;
  const fs::path temp = fs::temp_directory_path(ec);
  if (ec) return Status::internal("no temporary directory: " + ec.message());
  std::string tmpl = (temp / (prefix + std::string(kRandomChars, 'X'))).string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    return Status::internal("cannot make a private directory in " + temp.string() + ": " + std::strerror(errno));
  }
  TempDir dir;
  dir.path_ = tmpl;
  dir.fd_ = ::open(tmpl.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dir.fd_ < 0 || ::flock(dir.fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::internal("cannot lock the private directory " + tmpl + ": " + std::strerror(errno));
  }  // ~TempDir removes it
  return dir;
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) {
  other.path_.clear();
  other.fd_ = -1;
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    reset();
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    other.path_.clear();
    other.fd_ = -1;
  }
  return *this;
}

TempDir::~TempDir() { reset(); }

void TempDir::reset() {
  if (!path_.empty()) {
    std::error_code ec;
    fs::remove_all(path_, ec);
    path_.clear();
  }
  if (fd_ >= 0) ::close(fd_);  // after the removal: nobody sweeps it meanwhile
  fd_ = -1;
}

}  // namespace fedpod
