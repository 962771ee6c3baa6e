#include "netns.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <regex>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace fedpod::testing {

namespace {

namespace fs = std::filesystem;

// `name` as an absolute path: PATH first, then where iproute2 lives on Debian.
std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (dir.empty()) continue;
    const fs::path p = fs::path(dir) / name;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

std::string join(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + a;
  return out;
}

// Throws with the command and what it printed unless it exited 0.
void must(const std::vector<std::string>& argv) {
  CommandResult r = run_command(argv);
  if (r.code != 0) {
    throw std::runtime_error("`" + join(argv) + "` failed (exit " + std::to_string(r.code) +
                             "): " + r.output);
  }
}

uint64_t read_counter(const std::string& iface, const char* counter) {
  std::ifstream in("/sys/class/net/" + iface + "/statistics/" + counter);
  uint64_t v = 0;
  in >> v;
  return v;
}

// Namespace names: fedpod-<pid>-<k>; the root end of the veth: fp<pid>h<k>.
const std::regex kNamePattern("fedpod-([0-9]+)-([0-9]+)");

// Removes namespaces (and their processes and veth pairs) left by runs whose process
// is gone: a test that crashed never ran its destructors.
void remove_stale_namespaces(const std::string& ip) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, kNamePattern)) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(m[1]));
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::cerr << "netns: removing " << name << ", left by process " << pid
              << " (no longer running)\n";
    std::stringstream pids(run_command({ip, "netns", "pids", name}).output);
    for (long p; pids >> p;) ::kill(static_cast<pid_t>(p), SIGKILL);
    run_command({ip, "link", "del", "fp" + m[1].str() + "h" + m[2].str()});
    run_command({ip, "netns", "del", name});
  }
}

std::atomic<int> next_index{0};

}  // namespace

CommandResult run_command(const std::vector<std::string>& argv) {
  CommandResult r;
  std::vector<std::string> full;
  const std::string timeout = find_program("timeout");
  if (!timeout.empty()) full = {timeout, "10"};
  const std::string program = find_program(argv.at(0));
  if (program.empty()) {
    r.output = argv[0] + ": not found on PATH, /usr/sbin or /sbin";
    return r;
  }
  full.push_back(program);
  full.insert(full.end(), argv.begin() + 1, argv.end());
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    r.output = std::string("pipe: ") + std::strerror(errno);
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  std::vector<char*> args;
  for (auto& a : full) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    r.output = "cannot start " + full[0] + ": " + std::strerror(rc);
    return r;
  }
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    r.output.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  while (!r.output.empty() && (r.output.back() == '\n' || r.output.back() == ' '))
    r.output.pop_back();
  return r;
}

