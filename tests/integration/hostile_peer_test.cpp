// Hostile peers against real `fedpod worker` processes:
//
//  - the pod's public socket lives in its receiving process (worker/gate.h): one
//    message of 6 x 256 MiB frames, each under max_frame_bytes, cannot grow it past
//    its kernel memory limit nor reach the worker; a message over max_message_bytes
//    is refused with that reason;
//  - an authenticated CURVE client sends one frame far above the pod's
//    max_frame_bytes, once through libzmq (a real 256 MiB message) and once by hand
//    (a frame header announcing 4 GiB, then a stream of bytes): the pod hangs up
//    without reading the frame, its peak RSS (VmHWM) does not move by anything like
//    the frame's size, and it keeps serving (hello, then a whole job);
//  - unauthenticated raw-TCP peers send garbage, broken ZMTP greetings and broken
//    CurveZMQ handshakes: each is hung up on, and the pod keeps serving;
//  - while a two-pod job runs, one peer floods pod A with bad messages (garbage
//    envelopes, kinds a pod does not accept, too many frames, another job's id) and
//    another runs unauthenticated handshakes: every round completes with both pods,
//    and pod A's counters hold exactly what the flood delivered.
//
// No timing is asserted here: bench/flood_bench.cpp measures what a flood costs.
//
// The hand-made CurveZMQ client (RFC 23 ZMTP 3.0 framing, RFC 26 CurveZMQ) uses
// libsodium, which fedpod::common links (sodium.h is a system header).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/audit.h"
#include "digits_job.h"
#include "identity.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using W = wire::Envelope::Body::Which;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMiB = int64_t{1} << 20;

// --- the pod process from outside ------------------------------------------------

// Peak resident set size (VmHWM) of process `pid`, in bytes; -1 when unreadable.
int64_t peak_rss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0)
      return std::stoll(line.substr(6)) * 1024;  // "VmHWM:  1234 kB"
  }
  return -1;
}

// The memory limit of the pod's receiving process (worker/gate.h), from the log
// ("event=transport ... receiving_process=PID memory_limit_bytes=N").
int64_t gate_limit(const testing::PodProcess& pod) {
  const std::regex re(R"(event=transport pod=\S+ receiving_process=\d+ memory_limit_bytes=(\d+))");
  std::smatch m;
  const std::string log = testing::read_file(pod.log);
  return std::regex_search(log, m, re) ? std::stoll(m[1]) : -1;
}

// The kernel's data-size limit (RLIMIT_DATA) of process `pid`, from
// /proc/PID/limits ("Max data size  <soft>  <hard>  bytes"); 0 when unlimited.
int64_t data_limit(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max data size", 0) != 0) continue;
    std::istringstream words(line.substr(13));
    std::string soft;
    words >> soft;
    return soft == "unlimited" ? 0 : std::stoll(soft);
  }
  return -1;
}

// Current resident set size (VmRSS) of process `pid`, in bytes; -1 when unreadable.
int64_t rss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// The port of the pod's /metrics, from its log line "event=metrics_listening ...".
int metrics_port(const testing::PodProcess& pod) {
  const std::regex listening("event=metrics_listening pod=" + pod.name +
                             R"( address=127\.0\.0\.1:(\d+))");
  std::smatch m;
  const std::string log = testing::read_file(pod.log);
  return std::regex_search(log, m, listening) ? std::stoi(m[1]) : 0;
}

std::string scrape(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(2, 0);
  c.set_read_timeout(5, 0);
  auto r = c.Get("/metrics");
  return r && r->status == 200 ? r->body : std::string();
}


double bad_messages(const std::string& text, const std::string& reason) {
  const double v = testing::metric_value(text, "fedpod_worker_bad_messages_total{reason=\"" + reason + "\"}");
  return std::isnan(v) ? 0 : v;  // a reason never seen is not exported
}

// --- a ZeroMQ client -------------------------------------------------------------

// A DEALER speaking fedpod's protocol (one thread). Counts what it sent and what came back.
class Client {
 public:
  Client(zmq::context_t& ctx, const std::string& endpoint, const protocol::SocketOptions& opts)
      : socket_(protocol::make_dealer(ctx, endpoint, opts)) {}

  zmq::socket_t& socket() { return socket_; }

  // Sends without blocking; false when the pipe is full (nothing was sent).
  bool try_send(std::vector<zmq::message_t> frames) {
    return protocol::send_frames(socket_, frames);
  }

  // The next reply, or nullptr after `timeout`.
  std::unique_ptr<protocol::Incoming> recv(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (protocol::poll(&item, 1, timeout) == 0) return nullptr;
    std::vector<zmq::message_t> frames;
    bool too_many;
    if (!protocol::recv_frames(socket_, frames, 64, too_many)) return nullptr;
    auto in = protocol::Incoming::parse(std::move(frames));
    return in.ok() ? std::move(*in) : nullptr;
  }

  // Sends hello and returns the kind of the reply; W::ERROR (with `what` set) when none came.
  W hello(std::chrono::milliseconds timeout = 20s) {
    protocol::Outgoing out("", 7);
    out.envelope().getBody().initHello();
    const auto until = Clock::now() + timeout;
    while (!try_send(out.frames())) {
      if (Clock::now() > until) return W::ERROR;
      std::this_thread::sleep_for(10ms);
    }
    auto r = recv(std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()));
    return r ? r->envelope().getBody().which() : W::ERROR;
  }

 private:
  zmq::socket_t socket_;
};

// Waits for ZMQ socket monitor `event` on `monitor` (a PAIR connected to the monitor
// endpoint). Returns false after `timeout`.
bool wait_for_event(zmq::socket_t& monitor, uint16_t event, std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  while (Clock::now() < until) {
    zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
    if (protocol::poll(&item, 1, 100ms) == 0) continue;
    std::vector<zmq::message_t> frames;
    bool too_many;
    if (!protocol::recv_frames(monitor, frames, 4, too_many) || frames.empty() ||
        frames[0].size() < 6)
      continue;
    uint16_t got;
    std::memcpy(&got, frames[0].data(), 2);
    if (got == event) return true;
  }
  return false;
}

// --- a raw TCP peer, and CurveZMQ by hand ----------------------------------------

void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}

