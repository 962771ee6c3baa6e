// Pods that fail or stall, as real `fedpod worker` processes under a real
// `fedpod coordinator run` (CURVE on loopback):
//
//   - a pod SIGKILLed mid-round and restarted: the round goes on with min_pods, the
//     pod takes the job again (startJob) before a later round and trains again;
//   - a straggler (SIGSTOPped past round_timeout, heartbeats off): excluded from the
//     round as "timeout", counted, and its late update discarded, never folded;
//   - a silent pod (SIGSTOPped, heartbeats on): excluded as "silent" long before the
//     round's deadline, and back in the job once it wakes up;
//   - pods that cannot be reached before round 1 (nothing listening, a name that does
//     not resolve, a wrong server key, a port that accepts TCP but speaks no ZMTP):
//     each left out with its own cause, in history.json, the console and the report;
//   - a pod SIGKILLed leaves its sockets' directory in TMPDIR; the next pod started
//     there removes it, and leaves a living pod's alone.
//
// Outcomes are read from history.json; nothing here asserts how long anything took.
#include <gtest/gtest.h>
#include <signal.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "fault_jobs.h"
#include "identity.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

class PodFaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"pod-a", "pod-b", "pod-c"}) {
      pods_.push_back(testing::start_digits_pod(dir_, id_, name));
      ASSERT_FALSE(pods_.back().endpoint.empty()) << testing::read_file(pods_.back().log);
    }
  }

  std::string out() const { return (dir_.path() / "out").string(); }

  // Starts the job; `extra` sets rounds, timeouts and heartbeats.
  std::unique_ptr<testing::Process> start_job(const std::string& extra) {
    std::vector<const testing::PodProcess*> pods;
    for (const auto& p : pods_) pods.push_back(&p);
    // A wider model makes each local round last long enough to be interrupted.
    std::string yaml = testing::digits_job_yaml(id_, pods, out(), "min_pods: 2\n" + extra);
    yaml.replace(yaml.find("hidden: [64]"), 12, "hidden: [512, 512]");
    return std::make_unique<testing::Process>(testing::coordinator_argv(dir_.write("job.yaml", yaml)), log_);
  }

  // Waits until the coordinator printed `text` (e.g. "round 2/").
  bool wait_for_progress(testing::Process& c, const std::string& text) {
    const auto by = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < by) {
      if (testing::read_file(log_).find(text) != std::string::npos) return true;
      if (!c.running()) return false;
      std::this_thread::sleep_for(2ms);
    }
    return false;
  }

  // Waits until `pod`'s log shows it started training round `round`... or finished
  // it: the moment after which a fault lands mid-round.
  bool wait_for_pod_round(const testing::PodProcess& pod, int round) {
    const std::string started = "round=" + std::to_string(round);
    const auto by = std::chrono::steady_clock::now() + 120s;
    while (std::chrono::steady_clock::now() < by) {
      if (testing::read_file(pod.log).find("event=train_started job=fault-test " + started) != std::string::npos) {
        return true;
      }
      std::this_thread::sleep_for(1ms);
    }
    return false;
  }

  // Stops pod-b (SIGSTOP) once it trains round 2, and wakes it when the coordinator
  // has closed that round without it.
  void stop_pod_b_through_round_2(testing::Process& c) {
    testing::PodProcess& b = pods_[1];
    ASSERT_TRUE(wait_for_pod_round(b, 2)) << testing::read_file(b.log);
    ::kill(b.process->pid(), SIGSTOP);
    const bool closed = wait_for_progress(c, "round 2/6");
    ::kill(b.process->pid(), SIGCONT);
    ASSERT_TRUE(closed) << testing::read_file(log_);
  }

  int finish(testing::Process& c) {
    const int status = c.wait(240s);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
  std::vector<testing::PodProcess> pods_;
  std::string log_ = (dir_.path() / "coordinator.log").string();
};

TEST_F(PodFaultTest, APodKilledMidRoundAndRestartedRejoinsTheNextRound) {
  auto c = start_job("rounds: 6\nround_timeout: 60s\n");
  testing::PodProcess& b = pods_[1];
  ASSERT_TRUE(wait_for_pod_round(b, 3)) << testing::read_file(b.log);
  // Real rounds last minutes and a pod restarts in seconds; here a round lasts less
  // than a restart, so the coordinator is paused while pod-b dies and comes back.
  ::kill(c->pid(), SIGSTOP);
  b.process->kill(SIGKILL);
  b.process->wait(10s);
  testing::restart_pod(dir_, b);
  ::kill(c->pid(), SIGCONT);
  ASSERT_EQ(finish(*c), 0) << testing::read_file(log_);

  const auto history = testing::read_history(out());
  EXPECT_EQ(history["status"], "completed");
  const auto b_rounds = testing::outcomes(history, "pod-b");
  ASSERT_EQ(b_rounds.size(), 6u);
  // Round 3 went on without pod-b; the other pods answered every round.
  EXPECT_NE(b_rounds[2], "ok") << history["rounds"][2].dump();
  for (const char* other : {"pod-a", "pod-c"}) {
    for (const auto& o : testing::outcomes(history, other)) EXPECT_EQ(o, "ok") << other;
  }
  // It took the job again and trained in every round after that.
  int rejoined_at = 0;
  for (const auto& r : history["rounds"]) {
    if (r.contains("rejoined") && r["rejoined"] == nlohmann::json::array({"pod-b"})) rejoined_at = r["round"];
  }
  ASSERT_GE(rejoined_at, 4) << history.dump(1);
  for (int r = rejoined_at; r <= 6; ++r) EXPECT_EQ(b_rounds[r - 1], "ok") << "round " << r;
  EXPECT_EQ(history["discarded_replies_by_reason"]["duplicate"], 0);
  EXPECT_CONTAINS(testing::read_file(log_), "pod-b rejoined before round " + std::to_string(rejoined_at));
  testing::record_fault("pods", "pod SIGKILLed mid-round, restarted at once", 1,
                        "round completed with 2/3 pods; pod took the job again (rejoined) and trained from round " +
                            std::to_string(rejoined_at) + "; job completed",
                        "the killed pod's update for that round");
}