const std::string& NetNs::unavailable_reason() {
  static const std::string reason = [] {
    if (::geteuid() != 0) {
      return "not root (euid " + std::to_string(::geteuid()) +
             "): network namespaces and veth pairs need CAP_SYS_ADMIN and CAP_NET_ADMIN";
    }
    if (find_program("ip").empty()) return std::string("`ip` (iproute2) is not installed");
    try {
      NetNs probe;
      std::vector<std::string> argv = probe.exec_prefix();
      argv.push_back("true");
      CommandResult r = run_command(argv);
      if (r.code != 0)
        return "`" + join(argv) + "` failed (exit " + std::to_string(r.code) + "): " + r.output;
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  return reason;
}

NetNs::NetNs() {
  const std::string ip = find_program("ip");
  if (ip.empty()) throw std::runtime_error("`ip` (iproute2) is not installed");
  static std::once_flag stale_once;
  std::call_once(stale_once, [&] { remove_stale_namespaces(ip); });

  const int pid = static_cast<int>(::getpid());
  const int k = next_index++;
  name_ = "fedpod-" + std::to_string(pid) + "-" + std::to_string(k);
  host_if_ = "fp" + std::to_string(pid) + "h" + std::to_string(k);
  pod_if_ = "fp" + std::to_string(pid) + "p" + std::to_string(k);

  // A /30 in 10.64.0.0/11 (2^19 of them): 14 bits of the pid, 5 of the counter;
  // the next free one when that is routed already.
  constexpr uint32_t kSlots = 1u << 19;
  uint32_t slot =
      ((static_cast<uint32_t>(pid) % (1u << 14)) << 5 | (static_cast<uint32_t>(k) & 31u)) % kSlots;
  auto dotted = [](uint32_t a) {
    return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
           std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255);
  };
  for (int attempt = 0;; ++attempt, slot = (slot + 1) % kSlots) {
    const uint32_t net = (10u << 24) + (64u << 16) + slot * 4;
    CommandResult routed = run_command({ip, "-4", "route", "show", "root", dotted(net) + "/30"});
    if (routed.code == 0 && routed.output.empty()) {
      host_address_ = dotted(net + 1);
      pod_address_ = dotted(net + 2);
      break;
    }
    if (attempt == 64) throw std::runtime_error("no free /30 in 10.64.0.0/11 near " + dotted(net));
  }

  try {
    must({ip, "netns", "add", name_});
    must({ip, "link", "add", host_if_, "type", "veth", "peer", "name", pod_if_, "netns", name_});
    must({ip, "addr", "add", host_address_ + "/30", "dev", host_if_});
    must({ip, "link", "set", host_if_, "up"});
    must({ip, "-n", name_, "addr", "add", pod_address_ + "/30", "dev", pod_if_});
    must({ip, "-n", name_, "link", "set", pod_if_, "up"});
    must({ip, "-n", name_, "link", "set", "lo", "up"});
  } catch (...) {
    run_command({ip, "link", "del", host_if_});
    run_command({ip, "netns", "del", name_});
    throw;
  }
}

NetNs::~NetNs() {
  // Processes first (a test that failed early may have left one), then the link
  // (both ends go with it), then the name.
  std::stringstream pids(run_command({"ip", "netns", "pids", name_}).output);
  for (long p; pids >> p;) ::kill(static_cast<pid_t>(p), SIGKILL);
  run_command({"ip", "link", "del", host_if_});
  CommandResult r = run_command({"ip", "netns", "del", name_});
  if (r.code != 0) std::cerr << "netns: cannot delete " << name_ << ": " << r.output << "\n";
}

std::vector<std::string> NetNs::exec_prefix() const {
  return {find_program("ip"), "netns", "exec", name_};
}

void NetNs::cut() { must({"ip", "-n", name_, "link", "set", pod_if_, "down"}); }

void NetNs::restore() {
  must({"ip", "-n", name_, "link", "set", pod_if_, "up"});
  // Pass-through in place: what the qdisc holds is delivered, not dropped.
  for (int end = 0; end < 2; ++end) {
    std::vector<std::string> argv = {"tc"};
    if (end == 1) argv.insert(argv.end(), {"-n", name_});
    argv.insert(argv.end(), {"qdisc", "change", "dev", end == 0 ? host_if_ : pod_if_, "root"});
    if (shaping_[end] == Shaping::kTbf) {
      argv.insert(argv.end(), {"tbf", "rate", "10gbit", "burst", "4mb", "latency", "1s"});
    } else if (shaping_[end] == Shaping::kNetem) {
      argv.insert(argv.end(), {"netem", "delay", "0ms", "limit", "100000"});
    } else {
      continue;
    }
    must(argv);
  }
}

bool NetNs::shape(Direction dir, const std::string& kind, const std::vector<std::string>& params,
                  std::string* why) {
  for (int end = 0; end < 2; ++end) {
    if ((end == 0 && dir == Direction::kFromPod) || (end == 1 && dir == Direction::kToPod))
      continue;
    std::vector<std::string> argv = {"tc"};
    if (end == 1) argv.insert(argv.end(), {"-n", name_});
    argv.insert(argv.end(), {"qdisc", shaping_[end] == Shaping::kNone ? "add" : "replace", "dev",
                             end == 0 ? host_if_ : pod_if_, "root", kind});
    argv.insert(argv.end(), params.begin(), params.end());
    CommandResult r = run_command(argv);
    if (r.code != 0) {
      if (why)
        *why = "`" + join(argv) + "` failed (exit " + std::to_string(r.code) + "): " + r.output;
      return false;
    }
    shaping_[end] = kind == "tbf" ? Shaping::kTbf : Shaping::kNetem;
  }
  return true;
}

bool NetNs::slow(int64_t bytes_per_second, Direction dir, std::string* why) {
  // burst: one full-size frame (1514 bytes on a 1500-byte MTU), so the rate holds
  // from the first packet on; latency: long enough that tbf queues rather than drops.
  return shape(
      dir, "tbf",
      {"rate", std::to_string(bytes_per_second * 8) + "bit", "burst", "1600", "latency", "60s"},
      why);
}

bool NetNs::delay(std::chrono::milliseconds d, Direction dir, std::string* why) {
  return shape(dir, "netem", {"delay", std::to_string(d.count()) + "ms", "limit", "100000"}, why);
}

uint64_t NetNs::bytes_to_pod() const { return read_counter(host_if_, "tx_bytes"); }

uint64_t NetNs::bytes_from_pod() const { return read_counter(host_if_, "rx_bytes"); }

}  // namespace fedpod::testing
