#include "fedpod/worker/gate.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "fedpod/common/sanitized.h"
#include "fedpod/common/temp_dir.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/shm_ring.h"

namespace fedpod::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;
using Frames = std::vector<zmq::message_t>;

constexpr const char* kZapDomain = "fedpod-gate";

zmq::message_t text_frame(const std::string& s) { return zmq::message_t(s.data(), s.size()); }

// The size of this process's data segment and private writable mappings (what
// RLIMIT_DATA counts), from /proc/self/status; -1 when unreadable.
int64_t data_size() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmData:", 0) == 0) return std::stoll(line.substr(7)) * 1024;
  }
  return -1;
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    return "killed by signal " + std::to_string(sig) + " (SIG" + (name ? name : "?") + ")";
  }
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  return "ended";
}

// --- large frames through shared memory (gate.h) -------------------------------------

// The two rings between a worker and one gate process, in one memfd.
struct Rings {
  std::shared_ptr<SharedRegion> region;
  std::unique_ptr<ShmRing> down;  // gate -> worker
  std::unique_ptr<ShmRing> up;    // worker -> gate
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> misses{0};

  Rings(std::shared_ptr<SharedRegion> r, size_t down_bytes) : region(std::move(r)) {
    down = std::make_unique<ShmRing>(region->data(), down_bytes);
    up = std::make_unique<ShmRing>(region->data() + down_bytes, region->size() - down_bytes);
  }
};

struct IndexEntry {
  uint32_t frame;
  uint32_t zero;
  uint64_t offset;
  uint64_t size;
};
static_assert(sizeof(IndexEntry) == 24);

// Copies each of frames[first..] of kShmMinFrame bytes or more into `ring` where it
// fits and leaves an empty frame in its place. The index frame of what it moved, or
// an empty message when it moved nothing.
zmq::message_t stage(Rings& rings, ShmRing& ring, Frames& frames, size_t first) {
  std::vector<IndexEntry> index;
  for (size_t i = first; i < frames.size(); ++i) {
    const size_t n = frames[i].size();
    if (n < kShmMinFrame) continue;
    const auto offset = ring.allocate(n);
    if (!offset) {
      rings.misses.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    std::memcpy(ring.block(*offset), frames[i].data(), n);
    frames[i] = zmq::message_t();
    index.push_back({static_cast<uint32_t>(i - first), 0, *offset, n});
    rings.bytes.fetch_add(n, std::memory_order_relaxed);
  }
  if (index.empty()) return zmq::message_t();
  return zmq::message_t(index.data(), index.size() * sizeof(IndexEntry));
}

std::vector<IndexEntry> read_index(const zmq::message_t& index) {
  std::vector<IndexEntry> out(index.size() / sizeof(IndexEntry));
  if (!out.empty()) std::memcpy(out.data(), index.data(), out.size() * sizeof(IndexEntry));
  return out;
}

// A block held by a zero-copy frame, released when ZeroMQ frees the frame (on any
// thread).
struct Hold {
  std::shared_ptr<Rings> rings;
  ShmRing* ring;
  uint64_t offset;
};
void release_hold(void*, void* hint) {
  auto* h = static_cast<Hold*>(hint);
  h->ring->release(h->offset);
  delete h;
}

// Puts the blocks `index` names back in frames[first..] as zero-copy frames viewing
// `ring`. On an index that names frames or bytes it cannot (`error` says which),
// nothing is adopted and every block it names in bounds is released.
bool adopt(const std::shared_ptr<Rings>& rings, ShmRing& ring, const zmq::message_t& index, Frames& frames,
           size_t first, std::string& error) {
  const auto entries = read_index(index);
  std::vector<bool> seen(frames.size(), false);
  error.clear();
  if (index.size() % sizeof(IndexEntry) != 0 || entries.empty()) error = "index of " + std::to_string(index.size()) + " bytes";
  for (const auto& e : entries) {
    if (!error.empty()) break;
    const size_t f = first + e.frame;
    if (f >= frames.size() || seen[f] || frames[f].size() != 0) {
      error = "index names frame " + std::to_string(e.frame) + ", which is not an empty placeholder";
    } else if (!ring.valid(e.offset, e.size) || e.size < kShmMinFrame) {
      error = "index names " + std::to_string(e.size) + " bytes at offset " + std::to_string(e.offset) +
              " of a ring of " + std::to_string(ring.capacity());
    } else {
      seen[f] = true;
    }
  }
  if (!error.empty()) {
    for (const auto& e : entries) {
      if (ring.valid(e.offset, e.size)) ring.release(e.offset);
    }
    return false;
  }
  for (const auto& e : entries) {
    frames[first + e.frame] = zmq::message_t(ring.block(e.offset), e.size, release_hold, new Hold{rings, &ring, e.offset});
    rings->bytes.fetch_add(e.size, std::memory_order_relaxed);
  }
  return true;
}

// --- the gate process ------------------------------------------------------------

std::atomic<bool> g_gate_stop{false};
void on_gate_signal(int) { g_gate_stop = true; }

// Asks the worker about a client key over the ZAP relay socket. Called on the ZAP
// handler's thread only.
class ZapRelay {
 public:
  ZapRelay(zmq::context_t& ctx, const std::string& endpoint) : socket_(ctx, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }
  std::optional<std::string> ask(const std::string& key, const std::string& address) {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t id = ++next_;
    Frames q;
    q.emplace_back(&id, sizeof id);
    q.push_back(text_frame(key));
    q.push_back(text_frame(address));
    if (!protocol::send_frames(socket_, q)) return std::nullopt;
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (Clock::now() < until) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      protocol::poll(&item, 1, std::chrono::milliseconds(200));
      Frames a;
      bool too_many = false;
      while (protocol::recv_frames(socket_, a, 4, too_many)) {
        uint64_t got = 0;
        if (a.size() != 3 || a[0].size() != sizeof got) continue;
        std::memcpy(&got, a[0].data(), sizeof got);
        if (got != id) continue;  // an answer that came after its question timed out
        if (a[1].to_string() != "1") return std::nullopt;
        return a[2].to_string();
      }
      if (g_gate_stop.load()) break;
    }
    return std::nullopt;  // no answer: refuse, never admit
  }

 private:
  std::mutex mu_;
  zmq::socket_t socket_;
  uint64_t next_ = 0;
};

