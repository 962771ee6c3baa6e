// A deliberately malicious model plugin, for tests/integration/sandbox_test.cpp.
//
// Its layers are the built-in logreg's (one Linear, named "0.weight", "0.bias"). What
// it attacks, and when:
//   - at load time, in a static constructor: the attack named in kLoadAttack, which
//     the test patches in a copy of this library's bytes ("none" as built);
//   - in build() (create_model: what a coordinator runs), the attack named by the
//     hyperparameter `build_attack`;
//   - in training_step, the attack named by the hyperparameter `attack`.
// Attacks (arguments from hyperparameters at training time; fixed ones at load time):
//   connect   TCP connect to 127.0.0.1:`port` (load: ports 39517..39519) and send "leak"
//   read      read the file `path` (load: "read:PATH")
//   write     create the file `path` (load: "write:PATH")
//   fork      fork 64 times (each child sleeps)
//   signal    kill(-1), kill(0) and kill(parent) with signal 0 (a permission check;
//             nothing is delivered)
//   memory    allocate and touch `gib` GiB (load: 64 GiB)
//   spin      loop forever
//   segfault  write through a null pointer
//   unix      connect to the unix socket `path` (a service of the machine's)
//   print     write a forged log line (a newline, then "FORGED event=job_ended ...")
//             and 2 MB more to stdout and stderr, then train as usual
// When an attack fails, the model throws, naming the call and errno, so the job ends
// with that reason; the test also checks that nothing got through.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <vector>

#include "fedpod/model/plugin.h"

namespace {

[[noreturn]] void failed(const std::string& what) {
  throw std::runtime_error("hostile model: " + what + ": " + std::strerror(errno));
}

void attack_connect(const std::vector<int>& ports) {
  for (int port : ports) {
    int s = ::socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) failed("socket(AF_INET)");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      (void)!::write(s, "leak", 4);
      ::close(s);
      return;
    }
    ::close(s);
  }
  failed("connect");
}

void attack_read(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) failed("open(" + path + ")");
  char buf[64];
  if (::read(fd, buf, sizeof buf) < 0) failed("read(" + path + ")");
  ::close(fd);
  throw std::runtime_error("hostile model: read " + path);  // it got through: make it loud
}

void attack_write(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) failed("open(" + path + ", O_CREAT)");
  (void)!::write(fd, "pwned", 5);
  ::close(fd);
}

void attack_fork() {
  for (int i = 0; i < 64; ++i) {
    pid_t p = ::fork();
    if (p < 0) failed("fork");
    if (p == 0) {
      ::sleep(30);
      ::_exit(0);
    }
  }
}

// Signal 0 only checks permission: nothing is delivered, whatever the filter does.
// kill(-1) reaches every process of the user (the worker among them, where the
// runner has no pid namespace of its own), kill(0) its process group.
void attack_signal() {
  for (pid_t target : {pid_t{-1}, pid_t{0}, ::getppid()}) {
    if (::kill(target, 0) == 0) throw std::runtime_error("hostile model: may signal pid " + std::to_string(target));
    if (errno != EPERM) failed("kill(" + std::to_string(target) + ")");
  }
  failed("kill");  // every one refused
}

void attack_memory(int64_t gib) {
  std::vector<std::vector<char>> hog;
  for (int64_t i = 0; i < gib * 4; ++i) {
    hog.emplace_back(size_t{256} << 20, 'x');  // touched: every page is written
  }
}

void attack_spin() {
  volatile uint64_t n = 0;
  while (true) n = n + 1;
}

void attack_segfault() {
  volatile int* p = nullptr;
  *p = 1;
}

void attack_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) failed("socket(AF_UNIX)");
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) failed("connect(" + path + ")");
  throw std::runtime_error("hostile model: connected to " + path);  // it got through: make it loud
}

void attack_print() {
  const std::string forged = "\n2026-01-01T00:00:00.000 info worker FORGED event=job_ended job=x reason=\"forged\"\n";
  for (int fd : {1, 2}) {
    (void)!::write(fd, forged.data(), forged.size());
    const std::string line = std::string(1000, 'x') + "\n";
    for (int i = 0; i < 1000; ++i) (void)!::write(fd, line.data(), line.size());
  }
}

// `arg`: at load time, what followed "name:" in kLoadAttack.
void attack(const std::string& name, const fedpod::Hyperparameters* hp, const std::string& arg = "") {
  if (name == "connect") {
    attack_connect(hp ? std::vector<int>{static_cast<int>(hp->integer("port", 0))} : std::vector<int>{39517, 39518, 39519});
  } else if (name == "read") {
    attack_read(hp ? hp->string("path", "") : arg);
  } else if (name == "write") {
    attack_write(hp ? hp->string("path", "") : arg);
  } else if (name == "fork") {
    attack_fork();
  } else if (name == "signal") {
    attack_signal();
  } else if (name == "memory") {
    attack_memory(hp ? hp->integer("gib", 64) : 64);
  } else if (name == "spin") {
    attack_spin();
  } else if (name == "segfault") {
    attack_segfault();
  } else if (name == "unix") {
    attack_unix(hp ? hp->string("path", "") : arg);
  } else if (name == "print") {
    attack_print();
  }
}

// "HOSTILE_LOAD_ATTACK=" then the attack's name, NUL-terminated; volatile, so the
// compiler keeps the bytes the test patches and reads them at run time.
extern "C" __attribute__((used, visibility("default"))) volatile char kLoadAttack[256] =
    "HOSTILE_LOAD_ATTACK=none";

// Runs when the library is loaded, before any of fedpod's calls into it.
struct AtLoad {
  AtLoad() {
    std::string name;
    for (size_t i = 20; i < sizeof kLoadAttack && kLoadAttack[i]; ++i) name += kLoadAttack[i];
    if (name == "none") return;
    std::string arg;
    if (const size_t colon = name.find(':'); colon != std::string::npos) {
      arg = name.substr(colon + 1);
      name.resize(colon);
    }
    try {
      attack(name, nullptr, arg);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      std::abort();  // a static constructor cannot report otherwise
    }
  }
} at_load;

class HostileModel : public fedpod::model::ModuleModel {
 public:
  std::optional<fedpod::model::HyperparameterSpec> hyperparameters() override {
    using T = fedpod::model::HyperparameterType;
    auto spec = fedpod::model::common_hyperparameters();
    spec.push_back({"attack", T::kString, "what to attack in training_step", {}});
    spec.push_back({"build_attack", T::kString, "what to attack in build (create_model)", {}});
    spec.push_back({"port", T::kInteger, "connect: the port", {}});
    spec.push_back({"path", T::kString, "read, write: the file", {}});
    spec.push_back({"gib", T::kInteger, "memory: how much", {}});
    return spec;
  }

  fedpod::model::StepOutput training_step(const torch::Tensor& x, const torch::Tensor& y) override {
    attack(hp_.string("attack", ""), &hp_);
    return cross_entropy_step(x, y);
  }

 protected:
  void build(const std::vector<int64_t>& in, int64_t classes, const fedpod::Hyperparameters& hp) override {
    hp_ = hp;
    attack(hp.string("build_attack", ""), &hp);
    int64_t inputs = 1;
    for (int64_t d : in) inputs *= d;
    torch::nn::Sequential seq(torch::nn::Linear(inputs, classes));
    module_ = seq.ptr();
    forward_ = [seq](const torch::Tensor& x) mutable { return seq->forward(x.flatten(1)); };
  }

 private:
  fedpod::Hyperparameters hp_;
};

}  // namespace

FEDPOD_REGISTER_MODEL(HostileModel)
