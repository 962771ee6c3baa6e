#include "fedpod/worker/runner.h"

#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <optional>
#include <thread>

#include "fedpod/common/peer_text.h"
#include "fedpod/common/sanitized.h"
#include <spdlog/spdlog.h>

#define FEDPOD_RETURN_IF_ERROR_JSON(expr) \
  do {                                    \
    ::fedpod::Status st_ = (expr);        \
    if (!st_.ok()) return error_json(st_); \
  } while (0)

namespace fedpod::worker {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// Sanitizer builds (kSanitized, common/sanitized.h): their runners get no memory
// rlimit, and their options reach the runner through its otherwise cleared
// environment.
constexpr const char* kSanitizerVars[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"};

constexpr size_t kMaxMessageBytes = size_t{4} << 20;
constexpr int kMaxFds = 4;
constexpr int kRunnerFd = 3;
// What a probe with --landlock prints (stderr) when the layer holds, then the ABI.
constexpr const char* kLandlockProbeLine = "fedpod runner: landlock abi ";

// ---- messages: one JSON text per SOCK_SEQPACKET datagram, file descriptors beside it ----

Status send_msg(int sock, const json& j, const std::vector<int>& fds = {}) {
  const std::string text = j.dump();
  if (text.size() > kMaxMessageBytes) return Status::internal("runner message too large");
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  while (::sendmsg(sock, &msg, MSG_NOSIGNAL) < 0) {
    if (errno == EINTR) continue;
    return Status(StatusCode::kUnavailable, std::string("the runner's socket is closed (") + std::strerror(errno) + ")");
  }
  return Status();
}

struct Fds {
  std::vector<int> fds;
  ~Fds() { reset(); }
  void reset() {
    for (int fd : fds) ::close(fd);
    fds.clear();
  }
  int take(size_t i) {
    if (i >= fds.size() || fds[i] < 0) return -1;
    int fd = fds[i];
    fds[i] = -1;
    return fd;
  }
};

// Waits for one message until `deadline` (checking `cancel` every 100 ms).
// kDeadlineExceeded on timeout, kUnavailable when the peer closed its end,
// kBadMessage for a datagram that is too large or not JSON.
Status recv_msg(int sock, json& out, Fds& fds, Clock::time_point deadline, const std::atomic<bool>* cancel) {
  fds.reset();
  while (true) {
    const auto now = Clock::now();
    if (cancel && cancel->load()) return Status::failed_precondition("cancelled");
    if (now >= deadline) return Status(StatusCode::kDeadlineExceeded, "no answer in time");
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd p{sock, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 100)));
    if (n < 0 && errno != EINTR) return Status::internal(std::string("poll: ") + std::strerror(errno));
    if (n <= 0) continue;
    // One buffer per thread, allocated once: a fresh 4 MiB per message cost page
    // faults and a memset on every request.
    thread_local std::vector<char> buf(kMaxMessageBytes);
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t got = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Status(StatusCode::kUnavailable, std::string("the runner's socket failed (") + std::strerror(errno) + ")");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        fds.fds.push_back(fd);
      }
    }
    if (got == 0) return Status(StatusCode::kUnavailable, "the runner closed its socket");
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return Status::bad_message("runner message too large");
    out = json::parse(buf.begin(), buf.begin() + got, nullptr, /*allow_exceptions=*/false);
    if (out.is_discarded() || !out.is_object()) return Status::bad_message("runner message is not a JSON object");
    return Status();
  }
}

// ---- shared memory ----

struct Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED && size > 0) ::munmap(addr, size);
  }
};

// A sealed in-memory file holding `bytes` (size and contents fixed).
StatusOr<int> sealed_memfd(const char* name, const void* data, size_t size) {
  int fd = ::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Status::internal(std::string("memfd_create: ") + std::strerror(errno));
  size_t done = 0;
  const char* p = static_cast<const char*>(data);
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      return Status::internal(std::string("writing a memfd: ") + std::strerror(errno));
    }
    done += static_cast<size_t>(n);
  }
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    ::close(fd);
    return Status::internal(std::string("sealing a memfd: ") + std::strerror(errno));
  }
  return fd;
}

StatusOr<std::shared_ptr<Mapping>> map_fd(int fd, size_t expected, bool writable) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Status::internal(std::string("fstat: ") + std::strerror(errno));
  if (static_cast<size_t>(st.st_size) != expected) {
    return Status::bad_message("shared region has " + std::to_string(st.st_size) + " bytes, expected " +
                               std::to_string(expected));
  }
  auto m = std::make_shared<Mapping>();
  if (expected == 0) return m;
  m->addr = ::mmap(nullptr, expected, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0);
  if (m->addr == MAP_FAILED) return Status::internal(std::string("mmap: ") + std::strerror(errno));
  m->size = expected;
  return m;
}

// ---- job description as JSON ----

json to_json(const data::Datastructure& ds) {
  return {{"target", ds.target},
          {"features", ds.features},
          {"ignore", ds.ignore},
          {"input_shape", ds.input_shape},
          {"num_classes", ds.num_classes},
          {"scale", ds.scale},
          {"split", {{"validation", ds.split.validation}, {"test", ds.split.test}, {"seed", ds.split.seed}}},
          {"categories", ds.categories}};
}

data::Datastructure datastructure_from(const json& j) {
  data::Datastructure ds;
  ds.target = j.at("target").get<std::string>();
  ds.features = j.at("features").get<std::vector<std::string>>();
  ds.ignore = j.at("ignore").get<std::vector<std::string>>();
  ds.input_shape = j.at("input_shape").get<std::vector<int64_t>>();
  ds.num_classes = j.at("num_classes").get<int64_t>();
  ds.scale = j.at("scale").get<double>();
  ds.split.validation = j.at("split").at("validation").get<double>();
  ds.split.test = j.at("split").at("test").get<double>();
  ds.split.seed = j.at("split").at("seed").get<uint64_t>();
  ds.categories = j.at("categories").get<std::map<std::string, std::vector<std::string>>>();
  return ds;
}

json to_json(const data::Schema& s) {
  json cols = json::array();
  for (const auto& c : s.columns) {
    cols.push_back({{"name", c.name},
                    {"categorical", c.type == data::ColumnType::kCategorical},
                    {"categories", c.categories}});
  }
  return {{"columns", cols}, {"num_rows", s.num_rows}};
}

data::Schema schema_from(const json& j) {
  data::Schema s;
  for (const auto& c : j.at("columns")) {
    data::Column col;
    col.name = c.at("name").get<std::string>();
    col.type = c.at("categorical").get<bool>() ? data::ColumnType::kCategorical : data::ColumnType::kNumeric;
    col.categories = c.at("categories").get<std::vector<std::string>>();
    s.columns.push_back(std::move(col));
  }
  s.num_rows = j.at("num_rows").get<int64_t>();
  return s;
}

json error_json(const Status& st) {
  return {{"op", "error"}, {"code", static_cast<int>(st.code())}, {"message", st.message()}};
}

Status status_from(const json& reply) {
  const int code = reply.value("code", static_cast<int>(StatusCode::kInternal));
  StatusCode c = StatusCode::kInternal;
  if (code > 0 && code <= static_cast<int>(StatusCode::kInternal)) c = static_cast<StatusCode>(code);
  return Status(c, reply.value("message", std::string("the runner failed")));
}

// ---- the sandbox ----

