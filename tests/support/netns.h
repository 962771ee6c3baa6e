// A pod host on its own network: a Linux network namespace joined to the root
// namespace by one veth pair, the "cable" that network-fault tests cut, slow down
// or delay while a job runs.
//
//   if (auto why = testing::NetNs::unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
//   testing::NetNs net;                          // fedpod-<pid>-<k>, 10.64.x.y/30
//   auto argv = net.exec_prefix();               // ip netns exec fedpod-<pid>-<k>
//   argv.insert(argv.end(), {fedpod_bin(), "worker", "--config", yaml});
//   Process pod(argv, log);                      // runs inside the namespace
//   // pod.yaml: listen: tcp://<net.address()>:*  The coordinator, in the root
//   // namespace, dials that address through the root end (net.host_address()).
//   net.cut();       // cable pulled: packets vanish, nobody is told
//   net.restore();   // plugged back in, shaping lifted
//
// Faults, each on the link and nothing else:
//   cut()      the pod's end of the veth goes down. Measured on Linux 6.x: the root
//              namespace keeps its route, its packets to the pod are dropped without
//              an error (the peer has no carrier) and new connects time out, as with
//              a pulled cable. Downing the root end instead is not a cut: its route
//              disappears and traffic to the pod's address leaks to the default
//              route (a connect there even succeeded through the container's
//              gateway).
//   slow(r)    tbf on the chosen direction(s): a low rate turns a model transfer into
//              a multi-second one (the fallback where the kernel has no netem).
//   delay(d)   netem: every packet waits d. Returns false with the reason when the
//              kernel has no sch_netem ("Specified qdisc kind is unknown").
// restore() lifts shaping by changing the qdisc to a pass-through in place, so the
// packets it holds are delivered, not dropped (tbf: at once; netem: when they were
// due). Deleting it would drop them and leave TCP to retransmit after an RTO that
// the shaping inflated.
//
// Addresses: a /30 per link in 10.64.0.0/11, derived from the pid and a per-process
// counter; a /30 that is already routed here (another run, a real network) is
// skipped. Names carry the pid, so namespaces left by a crashed run are recognised:
// the constructor removes those of dead pids, with the processes still inside them.
//
// Runs `ip` and `tc` (iproute2) as child processes, each bounded by `timeout 10`.
// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); unavailable_reason() says when not.
// Threading: one thread at a time per NetNs, except the byte counters (any thread).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace fedpod::testing {

class NetNs {
 public:
  // Which way shaping applies: to the pod (the root end's egress), from the pod (the
  // pod end's egress), or both.
  enum class Direction { kToPod, kFromPod, kBoth };

  // Creates the namespace, the veth pair, the addresses, and brings lo and both ends
  // up. Throws std::runtime_error naming the command and its output on failure (and
  // removes what it created).
  NetNs();
  // Kills (SIGKILL) any process still inside, deletes the veth pair and the namespace.
  ~NetNs();
  NetNs(const NetNs&) = delete;
  NetNs& operator=(const NetNs&) = delete;

  // "" when this process can create namespaces and veth pairs and run a command in
  // them; otherwise why not (not root, EPERM, no iproute2). Probes once per process.
  static const std::string& unavailable_reason();

  const std::string& name() const { return name_; }
  // The pod end's address (inside the namespace) and the root end's.
  const std::string& address() const { return pod_address_; }
  const std::string& host_address() const { return host_address_; }
  // argv prefix that runs a program inside: {"/usr/sbin/ip", "netns", "exec", name}.
  // `ip netns exec` execs the program (no fork), so its pid is the program's.
  std::vector<std::string> exec_prefix() const;

  // Pulls the cable (see above). Throws std::runtime_error when `ip` fails.
  void cut();
  // Plugs it back in and lifts shaping. Throws std::runtime_error when `ip`/`tc` fails.
  void restore();
  // Rate-limits `dir` to `bytes_per_second` with tbf (burst: one full-size packet).
  // Returns false with the reason in `why` when tc refuses.
  bool slow(int64_t bytes_per_second, Direction dir, std::string* why);
  // Delays every packet of `dir` by `d` with netem. Returns false with the reason in
  // `why` when tc refuses (no sch_netem in the kernel).
  bool delay(std::chrono::milliseconds d, Direction dir, std::string* why);

  // Bytes the root end sent to the pod / received from it so far (the veth's
  // counters, read from /sys): lets a test act once a transfer is under way.
  uint64_t bytes_to_pod() const;
  uint64_t bytes_from_pod() const;

 private:
  enum class Shaping { kNone, kTbf, kNetem };
  bool shape(Direction dir, const std::string& kind, const std::vector<std::string>& params,
             std::string* why);

  std::string name_;
  std::string host_if_;  // the root end, in the root namespace
  std::string pod_if_;   // the pod end, inside the namespace
  std::string host_address_;
  std::string pod_address_;
  Shaping shaping_[2] = {Shaping::kNone, Shaping::kNone};  // [0]: host end, [1]: pod end
};

// Runs argv (argv[0] found on PATH, /usr/sbin and /sbin), bounded by `timeout 10`:
// its exit code (-1 when it could not run) and its stdout and stderr together.
struct CommandResult {
  int code = -1;
  std::string output;
};
CommandResult run_command(const std::vector<std::string>& argv);

}  // namespace fedpod::testing