int gate_serve(const json& o) {
  zmq::context_t ctx(1);
  const std::string listen = o.at("listen").get<std::string>();
  // The worker's shared rings, inherited as fd 3 (gate.h).
  std::shared_ptr<Rings> rings;
  if (const int64_t shm = o.value("shm_bytes", int64_t{0}); shm > 0) {
    auto region = SharedRegion::attach(3, static_cast<size_t>(shm));
    if (!region.ok()) {
      std::cout << "error the worker's shared memory (fd 3): " << region.status().message() << std::endl;
      return 2;
    }
    rings = std::make_shared<Rings>(*region, o.at("shm_down").get<size_t>());
  }
  auto relay = std::make_shared<ZapRelay>(ctx, o.at("auth_endpoint").get<std::string>());
  auto zap = protocol::ZapHandler::for_context(ctx);
  zap->add_domain(kZapDomain, [relay](const std::string& key, const std::string& address) {
    return relay->ask(key, address);
  });
  protocol::SocketOptions so;
  so.max_frame_bytes = o.at("max_frame_bytes").get<int64_t>();
  so.curve_server_secret = o.at("secret_key").get<std::string>();
  so.zap_domain = kZapDomain;
  const int64_t max_message = o.at("max_message_bytes").get<int64_t>();
  const size_t max_frames = o.at("max_frames").get<size_t>();
  zmq::socket_t router;
  try {
    router = protocol::make_router(ctx, listen, so);
  } catch (const zmq::error_t& e) {
    std::cout << "error cannot listen on " << listen << ": " << e.what() << std::endl;
    return 2;
  }
  const std::string endpoint = protocol::bound_endpoint(router);
  // The tensor channel: no CURVE (its messages are sealed, protocol/bulk.h), the
  // same frame bound, and the same whole-message checks below.
  const std::string tensor_listen = o.value("tensor_listen", std::string());
  zmq::socket_t tensors;
  std::string tensor_endpoint = "-";
  if (!tensor_listen.empty()) {
    protocol::SocketOptions to;
    to.max_frame_bytes = so.max_frame_bytes;
    try {
      tensors = protocol::make_router(ctx, tensor_listen, to);
    } catch (const zmq::error_t& e) {
      std::cout << "error cannot listen on " << tensor_listen << " (tensor_listen): " << e.what() << std::endl;
      return 2;
    }
    tensor_endpoint = protocol::bound_endpoint(tensors);
  }
  const std::string monitor_endpoint = "inproc://fedpod-gate-monitor";
  if (zmq_socket_monitor(router.handle(), monitor_endpoint.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
    std::cout << "error cannot monitor the socket: " << zmq_strerror(zmq_errno()) << std::endl;
    return 2;
  }
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  monitor.set(zmq::sockopt::linger, 0);
  monitor.connect(monitor_endpoint);
  // To the worker: one message in flight at a time; the rest wait here, in the
  // bounded process, not in the worker.
  zmq::socket_t worker(ctx, zmq::socket_type::pair);
  worker.set(zmq::sockopt::linger, 0);
  worker.set(zmq::sockopt::sndhwm, 1);
  worker.connect(o.at("data_endpoint").get<std::string>());

  // The bound: everything this process maps for data from now on counts against it.
  int64_t limit = 0;
  const int64_t budget = o.at("memory_bytes").get<int64_t>();
  if (budget > 0 && !kSanitized) {
    const int64_t base = data_size();
    if (base < 0) {
      std::cout << "error cannot read /proc/self/status to set the memory limit" << std::endl;
      return 2;
    }
    limit = base + budget;
    const rlimit r{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
    if (::setrlimit(RLIMIT_DATA, &r) != 0) {
      std::cout << "error setrlimit(RLIMIT_DATA): " << std::strerror(errno) << std::endl;
      return 2;
    }
  }
  std::cout << "listening " << endpoint << " " << limit << " " << tensor_endpoint << std::endl;
  const pid_t parent = ::getppid();

  // For the worker, in order, once its socket takes them: at most one peer message
  // (the router is not read while one waits) and handshake notes (capped).
  struct Out {
    bool message;
    Frames frames;
  };
  std::deque<Out> outbox;
  bool message_waiting = false;
  constexpr size_t kMaxNotes = 4096;
  auto flush = [&] {
    while (!outbox.empty() && protocol::send_frames(worker, outbox.front().frames)) {
      if (outbox.front().message) message_waiting = false;
      outbox.pop_front();
    }
  };
  Frames frames;
  bool tensor_first = false;
  while (!g_gate_stop.load() && ::getppid() == parent) {
    zmq::pollitem_t items[] = {
        {router.handle(), 0, static_cast<short>(message_waiting ? 0 : ZMQ_POLLIN), 0},
        {worker.handle(), 0, static_cast<short>(ZMQ_POLLIN | (outbox.empty() ? 0 : ZMQ_POLLOUT)), 0},
        {monitor.handle(), 0, ZMQ_POLLIN, 0},
        {tensors ? tensors.handle() : nullptr, 0, static_cast<short>(message_waiting || !tensors ? 0 : ZMQ_POLLIN), 0}};
    protocol::poll(items, tensors ? 4 : 3, std::chrono::milliseconds(200));
    bool too_many = false;
    if (items[1].revents & ZMQ_POLLIN) {
      // Replies: [routing id, frames...] to that peer; a peer gone is a reply lost.
      for (int i = 0; i < 64 && protocol::recv_frames(worker, frames, SIZE_MAX, too_many); ++i) {
        if (frames.size() < 2) continue;
        zmq::message_t routing = std::move(frames[0]);
        frames.erase(frames.begin());
        const char route = routing.size() > 1 ? *static_cast<const char*>(routing.data()) : 0;
        if (route == kTensorRouteShm) {
          // [index, frames...]: the large frames wait in the worker's ring.
          std::string error;
          if (!rings || !adopt(rings, *rings->up, frames[0], frames, 1, error)) continue;
          frames.erase(frames.begin());
        }
        if (route == kTensorRoute || route == kTensorRouteShm) {
          if (!tensors) continue;
          zmq::message_t id(static_cast<const char*>(routing.data()) + 1, routing.size() - 1);
          (void)protocol::send_frames(tensors, frames, &id);
          continue;
        }
        (void)protocol::send_frames(router, frames, &routing);
      }
    }
    if (items[2].revents & ZMQ_POLLIN) {
      while (protocol::recv_frames(monitor, frames, 4, too_many)) {
        if (frames.size() < 2 || outbox.size() >= kMaxNotes) continue;
        Out e{false, {}};
        e.frames.push_back(text_frame(std::string(1, kGateHandshake)));
        e.frames.push_back(std::move(frames[0]));
        e.frames.push_back(std::move(frames[1]));
        outbox.push_back(std::move(e));
      }
    }
    // One whole message from `from` (the CURVE socket or the tensor socket), checked.
    auto take = [&](zmq::socket_t& from, bool tensor) {
      if (!protocol::recv_frames(from, frames, max_frames + 1, too_many) || frames.empty()) return;
      const std::string user = !tensor && frames.size() > 1 ? protocol::user_id(frames[1]) : "";
      const char* peer_prop = frames.size() > 1 ? zmq_msg_gets(frames[1].handle(), "Peer-Address") : nullptr;
      const std::string peer = peer_prop ? peer_prop : "";
      size_t bytes = 0;
      for (size_t i = 1; i < frames.size(); ++i) bytes += frames[i].size();
      Out out{true, {}};
      std::string reason, detail;
      if (too_many) {
        reason = "too_many_frames";
        detail = "message has more than " + std::to_string(max_frames) + " frames";
      } else if (bytes > static_cast<size_t>(max_message)) {
        reason = "too_large";
        detail = "message of " + std::to_string(bytes) + " bytes; this pod accepts at most " +
                 std::to_string(max_message) + " (pod.yaml max_message_bytes)";
      }
      if (tensor && !reason.empty()) {
        // Nobody authenticated to answer: the worker counts it.
        out.message = false;
        out.frames.push_back(text_frame(std::string(1, kGateTensorRefused)));
        out.frames.push_back(text_frame(reason));
        frames.clear();
        if (outbox.size() < kMaxNotes) outbox.push_back(std::move(out));
        return;
      }
      const char kind = tensor ? kGateTensor : reason.empty() ? kGateMessage : kGateRefused;
      out.frames.push_back(text_frame(std::string(1, kind)));
      out.frames.push_back(std::move(frames[0]));
      out.frames.push_back(text_frame(user));
      out.frames.push_back(text_frame(peer));
      if (reason.empty()) {
        for (size_t i = 1; i < frames.size(); ++i) out.frames.push_back(std::move(frames[i]));
        if (tensor && rings) {
          zmq::message_t index = stage(*rings, *rings->down, out.frames, 4);
          if (index.size() > 0) {
            out.frames[0] = text_frame(std::string(1, kGateTensorShm));
            out.frames.insert(out.frames.begin() + 4, std::move(index));
          }
        }
      } else {
        out.frames.push_back(text_frame(reason));
        out.frames.push_back(text_frame(detail));
      }
      frames.clear();
      outbox.push_back(std::move(out));
      message_waiting = true;
    };
    // Passed on one at a time: the next is read once the worker took this one.
    // The two sockets take turns first, so neither can starve the other.
    tensor_first = !tensor_first;
    const bool curve_ready = items[0].revents & ZMQ_POLLIN;
    const bool tensor_ready = tensors && (items[3].revents & ZMQ_POLLIN);
    if (tensor_first && tensor_ready && !message_waiting) take(tensors, true);
    if (curve_ready && !message_waiting) take(router, false);
    if (!tensor_first && tensor_ready && !message_waiting) take(tensors, true);
    flush();
  }
  zmq_socket_monitor(router.handle(), nullptr, 0);
  zap->remove_domain(kZapDomain);
  (void)tensor_endpoint;
  return 0;
}

// --- the worker's side -------------------------------------------------------------

struct Child {
  pid_t pid = -1;
  int to_child = -1;    // its stdin
  int from_child = -1;  // its stdout
};

// Starts argv with pipes on its stdin and stdout and, when inherit >= 0, that file
// descriptor as its fd 3.
StatusOr<Child> spawn(const std::vector<std::string>& argv, int inherit) {
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) return Status::internal(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(out, O_CLOEXEC) != 0) {
    ::close(in[0]);
    ::close(in[1]);
    return Status::internal(std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  const rlimit core{0, 0};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {in[0], in[1], out[0], out[1]}) ::close(fd);
    return Status::internal(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // The child: async-signal-safe calls only, until exec.
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    if (inherit >= 0) {
      if (inherit == 3) {
        ::fcntl(3, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
      } else if (::dup2(inherit, 3) != 3) {
        ::_exit(126);
      }
    }
    ::close_range(inherit >= 0 ? 4 : 3, ~0U, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(125);  // the worker already went away
    ::setrlimit(RLIMIT_CORE, &core);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  return Child{pid, in[1], out[0]};
}

bool write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads one line from `fd` until `until`; "" on timeout or end of file.
std::string read_line(int fd, Clock::time_point until) {
  std::string line;
  char c;
  while (Clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    const int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 1)));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    const ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line;
    if (c == '\n') return line;
    line += c;
  }
  return line;
}

}  // namespace

struct Gate::Impl {
  zmq::context_t& ctx;
  GateOptions opts;
  TempDir dir;           // private 0700 directory of the ipc sockets
  std::string endpoint;  // the bound public endpoint
  std::string tensor_endpoint;  // the bound tensor endpoint ("" = none)
  zmq::socket_t socket;  // PAIR: the gate's messages
  int generation = 0;
  std::shared_ptr<Rings> rings;  // this gate process's; messages still held keep older ones
  uint64_t old_bytes = 0, old_misses = 0;  // counted by earlier gate processes' rings
  pid_t pid = -1;
  int64_t limit = 0;
  Clock::time_point next_try{};
  // Answers the gate's ZAP questions on its own thread.
  std::atomic<bool> stop{false};
  std::thread answering;

  Impl(zmq::context_t& c, GateOptions o) : ctx(c), opts(std::move(o)) {}

  std::string auth_endpoint() const { return "ipc://" + dir.path() + "/auth"; }

  void answer_loop(zmq::socket_t auth) {
    Frames q;
    bool too_many = false;
    while (!stop.load()) {
      zmq::pollitem_t item{auth.handle(), 0, ZMQ_POLLIN, 0};
      protocol::poll(&item, 1, std::chrono::milliseconds(100));
      while (protocol::recv_frames(auth, q, 5, too_many)) {
        if (q.size() != 4) continue;  // [identity, id, key, address]
        auto user = opts.authenticate(q[2].to_string(), q[3].to_string());
        Frames a;
        a.push_back(std::move(q[0]));
        a.push_back(std::move(q[1]));
        a.push_back(text_frame(user ? "1" : "0"));
        a.push_back(text_frame(user ? *user : ""));
        (void)protocol::send_frames(auth, a);
      }
    }
  }

  // Starts a gate process listening on `listen`; sets pid, endpoint, socket.
  Status launch(const std::string& listen, const std::string& tensor_listen) {
    ++generation;
    const std::string data = "ipc://" + dir.path() + "/data-" + std::to_string(generation);
    zmq::socket_t s(ctx, zmq::socket_type::pair);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvhwm, 1);  // whole messages wait in the gate, not here
    s.bind(data);
    // New rings for each gate process: an ended one's blocks may still be held.
    if (rings) {
      old_bytes += rings->bytes.load();
      old_misses += rings->misses.load();
      rings.reset();
    }
    const size_t ring_bytes = static_cast<size_t>(std::max<int64_t>(opts.shared_memory_bytes, 0));
    if (ring_bytes > 0) {
      auto region = SharedRegion::create("fedpod-gate-" + opts.pod_name, 2 * ring_bytes);
      if (!region.ok()) return region.status();
      rings = std::make_shared<Rings>(*region, (*region)->size() / 2);
    }
    auto child = spawn(opts.command, rings ? rings->region->fd() : -1);
    if (!child.ok()) return child.status();
    json cfg = {{"listen", listen},
                {"tensor_listen", tensor_listen},
                {"secret_key", opts.secret_key},
                {"max_frame_bytes", opts.max_frame_bytes},
                {"max_message_bytes", opts.max_message_bytes},
                {"max_frames", opts.max_frames},
                {"memory_bytes", opts.memory_bytes},
                {"data_endpoint", data},
                {"auth_endpoint", auth_endpoint()},
                {"shm_bytes", rings ? rings->region->size() : 0},
                {"shm_down", rings ? rings->region->size() / 2 : 0},
                {"pod", opts.pod_name}};
    const bool sent = write_all(child->to_child, cfg.dump());
    ::close(child->to_child);
    const std::string line = sent ? read_line(child->from_child, Clock::now() + opts.start_timeout) : "";
    ::close(child->from_child);
    std::istringstream words(line);
    std::string word, bound;
    int64_t lim = 0;
    words >> word;
    std::string tensor_bound;
    if (word == "listening" && (words >> bound >> lim >> tensor_bound)) {
      pid = child->pid;
      endpoint = bound;
      tensor_endpoint = tensor_bound == "-" ? "" : tensor_bound;
      limit = lim;
      socket = std::move(s);
      return Status();
    }
    ::kill(child->pid, SIGKILL);
    int status = 0;
    ::waitpid(child->pid, &status, 0);
    const std::string program = opts.command.empty() ? "" : opts.command[0];
    if (word == "error") {
      std::string rest;
      std::getline(words, rest);
      return Status::invalid("the pod's receiving process (" + program + " gate):" + rest);
    }
    return Status::internal("the pod's receiving process (" + program + " gate) did not start listening within " +
                            std::to_string(opts.start_timeout.count()) + " ms; it " + describe_status(status));
  }

  void end_child() {
    if (pid <= 0) return;
    ::kill(pid, SIGTERM);
    int status = 0;
    const auto until = Clock::now() + std::chrono::seconds(3);
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      if (Clock::now() > until) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid = -1;
  }
};