TEST_F(PodFaultTest, AStragglerPastTheDeadlineIsExcludedAndItsLateUpdateDiscarded) {
  // Heartbeats off: only the deadline can exclude the straggler.
  auto c = start_job("rounds: 6\nround_timeout: 3s\nheartbeat_timeout: 0\n");
  ASSERT_NO_FATAL_FAILURE(stop_pod_b_through_round_2(*c));
  ASSERT_EQ(finish(*c), 0) << testing::read_file(log_);

  const auto history = testing::read_history(out());
  const auto b_rounds = testing::outcomes(history, "pod-b");
  EXPECT_EQ(b_rounds[1], "timeout") << history["rounds"][1].dump();
  EXPECT_EQ(history["rounds"][1]["pods_answered"], 2);
  // Its round-2 update arrived after the round closed: discarded, not folded.
  EXPECT_GE(history["discarded_replies_by_reason"]["closed_round"].get<int>(), 1) << history.dump(1);
  EXPECT_EQ(history["discarded_replies_by_reason"]["duplicate"], 0);
  EXPECT_EQ(b_rounds.back(), "ok");  // and it is back in the job
  testing::record_fault("pods", "straggler: pod stopped (SIGSTOP) past round_timeout, heartbeats off", 1,
                        "excluded from the round as timeout; its late update discarded (closed_round), never folded; "
                        "pod back in later rounds",
                        "the straggler's update for that round");
}

TEST_F(PodFaultTest, HeartbeatsFindASilentPodLongBeforeTheDeadline) {
  auto c = start_job("rounds: 6\nround_timeout: 120s\nheartbeat_interval: 200ms\nheartbeat_timeout: 1s\n");
  ASSERT_NO_FATAL_FAILURE(stop_pod_b_through_round_2(*c));
  ASSERT_EQ(finish(*c), 0) << testing::read_file(log_);

  const auto history = testing::read_history(out());
  const auto b_rounds = testing::outcomes(history, "pod-b");
  EXPECT_EQ(b_rounds[1], "silent") << history["rounds"][1].dump();
  // Found by its silence, not by the 120 s deadline.
  EXPECT_LT(history["rounds"][1]["seconds"].get<double>(), 60.0);
  EXPECT_EQ(history["rounds"][1]["pods_answered"], 2);
  EXPECT_EQ(b_rounds.back(), "ok");
  EXPECT_EQ(history["discarded_replies_by_reason"]["duplicate"], 0);
  testing::record_fault("pods", "silent pod: stopped (SIGSTOP) mid-round, heartbeats on (1 s timeout, 120 s deadline)",
                        1, "excluded as silent after ~1 s, long before the deadline; back in the job after it woke",
                        "the silent pod's update for that round");
}

// A TCP port that accepts connections (the kernel's backlog) and never says a word.
struct MutePort {
  MutePort() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 8) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("cannot open a listening socket");
    }
    port = ntohs(a.sin_port);
  }
  ~MutePort() { ::close(fd); }
  int fd = -1;
  int port = 0;
};

// A port nothing listens on: bound for a moment, then closed.
int closed_port() {
  MutePort p;
  return p.port;
}