// The syscall filter of a runner: default allow, these refused.
Status load_seccomp(bool allow_inet, bool no_sockets) {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return Status::internal("seccomp_init failed");
  auto deny = [&](int nr, int err = EPERM) { return seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0); };
  int rc = 0;
  for (int nr : {SCMP_SYS(ptrace), SCMP_SYS(process_vm_readv), SCMP_SYS(process_vm_writev), SCMP_SYS(fork),
                 SCMP_SYS(vfork), SCMP_SYS(execve), SCMP_SYS(execveat), SCMP_SYS(mount), SCMP_SYS(umount2),
                 SCMP_SYS(pivot_root), SCMP_SYS(chroot), SCMP_SYS(unshare), SCMP_SYS(setns), SCMP_SYS(keyctl),
                 SCMP_SYS(add_key), SCMP_SYS(request_key), SCMP_SYS(bpf), SCMP_SYS(perf_event_open),
                 SCMP_SYS(init_module), SCMP_SYS(finit_module), SCMP_SYS(delete_module), SCMP_SYS(kexec_load),
                 SCMP_SYS(reboot), SCMP_SYS(swapon), SCMP_SYS(swapoff), SCMP_SYS(acct), SCMP_SYS(userfaultfd),
                 SCMP_SYS(io_uring_setup), SCMP_SYS(kcmp), SCMP_SYS(name_to_handle_at),
                 SCMP_SYS(open_by_handle_at)}) {
    rc |= deny(nr);
  }
  // Threads yes, processes no: clone only with CLONE_THREAD; clone3 (whose flags a
  // filter cannot read) answers ENOSYS, and glibc then falls back to clone.
  rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                         SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  rc |= deny(SCMP_SYS(clone3), ENOSYS);
  // Signals to itself only. Where the runner has no pid namespace of its own (sandbox
  // level seccomp+rlimits), kill(-1, SIGKILL) reached every process of the pod's user,
  // the worker among them, and kill(0) the worker's process group. raise() and
  // abort() use tgkill on the runner's own pid; nothing in it signals others.
  const auto self = static_cast<scmp_datum_t>(::getpid());
  for (int nr : {SCMP_SYS(kill), SCMP_SYS(tgkill), SCMP_SYS(rt_sigqueueinfo), SCMP_SYS(rt_tgsigqueueinfo)}) {
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 1, SCMP_A0_32(SCMP_CMP_NE, self));
  }
  for (int nr : {SCMP_SYS(tkill), SCMP_SYS(pidfd_open), SCMP_SYS(pidfd_send_signal), SCMP_SYS(pidfd_getfd)}) {
    rc |= deny(nr);
  }
  if (no_sockets) {
    // Without a network namespace of its own a unix socket reaches the machine's
    // services (the pod's own receiving process, a container runtime's socket): no
    // socket at all. The runner talks to its worker on the socket it inherits.
    rc |= deny(SCMP_SYS(socket), EACCES);
  } else if (!allow_inet) {
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(socket), 1, SCMP_A0(SCMP_CMP_NE, AF_UNIX));
  }
  if (rc != 0) {
    seccomp_release(ctx);
    return Status::internal("seccomp_rule_add failed");
  }
  // Without this, kernels whose Speculative Store Bypass policy is "seccomp" (the
  // default before 5.16) turn the mitigation on for every thread of a filtered
  // process, which slows training's store-heavy loops. It guards code from reading
  // its own process's memory speculatively; the model code in a runner can read that
  // memory anyway, so the mitigation protects nothing here. Kernels without the flag
  // (before 4.17) refuse it; the filter then loads as before.
  (void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_SSB, 1);
  rc = seccomp_load(ctx);  // sets no_new_privs first
  seccomp_release(ctx);
  if (rc != 0) return Status::internal(std::string("seccomp_load: ") + std::strerror(-rc));
  return Status();
}

// ---- Landlock: the runner's files, where it has no mount namespace ----
//
// Without bubblewrap the runner sees the pod's whole file system; Landlock (Linux
// 5.13+, unprivileged) confines what it may open to: the system's libraries and
// programs read-only, a few /proc and /sys files that libtorch reads, /dev/null and
// the random devices, and its scratch directory (its working directory), where it may
// create, write and remove. Everything else (the pod's keys, policy, audit log,
// privacy ledger, data, other processes' /proc) answers EACCES. The layer is added
// once, before any model code runs, and cannot be lifted. Declared here rather than
// taken from <linux/landlock.h>, whose Debian 12 copy predates the later ABIs.
namespace landlock {
constexpr uint64_t kExecute = 1ULL << 0, kWriteFile = 1ULL << 1, kReadFile = 1ULL << 2, kReadDir = 1ULL << 3;
constexpr uint64_t kAbi1 = (1ULL << 13) - 1;                 // execute .. make_sym
constexpr uint64_t kRefer = 1ULL << 13, kTruncate = 1ULL << 14, kIoctlDev = 1ULL << 15;
constexpr uint64_t kFileRights = kExecute | kWriteFile | kReadFile | kTruncate | kIoctlDev;
constexpr uint64_t kScopeAbstractUnixSocket = 1ULL << 0, kScopeSignal = 1ULL << 1;
constexpr int kRulePathBeneath = 1;
struct RulesetAttr {
  uint64_t handled_access_fs = 0;
  uint64_t handled_access_net = 0;
  uint64_t scoped = 0;
};
struct __attribute__((packed)) PathBeneathAttr {
  uint64_t allowed_access = 0;
  int32_t parent_fd = -1;
};
}  // namespace landlock

