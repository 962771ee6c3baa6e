#include "fedpod/common/files.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace fedpod {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTempInfix = ".tmp-";

std::string sys_error(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

}  // namespace

std::string fsync_dir(const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("cannot open directory", d);
  int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? "" : sys_error("cannot fsync directory", d);
}

std::string write_file_durably(const std::string& path, const std::string& data) {
  const fs::path p(path);
  const std::string dir = p.parent_path().string();
  std::string tmp = (p.parent_path() / ("." + p.filename().string() + kTempInfix + "XXXXXX")).string();
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) return sys_error("cannot create", tmp);
  size_t off = 0;
  std::string err;
  while (off < data.size() && err.empty()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      err = sys_error("cannot write", tmp);
    else
      off += static_cast<size_t>(n);
  }
  if (err.empty() && ::fsync(fd) != 0) err = sys_error("cannot fsync", tmp);
  ::close(fd);
  if (err.empty() && ::rename(tmp.c_str(), path.c_str()) != 0) err = sys_error("cannot rename to", path);
  if (!err.empty()) {
    ::unlink(tmp.c_str());
    return err;
  }
  return fsync_dir(dir);
}

int remove_interrupted_writes(const std::string& dir, const std::string& file_name) {
  const std::string prefix = "." + file_name + (file_name.empty() ? "" : kTempInfix);
  std::error_code ec;
  int removed = 0;
  for (const auto& e : fs::directory_iterator(dir.empty() ? fs::path(".") : fs::path(dir), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    if (file_name.empty() && name.find(kTempInfix, 1) == std::string::npos) continue;
    std::error_code rm_ec;
    if (fs::remove(e.path(), rm_ec)) ++removed;
  }
  return removed;
}

}  // namespace fedpod
