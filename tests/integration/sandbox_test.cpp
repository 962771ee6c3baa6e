// Custom model code runs in a confined job runner (worker/runner.h). A deliberately
// malicious plugin (hostile_models/hostile_plugin.cpp) is pushed to a hub and run as a
// Super Modeller's job on a real `fedpod worker` pod that demands full confinement
// (sandbox: required; 2 GiB of memory, 8 s a step, 5 s to load). Each attack is made from the
// training step and again from a static constructor at load time, and must fail:
// the TCP listener the test opens receives nothing, the pod's key and policy files and
// the worker's /proc/PID/environ cannot be read, nothing is written outside the
// runner's scratch, fork fails, memory past the limit cannot be had, a spinning or
// crashing model is killed. Each ends the job with a reason naming what stopped it,
// and a normal job on the same pod succeeds right after.
//
// The same attacks are made on the coordinator, which builds a custom model in its
// own confined runner (as `fedpod coordinator run` does) to learn its layout and
// initial values: from a static constructor and from build() (create_model), with
// the modeller's own key file and the coordinator's /proc/PID/environ as targets.
// Such a job ends on the coordinator, before any pod receives it. For the pod-side
// load-time attacks the coordinator is given a stand-in with the hostile model's
// layers and hyperparameters but none of its code; otherwise its own runner would
// stop the attack before the pod sees the job.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/hub/client.h"
#include "fedpod/model/zoo.h"
#include "fedpod/worker/runner.h"
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include "digits_job.h"
#include "identity.h"
#include "running_hub.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;

// What the coordinator loads in place of the hostile model: the same layers (one
// Linear, "0.weight" and "0.bias") and hyperparameters, none of its attacks.
class Stand_in : public model::ModuleModel {
 public:
  std::optional<model::HyperparameterSpec> hyperparameters() override {
    using T = model::HyperparameterType;
    auto spec = model::common_hyperparameters();
    spec.push_back({"attack", T::kString, "", {}});
    spec.push_back({"build_attack", T::kString, "", {}});
    spec.push_back({"port", T::kInteger, "", {}});
    spec.push_back({"path", T::kString, "", {}});
    spec.push_back({"gib", T::kInteger, "", {}});
    return spec;
  }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const Hyperparameters&) override {
    int64_t inputs = 1;
    for (int64_t d : in) inputs *= d;
    torch::nn::Sequential seq(torch::nn::Linear(inputs, classes));
    module_ = seq.ptr();
    forward_ = [seq](const torch::Tensor& x) mutable { return seq->forward(x.flatten(1)); };
  }
};

// A TCP listener on loopback that records whether anyone connected or sent bytes.
class Listener {
 public:
  explicit Listener(int port = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 16) == 0;
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd_); }
  bool ok() const { return ok_; }
  int port() const { return port_; }
  // Connections accepted so far (never blocks).
  int connections() {
    int n = 0;
    for (int c; (c = ::accept(fd_, nullptr, nullptr)) >= 0; ++n) ::close(c);
    return n;
  }

 private:
  int fd_ = -1;
  int port_ = 0;
  bool ok_ = false;
};