// Applies the layer; `abi` out: the kernel's Landlock ABI. Fails when the kernel has
// no Landlock or a rule cannot be added: the runner then refuses to run (the worker
// asked for it because its probe found it working).
Status apply_landlock(bool gpus, int& abi) {
  using namespace landlock;
  abi = landlock_abi();
  if (abi < 0) {
    return Status::failed_precondition(std::string("Landlock is not available: ") +
                                       (abi == -ENOSYS ? "the kernel has no Landlock"
                                        : abi == -EOPNOTSUPP ? "Landlock is disabled at boot (lsm=)"
                                                             : std::strerror(-abi)));
  }
  uint64_t handled = kAbi1;
  if (abi >= 2) handled |= kRefer;
  if (abi >= 3) handled |= kTruncate;
  if (abi >= 5) handled |= kIoctlDev;
  RulesetAttr attr;
  attr.handled_access_fs = handled;
  size_t attr_size = sizeof(uint64_t);  // ABI 1-3 know only the first field
  if (abi >= 6) {
    // No connecting to abstract unix sockets outside the layer (other processes'
    // services), no signals to processes outside it.
    attr.scoped = kScopeAbstractUnixSocket | kScopeSignal;
    attr_size = sizeof attr;
  }
  const int ruleset = static_cast<int>(::syscall(__NR_landlock_create_ruleset, &attr, attr_size, 0U));
  if (ruleset < 0) return Status::internal(std::string("landlock_create_ruleset: ") + std::strerror(errno));
  Status failed;
  // `keep`: the path stays open (its dentry pinned): procfs makes a new inode for
  // /proc/PID when its dentry is looked up again after being evicted, and the rule
  // would no longer match it.
  auto allow = [&](const std::string& path, uint64_t access, bool keep = false) {
    if (!failed.ok()) return;
    const int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) return;  // not on this machine: nothing to allow
    struct stat st {};
    if (::fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) access &= kFileRights;
    PathBeneathAttr rule;
    rule.allowed_access = access & handled;
    rule.parent_fd = fd;
    if (::syscall(__NR_landlock_add_rule, ruleset, kRulePathBeneath, &rule, 0U) != 0) {
      failed = Status::internal("landlock_add_rule(" + path + "): " + std::strerror(errno));
    }
    if (!keep) ::close(fd);
  };
  const uint64_t read = kExecute | kReadFile | kReadDir;
  const uint64_t read_write_file = kReadFile | kWriteFile;
  for (const char* d : {"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin", "/etc/ld.so.cache",
                        "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime",
                        "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu", "/sys/fs/cgroup"}) {
    allow(d, read);
  }
  // Its own /proc/PID (maps, status, fd/N: the model it is sent comes as a memfd), and
  // its own binary; no other process's.
  allow("/proc/self", read, /*keep=*/true);
  allow("/proc/self/exe", read);
  for (const char* f : {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"}) allow(f, read_write_file);
  allow(".", handled);  // the scratch directory
  if (gpus) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/dev", ec)) {
      const std::string p = e.path().string();
      if (p.rfind("/dev/nvidia", 0) == 0) allow(p, read_write_file | kIoctlDev);
    }
    allow("/sys", read);
    allow("/proc/driver/nvidia", read);
  }
  if (kSanitized) {
    // A sanitizer's report files (log_path=PREFIX: PREFIX.PID) next to PREFIX.
    for (const char* v : kSanitizerVars) {
      const char* options = std::getenv(v);
      if (!options) continue;
      const std::string o = options;
      const auto at = o.find("log_path=");
      if (at == std::string::npos) continue;
      const std::string prefix = o.substr(at + 9, o.find(':', at) - (at + 9));
      allow(std::filesystem::path(prefix).parent_path().string(), handled);
    }
  }
  if (failed.ok() && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    failed = Status::internal(std::string("prctl(PR_SET_NO_NEW_PRIVS): ") + std::strerror(errno));
  }
  if (failed.ok() && ::syscall(__NR_landlock_restrict_self, ruleset, 0U) != 0) {
    failed = Status::internal(std::string("landlock_restrict_self: ") + std::strerror(errno));
  }
  ::close(ruleset);
  return failed;
}