TEST_F(PodFaultTest, PodsLeftOutBeforeRoundOneAreRecordedEachWithItsCause) {
  MutePort mute;
  testing::PodProcess refused{"pod-gone", "tcp://127.0.0.1:" + std::to_string(closed_port()), id_.pod_public_key("pod-x"), "", ""};
  testing::PodProcess unresolved{"pod-noname", "tcp://no-such-pod.invalid:5555", id_.pod_public_key("pod-x"), "", ""};
  // pod-c's address with another key: the pod cannot prove it holds it.
  testing::PodProcess wrong_key{"pod-wrongkey", pods_[2].endpoint, id_.pod_public_key("pod-x"), "", ""};
  testing::PodProcess mute_pod{"pod-mute", "tcp://127.0.0.1:" + std::to_string(mute.port), id_.pod_public_key("pod-x"), "", ""};
  std::string yaml = testing::digits_job_yaml(id_, {&pods_[0], &refused, &unresolved, &wrong_key, &mute_pod}, out(),
                                              "rounds: 2\nmin_pods: 1\nconnect_timeout: 3s\n");
  testing::Process c(testing::coordinator_argv(dir_.write("job.yaml", yaml)), log_);
  const int status = c.wait(120s);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(log_);

  const auto history = testing::read_history(out());
  const auto& pods = history["pods"];
  EXPECT_EQ(pods["pod-a"]["outcome"], "ok");
  const std::map<std::string, std::pair<std::string, std::string>> want = {
      {"pod-gone", {"unreachable", "connection_refused"}},
      {"pod-noname", {"unreachable", "name_not_resolved"}},
      {"pod-wrongkey", {"refused", "curve_refused"}},
      {"pod-mute", {"timeout", "no_handshake"}}};
  for (const auto& [name, oc] : want) {
    ASSERT_TRUE(pods.contains(name)) << name << ": " << pods.dump(1);
    EXPECT_EQ(pods[name]["outcome"], oc.first) << name << ": " << pods[name].dump();
    EXPECT_EQ(pods[name]["cause"], oc.second) << name << ": " << pods[name].dump();
    EXPECT_EQ(pods[name]["phase"], "hello");
    EXPECT_FALSE(pods[name].value("error", "").empty());
  }
  EXPECT_CONTAINS(pods["pod-gone"]["error"].get<std::string>(), "connection refused by 127.0.0.1:");
  EXPECT_CONTAINS(pods["pod-noname"]["error"].get<std::string>(), "'no-such-pod.invalid' does not resolve");
  EXPECT_CONTAINS(pods["pod-wrongkey"]["error"].get<std::string>(), "CURVE handshake");
  const std::string console = testing::read_file(log_);
  const std::string report = testing::read_file(out() + "/report.html");
  for (const auto& [name, oc] : want) {
    EXPECT_CONTAINS(console, name + ": left out: " + oc.first + " (" + oc.second + ")");
    EXPECT_CONTAINS(report, "<td>" + name + "</td><td>left out: " + oc.first + " at hello</td>");
  }
  EXPECT_CONTAINS(report, "connection refused by 127.0.0.1:");
  testing::record_fault("pods", "pods unreachable before round 1 (nothing listening, unknown name, wrong key, "
                                "a port that speaks no ZMTP)",
                        4, "each left out with its own cause in history.json, the console and report.html; the "
                           "job ran on the pods that answered",
                        "nothing");
}

// The directories named fedpod-gate-* in `tmp`.
std::set<std::string> gate_dirs(const std::filesystem::path& tmp) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(tmp)) {
    if (e.path().filename().string().rfind("fedpod-gate-", 0) == 0) out.insert(e.path().string());
  }
  return out;
}

TEST(PodFiles, AKilledPodsSocketDirectoryIsRemovedByTheNextPodAndALivingPodsIsNot) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path());
  const auto tmp = dir.path() / "tmp";
  std::filesystem::create_directory(tmp);
  std::optional<std::string> old_tmpdir;
  if (const char* t = std::getenv("TMPDIR")) old_tmpdir = t;
  ::setenv("TMPDIR", tmp.c_str(), 1);  // the pods below inherit it
  struct Restore {
    std::optional<std::string>& old;
    ~Restore() { old ? ::setenv("TMPDIR", old->c_str(), 1) : ::unsetenv("TMPDIR"); }
  } restore{old_tmpdir};

  auto killed = testing::start_digits_pod(dir, id, "pod-a", "general-modeller", "", "pod-a-1.log");
  ASSERT_FALSE(killed.endpoint.empty()) << testing::read_file(killed.log);
  const auto first = gate_dirs(tmp);
  ASSERT_EQ(first.size(), 1u);
  killed.process->kill(SIGKILL);
  killed.process->wait(10s);
  ASSERT_TRUE(std::filesystem::exists(*first.begin())) << "SIGKILL runs no destructor";
  // Older than a pod that has just made its directory and not yet locked it.
  std::filesystem::last_write_time(*first.begin(), std::filesystem::file_time_type::clock::now() - 2min);

  auto living = testing::start_digits_pod(dir, id, "pod-a", "general-modeller", "", "pod-a-2.log");
  ASSERT_FALSE(living.endpoint.empty()) << testing::read_file(living.log);
  const auto second = gate_dirs(tmp);
  ASSERT_EQ(second.size(), 1u) << "the killed pod's directory is still there";
  EXPECT_NE(*second.begin(), *first.begin());

  std::filesystem::last_write_time(*second.begin(), std::filesystem::file_time_type::clock::now() - 2min);
  auto third = testing::start_digits_pod(dir, id, "pod-b", "general-modeller", "", "pod-b.log");
  ASSERT_FALSE(third.endpoint.empty()) << testing::read_file(third.log);
  const auto now = gate_dirs(tmp);
  EXPECT_EQ(now.size(), 2u);
  EXPECT_EQ(now.count(*second.begin()), 1u) << "a living pod's directory was removed";
  EXPECT_TRUE(std::filesystem::exists(*second.begin() + "/auth"));
}

}  // namespace
}  // namespace fedpod