Gate::Gate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

StatusOr<std::unique_ptr<Gate>> Gate::start(zmq::context_t& ctx, GateOptions opts) {
  if (opts.command.empty()) return Status::invalid("gate: no program to run");
  if (!opts.authenticate) return Status::invalid("gate: no authenticator");
  auto impl = std::make_unique<Impl>(ctx, std::move(opts));
  auto dir = TempDir::create("fedpod-gate-");
  if (!dir.ok()) return Status::internal("gate: " + dir.status().message());
  impl->dir = std::move(*dir);
  zmq::socket_t auth(ctx, zmq::socket_type::router);
  auth.set(zmq::sockopt::linger, 0);
  try {
    auth.bind(impl->auth_endpoint());
  } catch (const zmq::error_t& e) {
    return Status::internal("gate: cannot bind " + impl->auth_endpoint() + ": " + e.what());
  }
  Impl* raw = impl.get();
  impl->answering = std::thread([raw, a = std::move(auth)]() mutable { raw->answer_loop(std::move(a)); });
  std::unique_ptr<Gate> gate(new Gate(std::move(impl)));
  Status st = gate->impl_->launch(gate->impl_->opts.listen, gate->impl_->opts.tensor_listen);
  if (!st.ok()) return st;  // ~Gate stops the thread and removes the directory
  return gate;
}