struct Attack {
  std::string name;
  nlohmann::json hp;   // training-step attack
  std::string load;    // load-time attack (patched in)
  std::string reason;  // in the job's error
};

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    hub::ServerOptions opt;
    opt.data_dir = (dir_.path() / "hub").string();
    hub_ = std::make_unique<testing::RunningHub>(opt, testing::RunningHub::Tls::kOn);
    hub::Client c(hub_->hub_url());
    auto token = c.register_user("alice", id_.modeller.public_key, id_.modeller.secret_key);
    ASSERT_TRUE(token.ok()) << token.status().to_string();
    token_ = *token;
    spec_ = testing::digits_job_spec("sandbox", (dir_.path() / "out").string(), id_.modeller_key_file);
    spec_.model.username = "alice";
    spec_.hub_url = hub_->url();
    spec_.hub_ca = hub_->ca_file();
    spec_.hub_token = token_;
    spec_.rounds = 1;
    spec_.eval_every = 0;
    spec_.min_pods = 1;
    testing::PodHost host;
    std::string level = "required";
    if (hide_bubblewrap_) {
      // The pod's own user and mount namespace, where /usr/bin/bwrap is /dev/null (not
      // executable): the worker finds no bubblewrap, as on a machine without it.
      host.exec_prefix = {"/usr/bin/unshare", "--user", "--map-current-user", "--mount", "--", "/bin/sh", "-c",
                          "if [ -e /usr/bin/bwrap ]; then mount --bind /dev/null /usr/bin/bwrap || exit 97; fi; "
                          "exec \"$@\"",
                          "sh"};
      level = "auto";
    }
    pod_ = testing::start_digits_pod(dir_, id_, "pod-a", "super-modeller",
                                     "sandbox: {level: " + level + ", memory: 2GiB, step_timeout: 8s, load_timeout: 5s}\n",
                                     "", host);
    ASSERT_FALSE(pod_.endpoint.empty()) << testing::read_file(pod_.log);
    testing::add_pod(spec_, pod_);
  }

  // Pushes `bytes` as alice/`ref`.
  void push(const std::string& ref, const std::string& bytes) {
    const std::string path = (dir_.path() / (ref + ".so")).string();
    std::ofstream(path, std::ios::binary) << bytes;
    hub::Client c(hub_->hub_url(), token_);
    auto v = c.push_model("alice", ref, "plugin", "hostile", "", path,
                          {testing::source_dir() + "/tests/integration/hostile_models/hostile_plugin.cpp"});
    ASSERT_TRUE(v.ok()) << v.status().to_string();
  }

  // The hostile plugin with its load-time attack set to `attack` ("name" or "name:arg").
  static std::string patched(const std::string& attack) {
    std::string bytes = testing::read_file(FEDPOD_HOSTILE_PLUGIN);
    const std::string marker = "HOSTILE_LOAD_ATTACK=";
    const size_t at = bytes.find(marker + "none");
    EXPECT_NE(at, std::string::npos);
    EXPECT_LT(attack.size(), 200u);
    std::string field = attack;
    field.resize(256 - marker.size(), '\0');
    bytes.replace(at + marker.size(), field.size(), field);
    return bytes;
  }

  // Runs a one-round job of alice/`ref` with `hp`. With `coordinator_runner` the
  // coordinator builds the model in its own confined runner (as the CLI does);
  // without, it gets the stand-in in place of the custom model (see the top).
  StatusOr<coordinator::RunResult> run(const std::string& ref, const nlohmann::json& hp,
                                       bool coordinator_runner = false) {
    spec_.job_id = "sandbox-" + std::to_string(++jobs_);
    spec_.model.ref = ref;
    spec_.model.hyperparameters = Hyperparameters(hp);
    spec_.output_dir = (dir_.path() / spec_.job_id).string();
    spec_.runner_command.clear();
    if (coordinator_runner) {
      spec_.runner_command = {testing::fedpod_bin(), "runner"};
      spec_.sandbox.required = true;
      spec_.sandbox.limits.memory_bytes = int64_t{2} << 30;
      spec_.sandbox.limits.load_timeout = 5s;
    }
    coordinator::validate(spec_, "test job");
    zmq::context_t ctx(1);
    std::ostringstream progress;
    coordinator::Coordinator c(ctx, spec_, null_logger(), progress, model::make_builtin,
                               [](const std::string&, const std::string&) -> StatusOr<std::unique_ptr<model::Model>> {
                                 return std::unique_ptr<model::Model>(new Stand_in());
                               });
    auto r = c.run();
    last_progress_ = progress.str();
    return r;
  }

  // Each attack, made from the training step, fails the job naming its reason and
  // the confinement `level`; with `then_serves`, a normal job succeeds after each.
  void expect_training_step_attacks_fail(const std::vector<Attack>& attacks, const std::string& level,
                                         bool then_serves) {
    for (const auto& a : attacks) {
      SCOPED_TRACE(a.name);
      auto r = run("hostile", a.hp);
      ASSERT_FALSE(r.ok()) << last_progress_;
      EXPECT_CONTAINS(r.status().message(), a.reason);
      EXPECT_CONTAINS(r.status().message(), "confinement " + level);
      if (then_serves) expect_pod_serves("hostile", a.name);
    }
  }

  // The pod still serves: a normal job of `ref` succeeds.
  void expect_pod_serves(const std::string& ref, const std::string& after) {
    auto r = run(ref, nlohmann::json::object());
    EXPECT_TRUE(r.ok()) << "a normal job after " << after << ": " << r.status().to_string() << "\n" << last_progress_;
  }

  bool hide_bubblewrap_ = false;  // set by SandboxWithoutNamespacesTest
  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path(), "alice"};
  std::unique_ptr<testing::RunningHub> hub_;
  std::string token_;
  coordinator::JobSpec spec_;
  testing::PodProcess pod_;
  int jobs_ = 0;
  std::string last_progress_;
};