// A TCP connection to a pod's endpoint ("tcp://127.0.0.1:PORT") speaking bytes: no
// ZeroMQ. Every call gives up after 10 s. One thread.
class RawPeer {
 public:
  explicit RawPeer(const std::string& endpoint) {
    const auto colon = endpoint.rfind(':');
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(colon + 1))));
    ::inet_pton(AF_INET, endpoint.substr(6, colon - 6).c_str(), &a.sin_addr);
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~RawPeer() { ::close(fd_); }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  bool connected() const { return connected_; }

  // Writes all `n` bytes; false once the peer has closed or reset the connection.
  bool send(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      p += w;
      n -= static_cast<size_t>(w);
      sent_ += static_cast<uint64_t>(w);
    }
    return true;
  }
  bool send(const std::string& s) { return send(s.data(), s.size()); }

  // Reads exactly `n` bytes; false on end of stream, reset or timeout.
  bool recv(void* data, size_t n) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t r = ::recv(fd_, p, n, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      p += r;
      n -= static_cast<size_t>(r);
    }
    return true;
  }

  // Reads and discards until the other side closes the connection. Returns false
  // when it is still open after `timeout`.
  bool wait_closed(std::chrono::milliseconds timeout) {
    const auto until = Clock::now() + timeout;
    char buf[4096];
    while (Clock::now() < until) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const ssize_t r = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return true;
    }
    return false;
  }

  // ZMTP 3.0 frames: a command (flags 0x04, 0x06 when long) or a message frame.
  bool send_frame(const std::string& body, bool command) {
    std::string h(1, static_cast<char>(command ? 0x04 : 0x00));
    if (body.size() > 255) {
      h[0] = static_cast<char>(h[0] | 0x02);
      uint8_t size[8];
      put_be64(size, body.size());
      h.append(reinterpret_cast<char*>(size), 8);
    } else {
      h += static_cast<char>(body.size());
    }
    return send(h + body);
  }
  // The next frame's body (at most 64 KiB); nullopt on close, timeout or a bigger frame.
  std::optional<std::string> recv_frame() {
    uint8_t flags;
    if (!recv(&flags, 1)) return std::nullopt;
    uint64_t size = 0;
    if (flags & 0x02) {
      uint8_t b[8];
      if (!recv(b, 8)) return std::nullopt;
      for (uint8_t x : b) size = size << 8 | x;
    } else {
      uint8_t b;
      if (!recv(&b, 1)) return std::nullopt;
      size = b;
    }
    if (size > 65536) return std::nullopt;
    std::string body(size, '\0');
    if (!recv(body.data(), body.size())) return std::nullopt;
    return body;
  }

  uint64_t bytes_sent() const { return sent_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  uint64_t sent_ = 0;
};

// A ZMTP 3.0 greeting (64 bytes) announcing `mechanism`, as a client.
std::string greeting(const std::string& mechanism, uint8_t major = 3) {
  std::string g(64, '\0');
  g[0] = '\xff';
  g[9] = '\x7f';
  g[10] = static_cast<char>(major);
  g.replace(12, mechanism.size(), mechanism);
  return g;
}