Gate::~Gate() {
  impl_->end_child();
  impl_->stop = true;
  if (impl_->answering.joinable()) impl_->answering.join();
  impl_->socket.close();
}  // impl_'s TempDir removes the sockets' directory

zmq::socket_t& Gate::socket() { return impl_->socket; }

bool Gate::send(const zmq::message_t& routing, Frames& frames) {
  Impl& m = *impl_;
  const bool tensor = routing.size() > 1 && *static_cast<const char*>(routing.data()) == kTensorRoute;
  zmq::message_t index;
  if (tensor && m.rings) index = stage(*m.rings, *m.rings->up, frames, 0);
  if (index.size() == 0) return protocol::send_frames(m.socket, frames, &routing);
  const auto staged = read_index(index);
  zmq::message_t via(routing.size());
  std::memcpy(via.data(), routing.data(), routing.size());
  *static_cast<char*>(via.data()) = kTensorRouteShm;
  frames.insert(frames.begin(), std::move(index));
  if (protocol::send_frames(m.socket, frames, &via)) return true;
  for (const auto& e : staged) m.rings->up->release(e.offset);  // nobody will
  return false;
}

bool Gate::unwrap(Frames& frames, std::string& error) {
  Impl& m = *impl_;
  error.clear();
  if (frames.empty() || frames[0].size() != 1) return false;
  const char kind = *static_cast<const char*>(frames[0].data());
  if (kind == kGateTensorShm) {
    if (frames.size() < 5 || !m.rings) {
      error = "a shared-memory message without an index or rings";
      return false;
    }
    if (!adopt(m.rings, *m.rings->down, frames[4], frames, 5, error)) return false;
    frames.erase(frames.begin() + 4);
    frames[0] = text_frame(std::string(1, kGateTensor));
    return true;
  }
  // Large frames that crossed the socket: the gate's ring had no room for them.
  if (kind == kGateTensor && m.rings) {
    for (size_t i = 4; i < frames.size(); ++i) {
      if (frames[i].size() >= kShmMinFrame) m.rings->misses.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return true;
}

uint64_t Gate::shared_bytes() const { return impl_->old_bytes + (impl_->rings ? impl_->rings->bytes.load() : 0); }
uint64_t Gate::shared_misses() const {
  return impl_->old_misses + (impl_->rings ? impl_->rings->misses.load() : 0);
}
const std::string& Gate::endpoint() const { return impl_->endpoint; }
const std::string& Gate::tensor_endpoint() const { return impl_->tensor_endpoint; }
pid_t Gate::pid() const { return impl_->pid; }
int64_t Gate::memory_limit() const { return impl_->limit; }

std::optional<GateEnded> Gate::check() {
  Impl& m = *impl_;
  GateEnded ended;
  if (m.pid > 0) {
    int status = 0;
    if (::waitpid(m.pid, &status, WNOHANG) != m.pid) return std::nullopt;
    m.pid = -1;
    ended.detail = describe_status(status);
    const bool memory = WIFSIGNALED(status) && (WTERMSIG(status) == SIGABRT || WTERMSIG(status) == SIGKILL);
    ended.reason = memory ? "memory" : WIFSIGNALED(status) ? "crashed" : "exited";
    m.next_try = Clock::now();
  } else {
    // Down since an earlier restart failed: try again, once a second.
    if (Clock::now() < m.next_try) return std::nullopt;
    ended.reason = "restart";
    ended.detail = "still down";
  }
  m.socket.close();
  ended.restarted = m.launch(m.endpoint, m.tensor_endpoint);
  if (!ended.restarted.ok()) m.next_try = Clock::now() + std::chrono::seconds(1);
  return ended;
}

int gate_main(int argc, char** argv) {
  (void)argc;
  (void)argv;
  std::signal(SIGTERM, on_gate_signal);
  std::signal(SIGINT, SIG_IGN);  // the worker decides when its gate stops
  std::signal(SIGPIPE, SIG_IGN);
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  json o;
  try {
    o = json::parse(text);
    return gate_serve(o);
  } catch (const std::exception& e) {
    std::cout << "error " << e.what() << std::endl;
    return 2;
  }
}

}  // namespace fedpod::worker