TEST_F(SandboxTest, TrainingStepAttacksFailAndThePodServesTheNextJob) {
  ASSERT_NO_FATAL_FAILURE(push("hostile", testing::read_file(FEDPOD_HOSTILE_PLUGIN)));
  Listener listener;
  ASSERT_TRUE(listener.ok());
  const std::string key_file = id_.pod_key_file("pod-a");
  const std::string policy_file = (dir_.path() / "pod-a.policy.yaml").string();
  const std::string outside = (dir_.path() / "written-by-the-model").string();
  const std::vector<Attack> attacks = {
      {"connect", {{"attack", "connect"}, {"port", listener.port()}}, "", "socket(AF_INET): Permission denied"},
      {"read key file", {{"attack", "read"}, {"path", key_file}}, "", "open(" + key_file + "): No such file"},
      {"read policy", {{"attack", "read"}, {"path", policy_file}}, "", "No such file or directory"},
      {"read the worker's environ",
       {{"attack", "read"}, {"path", "/proc/" + std::to_string(pod_.process->pid()) + "/environ"}},
       "",
       "No such file or directory"},
      {"write outside", {{"attack", "write"}, {"path", outside}}, "", "open(" + outside + ", O_CREAT)"},
      {"fork", {{"attack", "fork"}}, "", "fork: Operation not permitted"},
      {"signal every process, its group, its parent", {{"attack", "signal"}}, "", "hostile model: kill: Operation not permitted"},
      {"memory", {{"attack", "memory"}, {"gib", 4}}, "", "memory 2 GiB"},
      {"spin", {{"attack", "spin"}}, "", "time limit (sandbox.step_timeout 8 s)"},
      {"segfault", {{"attack", "segfault"}}, "", "killed by signal 11 (SIGSEGV): the model crashed"},
  };
  ASSERT_NO_FATAL_FAILURE(
      expect_training_step_attacks_fail(attacks, "namespaces+seccomp+rlimits", /*then_serves=*/true));
  EXPECT_EQ(listener.connections(), 0);
  EXPECT_FALSE(std::filesystem::exists(outside));
  // Counted by reason on the pod.
  const std::string log = testing::read_file(pod_.log);
  EXPECT_CONTAINS(log, "event=sandbox pod=pod-a level=namespaces+seccomp+rlimits");
}

// What model code prints is its author's text: it reaches the pod's log only line by
// line, quoted in event=runner_output (its quotes escaped), made printable, and at
// most 256 KiB of it a job. The hostile model prints a forged log line and 2 MB more on stdout and stderr,
// then trains: the job succeeds, no log line starts with the forgery, and the pod's
// log grows by the limit, not by 2 MB.
TEST_F(SandboxTest, WhatModelCodePrintsIsQuotedAndBoundedInThePodsLog) {
  ASSERT_NO_FATAL_FAILURE(push("hostile", testing::read_file(FEDPOD_HOSTILE_PLUGIN)));
  const size_t before = testing::read_file(pod_.log).size();
  auto r = run("hostile", {{"attack", "print"}});
  ASSERT_TRUE(r.ok()) << r.status().to_string() << "\n" << last_progress_;
  std::string log;
  for (int i = 0; i < 100 && log.find("event=runner_output_suppressed") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);  // the runner's last lines are logged as it ends
    log = testing::read_file(pod_.log);
  }
  const std::string added = log.substr(before);
  EXPECT_CONTAINS(added, "event=runner_output who=\"pod pod-a\" line=\"2026-01-01T00:00:00.000 info worker FORGED "
                         "event=job_ended job=x reason=\\\"forged\\\"\"");
  std::istringstream lines(added);
  for (std::string line; std::getline(lines, line);) {
    ASSERT_EQ(line.rfind("2026-01-01", 0), std::string::npos) << "a forged line: " << line;
    ASSERT_EQ(line.rfind("xxxx", 0), std::string::npos) << "the model's raw output: " << line.substr(0, 80);
  }
  EXPECT_CONTAINS(added, "event=runner_output_suppressed who=\"pod pod-a\"");
  EXPECT_LT(added.size(), 600u << 10) << "the model's 2 MB reached the log";
  EXPECT_GT(added.size(), 256u << 10);
}