std::string bytes(const uint8_t* p, size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

enum class Handshake { kReady, kRefused, kBroken };

// The client side of a CurveZMQ handshake (RFC 26), as libzmq's curve_client does
// it, with `client`'s long-term keys against a server whose public key is
// `server_z85`. kReady: the server sent READY (the ZAP handler admitted the key);
// kRefused: it sent ERROR (`why` gets its reason); kBroken: anything else.
Handshake curve_handshake(RawPeer& peer, const protocol::CurveKeyPair& client,
                          const std::string& server_z85, std::string* why = nullptr) {
  if (sodium_init() < 0) return Handshake::kBroken;
  uint8_t server[32], pub[32], sec[32];
  if (!zmq_z85_decode(server, server_z85.c_str()) ||
      !zmq_z85_decode(pub, client.public_key.c_str()) ||
      !zmq_z85_decode(sec, client.secret_key.c_str())) {
    return Handshake::kBroken;
  }
  std::string g(64, '\0');
  if (!peer.send(greeting("CURVE")) || !peer.recv(g.data(), g.size()) || g[0] != '\xff' ||
      g.compare(12, 5, "CURVE") != 0) {
    return Handshake::kBroken;
  }
  // HELLO: C' and Box[64 zero bytes](C'->S).
  uint8_t cn_pub[32], cn_sec[32];
  crypto_box_keypair(cn_pub, cn_sec);
  uint64_t cn_nonce = 1;
  uint8_t nonce[24];
  std::memcpy(nonce, "CurveZMQHELLO---", 16);
  put_be64(nonce + 16, cn_nonce);
  uint8_t hello_plain[32 + 64] = {0}, hello_box[32 + 64];
  if (crypto_box(hello_box, hello_plain, sizeof hello_plain, nonce, server, cn_sec) != 0)
    return Handshake::kBroken;
  std::string hello = std::string("\x05HELLO\x01\x00", 8) + std::string(72, '\0') +
                      bytes(cn_pub, 32) + bytes(nonce + 16, 8) + bytes(hello_box + 16, 80);
  if (!peer.send_frame(hello, true)) return Handshake::kBroken;
  // WELCOME: Box[S' + cookie](S->C').
  auto welcome = peer.recv_frame();
  if (!welcome || welcome->size() != 168 || welcome->compare(0, 8, "\x07WELCOME") != 0)
    return Handshake::kBroken;
  std::memcpy(nonce, "WELCOME-", 8);
  std::memcpy(nonce + 8, welcome->data() + 8, 16);
  uint8_t welcome_box[16 + 144] = {0}, welcome_plain[16 + 144];
  std::memcpy(welcome_box + 16, welcome->data() + 24, 144);
  if (crypto_box_open(welcome_plain, welcome_box, sizeof welcome_box, nonce, server, cn_sec) != 0) {
    return Handshake::kBroken;
  }
  const uint8_t* cn_server = welcome_plain + 32;
  const uint8_t* cookie = welcome_plain + 64;  // 96 bytes
  // INITIATE: cookie, Box[C + vouch + metadata](C'->S'), vouch = Box[C' + S](C->S').
  uint8_t vouch_nonce[24], vouch_plain[32 + 64] = {0}, vouch_box[32 + 64];
  std::memcpy(vouch_nonce, "VOUCH---", 8);
  randombytes_buf(vouch_nonce + 8, 16);
  std::memcpy(vouch_plain + 32, cn_pub, 32);
  std::memcpy(vouch_plain + 64, server, 32);
  if (crypto_box(vouch_box, vouch_plain, sizeof vouch_plain, vouch_nonce, cn_server, sec) != 0) {
    return Handshake::kBroken;
  }
  const std::string metadata = std::string("\x0bSocket-Type\x00\x00\x00\x06", 16) + "DEALER";
  std::string plain = std::string(32, '\0') + bytes(pub, 32) + bytes(vouch_nonce + 8, 16) +
                      bytes(vouch_box + 16, 80) + metadata;
  std::string box(plain.size(), '\0');
  std::memcpy(nonce, "CurveZMQINITIATE", 16);
  put_be64(nonce + 16, ++cn_nonce);
  if (crypto_box(reinterpret_cast<uint8_t*>(box.data()),
                 reinterpret_cast<const uint8_t*>(plain.data()), plain.size(), nonce, cn_server,
                 cn_sec) != 0) {
    return Handshake::kBroken;
  }
  const std::string initiate =
      "\x08INITIATE" + bytes(cookie, 96) + bytes(nonce + 16, 8) + box.substr(16);
  if (!peer.send_frame(initiate, true)) return Handshake::kBroken;
  auto answer = peer.recv_frame();
  if (!answer) return Handshake::kBroken;
  if (answer->compare(0, 6, "\x05READY") == 0) return Handshake::kReady;
  if (answer->compare(0, 6,
                      "\x05"
                      "ERROR") == 0) {
    if (why && answer->size() > 7) *why = answer->substr(7);
    return Handshake::kRefused;
  }
  return Handshake::kBroken;
}

// --- the tests -------------------------------------------------------------------

class HostilePeerTest : public ::testing::Test {
 protected:
  // A digits pod with /metrics; `extra` is appended to its pod.yaml.
  testing::PodProcess start_pod(const std::string& name, const std::string& extra = "") {
    auto pod = testing::start_digits_pod(dir_, id_, name, "general-modeller",
                                         "metrics_listen: 127.0.0.1:0\n" + extra);
    EXPECT_FALSE(pod.endpoint.empty())
        << "worker " << name << " did not start: " << testing::read_file(pod.log);
    return pod;
  }

  coordinator::JobSpec job(const std::string& job_id,
                           const std::vector<const testing::PodProcess*>& pods) {
    coordinator::JobSpec spec =
        testing::digits_job_spec(job_id, (dir_.path() / job_id).string(), id_.modeller_key_file);
    spec.rounds = 2;
    spec.round_timeout = 120s;
    spec.connect_timeout = 30s;
    for (const auto* p : pods) testing::add_pod(spec, *p);
    return spec;
  }

  // Runs `spec` with an in-process coordinator; returns history.json ({} on failure).
  nlohmann::json run_job(coordinator::JobSpec spec) {
    coordinator::validate(spec, "test job");
    zmq::context_t ctx(1);
    std::ostringstream progress;
    coordinator::Coordinator c(ctx, spec, null_logger(), progress);
    auto result = c.run();
    EXPECT_TRUE(result.ok()) << result.status().to_string();
    if (!result.ok()) return {};
    EXPECT_EQ(result->rounds_completed, spec.rounds);
    return nlohmann::json::parse(testing::read_file(result->history_path));
  }

  testing::TempDir dir_;
  testing::TestIdentity id_{dir_.path()};
};

// One frame of 256 MiB against max_frame_bytes 1 MiB, through libzmq: the pod drops
// the connection on the frame's header and never holds the frame.
TEST_F(HostilePeerTest, OversizedFrameIsRefusedWithoutAllocatingIt) {
  auto pod = start_pod("pod-a", "max_frame_bytes: 1048576\n");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client attacker(ctx, pod.endpoint, id_.client_options("pod-a"));
  // Authenticated and answered first, so the pod's steady state is the baseline.
  ASSERT_EQ(attacker.hello(), W::HELLO_REPLY) << testing::read_file(pod.log);
  const int64_t rss_before = peak_rss(pod.process->pid());
  ASSERT_GT(rss_before, 0);
  // The receiving process owns the socket: it reads the frame's header.
  const pid_t gate = testing::receiving_process_pid(pod);
  const int64_t gate_before = peak_rss(gate);
  ASSERT_GT(gate_before, 0) << testing::read_file(pod.log);

  ASSERT_EQ(zmq_socket_monitor(attacker.socket().handle(), "inproc://hostile-monitor",
                               ZMQ_EVENT_DISCONNECTED),
            0);
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  monitor.set(zmq::sockopt::linger, 0);
  monitor.connect("inproc://hostile-monitor");

  const size_t frame_bytes = 256 * kMiB;
  {
    protocol::Outgoing out("", 8);
    out.envelope().getBody().initHello();
    std::vector<zmq::message_t> frames = out.frames();
    frames.emplace_back(frame_bytes);  // uninitialized: libzmq reads it once, to encrypt it
    ASSERT_TRUE(attacker.try_send(std::move(frames)));
  }
  EXPECT_TRUE(wait_for_event(monitor, ZMQ_EVENT_DISCONNECTED, 60s))
      << "the pod did not drop the connection";
  EXPECT_EQ(attacker.recv(1s), nullptr) << "the oversized message was answered";
  zmq_socket_monitor(attacker.socket().handle(), nullptr, 0);

  // The pod never saw the message: nothing counted as received or refused, no growth.
  const std::string metrics = scrape(metrics_port(pod));
  EXPECT_EQ(bad_messages(metrics, "envelope") + bad_messages(metrics, "too_many_frames") +
                bad_messages(metrics, "content"),
            0)
      << metrics;
  const int64_t rss_after = peak_rss(pod.process->pid());
  EXPECT_LT(rss_after - rss_before, 16 * kMiB)
      << "peak RSS " << rss_before << " -> " << rss_after << " bytes";
  const int64_t gate_after = peak_rss(gate);
  EXPECT_LT(gate_after - gate_before, 16 * kMiB)
      << "receiving process peak RSS " << gate_before << " -> " << gate_after << " bytes";

  // Still serving: another client, this one again (libzmq reconnected it), a job.
  Client other(ctx, pod.endpoint, id_.client_options("pod-a"));
  EXPECT_EQ(other.hello(), W::HELLO_REPLY);
  EXPECT_EQ(attacker.hello(), W::HELLO_REPLY);
  auto spec = job("after-oversized", {&pod});
  spec.rounds = 1;
  auto h = run_job(spec);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h["rounds"][0]["pods"]["pod-a"]["outcome"], "ok");
  EXPECT_TRUE(pod.process->running());
  testing::record_fault("hostile input",
                        "one 256 MiB frame from an authenticated peer (max_frame_bytes 1 MiB)", 1,
                        "connection dropped on the frame header; peak RSS grew by " +
                            std::to_string((rss_after - rss_before) / 1024) + " KiB (worker), " +
                            std::to_string((gate_after - gate_before) / 1024) +
                            " KiB (receiving process); pod kept serving and trained a job");
}

