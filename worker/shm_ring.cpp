#include "fedpod/worker/shm_ring.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>

namespace fedpod::worker {
namespace {

constexpr uint32_t kLive = 1;
constexpr uint32_t kReleased = 2;

uint64_t round_up(uint64_t n, uint64_t to) { return (n + to - 1) / to * to; }

}  // namespace

ShmRing::ShmRing(uint8_t* base, size_t bytes) : base_(base), bytes_(bytes / kHeader * kHeader) {}

void ShmRing::reclaim() {
  for (auto it = live_.begin(); it != live_.end();) {
    it = __atomic_load_n(state(it->first), __ATOMIC_ACQUIRE) == kReleased ? live_.erase(it) : std::next(it);
  }
}

std::optional<uint64_t> ShmRing::allocate(size_t n) {
  if (n == 0 || n > bytes_) return std::nullopt;
  const uint64_t need = kHeader + round_up(n, kHeader);
  if (need > bytes_) return std::nullopt;
  reclaim();
  // First fit from the start: the lowest free bytes, so a ring that carries one or
  // two messages at a time keeps reusing the same pages.
  uint64_t at = 0;
  for (const auto& [start, end] : live_) {
    if (start - at >= need) break;
    at = end;
  }
  if (at + need > bytes_) return std::nullopt;
  __atomic_store_n(state(at), kLive, __ATOMIC_RELEASE);
  live_.emplace(at, at + need);
  return at + kHeader;
}

bool ShmRing::valid(uint64_t offset, uint64_t n) const {
  return offset >= kHeader && offset % kHeader == 0 && offset <= bytes_ && n <= bytes_ - offset;
}

void ShmRing::release(uint64_t offset) { __atomic_store_n(state(offset - kHeader), kReleased, __ATOMIC_RELEASE); }

StatusOr<std::shared_ptr<SharedRegion>> SharedRegion::create(const std::string& name, size_t bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  bytes = round_up(bytes, page);
  const int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return Status::internal("memfd_create(" + name + "): " + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::internal("ftruncate of the shared region " + name + " to " + std::to_string(bytes) +
                            " bytes: " + std::strerror(err));
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    ::close(fd);
    return Status::internal("mmap of the shared region " + name + ": " + std::strerror(err));
  }
  return std::shared_ptr<SharedRegion>(new SharedRegion(fd, static_cast<uint8_t*>(p), bytes));
}

StatusOr<std::shared_ptr<SharedRegion>> SharedRegion::attach(int fd, size_t bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Status::internal(std::string("fstat of the shared region: ") + std::strerror(errno));
  if (static_cast<size_t>(st.st_size) != bytes) {
    return Status::invalid("the shared region has " + std::to_string(st.st_size) + " bytes, not " +
                           std::to_string(bytes));
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return Status::internal(std::string("mmap of the shared region: ") + std::strerror(errno));
  return std::shared_ptr<SharedRegion>(new SharedRegion(fd, static_cast<uint8_t*>(p), bytes));
}

SharedRegion::~SharedRegion() {
  ::munmap(data_, size_);
  ::close(fd_);
}

}  // namespace fedpod::worker