// A pod on a machine without bubblewrap (or without unprivileged user namespaces):
// the runner has no mount namespace, and Landlock confines its files instead. The
// same training-step attacks fail; those on files now with "Permission denied" (the
// files exist in its view, it may not open them), and the pod's own data file is out
// of reach as well.
class SandboxWithoutNamespacesTest : public SandboxTest {
 protected:
  SandboxWithoutNamespacesTest() { hide_bubblewrap_ = true; }
};

TEST_F(SandboxWithoutNamespacesTest, LandlockConfinesTheRunnersFilesAndTheAttacksFail) {
  const std::string log_at_start = testing::read_file(pod_.log);
  if (worker::landlock_abi() < 0) {
    // Not a missing feature of fedpod: this kernel has no Landlock. The pod must say
    // so, and that model code can read what its user can read.
    EXPECT_CONTAINS(log_at_start, "level=seccomp+rlimits");
    EXPECT_CONTAINS(log_at_start, "model code can read what this pod's user can read");
    GTEST_SKIP() << "this kernel has no Landlock (" << std::strerror(-worker::landlock_abi()) << ")";
  }
  EXPECT_CONTAINS(log_at_start, "event=sandbox pod=pod-a level=landlock+seccomp+rlimits "
                                "why=\"bubblewrap (bwrap) is not installed\"");
  ASSERT_NO_FATAL_FAILURE(push("hostile", testing::read_file(FEDPOD_HOSTILE_PLUGIN)));
  Listener listener;
  ASSERT_TRUE(listener.ok());
  const std::string key_file = id_.pod_key_file("pod-a");
  const std::string policy_file = (dir_.path() / "pod-a.policy.yaml").string();
  const std::string data_file = testing::source_dir() + "/examples/digits/pod-a.csv";
  const std::string outside = (dir_.path() / "written-by-the-model").string();
  const std::string environ = "/proc/" + std::to_string(pod_.process->pid()) + "/environ";
  ASSERT_TRUE(std::filesystem::exists(key_file));
  ASSERT_TRUE(std::filesystem::exists(policy_file));
  ASSERT_TRUE(std::filesystem::exists(environ));
  // A service of the machine's on a unix socket (as a container runtime's or the pod's
  // own receiving process's would be): it must hear from nobody.
  const std::string service = (dir_.path() / "service.sock").string();
  const int service_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(service_fd, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, service.c_str(), sizeof sa.sun_path - 1);
  ASSERT_EQ(::bind(service_fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << std::strerror(errno);
  ASSERT_EQ(::listen(service_fd, 4), 0);
  const std::vector<Attack> attacks = {
      {"connect", {{"attack", "connect"}, {"port", listener.port()}}, "", "socket(AF_INET): Permission denied"},
      {"read key file", {{"attack", "read"}, {"path", key_file}}, "", "open(" + key_file + "): Permission denied"},
      {"read policy", {{"attack", "read"}, {"path", policy_file}}, "", "open(" + policy_file + "): Permission denied"},
      {"read the pod's data", {{"attack", "read"}, {"path", data_file}}, "", "open(" + data_file + "): Permission denied"},
      {"read /etc/passwd", {{"attack", "read"}, {"path", "/etc/passwd"}}, "", "open(/etc/passwd): Permission denied"},
      {"read the worker's environ", {{"attack", "read"}, {"path", environ}}, "", "open(" + environ + "): Permission denied"},
      {"read through /proc/self/root",
       {{"attack", "read"}, {"path", "/proc/self/root" + key_file}},
       "",
       "open(/proc/self/root" + key_file + "): Permission denied"},
      {"write outside", {{"attack", "write"}, {"path", outside}}, "", "open(" + outside + ", O_CREAT): Permission denied"},
      {"write into /tmp", {{"attack", "write"}, {"path", "/tmp/fedpod-written-by-the-model"}}, "",
       "open(/tmp/fedpod-written-by-the-model, O_CREAT): Permission denied"},
      {"fork", {{"attack", "fork"}}, "", "fork: Operation not permitted"},
      {"signal every process, its group, its parent", {{"attack", "signal"}}, "", "hostile model: kill: Operation not permitted"},
      {"connect to a unix socket", {{"attack", "unix"}, {"path", service}}, "", "socket(AF_UNIX): Permission denied"},
  };
  ASSERT_NO_FATAL_FAILURE(
      expect_training_step_attacks_fail(attacks, "landlock+seccomp+rlimits", /*then_serves=*/false));
  EXPECT_EQ(listener.connections(), 0);
  EXPECT_LT(::accept(service_fd, nullptr, nullptr), 0) << "the model connected to " << service;
  ::close(service_fd);
  EXPECT_FALSE(std::filesystem::exists(outside));
  EXPECT_FALSE(std::filesystem::exists("/tmp/fedpod-written-by-the-model"));
  // The model itself, sent as a memfd and loaded under the layer, trains; its
  // scratch directory is its own to write.
  expect_pod_serves("hostile", "the attacks");
  auto scratch = run("hostile", {{"attack", "write"}, {"path", "scratch-file"}});
  EXPECT_TRUE(scratch.ok()) << "writing in its scratch directory: " << scratch.status().to_string() << "\n"
                            << last_progress_;
  EXPECT_CONTAINS(testing::read_file(pod_.log), "confinement=\"landlock+seccomp+rlimits\"");
}

TEST_F(SandboxTest, LoadTimeAttacksFailAndThePodServesTheNextJob) {
  ASSERT_NO_FATAL_FAILURE(push("benign", testing::read_file(FEDPOD_HOSTILE_PLUGIN)));
  // A static constructor knows no port: it tries 39517..39519; listen on one that is free.
  std::unique_ptr<Listener> listener;
  for (int port : {39517, 39518, 39519}) {
    listener = std::make_unique<Listener>(port);
    if (listener->ok()) break;
  }
  ASSERT_TRUE(listener->ok()) << "ports 39517..39519 are all taken";
  const std::string key_file = id_.pod_key_file("pod-a");
  const std::string outside = (dir_.path() / "written-at-load").string();
  const std::vector<Attack> attacks = {
      {"connect", {}, "connect", "killed by signal 6 (SIGABRT)"},
      {"read key file", {}, "read:" + key_file, "killed by signal 6 (SIGABRT)"},
      {"write outside", {}, "write:" + outside, "killed by signal 6 (SIGABRT)"},
      {"fork", {}, "fork", "killed by signal 6 (SIGABRT)"},
      {"memory", {}, "memory", "killed by signal 6 (SIGABRT)"},
      {"spin", {}, "spin", "time limit (sandbox.load_timeout 5 s)"},
      {"segfault", {}, "segfault", "killed by signal 11 (SIGSEGV)"},
  };
  for (const auto& a : attacks) {
    SCOPED_TRACE(a.name);
    const std::string ref = "hostile-load-" + std::to_string(&a - attacks.data());
    ASSERT_NO_FATAL_FAILURE(push(ref, patched(a.load)));
    auto r = run(ref, nlohmann::json::object());
    ASSERT_FALSE(r.ok()) << last_progress_;
    EXPECT_CONTAINS(r.status().message(), a.reason);
    EXPECT_CONTAINS(r.status().message(), "loading the model");
    expect_pod_serves("benign", a.name);
  }
  EXPECT_EQ(listener->connections(), 0);
  EXPECT_FALSE(std::filesystem::exists(outside));
}

// On the coordinator: each attack from a static constructor and from build() ends
// the job there, naming what stopped it, before any pod is sent the job; nothing
// gets out. Then the same model, harmless, runs through the coordinator's runner
// and the pod's.
TEST_F(SandboxTest, CoordinatorSideAttacksFailBeforeAnyPodGetsTheJob) {
  ASSERT_NO_FATAL_FAILURE(push("hostile", testing::read_file(FEDPOD_HOSTILE_PLUGIN)));
  Listener listener;
  ASSERT_TRUE(listener.ok());
  std::unique_ptr<Listener> load_listener;  // static constructors try 39517..39519
  for (int port : {39517, 39518, 39519}) {
    load_listener = std::make_unique<Listener>(port);
    if (load_listener->ok()) break;
  }
  ASSERT_TRUE(load_listener->ok()) << "ports 39517..39519 are all taken";
  const std::string key_file = id_.modeller_key_file;  // the modeller's own secret key
  const std::string environ = "/proc/" + std::to_string(::getpid()) + "/environ";
  const std::string outside = (dir_.path() / "written-on-the-coordinator").string();
  const std::vector<Attack> attacks = {
      {"connect", {{"build_attack", "connect"}, {"port", listener.port()}}, "connect",
       "socket(AF_INET): Permission denied"},
      {"read the modeller's key file", {{"build_attack", "read"}, {"path", key_file}}, "read:" + key_file,
       "open(" + key_file + "): No such file"},
      {"read the coordinator's environ", {{"build_attack", "read"}, {"path", environ}}, "read:" + environ,
       "open(" + environ + "): No such file"},
      {"write outside", {{"build_attack", "write"}, {"path", outside}}, "write:" + outside,
       "open(" + outside + ", O_CREAT)"},
      {"fork", {{"build_attack", "fork"}}, "fork", "fork: Operation not permitted"},
      {"memory", {{"build_attack", "memory"}, {"gib", 4}}, "memory", "out of memory under the runner's limit"},
      {"spin", {{"build_attack", "spin"}}, "spin", "time limit (sandbox.load_timeout 5 s)"},
      {"segfault", {{"build_attack", "segfault"}}, "segfault", "killed by signal 11 (SIGSEGV): the model crashed"},
  };
  const std::string pod_log_before = testing::read_file(pod_.log);
  for (const auto& a : attacks) {
    {
      SCOPED_TRACE(a.name + " in build()");
      auto r = run("hostile", a.hp, true);
      ASSERT_FALSE(r.ok()) << last_progress_;
      EXPECT_CONTAINS(r.status().message(), a.reason);
      EXPECT_CONTAINS(r.status().message(), "creating the model" );
      EXPECT_CONTAINS(r.status().message(), "confinement namespaces+seccomp+rlimits");
      EXPECT_EQ(last_progress_.find("accepted"), std::string::npos) << last_progress_;
    }
    {
      SCOPED_TRACE(a.name + " in a static constructor");
      const std::string ref = "coordinator-load-" + std::to_string(&a - attacks.data());
      ASSERT_NO_FATAL_FAILURE(push(ref, patched(a.load)));
      auto r = run(ref, nlohmann::json::object(), true);
      ASSERT_FALSE(r.ok()) << last_progress_;
      EXPECT_CONTAINS(r.status().message(), a.load == "spin" ? "time limit (sandbox.load_timeout 5 s)"
                                                             : a.load == "segfault" ? "killed by signal 11 (SIGSEGV)"
                                                                                    : "killed by signal 6 (SIGABRT)");
      EXPECT_CONTAINS(r.status().message(), "coordinator: ");
      EXPECT_CONTAINS(r.status().message(), "loading the model");
      // Ended before hello: the pods were never contacted.
      EXPECT_EQ(last_progress_.find("pod-a"), std::string::npos) << last_progress_;
    }
  }
  EXPECT_EQ(listener.connections(), 0);
  EXPECT_EQ(load_listener->connections(), 0);
  EXPECT_FALSE(std::filesystem::exists(outside));
  // No job reached the pod.
  EXPECT_EQ(testing::read_file(pod_.log).find("event=job_started"), pod_log_before.find("event=job_started"));
  // The same model, harmless: built by the coordinator's runner, trained by the pod's.
  auto r = run("hostile", nlohmann::json::object(), true);
  ASSERT_TRUE(r.ok()) << r.status().to_string() << "\n" << last_progress_;
  const auto h = nlohmann::json::parse(testing::read_file(r->history_path));
  EXPECT_EQ(h["model"]["confinement"], "namespaces+seccomp+rlimits");
}

// hello says how the pod confines model code, and so does /metrics.
TEST_F(SandboxTest, TheConfinementLevelIsStated) {
  const std::string log = testing::read_file(pod_.log);
  EXPECT_CONTAINS(log, "event=sandbox pod=pod-a level=namespaces+seccomp+rlimits");
  ASSERT_NO_FATAL_FAILURE(push("hostile", testing::read_file(FEDPOD_HOSTILE_PLUGIN)));
  expect_pod_serves("hostile", "nothing");
  EXPECT_CONTAINS(testing::read_file(pod_.log), "confinement=\"namespaces+seccomp+rlimits\"");
}

}  // namespace
}  // namespace fedpod