// The same by hand after a real CurveZMQ handshake: a frame header announcing 4 GiB,
// then bytes streamed until the pod hangs up. The client never holds the frame, so
// any size can be announced; the pod reads only the header.
TEST_F(HostilePeerTest, AnnouncedHugeFrameIsRefusedOnItsHeader) {
  auto pod = start_pod("pod-a", "max_frame_bytes: 1048576\n");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client client(ctx, pod.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(client.hello(), W::HELLO_REPLY);
  const int64_t rss_before = peak_rss(pod.process->pid());
  const pid_t gate = testing::receiving_process_pid(pod);
  const int64_t gate_before = peak_rss(gate);
  ASSERT_GT(gate_before, 0) << testing::read_file(pod.log);

  RawPeer raw(pod.endpoint);
  ASSERT_TRUE(raw.connected());
  std::string why;
  ASSERT_EQ(curve_handshake(raw, id_.modeller, pod.public_key, &why), Handshake::kReady) << why;
  const uint64_t announced = uint64_t{4} << 30;
  uint8_t header[9] = {0x02};  // a message frame, long size, no more frames
  put_be64(header + 1, announced);
  const uint64_t after_handshake = raw.bytes_sent();
  ASSERT_TRUE(raw.send(header, sizeof header));
  const std::string chunk(kMiB, '\x5a');
  uint64_t streamed = 0;
  while (streamed < 256 * uint64_t(kMiB) && raw.send(chunk)) streamed += chunk.size();
  EXPECT_TRUE(raw.wait_closed(30s));
  const uint64_t accepted = raw.bytes_sent() - after_handshake;
  // What the kernel's socket buffers took before the reset, not what the pod read.
  EXPECT_LT(accepted, 64 * uint64_t(kMiB))
      << "the pod kept reading a frame announced at " << announced << " bytes";
  const int64_t rss_after = peak_rss(pod.process->pid());
  EXPECT_LT(rss_after - rss_before, 16 * kMiB)
      << "peak RSS " << rss_before << " -> " << rss_after << " bytes";
  const int64_t gate_after = peak_rss(gate);
  EXPECT_LT(gate_after - gate_before, 16 * kMiB)
      << "receiving process peak RSS " << gate_before << " -> " << gate_after << " bytes";
  EXPECT_EQ(client.hello(), W::HELLO_REPLY);
  EXPECT_TRUE(pod.process->running());
  testing::record_fault(
      "hostile input", "a CurveZMQ frame header announcing 4 GiB, then a byte stream", 1,
      "connection reset after " + std::to_string(accepted / 1024) +
          " KiB (socket buffers); peak RSS grew by " + std::to_string((rss_after - rss_before) / 1024) +
          " KiB (worker), " + std::to_string((gate_after - gate_before) / 1024) +
          " KiB (receiving process); pod kept serving");
}

// A message of frames each under max_frame_bytes, which libzmq holds whole until its
// last frame: one of 6 x 256 MiB (1.5 GiB) from an admitted key. The pod's public
// socket lives in its receiving process, whose data size the kernel limits to its
// start-up size plus transport_memory; the message cannot be held there, so the
// attacker's connection is dropped or the receiving process ends and is restarted.
// The worker process never sees a byte of it, and the pod keeps serving.
TEST_F(HostilePeerTest, OneMessageOfSixLargeFramesStaysUnderTheDocumentedBound) {
  const int64_t transport_memory = 576 * kMiB;
  auto pod = start_pod("pod-a",
                       "max_frame_bytes: 314572800\nmax_message_bytes: 256MiB\ntransport_memory: 576MiB\n");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client attacker(ctx, pod.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(attacker.hello(), W::HELLO_REPLY) << testing::read_file(pod.log);
  const pid_t gate = testing::receiving_process_pid(pod);
  ASSERT_GT(gate, 0) << "no receiving process in the log: " << testing::read_file(pod.log);
  const int64_t limit = gate_limit(pod);
  ASSERT_GE(limit, 0);
  // The limit the log states is the one the kernel enforces (0: a sanitizer build,
  // whose shadow memory an rlimit forbids; the message is then refused as too large).
  EXPECT_EQ(data_limit(gate), limit);
  const int64_t worker_before = peak_rss(pod.process->pid());
  const int64_t gate_before = rss(gate);
  ASSERT_GT(worker_before, 0);
  ASSERT_GT(gate_before, 0);

  ASSERT_EQ(zmq_socket_monitor(attacker.socket().handle(), "inproc://six-frames-monitor", ZMQ_EVENT_DISCONNECTED),
            0);
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  monitor.set(zmq::sockopt::linger, 0);
  monitor.connect("inproc://six-frames-monitor");

  // The receiving process's resident size, sampled while the message arrives.
  std::atomic<bool> sampling{true};
  std::atomic<int64_t> gate_seen{gate_before};
  std::thread sampler([&] {
    while (sampling.load()) {
      const int64_t v = rss(gate);
      if (v < 0) break;  // it ended
      if (v > gate_seen.load()) gate_seen = v;
      std::this_thread::sleep_for(1ms);
    }
  });
  const size_t frame_bytes = 256 * kMiB;
  std::unique_ptr<char[]> frame(new char[frame_bytes]);  // one buffer, sent six times
  {
    protocol::Outgoing out("", 9);
    out.envelope().getBody().initHello();
    std::vector<zmq::message_t> frames = out.frames();
    for (int i = 0; i < 6; ++i) frames.emplace_back(frame.get(), frame_bytes, nullptr, nullptr);
    ASSERT_TRUE(attacker.try_send(std::move(frames)));
  }
  // The outcome: the connection dropped (libzmq could not allocate a frame, or the
  // receiving process ended), or, without a limit, a refusal naming the size.
  std::string outcome;
  const auto until = Clock::now() + 180s;
  while (outcome.empty() && Clock::now() < until) {
    if (wait_for_event(monitor, ZMQ_EVENT_DISCONNECTED, 200ms)) outcome = "connection dropped";
    if (auto r = attacker.recv(0ms)) {
      auto body = r->envelope().getBody();
      outcome = body.which() == W::ERROR ? "refused: " + std::string(body.getError().getMessage().cStr())
                                         : "answered";
    }
  }
  sampling = false;
  sampler.join();
  zmq_socket_monitor(attacker.socket().handle(), nullptr, 0);
  ASSERT_FALSE(outcome.empty()) << "no outcome within 180 s";
  if (limit > 0) {
    EXPECT_EQ(outcome, "connection dropped");
    EXPECT_LT(gate_seen.load() - gate_before, transport_memory + 64 * kMiB)
        << "receiving process RSS " << gate_before << " -> " << gate_seen.load();
  } else {
    // No limit (a sanitizer build): the receiving process holds the message whole,
    // refuses it by size, and still never hands it to the worker.
    EXPECT_NE(outcome.find("max_message_bytes"), std::string::npos) << outcome;
  }

  // The worker process never held the message.
  const int64_t worker_after = peak_rss(pod.process->pid());
  EXPECT_LT(worker_after - worker_before, 16 * kMiB)
      << "worker peak RSS " << worker_before << " -> " << worker_after << " bytes";
  // Still serving (through a restarted receiving process, if it ended), and training.
  Client other(ctx, pod.endpoint, id_.client_options("pod-a"));
  EXPECT_EQ(other.hello(), W::HELLO_REPLY) << testing::read_file(pod.log);
  auto spec = job("after-six-frames", {&pod});
  spec.rounds = 1;
  auto h = run_job(spec);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h["rounds"][0]["pods"]["pod-a"]["outcome"], "ok");
  EXPECT_TRUE(pod.process->running());
  const std::string metrics = scrape(metrics_port(pod));
  const double restarts = testing::metric_value(metrics, "fedpod_worker_transport_restarts_total{reason=\"memory\"}");
  const bool restarted = !std::isnan(restarts) && restarts >= 1;
  if (restarted) {
    EXPECT_NE(testing::receiving_process_pid(pod), gate);
    EXPECT_CONTAINS(testing::read_file(id_.audit_log("pod-a")), "\"event\":\"transport_restarted\"");
    EXPECT_TRUE(worker::verify_audit_log(id_.audit_log("pod-a")).ok);
  }
  testing::record_fault(
      "hostile input", "one message of 6 x 256 MiB frames from an admitted key (max_message_bytes 256 MiB)", 1,
      outcome + (restarted ? " (the receiving process ended on its limit and was restarted)" : "") +
          "; receiving process RSS grew by at most " + std::to_string((gate_seen.load() - gate_before) / kMiB) +
          (limit > 0 ? " MiB (kernel limit: start-up size + transport_memory 576 MiB)"
                                : " MiB (no kernel limit: a sanitizer build)") +
          "; worker peak RSS grew by " +
          std::to_string((worker_after - worker_before) / 1024) + " KiB; pod kept serving and trained a job");
}

// Within the receiving process's memory: a message over max_message_bytes is refused
// with a reason naming the limit and counted, and the worker never holds it; one just
// under the limit reaches the worker (and is answered).
TEST_F(HostilePeerTest, MessageOverMaxMessageBytesIsRefusedByTheReceivingProcess) {
  auto pod = start_pod("pod-a", "max_message_bytes: 64MiB\n");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client client(ctx, pod.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(client.hello(), W::HELLO_REPLY);
  const int64_t worker_before = peak_rss(pod.process->pid());
  std::unique_ptr<char[]> frame(new char[32 * kMiB]);
  auto send = [&](int frames_of_32_mib) -> std::string {
    protocol::Outgoing out("", 10);
    out.envelope().getBody().initHello();
    std::vector<zmq::message_t> frames = out.frames();
    for (int i = 0; i < frames_of_32_mib; ++i) frames.emplace_back(frame.get(), 32 * kMiB, nullptr, nullptr);
    if (!client.try_send(std::move(frames))) return "not sent";
    auto r = client.recv(60s);
    if (!r) return "no answer";
    auto body = r->envelope().getBody();
    return body.which() == W::ERROR ? std::string(body.getError().getMessage().cStr()) : "answered";
  };
  const std::string over = send(3);  // 96 MiB
  EXPECT_NE(over.find("max_message_bytes"), std::string::npos) << over;
  const int64_t worker_after = peak_rss(pod.process->pid());
  EXPECT_LT(worker_after - worker_before, 16 * kMiB) << worker_before << " -> " << worker_after;
  const std::string under = send(1);  // 32 MiB: passed on whole, the worker decides
  EXPECT_EQ(under.find("max_message_bytes"), std::string::npos) << under;
  const std::string metrics = scrape(metrics_port(pod));
  EXPECT_EQ(bad_messages(metrics, "too_large"), 1) << metrics;
  EXPECT_EQ(client.hello(), W::HELLO_REPLY);
}

// The receiving process ended from outside (SIGKILL, as the kernel's OOM killer
// would): the worker starts a new one on the same endpoint, counts and audits it,
// and coordinators' connections come back by themselves.
TEST_F(HostilePeerTest, ReceivingProcessThatEndsIsRestartedOnTheSameEndpoint) {
  auto pod = start_pod("pod-a");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client client(ctx, pod.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(client.hello(), W::HELLO_REPLY);
  const pid_t first = testing::receiving_process_pid(pod);
  ASSERT_GT(first, 0) << testing::read_file(pod.log);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  pid_t second = -1;
  const auto until = Clock::now() + 60s;
  while ((second = testing::receiving_process_pid(pod)) == first && Clock::now() < until) std::this_thread::sleep_for(20ms);
  ASSERT_NE(second, first) << "not restarted: " << testing::read_file(pod.log);
  EXPECT_CONTAINS(testing::read_file(pod.log), "event=transport_restarted pod=pod-a reason=memory");
  // The same client, reconnected by libzmq to the same endpoint.
  EXPECT_EQ(client.hello(), W::HELLO_REPLY);
  const std::string metrics = scrape(metrics_port(pod));
  EXPECT_EQ(testing::metric_value(metrics, "fedpod_worker_transport_restarts_total{reason=\"memory\"}"), 1)
      << metrics;
  EXPECT_CONTAINS(testing::read_file(id_.audit_log("pod-a")), "\"event\":\"transport_restarted\"");
  auto spec = job("after-restart", {&pod});
  spec.rounds = 1;
  auto h = run_job(spec);
  ASSERT_FALSE(h.empty());
  EXPECT_EQ(h["rounds"][0]["pods"]["pod-a"]["outcome"], "ok");
  testing::record_fault("process fault", "the pod's receiving process killed (SIGKILL)", 1,
                        "restarted on the same endpoint, counted and audited; the client reconnected by "
                        "itself; a job ran");
}

// Unauthenticated raw TCP: garbage, broken greetings, broken and refused CurveZMQ
// handshakes, and connections that stop half-way. Each is hung up on (or simply
// abandoned), and the pod keeps serving.
TEST_F(HostilePeerTest, RawTcpGarbageAndBrokenHandshakesDoNotDisturbThePod) {
  auto pod = start_pod("pod-a");
  ASSERT_FALSE(pod.endpoint.empty());
  std::mt19937 rng(301);
  std::string garbage(64 * 1024, '\0');
  for (auto& c : garbage) c = static_cast<char>(rng());
  garbage[0] = 'G';  // not the 0xFF of a ZMTP signature
  std::string hello_junk = std::string("\x05HELLO\x01\x00", 8) + std::string(192, '\x11');
  uint8_t huge[9] = {0x06};  // a long command announcing 2^62 bytes
  put_be64(huge + 1, uint64_t{1} << 62);

  struct Case {
    std::string what;
    std::vector<std::string> sends;
  };
  const std::vector<Case> cases = {
      {"64 KiB of random bytes", {garbage}},
      {"ZMTP greeting with the NULL mechanism", {greeting("NULL")}},
      {"ZMTP greeting of version 1", {greeting("CURVE", 1) + std::string(64, '\0')}},
      {"CURVE greeting, HELLO of the wrong size",
       {greeting("CURVE"), std::string("\x04\x0b\x05HELLO\x01\x00zzz", 13)}},
      {"CURVE greeting, HELLO whose box does not open",
       {greeting("CURVE"), std::string("\x04\xc8", 2) + hello_junk}},
      {"CURVE greeting, a command announcing 2^62 bytes", {greeting("CURVE"), bytes(huge, 9)}},
      {"CURVE greeting, then a message frame before the handshake",
       {greeting("CURVE"), std::string("\x00\x03"
                                       "abc",
                                       5)}},
  };
  int injected = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    RawPeer raw(pod.endpoint);
    ASSERT_TRUE(raw.connected());
    for (const auto& s : c.sends) raw.send(s);  // may fail once the pod has hung up
    EXPECT_TRUE(raw.wait_closed(20s)) << "the pod kept the connection open";
    ++injected;
  }
  // A CurveZMQ handshake with a key of no user in the pod's policy: ZAP refuses it.
  {
    RawPeer raw(pod.endpoint);
    std::string why;
    EXPECT_EQ(curve_handshake(raw, protocol::generate_curve_keypair(), pod.public_key, &why),
              Handshake::kRefused);
    ++injected;
  }
  // Connections that go away half-way: the pod must not wait on them.
  for (int i = 0; i < 20; ++i) {
    RawPeer raw(pod.endpoint);
    if (i % 2) raw.send(greeting("CURVE").substr(0, 11));
    ++injected;
  }
  zmq::context_t ctx(1);
  Client client(ctx, pod.endpoint, id_.client_options("pod-a"));
  EXPECT_EQ(client.hello(), W::HELLO_REPLY) << testing::read_file(pod.log);
  const std::string metrics = scrape(metrics_port(pod));
  EXPECT_EQ(testing::metric_value(metrics, "fedpod_access_denied_total{reason=\"unknown_key\"}"), 1) << metrics;
  // Handshake failures are counted by reason, and the protocol ones audited (coalesced).
  EXPECT_EQ(testing::metric_value(metrics, "fedpod_worker_handshake_failures_total{reason=\"auth\"}"), 1) << metrics;
  EXPECT_GE(testing::metric_value(metrics, "fedpod_worker_handshake_failures_total{reason=\"protocol\"}"), 3)
      << metrics;
  EXPECT_CONTAINS(testing::read_file(id_.audit_log("pod-a")), "\"event\":\"handshake_failed\"");
  EXPECT_TRUE(pod.process->running());
  testing::record_fault(
      "hostile input",
      "unauthenticated raw TCP: garbage, broken ZMTP greetings and CurveZMQ handshakes, "
      "abandoned connections",
      injected,
      "each connection closed by the pod; unknown key counted; handshake failures counted by reason and "
      "audited; pod kept serving");
}

// What one flooding peer sent and got back.
struct FloodCounts {
  std::atomic<int64_t> garbage{0}, wrong_kind{0}, too_many_frames{0}, wrong_job{0};
  std::atomic<int64_t> replies{0}, bad_message_replies{0}, precondition_replies{0};
  int64_t sent() const { return garbage + wrong_kind + too_many_frames + wrong_job; }
};

// Floods `client` with bad messages until `stop`, keeping at most `window` unanswered
// (so every reply fits the pod's send queue and none is dropped), then collects the
// replies still due. One message in 256 carries too many frames.
void flood(Client& client, const std::atomic<bool>& stop, FloodCounts& n, int64_t window = 256) {
  const std::string junk(40, '\xAB');
  protocol::Outgoing wrong_kind("", 1);
  wrong_kind.envelope().getBody().initJobAccepted();  // a pod's reply, not a request
  protocol::Outgoing wrong_job("someone-elses-job", 2);
  wrong_job.envelope().getBody().initFetchResult().setRound(1);
  auto collect = [&](std::chrono::milliseconds timeout) {
    auto r = client.recv(timeout);
    if (!r) return false;
    ++n.replies;
    auto body = r->envelope().getBody();
    if (body.which() == W::ERROR) {
      const StatusCode code = protocol::from_wire(body.getError().getCode());
      if (code == StatusCode::kBadMessage) ++n.bad_message_replies;
      if (code == StatusCode::kFailedPrecondition) ++n.precondition_replies;
    }
    return true;
  };
  for (int64_t i = 0; !stop.load(); ++i) {
    while (n.sent() - n.replies >= window && !stop.load()) collect(100ms);
    std::vector<zmq::message_t> frames;
    std::atomic<int64_t>* counter;
    switch (i % 256 == 255 ? 3 : i % 3) {
      case 0:
        frames.emplace_back(junk.data(), junk.size());
        counter = &n.garbage;
        break;
      case 1:
        frames = wrong_kind.frames();
        counter = &n.wrong_kind;
        break;
      case 2:
        frames = wrong_job.frames();
        counter = &n.wrong_job;
        break;
      default:
        frames = wrong_kind.frames();
        for (size_t f = frames.size(); f < protocol::Limits().max_frames + 1; ++f)
          frames.emplace_back();
        counter = &n.too_many_frames;
    }
    if (client.try_send(std::move(frames))) ++*counter;
    while (collect(0ms)) {
    }
  }
  const auto until = Clock::now() + 60s;
  while (n.replies < n.sent() && Clock::now() < until) collect(100ms);
}

// While a two-pod job runs, pod A is flooded by an authenticated peer (bad
// messages, as fast as the pod answers them) and an unauthenticated one (CurveZMQ
// handshakes with an unknown key, and garbage connections). Every round completes
// with both pods, and pod A counted every bad message it was sent.
TEST_F(HostilePeerTest, FloodOfBadMessagesDoesNotStopTheOthersRounds) {
  auto pod_a = start_pod("pod-a");
  auto pod_b = start_pod("pod-b");
  ASSERT_FALSE(pod_a.endpoint.empty());
  ASSERT_FALSE(pod_b.endpoint.empty());
  zmq::context_t ctx(1);
  Client flooder(ctx, pod_a.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(flooder.hello(), W::HELLO_REPLY);

  std::atomic<bool> stop{false};
  FloodCounts counts;
  std::thread flood_thread([&] { flood(flooder, stop, counts); });
  std::atomic<int64_t> initiates{0}, refused{0}, garbage_connections{0};
  std::thread unauthenticated([&] {
    const auto stranger = protocol::generate_curve_keypair();
    for (int i = 0; !stop.load(); ++i) {
      RawPeer raw(pod_a.endpoint);
      if (i % 4 == 3) {
        raw.send("GET / HTTP/1.1\r\n\r\n");
        ++garbage_connections;
        continue;
      }
      ++initiates;  // counted before: the INITIATE may reach the pod however the call ends
      if (curve_handshake(raw, stranger, pod_a.public_key) == Handshake::kRefused) ++refused;
    }
  });
  // The flood is under way before the job starts and lasts until it ends.
  const auto started = Clock::now();
  while (counts.replies == 0 && Clock::now() - started < 30s) std::this_thread::sleep_for(10ms);
  auto spec = job("under-flood", {&pod_a, &pod_b});
  spec.rounds = 3;
  const int64_t sent_before_job = counts.sent();
  auto h = run_job(spec);
  const int64_t sent_during_job = counts.sent() - sent_before_job;
  stop = true;
  flood_thread.join();
  unauthenticated.join();

  ASSERT_FALSE(h.empty()) << testing::read_file(pod_a.log).substr(0, 4000);
  ASSERT_EQ(h["rounds"].size(), 3u);
  for (const auto& r : h["rounds"]) {
    SCOPED_TRACE("round " + r["round"].dump());
    EXPECT_EQ(r["pods_answered"], 2);
    EXPECT_EQ(r["pods"]["pod-a"]["outcome"], "ok");
    EXPECT_EQ(r["pods"]["pod-b"]["outcome"], "ok");
  }
  EXPECT_GT(sent_during_job, 0);
  EXPECT_GT(counts.too_many_frames.load(), 0);
  EXPECT_GT(refused.load(), 0);

  // Every message sent was answered, and counted by reason.
  EXPECT_EQ(counts.replies.load(), counts.sent());
  EXPECT_EQ(counts.bad_message_replies.load(),
            counts.garbage + counts.wrong_kind + counts.too_many_frames);
  EXPECT_EQ(counts.precondition_replies.load(), counts.wrong_job.load());
  const std::string m = scrape(metrics_port(pod_a));
  EXPECT_EQ(bad_messages(m, "envelope"), counts.garbage.load()) << m;
  EXPECT_EQ(bad_messages(m, "unexpected_kind"), counts.wrong_kind.load()) << m;
  EXPECT_EQ(bad_messages(m, "too_many_frames"), counts.too_many_frames.load()) << m;
  EXPECT_EQ(bad_messages(m, "content"), 0) << m;
  const double unknown = testing::metric_value(m, "fedpod_access_denied_total{reason=\"unknown_key\"}");
  EXPECT_GE(unknown, refused.load()) << m;
  EXPECT_LE(unknown, initiates.load()) << m;
  EXPECT_EQ(testing::metric_value(m, "fedpod_worker_jobs_total{outcome=\"accepted\"}"), 1) << m;
  // Refusals are counted, not each logged: the log stays small however long the flood.
  const std::string log = testing::read_file(pod_a.log);
  size_t lines = 0;
  for (size_t at = log.find("event=request_refused"); at != std::string::npos;
       at = log.find("event=request_refused", at + 1)) {
    ++lines;
  }
  EXPECT_LT(static_cast<int64_t>(lines), counts.sent() / 2) << "one log line per refused message";
  EXPECT_TRUE(pod_a.process->running());
  EXPECT_TRUE(pod_b.process->running());
  testing::record_fault(
      "hostile input",
      "flood of bad messages (garbage envelopes, wrong kinds, too many frames, another job's id) "
      "and unknown-key handshakes at one pod during a 2-pod job",
      static_cast<int>(counts.sent() + initiates + garbage_connections),
      "every round completed with both pods; each bad message answered and counted by reason");
}


size_t count_lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

// 100,000 bad messages from an admitted key: each is answered and counted, but the
// pod's log grows by at most PeerLines' limit (5 lines a second of each event a peer
// can provoke), whatever the flood's length; the rest are counted in
// fedpod_worker_log_lines_suppressed_total.
TEST_F(HostilePeerTest, HundredThousandBadMessagesAddABoundedNumberOfLogLines) {
  auto pod = start_pod("pod-a");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client flooder(ctx, pod.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(flooder.hello(), W::HELLO_REPLY);
  const size_t lines_before = count_lines(testing::read_file(pod.log));
  std::atomic<bool> stop{false};
  FloodCounts counts;
  const auto start = Clock::now();
  std::thread flood_thread([&] { flood(flooder, stop, counts); });
  while (counts.sent() < 100000 && Clock::now() - start < 300s) std::this_thread::sleep_for(10ms);
  stop = true;
  flood_thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_GE(counts.sent(), 100000) << "the flood was too slow";
  EXPECT_EQ(counts.replies.load(), counts.sent());
  const size_t added = count_lines(testing::read_file(pod.log)) - lines_before;
  // Events this flood provokes: request_refused (and bad_message, reply_dropped at
  // most); 5 a second each, over the flood's whole seconds.
  const double bound = 3 * 5 * (std::ceil(seconds) + 1);
  EXPECT_LE(static_cast<double>(added), bound) << added << " lines in " << seconds << " s";
  const std::string m = scrape(metrics_port(pod));
  EXPECT_GE(testing::metric_value(m, "fedpod_worker_log_lines_suppressed_total{event=\"request_refused\"}") +
                static_cast<double>(added),
            static_cast<double>(counts.sent()))
      << m;
  EXPECT_TRUE(pod.process->running());
  testing::record_fault("hostile input", "100,000 bad messages from an admitted key",
                        static_cast<int>(counts.sent()),
                        std::to_string(added) + " log lines added in " + std::to_string(seconds) + " s (bound " +
                            std::to_string(static_cast<int>(bound)) + ")");
}

// An admitted peer speaking another protocol version: every message is answered with
// version_mismatch, counted in /metrics, and audited once per user and minute.
TEST_F(HostilePeerTest, AnotherProtocolVersionIsRefusedCountedAndAudited) {
  auto pod = start_pod("pod-a");
  ASSERT_FALSE(pod.endpoint.empty());
  zmq::context_t ctx(1);
  Client peer(ctx, pod.endpoint, id_.client_options("pod-a"));
  ASSERT_EQ(peer.hello(), W::HELLO_REPLY);
  int mismatches = 0;
  for (int i = 0; i < 50; ++i) {
    protocol::Outgoing out("", 100 + i);
    out.envelope().setProtocolVersion(99);
    out.envelope().getBody().initHello();
    ASSERT_TRUE(peer.try_send(out.frames()));
    auto r = peer.recv(20s);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->envelope().getBody().which(), W::ERROR);
    if (protocol::from_wire(r->envelope().getBody().getError().getCode()) == StatusCode::kVersionMismatch) ++mismatches;
  }
  EXPECT_EQ(mismatches, 50);
  const std::string m = scrape(metrics_port(pod));
  EXPECT_EQ(testing::metric_value(m, "fedpod_worker_bad_messages_total{reason=\"protocol_version\"}"), 50) << m;
  pod.process->kill(SIGTERM);
  ASSERT_GE(pod.process->wait(30s), 0);
  const std::string audit = testing::read_file(id_.audit_log("pod-a"));
  int64_t first = 0, repeats = 0;
  std::istringstream lines(audit);
  for (std::string line; std::getline(lines, line);) {
    const auto e = nlohmann::json::parse(line);
    if (e["event"] == "protocol_version_mismatch") {
      ++first;
      EXPECT_CONTAINS(e.value("message", ""), "protocol version 99");
      EXPECT_EQ(e.value("user", ""), id_.user());
    }
    if (e["event"] == "protocol_version_mismatch_repeated") repeats += e["count"].get<int64_t>();
  }
  EXPECT_EQ(first, 1) << audit;
  EXPECT_EQ(first + repeats, 50) << audit;
  testing::record_fault("hostile input", "messages of another protocol version from an admitted key", 50,
                        "each refused with version_mismatch and counted; 2 audit entries (the first, then one "
                        "with the count)");
}

// Who may complete the handshake: the policy's users with a role on the pod (and its
// owner). A user the policy lists without a role, and a key of no user, are refused
// at the handshake; each kind of refusal is audited once, then its repeats are one
// entry with their count, written when the window ends or the pod stops.
TEST_F(HostilePeerTest, HandshakesWithoutARoleAreRefusedAndAuditedOnceWithACount) {
  // The modeller is in the policy, with no role.
  auto pod = testing::start_digits_pod(dir_, id_, "pod-a", "", "metrics_listen: 127.0.0.1:0\n");
  ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
  const auto stranger = protocol::generate_curve_keypair();
  int refused_no_role = 0, refused_unknown = 0;
  for (int i = 0; i < 20; ++i) {
    RawPeer a(pod.endpoint);
    if (curve_handshake(a, id_.modeller, pod.public_key) == Handshake::kRefused) ++refused_no_role;
    RawPeer b(pod.endpoint);
    if (curve_handshake(b, stranger, pod.public_key) == Handshake::kRefused) ++refused_unknown;
  }
  EXPECT_EQ(refused_no_role, 20);
  EXPECT_EQ(refused_unknown, 20);
  const std::string m = scrape(metrics_port(pod));
  const double no_role = testing::metric_value(m, "fedpod_access_denied_total{reason=\"no_role\"}");
  const double unknown = testing::metric_value(m, "fedpod_access_denied_total{reason=\"unknown_key\"}");
  EXPECT_GE(no_role, 20) << m;
  EXPECT_GE(unknown, 20) << m;
  // While the window is open, one entry of each kind (after the log's first entry,
  // audit_log_started).
  std::string audit = testing::read_file(id_.audit_log("pod-a"));
  EXPECT_EQ(count_lines(audit), 3u) << audit;
  EXPECT_EQ(nlohmann::json::parse(audit.substr(0, audit.find('\n')))["event"], "audit_log_started");
  pod.process->kill(SIGTERM);
  ASSERT_GE(pod.process->wait(30s), 0);
  audit = testing::read_file(id_.audit_log("pod-a"));
  auto v = worker::verify_audit_log(id_.audit_log("pod-a"));
  EXPECT_TRUE(v.ok) << v.error;
  int64_t first_no_role = 0, first_unknown = 0, repeats_no_role = 0, repeats_unknown = 0;
  std::istringstream lines(audit);
  for (std::string line; std::getline(lines, line);) {
    const auto e = nlohmann::json::parse(line);
    const bool is_no_role = e.value("reason", "") == "no_role";
    if (e["event"] == "handshake_refused") {
      ++(is_no_role ? first_no_role : first_unknown);
      if (is_no_role) {
        EXPECT_EQ(e.value("user", ""), id_.user());
      }
    } else if (e["event"] == "handshake_refused_repeated") {
      (is_no_role ? repeats_no_role : repeats_unknown) += e["count"].get<int64_t>();
    }
  }
  EXPECT_EQ(first_no_role, 1) << audit;
  EXPECT_EQ(first_unknown, 1) << audit;
  EXPECT_EQ(1 + repeats_no_role, static_cast<int64_t>(no_role)) << audit;
  EXPECT_EQ(1 + repeats_unknown, static_cast<int64_t>(unknown)) << audit;
}

// Refusals are coalesced per key, and the key is the peer's choosing: a peer that
// makes a fresh CURVE key for every handshake wrote one fsync'd audit line per
// attempt. Past 64 kinds open in a window, the rest join one entry with their count;
// every refusal is still counted in the log once the window ends.
TEST_F(HostilePeerTest, AFreshKeyForEveryHandshakeAddsABoundedNumberOfAuditLines) {
  auto pod = testing::start_digits_pod(dir_, id_, "pod-a", "general-modeller", "metrics_listen: 127.0.0.1:0\n");
  ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
  constexpr int kAttempts = 300;
  int refused = 0;
  for (int i = 0; i < kAttempts; ++i) {
    RawPeer peer(pod.endpoint);
    if (curve_handshake(peer, protocol::generate_curve_keypair(), pod.public_key) == Handshake::kRefused) ++refused;
  }
  EXPECT_EQ(refused, kAttempts);
  const double unknown =
      testing::metric_value(scrape(metrics_port(pod)), "fedpod_access_denied_total{reason=\"unknown_key\"}");
  EXPECT_GE(unknown, kAttempts);
  // audit_log_started, 64 keys, one coalesced entry.
  std::string audit = testing::read_file(id_.audit_log("pod-a"));
  EXPECT_EQ(count_lines(audit), 66u) << audit.substr(audit.size() > 2000 ? audit.size() - 2000 : 0);
  EXPECT_CONTAINS(audit, "\"coalesced\":\"more than 64 kinds of refusal within 60 s");
  pod.process->kill(SIGTERM);
  ASSERT_GE(pod.process->wait(30s), 0);
  audit = testing::read_file(id_.audit_log("pod-a"));
  EXPECT_TRUE(worker::verify_audit_log(id_.audit_log("pod-a")).ok);
  int64_t counted = 0;
  std::istringstream lines(audit);
  for (std::string line; std::getline(lines, line);) {
    const auto e = nlohmann::json::parse(line);
    if (e["event"] == "handshake_refused") counted += 1;
    if (e["event"] == "handshake_refused_repeated") counted += e["count"].get<int64_t>();
  }
  EXPECT_EQ(counted, static_cast<int64_t>(unknown));
  EXPECT_LE(count_lines(audit), 70u);
  testing::record_fault("hostile input", "unauthenticated handshakes, each with a fresh CURVE key", kAttempts,
                        "each refused and counted; the audit log grew by 65 lines (64 keys, one coalesced entry) "
                        "and one closing count, not one line per attempt",
                        "nothing");
}

}  // namespace
}  // namespace fedpod