std::string find_on_path(const std::string& name) {
  for (const char* dir : {"/usr/bin", "/bin", "/usr/local/bin"}) {
    std::string p = std::string(dir) + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

// bubblewrap's arguments for a runner whose argv is `inner`.
std::vector<std::string> bwrap_argv(const std::string& bwrap, const std::vector<std::string>& inner, bool gpus) {
  namespace fs = std::filesystem;
  // bubblewrap mounts in argument order, a later mount over an earlier one: the
  // scratch tmpfs /tmp first, so that a fedpod binary under /tmp stays visible.
  std::vector<std::string> a = {bwrap,     "--die-with-parent", "--new-session", "--unshare-all", "--cap-drop",
                                "ALL",     "--proc",            "/proc",         "--dev",         "/dev",
                                "--tmpfs", "/tmp",              "--ro-bind",     "/usr",          "/usr"};
  for (const char* d : {"/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"}) {
    std::error_code ec;
    if (fs::is_symlink(d, ec)) {
      a.insert(a.end(), {"--symlink", fs::read_symlink(d, ec).string(), d});
    } else if (fs::is_directory(d, ec)) {
      a.insert(a.end(), {"--ro-bind", d, d});
    }
  }
  // ld.so.cache and Debian's alternatives (libblas.so.3 and friends are symlinks through them).
  for (const char* f : {"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"}) {
    a.insert(a.end(), {"--ro-bind-try", f, f});
  }
  std::error_code ec;
  const std::string exe = fs::canonical(inner.front(), ec).string();
  if (!exe.empty() && exe.rfind("/usr/", 0) != 0) a.insert(a.end(), {"--ro-bind", exe, exe});
  if (gpus) {
    // CUDA needs its device nodes, driver files and /sys (untested without a GPU).
    for (const auto& e : fs::directory_iterator("/dev", ec)) {
      const std::string p = e.path().string();
      if (p.rfind("/dev/nvidia", 0) == 0) a.insert(a.end(), {"--dev-bind-try", p, p});
    }
    a.insert(a.end(), {"--ro-bind-try", "/sys", "/sys", "--ro-bind-try", "/usr/local/cuda", "/usr/local/cuda"});
  }
  a.insert(a.end(), {"--chdir", "/tmp", "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "TMPDIR", "/tmp"});
  if (kSanitized) {
    for (const char* v : kSanitizerVars) {
      if (const char* value = std::getenv(v)) a.insert(a.end(), {"--setenv", v, value});
    }
  }
  a.push_back("--");
  a.push_back(exe.empty() ? inner.front() : exe);
  a.insert(a.end(), inner.begin() + 1, inner.end());
  return a;
}

struct Child {
  pid_t pid = -1;
  int stderr_pipe = -1;  // probe only
};

// fork + exec of `argv` with fd `pass` as fd 3, limits set, environment cleared,
// stdin /dev/null, in `dir` (when not empty).
// With `gpus` the memory limit is RLIMIT_DATA rather than RLIMIT_AS: CUDA reserves
// terabytes of address space it never touches (PROT_NONE mappings, which
// RLIMIT_DATA does not count).
StatusOr<Child> spawn(const std::vector<std::string>& argv, int pass, const RunnerLimits& limits,
                      const std::string& dir, bool capture_stderr, bool gpus = false) {
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  std::string home = "HOME=" + (dir.empty() ? std::string("/tmp") : dir);
  std::string tmp = "TMPDIR=" + (dir.empty() ? std::string("/tmp") : dir);
  std::vector<std::string> extra;
  if (kSanitized) {
    for (const char* v : kSanitizerVars) {
      if (const char* value = std::getenv(v)) extra.push_back(std::string(v) + "=" + value);
    }
  }
  std::vector<char*> env = {home.data(), tmp.data(), const_cast<char*>("PATH=/usr/bin:/bin")};
  for (auto& e : extra) env.push_back(e.data());
  env.push_back(nullptr);
  int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int err_pipe[2] = {-1, -1};
  if (capture_stderr && ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    if (devnull >= 0) ::close(devnull);
    return Status::internal(std::string("pipe: ") + std::strerror(errno));
  }
  const rlimit as{static_cast<rlim_t>(limits.memory_bytes), static_cast<rlim_t>(limits.memory_bytes)};
  const rlimit nofile{static_cast<rlim_t>(limits.open_files), static_cast<rlim_t>(limits.open_files)};
  const rlimit fsize{static_cast<rlim_t>(limits.file_bytes), static_cast<rlim_t>(limits.file_bytes)};
  const rlimit core{0, 0};
  pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    if (devnull >= 0) ::close(devnull);
    if (capture_stderr) {
      ::close(err_pipe[0]);
      ::close(err_pipe[1]);
    }
    return Status::internal(std::string("fork: ") + std::strerror(e));
  }
  if (pid == 0) {
    // The child: async-signal-safe calls only, until exec.
    if (devnull >= 0) ::dup2(devnull, 0);
    if (capture_stderr) {
      ::dup2(err_pipe[1], 1);
      ::dup2(err_pipe[1], 2);
    }
    if (pass >= 0) {
      if (pass == kRunnerFd) {
        ::fcntl(kRunnerFd, F_SETFD, 0);
      } else {
        ::dup2(pass, kRunnerFd);
      }
    }
    ::close_range(pass >= 0 ? kRunnerFd + 1 : kRunnerFd, ~0U, 0);
    if (!kSanitized) ::setrlimit(gpus ? RLIMIT_DATA : RLIMIT_AS, &as);
    ::setrlimit(RLIMIT_NOFILE, &nofile);
    ::setrlimit(RLIMIT_FSIZE, &fsize);
    ::setrlimit(RLIMIT_CORE, &core);
    if (!dir.empty() && ::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execve(args[0], args.data(), env.data());
    ::_exit(127);
  }
  if (devnull >= 0) ::close(devnull);
  Child c;
  c.pid = pid;
  if (capture_stderr) {
    ::close(err_pipe[1]);
    c.stderr_pipe = err_pipe[0];
  }
  return c;
}

// How a runner process ended, in words; waits up to `wait` for it.
std::string describe_exit(pid_t pid, std::chrono::milliseconds wait) {
  int status = 0;
  const auto until = Clock::now() + wait;
  pid_t r;
  while ((r = ::waitpid(pid, &status, WNOHANG)) == 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (r != pid) return "the runner stopped answering";
  auto killed = [](int sig) {
    const char* name = sigabbrev_np(sig);
    const bool crash = sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE || sig == SIGABRT;
    return std::string("the runner was killed by signal ") + std::to_string(sig) + " (SIG" + (name ? name : "?") +
           ")" + (crash ? ": the model crashed" : "");
  };
  if (WIFSIGNALED(status)) return killed(WTERMSIG(status));
  if (WIFEXITED(status)) {
    // Under bubblewrap the runner is bwrap's child, and bwrap exits with 128 + the
    // signal that ended it; a runner itself exits with 0, 2 or 3.
    const int code = WEXITSTATUS(status);
    if (code > 128 && code < 128 + 65) return killed(code - 128);
    return "the runner exited with code " + std::to_string(code);
  }
  return "the runner ended";
}

std::string gib(int64_t bytes) {
  std::ostringstream s;
  s << static_cast<double>(bytes) / static_cast<double>(int64_t{1} << 30) << " GiB";
  return s.str();
}

std::string seconds(std::chrono::milliseconds d) {
  std::ostringstream s;
  s << static_cast<double>(d.count()) / 1000.0 << " s";
  return s.str();
}

// ---- the worker's side ----

// Layout entries as a runner sends them: names, shapes, kinds, dtypes; offsets and
// sizes are computed here, bounded (a runner's reply is not trusted).
json layout_json(const std::vector<model::ParamInfo>& layout) {
  json out = json::array();
  for (const auto& p : layout) {
    out.push_back({{"name", p.name}, {"shape", p.shape}, {"kind", static_cast<int>(p.kind)},
                   {"dtype", static_cast<int>(p.dtype)}});
  }
  return out;
}

StatusOr<std::vector<model::ParamInfo>> layout_from(const json& j) {
  std::vector<model::ParamInfo> layout;
  try {
    int64_t offset = 0;
    for (const auto& e : j) {
      model::ParamInfo p;
      p.name = e.at("name").get<std::string>();
      p.shape = e.at("shape").get<std::vector<int64_t>>();
      const int kind = e.at("kind").get<int>();
      if (kind < 0 || kind > static_cast<int>(model::EntryKind::kMirroredBuffer)) {
        return Status::bad_message("runner: bad layout entry kind");
      }
      p.kind = static_cast<model::EntryKind>(kind);
      const int dtype = e.at("dtype").get<int>();
      if (dtype < 0 || dtype >= static_cast<int>(torch::ScalarType::NumOptions)) {
        return Status::bad_message("runner: bad layout entry dtype");
      }
      p.dtype = static_cast<torch::ScalarType>(dtype);
      int64_t n = 1;
      for (int64_t d : p.shape) {
        if (d < 0 || (d > 0 && n > (int64_t{1} << 40) / d)) return Status::bad_message("runner: bad layout shape");
        n *= d;
      }
      p.offset = offset;
      p.numel = n;
      offset += n;
      if (offset > (int64_t{1} << 34)) return Status::bad_message("runner: layout too large");
      layout.push_back(std::move(p));
    }
  } catch (const json::exception& e) {
    return Status::bad_message(std::string("runner: malformed layout: ") + e.what());
  }
  return layout;
}

json hyperparameters_json(const std::optional<model::HyperparameterSpec>& spec) {
  if (!spec) return nullptr;
  json out = json::array();
  for (const auto& h : *spec) {
    out.push_back({{"name", h.name}, {"type", static_cast<int>(h.type)}, {"help", h.help}, {"choices", h.choices}});
  }
  return out;
}

StatusOr<std::optional<model::HyperparameterSpec>> hyperparameters_from(const json& j) {
  if (j.is_null()) return std::optional<model::HyperparameterSpec>();
  model::HyperparameterSpec spec;
  try {
    for (const auto& e : j) {
      model::HyperparameterInfo h;
      h.name = e.at("name").get<std::string>();
      const int type = e.at("type").get<int>();
      if (type < 0 || type > static_cast<int>(model::HyperparameterType::kIntegerList)) {
        return Status::bad_message("runner: bad hyperparameter type");
      }
      h.type = static_cast<model::HyperparameterType>(type);
      h.help = e.at("help").get<std::string>();
      h.choices = e.at("choices").get<std::vector<std::string>>();
      spec.push_back(std::move(h));
    }
  } catch (const json::exception& e) {
    return Status::bad_message(std::string("runner: malformed hyperparameters: ") + e.what());
  }
  return std::optional<model::HyperparameterSpec>(std::move(spec));
}

// A sealed-size shared region of `bytes`, mapped here; its fd is returned to pass on.
StatusOr<std::pair<int, std::shared_ptr<Mapping>>> shared_region(size_t bytes) {
  int fd = ::memfd_create("fedpod-state", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return Status::internal(std::string("memfd_create: ") + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    ::close(fd);
    return Status::internal(std::string("state region: ") + std::strerror(errno));
  }
  auto m = map_fd(fd, bytes, true);
  if (!m.ok()) {
    ::close(fd);
    return m.status();
  }
  return std::make_pair(fd, *m);
}

// A runner process and its socket, from the side that starts it (a pod's worker, a
// coordinator).
class RunnerProcess {
 public:
  ~RunnerProcess() { stop(); }

 protected:
  // Starts the runner: under bubblewrap when the confinement has namespaces, else in
  // a private scratch directory. `who` starts every failure message ("pod a").
  Status launch(const RunnerOptions& o, const std::string& who, bool gpus, bool allow_inet) {
    options_ = o;
    who_ = who;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
      return Status::internal(std::string("socketpair: ") + std::strerror(errno));
    }
    sock_ = pair[0];
    std::vector<std::string> inner = o.command;
    inner.insert(inner.end(), {"--fd", std::to_string(kRunnerFd)});
    if (allow_inet) inner.push_back("--allow-inet");
    if (!o.confinement.namespaces) {
      if (!allow_inet) inner.push_back("--no-sockets");
      if (o.confinement.landlock) {
        inner.push_back("--landlock");
        if (gpus) inner.push_back("--gpus");
      }
    }
    std::vector<std::string> argv = inner;
    if (o.confinement.namespaces) {
      argv = bwrap_argv(find_on_path("bwrap"), inner, gpus);
    } else {
      char tmpl[] = "/tmp/fedpod-runner-XXXXXX";
      if (!::mkdtemp(tmpl)) {
        ::close(pair[1]);
        return Status::internal(std::string("cannot create the runner's scratch directory: ") + std::strerror(errno));
      }
      scratch_ = tmpl;
    }
    auto child = spawn(argv, pair[1], o.limits, scratch_, true, gpus);
    ::close(pair[1]);
    if (!child.ok()) return child.status();
    pid_ = child->pid;
    output_stop_ = std::make_shared<std::atomic<bool>>(false);
    output_ = std::thread(forward_output, child->stderr_pipe, o.log, who, output_stop_);
    return Status();
  }

  // The runner's stdout and stderr (one pipe) into `log`, line by line, until the
  // runner and every copy of the pipe are gone, or `stop` (then for at most 1 s).
  static void forward_output(int fd, std::shared_ptr<spdlog::logger> log, std::string who,
                             std::shared_ptr<std::atomic<bool>> stop) {
    size_t forwarded = 0, suppressed = 0;
    auto emit = [&](std::string_view line) {
      if (forwarded + line.size() + 1 > kMaxRunnerOutputBytes) {
        suppressed += line.size() + 1;
        return;
      }
      forwarded += line.size() + 1;
      // Quotes escaped too: the text cannot end its value and add fields of its own.
      std::string text;
      for (char c : peer_text(line, 1024)) {
        if (c == '"' || c == '\\') text += '\\';
        text += c;
      }
      if (log) {
        log->info("event=runner_output who=\"{}\" line=\"{}\"", who, text);
      } else {
        const std::string l = "fedpod runner (" + who + "): " + text + "\n";
        (void)!::write(2, l.data(), l.size());
      }
    };
    std::string pending;
    char buf[8192];
    std::optional<Clock::time_point> until;
    for (;;) {
      if (!until && stop->load()) until = Clock::now() + std::chrono::seconds(1);
      if (until && Clock::now() >= *until) break;
      pollfd p{fd, POLLIN, 0};
      const int r = ::poll(&p, 1, 100);
      if (r < 0 && errno != EINTR) break;
      if (r <= 0) continue;
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // end of output
      pending.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t at; (at = pending.find('\n', start)) != std::string::npos; start = at + 1) {
        emit(std::string_view(pending).substr(start, at - start));
      }
      pending.erase(0, start);
      if (pending.size() > 4096) {  // a line without an end
        emit(pending);
        pending.clear();
      }
    }
    if (!pending.empty()) emit(pending);
    if (suppressed > 0) {
      const std::string what = "event=runner_output_suppressed who=\"" + who + "\" bytes=" + std::to_string(suppressed) +
                               " limit=" + std::to_string(kMaxRunnerOutputBytes);
      if (log) {
        log->warn("{}", what);
      } else {
        const std::string l = what + "\n";
        (void)!::write(2, l.data(), l.size());
      }
    }
    ::close(fd);
  }

  // Waits for the answer to a request just sent (`sent`); a runner that fails, dies
  // or takes longer than step_timeout (or `timeout`, which is load_timeout) fails the
  // step, with the reason and limits.
  Status call(const Status& sent, json& reply, const std::string& doing, const std::atomic<bool>* cancel,
              std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
    Fds fds;
    Status st = sent;
    const auto limit = timeout.value_or(options_.limits.step_timeout);
    if (st.ok()) st = recv_msg(sock_, reply, fds, Clock::now() + limit, cancel);
    if (st.ok()) {
      if (reply.value("op", "") != "error") return Status();
      // The model's own error (or the runner's): said as it is, with what confined it.
      Status e = status_from(reply);
      std::string m = e.message();
      if (m.find("bad_alloc") != std::string::npos || m.find("can't allocate memory") != std::string::npos) {
        m = "out of memory under the runner's limit (sandbox.memory " + gib(options_.limits.memory_bytes) + "): " + m;
      }
      return Status(e.code(), m + limits_text());
    }
    if (st.code() == StatusCode::kFailedPrecondition) {  // cancelled: the job is ending
      stop();
      return st;
    }
    std::string why;
    if (st.code() == StatusCode::kDeadlineExceeded) {
      ::kill(pid_, SIGKILL);
      why = std::string("the runner took longer than its time limit (sandbox.") +
            (timeout ? "load_timeout " : "step_timeout ") + seconds(limit) + ") " + doing + " and was killed";
      describe_exit(pid_, std::chrono::seconds(5));
    } else if (st.code() == StatusCode::kUnavailable) {
      why = describe_exit(pid_, std::chrono::seconds(5)) + " while " + doing;
    } else {
      ::kill(pid_, SIGKILL);
      why = st.message() + " while " + doing + "; the runner was killed";
      describe_exit(pid_, std::chrono::seconds(5));
    }
    pid_ = -1;
    return Status::internal(who_ + ": " + why + limits_text());
  }

  // A layout claims no more than the runner could have held (its reply is not trusted).
  Status within_memory(int64_t numel) const {
    if (numel * static_cast<int64_t>(sizeof(float)) <= options_.limits.memory_bytes) return Status();
    return Status::bad_message(who_ + ": the runner reports a model of " + std::to_string(numel) +
                               " values, more than its memory limit could hold" + limits_text());
  }

  std::string limits_text() const {
    return " [runner limits: memory " + gib(options_.limits.memory_bytes) + ", step " +
           seconds(options_.limits.step_timeout) + ", load " + seconds(options_.limits.load_timeout) +
           ", open files " + std::to_string(options_.limits.open_files) + "; confinement " +
           options_.confinement.level + "]";
  }

  void stop() {
    // Killed before its socket closes: a runner that saw the socket close would exit
    // on its own, running exit handlers (a sanitizer's leak check) under its filter.
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
    if (sock_ >= 0) {
      ::close(sock_);
      sock_ = -1;
    }
    if (output_.joinable()) {
      output_stop_->store(true);
      output_.join();
    }
    if (!scratch_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(scratch_, ec);
      scratch_.clear();
    }
  }

  RunnerOptions options_;
  std::string who_;
  int sock_ = -1;
  pid_t pid_ = -1;
  std::string scratch_;
  std::thread output_;  // forward_output
  std::shared_ptr<std::atomic<bool>> output_stop_;
};

class RunnerEngine : public JobEngine, private RunnerProcess {
 public:
  Status start(const EngineSpec& spec, const data::Table& table, std::string_view artifact, const RunnerOptions& o,
               const std::atomic<bool>* cancel) {
    confinement = o.confinement.level;
    bool gpus = false;
    for (const auto& d : spec.devices) gpus |= d.rfind("cuda", 0) == 0;
    // NCCL's bootstrap between a pod's GPUs needs an inet socket; the runner is still
    // in an empty network namespace then.
    const bool allow_inet = gpus && spec.devices.size() > 1 && o.confinement.namespaces;
    FEDPOD_RETURN_IF_ERROR(launch(o, "pod " + spec.pod, gpus, allow_inet));

    // The table, read-only; the artifact, sealed.
    const data::Table& t = table;
    torch::Tensor values = t.values.contiguous();
    auto table_fd = sealed_memfd("fedpod-table", values.data_ptr(), static_cast<size_t>(values.nbytes()));
    if (!table_fd.ok()) return table_fd.status();
    std::vector<int> fds = {*table_fd};
    if (!artifact.empty()) {
      auto art = sealed_memfd("fedpod-artifact", artifact.data(), artifact.size());
      if (!art.ok()) {
        ::close(*table_fd);
        return art.status();
      }
      fds.push_back(*art);
    }
    json init = {{"op", "init"},
                 {"ref", spec.ref},
                 {"format", spec.format},
                 {"hyperparameters", spec.hp.json()},
                 {"datastructure", to_json(spec.ds)},
                 {"schema", to_json(t.schema)},
                 {"rows", values.size(0)},
                 {"cols", values.dim() > 1 ? values.size(1) : 0},
                 {"seed", spec.seed},
                 {"devices", spec.devices},
                 {"threads", spec.threads},
                 {"threads_per_replica", spec.threads_per_replica},
                 {"pod", spec.pod}};
    Status sent = send_msg(sock_, init, fds);
    for (int fd : fds) ::close(fd);
    json ready;
    FEDPOD_RETURN_IF_ERROR(call(sent, ready, "loading the model", cancel, o.limits.load_timeout));
    if (ready.value("op", "") != "ready") return Status::bad_message("runner: expected ready");
    auto layout = layout_from(ready.value("layout", json::array()));
    if (!layout.ok()) return layout.status();
    layout_ = std::move(*layout);
    try {
      train_size = ready.at("train").get<int64_t>();
      validation_size = ready.at("validation").get<int64_t>();
      test_size = ready.at("test").get<int64_t>();
      replicas = ready.at("replicas").get<int>();
      allreduce = ready.at("allreduce").get<std::string>();
    } catch (const json::exception& e) {
      return Status::bad_message(std::string("runner: malformed ready: ") + e.what());
    }
    FEDPOD_RETURN_IF_ERROR(within_memory(numel()));
    // The state region: made and sealed (size) here, shared with the runner.
    const size_t bytes = static_cast<size_t>(numel()) * sizeof(float);
    auto region = shared_region(bytes);
    if (!region.ok()) return region.status();
    map_ = region->second;
    state_ = bytes ? torch::from_blob(map_->addr, {numel()}, torch::kFloat32) : torch::zeros({0});
    sent = send_msg(sock_, {{"op", "state"}, {"bytes", bytes}}, {region->first});
    ::close(region->first);
    json ok;
    return call(sent, ok, "sharing the model state", cancel, o.limits.load_timeout);
  }

  Status write_state(const std::vector<torch::Tensor>& tensors) override {
    if (tensors.size() != layout_.size()) return Status::invalid("tensor count differs from the layout");
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < layout_.size(); ++i) {
      state_.narrow(0, layout_[i].offset, layout_[i].numel).copy_(tensors[i].reshape({-1}));
    }
    return Status();
  }

  std::pair<torch::Tensor, std::shared_ptr<void>> read_state() override { return {state_, map_}; }

  StatusOr<TrainStats> train(const TrainOptions& o, const std::atomic<bool>* cancel) override {
    json req = {{"op", "train"}, {"epochs", o.epochs}, {"steps", o.steps}, {"batch_size", o.batch_size},
                {"seed", o.seed}, {"proximal_mu", o.proximal_mu}, {"dp", o.dp.on}, {"noise_multiplier", o.dp.noise_multiplier}, {"max_grad_norm", o.dp.max_grad_norm}};
    json reply;
    FEDPOD_RETURN_IF_ERROR(call(send_msg(sock_, req), reply, "training", cancel));
    TrainStats s;
    try {
      s.steps = reply.at("steps").get<int64_t>();
      s.samples_seen = reply.at("samples_seen").get<int64_t>();
      s.loss = reply.at("loss").get<double>();
      s.accuracy = reply.at("accuracy").get<double>();
    } catch (const json::exception& e) {
      return Status::bad_message(std::string("runner: malformed train reply: ") + e.what());
    }
    return s;
  }

  StatusOr<EvalStats> evaluate(Split split, int64_t batch, const std::atomic<bool>* cancel) override {
    json req = {{"op", "evaluate"}, {"split", static_cast<int>(split)}, {"batch_size", batch}};
    json reply;
    FEDPOD_RETURN_IF_ERROR(call(send_msg(sock_, req), reply, "evaluating", cancel));
    EvalStats s;
    try {
      s.samples = reply.at("samples").get<int64_t>();
      s.loss = reply.at("loss").get<double>();
      s.accuracy = reply.at("accuracy").get<double>();
    } catch (const json::exception& e) {
      return Status::bad_message(std::string("runner: malformed evaluate reply: ") + e.what());
    }
    return s;
  }

 private:
  std::shared_ptr<Mapping> map_;
  torch::Tensor state_;
};

// The coordinator's side (load_in_runner).
class RunnerModel : public ModelRunner, private RunnerProcess {
 public:
  Status load(const std::string& name, const std::string& format, std::string_view artifact, const RunnerOptions& o,
              const std::string& who) {
    confinement_ = o.confinement.level;
    FEDPOD_RETURN_IF_ERROR(launch(o, who, false, false));
    std::vector<int> fds;
    if (!format.empty()) {
      auto art = sealed_memfd("fedpod-artifact", artifact.data(), artifact.size());
      if (!art.ok()) return art.status();
      fds.push_back(*art);
    }
    Status sent = send_msg(sock_, {{"op", "load"}, {"ref", name}, {"format", format}}, fds);
    for (int fd : fds) ::close(fd);
    json reply;
    FEDPOD_RETURN_IF_ERROR(in_step(call(sent, reply, "loading the model", nullptr, o.limits.load_timeout), "loading"));
    if (reply.value("op", "") != "loaded") return Status::bad_message("runner: expected loaded");
    auto hp = hyperparameters_from(reply.value("hyperparameters", json()));
    if (!hp.ok()) return hp.status();
    declared_ = std::move(*hp);
    return Status();
  }

  const std::optional<model::HyperparameterSpec>& hyperparameters() const override { return declared_; }
  const std::string& confinement() const override { return confinement_; }

  StatusOr<BuiltModel> create(const std::vector<int64_t>& input_shape, int64_t num_classes, const Hyperparameters& hp,
                              uint64_t seed) override {
    json req = {{"op", "create"},
                {"input_shape", input_shape},
                {"num_classes", num_classes},
                {"hyperparameters", hp.json()},
                {"seed", seed}};
    json reply;
    FEDPOD_RETURN_IF_ERROR(in_step(
        call(send_msg(sock_, req), reply, "creating the model", nullptr, options_.limits.load_timeout), "creating"));
    if (reply.value("op", "") != "created") return Status::bad_message("runner: expected created");
    auto layout = layout_from(reply.value("layout", json::array()));
    if (!layout.ok()) return layout.status();
    BuiltModel built;
    built.layout = std::move(*layout);
    const int64_t numel = built.layout.empty() ? 0 : built.layout.back().offset + built.layout.back().numel;
    FEDPOD_RETURN_IF_ERROR(within_memory(numel));
    // The initial values come back through a shared region, then are copied out of
    // it: the runner could still write to the region until it is gone.
    auto region = shared_region(static_cast<size_t>(numel) * sizeof(float));
    if (!region.ok()) return region.status();
    Status sent = send_msg(sock_, {{"op", "initial"}, {"bytes", numel * 4}}, {region->first});
    ::close(region->first);
    FEDPOD_RETURN_IF_ERROR(call(sent, reply, "writing the initial parameters", nullptr, options_.limits.load_timeout));
    stop();
    built.state = numel ? torch::from_blob(region->second->addr, {numel}, torch::kFloat32).clone()
                        : torch::zeros({0}, torch::kFloat32);
    if (!torch::isfinite(built.state).all().item<bool>()) {
      return Status::invalid(who_ + ": the model's initial parameters are not all finite");
    }
    return built;
  }

 private:
  // The model's own errors name the step ("creating the model: ..."); the runner's
  // fate (crash, limit) already does.
  Status in_step(const Status& st, const std::string& step) const {
    if (st.ok() || st.message().rfind(who_ + ": ", 0) == 0) return st;
    return Status(st.code(), step + " the model: " + st.message());
  }

  std::optional<model::HyperparameterSpec> declared_;
  std::string confinement_;
};

// ---- the runner's side ----

class RunnerServer {
 public:
  RunnerServer(int sock, const Runtime& runtime) : sock_(sock), runtime_(runtime) {}

  int serve() {
    while (true) {
      json req;
      Fds fds;
      Status st = recv_msg(sock_, req, fds, Clock::time_point::max(), nullptr);
      if (!st.ok()) return st.code() == StatusCode::kUnavailable ? 0 : 2;
      json reply;
      try {
        reply = handle(req, fds);
      } catch (const c10::Error& e) {
        reply = error_json(Status::internal(e.what_without_backtrace()));
      } catch (const std::exception& e) {
        reply = error_json(Status::internal(e.what()));
      }
      if (!send_msg(sock_, reply).ok()) return 0;
    }
  }

 private:
  json handle(const json& req, Fds& fds) {
    const std::string op = req.value("op", "");
    if (op == "init") return init(req, fds);
    if (op == "load") return load(req, fds);
    if (op == "create" || op == "initial") return create(op, req, fds);
    if (!engine_) return error_json(Status::failed_precondition("runner: no job yet"));
    if (op == "state") {
      int fd = fds.take(0);
      if (fd < 0) return error_json(Status::bad_message("runner: state without its region"));
      auto m = map_fd(fd, static_cast<size_t>(engine_->numel()) * sizeof(float), true);
      ::close(fd);
      if (!m.ok()) return error_json(m.status());
      state_map_ = *m;
      state_ = engine_->numel() ? torch::from_blob(state_map_->addr, {engine_->numel()}, torch::kFloat32)
                                : torch::zeros({0});
      // The model lives in the shared region when it can: no copy in or out.
      shared_ = engine_->numel() > 0 && engine_->share_state(state_);
      return {{"op", "ok"}, {"shared", shared_}};
    }
    if (!state_.defined()) return error_json(Status::failed_precondition("runner: no state region"));
    if (op == "train") {
      FEDPOD_RETURN_IF_ERROR_JSON(load_state());
      TrainOptions o;
      o.epochs = req.at("epochs").get<int64_t>();
      o.steps = req.at("steps").get<int64_t>();
      o.batch_size = req.at("batch_size").get<int64_t>();
      o.seed = req.at("seed").get<uint64_t>();
      o.proximal_mu = req.value("proximal_mu", 0.0);
      o.dp.on = req.value("dp", false);
      o.dp.noise_multiplier = req.value("noise_multiplier", 0.0);
      o.dp.max_grad_norm = req.value("max_grad_norm", 1.0);
      auto stats = engine_->train(o, nullptr);
      if (!stats.ok()) return error_json(stats.status());
      if (!shared_) {
        auto [flat, keep] = engine_->read_state();
        state_.copy_(flat);
      }
      return {{"op", "trained"}, {"steps", stats->steps}, {"samples_seen", stats->samples_seen},
              {"loss", stats->loss}, {"accuracy", stats->accuracy}};
    }
    if (op == "evaluate") {
      FEDPOD_RETURN_IF_ERROR_JSON(load_state());
      auto stats = engine_->evaluate(static_cast<Split>(req.at("split").get<int>()), req.at("batch_size").get<int64_t>(),
                                     nullptr);
      if (!stats.ok()) return error_json(stats.status());
      return {{"op", "evaluated"}, {"samples", stats->samples}, {"loss", stats->loss}, {"accuracy", stats->accuracy}};
    }
    return error_json(Status::bad_message("runner: unknown op '" + op + "'"));
  }

  // The state region into the model.
  Status load_state() {
    if (shared_) {
      engine_->state_written();
      return Status();
    }
    std::vector<torch::Tensor> views;
    for (const auto& p : engine_->layout()) views.push_back(state_.narrow(0, p.offset, p.numel));
    return engine_->write_state(views);
  }

  // For a coordinator: loads the model alone (no data), says what it declares.
  json load(const json& req, Fds& fds) {
    if (engine_ || model_) return error_json(Status::failed_precondition("runner: one model per runner"));
    const std::string ref = req.at("ref").get<std::string>(), format = req.at("format").get<std::string>();
    if (format.empty()) {
      model_ = runtime_.make_model(ref);
      if (!model_) return error_json(Status::not_found("model '" + ref + "' is not a built-in model"));
    } else {
      artifact_fd_ = fds.take(0);
      if (artifact_fd_ < 0) return error_json(Status::bad_message("runner: a custom model without its artifact"));
      auto m = runtime_.load_custom("/proc/self/fd/" + std::to_string(artifact_fd_), format);
      if (!m.ok()) return error_json(m.status());
      model_ = std::move(*m);
    }
    std::optional<model::HyperparameterSpec> declared;
    try {
      declared = model_->hyperparameters();
    } catch (const std::exception& e) {
      return error_json(Status::invalid(std::string("hyperparameters() failed: ") + e.what()));
    }
    return {{"op", "loaded"}, {"hyperparameters", hyperparameters_json(declared)}};
  }

  // create: create_model, seeded; initial: its state into the region passed.
  json create(const std::string& op, const json& req, Fds& fds) {
    if (!model_) return error_json(Status::failed_precondition("runner: no model loaded"));
    if (op == "create") {
      if (created_) return error_json(Status::failed_precondition("runner: the model exists already"));
      torch::manual_seed(req.at("seed").get<uint64_t>());
      try {
        model_->create_model(req.at("input_shape").get<std::vector<int64_t>>(), req.at("num_classes").get<int64_t>(),
                             Hyperparameters(req.at("hyperparameters")));
      } catch (const ConfigError& e) {
        return error_json(Status::invalid(e.what()));
      } catch (const c10::Error& e) {
        return error_json(Status::invalid(e.what_without_backtrace()));
      }
      created_ = true;
      return {{"op", "created"}, {"layout", layout_json(model_->flat().layout())}};
    }
    if (!created_) return error_json(Status::failed_precondition("runner: no model created"));
    int fd = fds.take(0);
    if (fd < 0) return error_json(Status::bad_message("runner: initial without its region"));
    torch::Tensor flat = model_->flat().tensor();
    auto m = map_fd(fd, static_cast<size_t>(flat.numel()) * sizeof(float), true);
    ::close(fd);
    if (!m.ok()) return error_json(m.status());
    if (flat.numel()) {
      torch::from_blob((*m)->addr, {flat.numel()}, torch::kFloat32).copy_(flat.reshape({-1}).to(torch::kFloat32));
    }
    return {{"op", "ok"}};
  }

  json init(const json& req, Fds& fds) {
    if (engine_ || model_) return error_json(Status::failed_precondition("runner: one job per runner"));
    const int64_t rows = req.at("rows").get<int64_t>(), cols = req.at("cols").get<int64_t>();
    int table_fd = fds.take(0);
    if (table_fd < 0) return error_json(Status::bad_message("runner: init without the table"));
    auto m = map_fd(table_fd, static_cast<size_t>(rows * cols) * sizeof(double), false);
    ::close(table_fd);
    if (!m.ok()) return error_json(m.status());
    table_map_ = *m;
    table_.schema = schema_from(req.at("schema"));
    table_.values = rows * cols != 0 ? torch::from_blob(table_map_->addr, {rows, cols}, torch::kFloat64)
                                : torch::zeros({rows, cols}, torch::kFloat64);
    EngineSpec spec;
    spec.ref = req.at("ref").get<std::string>();
    spec.format = req.at("format").get<std::string>();
    spec.hp = Hyperparameters(req.at("hyperparameters"));
    spec.ds = datastructure_from(req.at("datastructure"));
    spec.seed = req.at("seed").get<uint64_t>();
    spec.devices = req.at("devices").get<std::vector<std::string>>();
    spec.threads = req.at("threads").get<int>();
    spec.threads_per_replica = req.at("threads_per_replica").get<int>();
    spec.pod = req.at("pod").get<std::string>();
    if (!spec.format.empty()) {
      artifact_fd_ = fds.take(1);
      if (artifact_fd_ < 0) return error_json(Status::bad_message("runner: a custom model without its artifact"));
      // Loaded from the in-memory file itself: nothing of it is written anywhere.
      spec.artifact_path = "/proc/self/fd/" + std::to_string(artifact_fd_);
    }
    auto engine = make_local_engine(spec, table_, runtime_);
    if (!engine.ok()) return error_json(engine.status());
    engine_ = std::move(*engine);
    return {{"op", "ready"},          {"layout", layout_json(engine_->layout())},
            {"train", engine_->train_size}, {"validation", engine_->validation_size},
            {"test", engine_->test_size},   {"replicas", engine_->replicas},
            {"allreduce", engine_->allreduce}};
  }

  int sock_;
  const Runtime& runtime_;
  data::Table table_;
  std::shared_ptr<Mapping> table_map_, state_map_;
  torch::Tensor state_;
  bool shared_ = false;  // the model's own buffer is the shared region
  int artifact_fd_ = -1;
  std::unique_ptr<JobEngine> engine_;
  std::unique_ptr<model::Model> model_;  // load/create (a coordinator's runner)
  bool created_ = false;
};

}  // namespace

int landlock_abi() {
  const long v = ::syscall(__NR_landlock_create_ruleset, nullptr, 0, 1U /* LANDLOCK_CREATE_RULESET_VERSION */);
  return v < 0 ? -errno : static_cast<int>(v);
}

Confinement probe_confinement(const std::vector<std::string>& command) {
  if (command.empty()) throw ConfigError("no runner command");
  // Runs a probe; true when it exits 0. `out`: what it wrote to stderr.
  auto run_probe = [&](const std::vector<std::string>& argv, std::string& out, std::string& err) -> bool {
    out.clear();
    auto child = spawn(argv, -1, RunnerLimits(), "", true);
    if (!child.ok()) {
      err = child.status().message();
      return false;
    }
    char buf[512];
    ssize_t n;
    while ((n = ::read(child->stderr_pipe, buf, sizeof buf)) > 0 && out.size() < 4096) out.append(buf, n);
    ::close(child->stderr_pipe);
    int status = 0;
    while (::waitpid(child->pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    std::string text = out;
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    err = text.empty() ? "exit status " + std::to_string(status) : text.substr(0, text.find('\n'));
    return false;
  };
  std::vector<std::string> inner = command;
  inner.push_back("--probe");
  Confinement c;
  const std::string bwrap = find_on_path("bwrap");
  std::string out, err;
  if (bwrap.empty()) {
    c.why_not = "bubblewrap (bwrap) is not installed";
  } else if (run_probe(bwrap_argv(bwrap, inner, false), out, err)) {
    c.namespaces = true;
    c.level = "namespaces+seccomp+rlimits";
    return c;
  } else {
    c.why_not = "bubblewrap failed: " + err;
  }
  // No mount namespace: Landlock, where the kernel has it, confines the files.
  std::vector<std::string> landlocked = inner;
  landlocked.push_back("--landlock");
  const bool landlock_ran = run_probe(landlocked, out, err);
  if (landlock_ran && out.find(kLandlockProbeLine) != std::string::npos) {
    c.landlock = true;
    c.level = "landlock+seccomp+rlimits";
    c.gap = "model code opens only the system's libraries and its scratch directory (Landlock), but shares this "
            "machine's process and IPC namespaces; it still has no network, no new processes and the runner's limits";
    return c;
  }
  const std::string no_landlock = landlock_ran ? "Landlock: the runner did not confirm its layer" : err;
  if (!run_probe(inner, out, err)) throw ConfigError("the job runner (" + command.front() + ") cannot start: " + err);
  c.why_not += "; " + no_landlock;
  c.level = "seccomp+rlimits";
  c.gap = "model code can read what this pod's user can read; it still has no network, no new processes and the "
          "runner's limits";
  return c;
}

StatusOr<std::unique_ptr<JobEngine>> start_runner(const EngineSpec& spec, const data::Table& table,
                                                  std::string_view artifact, const RunnerOptions& options,
                                                  const std::atomic<bool>* cancel) {
  auto engine = std::make_unique<RunnerEngine>();
  Status st = engine->start(spec, table, artifact, options, cancel);
  if (!st.ok()) return st;
  return std::unique_ptr<JobEngine>(std::move(engine));
}

StatusOr<std::unique_ptr<ModelRunner>> load_in_runner(const std::string& name, const std::string& format,
                                                      std::string_view artifact, const RunnerOptions& options,
                                                      const std::string& who) {
  auto m = std::make_unique<RunnerModel>();
  Status st = m->load(name, format, artifact, options, who);
  if (!st.ok()) return st;
  return std::unique_ptr<ModelRunner>(std::move(m));
}

int runner_main(int argc, char** argv, const Runtime& runtime) {
  int fd = kRunnerFd;
  bool probe = false, allow_inet = false, use_landlock = false, gpus = false, no_sockets = false;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--probe") probe = true;
    if (a == "--allow-inet") allow_inet = true;
    if (a == "--landlock") use_landlock = true;
    if (a == "--gpus") gpus = true;
    if (a == "--no-sockets") no_sockets = true;
    if (a == "--fd" && i + 1 < argc) fd = std::atoi(argv[++i]);
  }
  ::signal(SIGPIPE, SIG_IGN);
  // Ends with _exit: no exit handlers run under the filter (model code's static
  // destructors, a sanitizer's leak check that would ptrace).
  auto finish = [](int code) {
    std::fflush(nullptr);
    ::_exit(code);
  };
  if (use_landlock) {
    int abi = 0;
    Status landlocked = apply_landlock(gpus, abi);
    if (!landlocked.ok()) {
      std::fprintf(stderr, "fedpod runner: cannot confine its files: %s\n", landlocked.message().c_str());
      finish(4);
    }
    if (probe) std::fprintf(stderr, "%s%d\n", kLandlockProbeLine, abi);
  }
  Status st = load_seccomp(allow_inet, no_sockets && !allow_inet);
  if (!st.ok()) {
    std::fprintf(stderr, "fedpod runner: cannot load its syscall filter: %s\n", st.message().c_str());
    finish(3);
  }
  if (probe) finish(0);
  finish(RunnerServer(fd, runtime).serve());
  return 0;  // not reached
}

}  // namespace fedpod::worker
