// process_* metrics and fedpod_build_info (metrics.h: process_families), read from
// /proc/self at each scrape.
#include <dirent.h>
#include <openssl/crypto.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.h>

#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <string>

#include "fedpod/metrics/metrics.h"

namespace fedpod::metrics {
namespace {

std::mutex g_component_mu;
std::string g_component = "fedpod";

prometheus::MetricFamily one(const std::string& name, const std::string& help, prometheus::MetricType type,
                             double value) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

// The fields of /proc/self/stat after the command name (which may hold spaces).
std::vector<std::string> stat_fields() {
  std::ifstream in("/proc/self/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out;
  const auto close = text.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream rest(text.substr(close + 2));
  for (std::string f; rest >> f;) out.push_back(f);
  return out;  // out[0] is field 3 (state)
}

double boot_time() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("btime ", 0) == 0) return std::stod(line.substr(6));
  }
  return 0;
}

int open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n - 1;  // the descriptor opendir itself holds
}

}  // namespace

void set_component(const std::string& component) {
  std::lock_guard<std::mutex> lock(g_component_mu);
  g_component = component;
}

std::vector<prometheus::MetricFamily> process_families() {
  using prometheus::MetricType;
  std::vector<prometheus::MetricFamily> out;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  const auto f = stat_fields();
  // stat fields (1-based): utime 14, stime 15, starttime 22, vsize 23, rss 24.
  if (f.size() > 21 && tick > 0) {
    out.push_back(one("process_cpu_seconds_total", "User and system CPU time of this process, in seconds",
                      MetricType::Counter, (std::stod(f[11]) + std::stod(f[12])) / tick));
    out.push_back(one("process_start_time_seconds", "Start time of this process since the Unix epoch, in seconds",
                      MetricType::Gauge, boot_time() + std::stod(f[19]) / tick));
    out.push_back(one("process_virtual_memory_bytes", "Virtual memory size of this process, in bytes",
                      MetricType::Gauge, std::stod(f[20])));
    out.push_back(one("process_resident_memory_bytes", "Resident memory size of this process, in bytes",
                      MetricType::Gauge, std::stod(f[21]) * page));
  }
  if (const int fds = open_fds(); fds >= 0) {
    out.push_back(one("process_open_fds", "Open file descriptors of this process", MetricType::Gauge, fds));
  }
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    out.push_back(one("process_max_fds", "The limit on open file descriptors of this process", MetricType::Gauge,
                      static_cast<double>(lim.rlim_cur)));
  }
  int major = 0, minor = 0, patch = 0;
  zmq_version(&major, &minor, &patch);
  auto info = one("fedpod_build_info", "Always 1; the build and the process in its labels", MetricType::Gauge, 1);
  {
    std::lock_guard<std::mutex> lock(g_component_mu);
    info.metric[0].label = {{"component", g_component},
                            {"version", FEDPOD_VERSION},
                            {"zeromq", std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch)},
                            {"curve", zmq_has("curve") ? "yes" : "no"},
                            {"tls", OpenSSL_version(OPENSSL_VERSION)}};
  }
  out.push_back(std::move(info));
  return out;
}

}  // namespace fedpod::metrics
