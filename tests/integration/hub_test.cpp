// The model hub over real HTTP on loopback: a Server in a thread (or the fedpod
// binary, for crash safety), spoken to with fedpod::hub::Client and raw httplib.
#include <gtest/gtest.h>
#include <httplib.h>
#include <arpa/inet.h>
#include <sodium.h>
#include <zmq.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "fedpod/common/signing.h"
#include "fedpod/common/sha256.h"
#include "fedpod/hub/client.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/hub/server.h"
#include "running_hub.h"
#include "reliability.h"
#include "testutil.h"

namespace fedpod::hub {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using fedpod::testing::TempDir;

const std::string kKey = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";  // a valid Z85 CURVE key

// A minimal byte string with a zip's local file header and end-of-central-directory.
std::string zip_bytes(const std::string& payload) {
  return std::string("PK\x03\x04", 4) + payload + std::string("PK\x05\x06", 4) +
         std::string(18, '\0');
}
std::string elf_bytes(const std::string& payload) {
  return std::string(
             "\x7f"
             "ELF",
             4) +
         payload;
}

// A Server on 127.0.0.1:<free port> serving on its own thread.
using testing::RunningHub;

class HubTest : public ::testing::Test {
 protected:
  void SetUp() override { start(); }

  void start() {
    ServerOptions opt;
    opt.data_dir = (dir_.path() / "data").string();
    opt.max_artifact_bytes = 64 << 10;
    opt.max_source_bytes = 4 << 10;
    hub_ = std::make_unique<RunningHub>(opt);
  }
  void restart() {
    hub_.reset();
    start();
  }

  Client client(const std::string& token = "") { return Client("127.0.0.1", hub_->port(), token); }
  httplib::Client raw() { return httplib::Client("127.0.0.1", hub_->port()); }

  // A key pair per user, made on first use: registration proves its secret key.
  const protocol::CurveKeyPair& keys(const std::string& name) {
    auto it = keys_.find(name);
    if (it == keys_.end()) it = keys_.emplace(name, protocol::generate_curve_keypair()).first;
    return it->second;
  }
  std::string key_of(const std::string& name) { return keys(name).public_key; }

  std::string user(const std::string& name) {
    auto t = client().register_user(name, keys(name).public_key, keys(name).secret_key);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? *t : "";
  }

  // Pushes bytes directly (multipart by hand) and returns the raw response.
  httplib::Result push_raw(const std::string& token, const std::string& path,
                           httplib::MultipartFormDataItems items) {
    httplib::Headers h;
    if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
    return raw().Post(path.c_str(), h, items);
  }
  httplib::MultipartFormDataItems push_items(const std::string& meta, const std::string& artifact) {
    return {{"meta", meta, "", "application/json"},
            {"artifact", artifact, "model.pt", "application/octet-stream"}};
  }

  StatusOr<VersionInfo> push(const std::string& token, const std::string& user,
                             const std::string& ref, const std::string& artifact,
                             const std::string& visibility = "",
                             const std::string& format = "torchscript") {
    std::string path = dir_.write("push/" + ref + ".bin", artifact);
    std::string src = dir_.write("push/model.py", "class Net: pass\n");
    return client(token).push_model(user, ref, format, "a model", visibility, path, {src});
  }

  static json body(const httplib::Result& r) { return json::parse(r->body, nullptr, false); }
  static std::string message(const httplib::Result& r) {
    json j = body(r);
    return j.is_object() && j.contains("error") ? j["error"].value("message", "")
                                                : "<no error body: " + r->body + ">";
  }

  TempDir dir_;
  std::map<std::string, protocol::CurveKeyPair> keys_;
  std::unique_ptr<RunningHub> hub_;
};

TEST_F(HubTest, Healthz) {
  auto r = raw().Get("/healthz");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok");
}

TEST_F(HubTest, RegisterUser) {
  auto t = client().register_user("alice", keys("alice").public_key, keys("alice").secret_key);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  std::string token = *t;
  EXPECT_EQ(token.size(), 64u);
  EXPECT_EQ(token.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(client(token).get_pod("none").status().code(), StatusCode::kNotFound);  // the token works

  auto post = [&](const std::string& b) {
    return raw().Post("/api/v1/users", b, "application/json");
  };
  // A public key alone registers nobody.
  auto r = post(json{{"username", "bob"}, {"public_key", key_of("bob")}}.dump());
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "registration proves you hold the secret key of public_key");
  r = post(json{{"username", "Alice"}, {"public_key", kKey}}.dump());
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "username 'Alice'");
  r = post(json{{"username", "a"}, {"public_key", kKey}}.dump());
  EXPECT_EQ(r->status, 400);
  r = post(json{{"username", "1bob"}, {"public_key", kKey}}.dump());
  EXPECT_EQ(r->status, 400);
  r = post(json{{"username", "bob"}, {"public_key", "short"}}.dump());
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "40-character");
  r = post(json{{"username", "bob"}, {"public_key", std::string(39, 'a') + "~"}}.dump());
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "not Z85");
  r = post("{not json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "not valid JSON");
  r = post("[1,2]");
  EXPECT_EQ(r->status, 400);
  r = post(json{{"username", "bob"}}.dump());
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "missing field 'public_key'");
  r = post(json{{"username", 7}, {"public_key", kKey}}.dump());
  EXPECT_EQ(r->status, 400);
  r = post(std::string((1 << 20) + 10, ' '));
  EXPECT_EQ(r->status, 413);

  // Through the client: the server's message comes back in the Status.
  auto dup = client().register_user("alice", keys("alice").public_key, keys("alice").secret_key);
  EXPECT_EQ(dup.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(dup.status().message(), "already exists");
  // One key, one user: not even its holder opens a second account with it.
  auto squat = client().register_user("mallory", keys("alice").public_key, keys("alice").secret_key);
  EXPECT_EQ(squat.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(squat.status().message(), "this public key is already registered to another user");
  // The server is still fine.
  EXPECT_EQ(raw().Get("/healthz")->status, 200);
}

// Registering a key needs its secret key: whoever only knows a published public key
// (bob's) cannot claim it, whatever they answer, and an answer does not carry over
// to another username, another key, or past its expiry.
TEST_F(HubTest, AKeyWhoseSecretTheCallerDoesNotHoldCannotBeRegistered) {
  auto challenge = [&](const std::string& username, const std::string& key) {
    auto r = raw().Post("/api/v1/users/challenge", json{{"username", username}, {"public_key", key}}.dump(),
                        "application/json");
    EXPECT_EQ(r->status, 200) << r->body;
    return body(r);
  };
  auto answer_with = [&](const json& c, const protocol::CurveKeyPair& k) {
    std::string server_key, nonce, box, out;
    EXPECT_TRUE(base64_decode(c["server_key"].get<std::string>(), server_key));
    EXPECT_TRUE(base64_decode(c["nonce"].get<std::string>(), nonce));
    EXPECT_TRUE(base64_decode(c["box"].get<std::string>(), box));
    unsigned char sk[32];
    zmq_z85_decode(sk, k.secret_key.c_str());
    out.resize(box.size() - crypto_box_MACBYTES);
    const int rc = crypto_box_open_easy(reinterpret_cast<unsigned char*>(out.data()),
                                        reinterpret_cast<const unsigned char*>(box.data()), box.size(),
                                        reinterpret_cast<const unsigned char*>(nonce.data()),
                                        reinterpret_cast<const unsigned char*>(server_key.data()), sk);
    return rc == 0 ? base64_encode(out) : std::string();
  };
  auto post = [&](const std::string& username, const std::string& key, const json& expires, const std::string& a) {
    return raw().Post("/api/v1/users",
                      json{{"username", username}, {"public_key", key}, {"expires", expires}, {"answer", a}}.dump(),
                      "application/json");
  };
  const auto& bob = keys("bob");        // bob's public key is published
  const auto& mallory = keys("mallory");  // mallory holds only her own secret
  // mallory asks for a challenge to bob's key: her secret does not open it.
  json c = challenge("mallory", bob.public_key);
  EXPECT_EQ(answer_with(c, mallory), "");
  // Guessing: a random answer, and an answer of the right size from elsewhere.
  auto r = post("mallory", bob.public_key, c["expires"], base64_encode(std::string(32, '\x11')));
  EXPECT_EQ(r->status, 403);
  EXPECT_CONTAINS(message(r), "registering a key needs its secret key");
  // An answer mallory could get, for her own key, does not register bob's.
  json own = challenge("mallory", mallory.public_key);
  const std::string own_answer = answer_with(own, mallory);
  ASSERT_FALSE(own_answer.empty());
  EXPECT_EQ(post("mallory", bob.public_key, own["expires"], own_answer)->status, 403);
  // Nor under another name, nor with another expiry.
  EXPECT_EQ(post("eve", mallory.public_key, own["expires"], own_answer)->status, 403);
  EXPECT_EQ(post("mallory", mallory.public_key, own["expires"].get<int64_t>() + 3600, own_answer)->status, 403);
  // An expired challenge is refused as such.
  r = post("mallory", mallory.public_key, 1000, own_answer);
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "expired");
  // Bob's key is still free for bob, who holds its secret.
  auto t = client().register_user("bob", bob.public_key, bob.secret_key);
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  // And mallory's own answer registers mallory.
  EXPECT_EQ(post("mallory", mallory.public_key, own["expires"], own_answer)->status, 201);
  // The client refuses keys that do not belong together before asking the hub.
  auto mixed = client().register_user("carol", keys("carol").public_key, mallory.secret_key);
  EXPECT_EQ(mixed.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(mixed.status().message(), "do not belong together");
}

TEST_F(HubTest, AuthFailures) {
  std::string alice = user("alice");
  auto r = push_raw("", "/api/v1/models/alice/m/versions",
                    push_items(R"({"format":"torchscript"})", zip_bytes("x")));
  EXPECT_EQ(r->status, 401);
  EXPECT_CONTAINS(message(r), "Bearer");
  r = push_raw(std::string(64, 'a'), "/api/v1/models/alice/m/versions",
               push_items(R"({"format":"torchscript"})", zip_bytes("x")));
  EXPECT_EQ(r->status, 401);
  EXPECT_CONTAINS(message(r), "invalid token");
  httplib::Headers basic{{"Authorization", "Basic abc"}};
  r = raw().Post("/api/v1/pods", basic, "{}", "application/json");
  EXPECT_EQ(r->status, 401);
  auto s = push("", "alice", "m", zip_bytes("x"));
  EXPECT_EQ(s.status().code(), StatusCode::kPermissionDenied);
  auto pod = client().register_pod("pod-a", "tcp://x:1", kKey, json::object());
  EXPECT_EQ(pod.code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(push(alice, "alice", "m", zip_bytes("x")).ok());
}

TEST_F(HubTest, PushOutsideOwnNamespaceIsForbidden) {
  std::string alice = user("alice");
  user("bob");
  auto r = push_raw(alice, "/api/v1/models/bob/m/versions",
                    push_items(R"({"format":"torchscript"})", zip_bytes("x")));
  EXPECT_EQ(r->status, 403);
  EXPECT_CONTAINS(message(r), "may only push to models under 'alice/'");
  EXPECT_EQ(client().get_model("bob", "m").status().code(), StatusCode::kNotFound);
}

TEST_F(HubTest, VersionsCountUpAndStayImmutable) {
  std::string alice = user("alice");
  std::vector<std::string> shas;
  for (int i = 1; i <= 3; ++i) {
    auto v = push(alice, "alice", "mlp", zip_bytes("weights " + std::to_string(i)), "public");
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    EXPECT_EQ(v->version, i);
    EXPECT_EQ(v->format, "torchscript");
    EXPECT_EQ(v->size, static_cast<int64_t>(zip_bytes("weights 1").size()));
    EXPECT_EQ(v->sha256.size(), 64u);
    EXPECT_EQ(v->created_at.size(), 20u);  // 2026-11-28T23:50:00Z
    EXPECT_EQ(v->created_at.back(), 'Z');
    shas.push_back(v->sha256);
  }
  EXPECT_NE(shas[0], shas[1]);
  auto c = client();
  auto latest = c.resolve("alice", "mlp", 0);
  ASSERT_TRUE(latest.ok()) << latest.status().to_string();
  EXPECT_EQ(latest->version, 3);
  EXPECT_EQ(latest->sha256, shas[2]);
  for (int i = 1; i <= 3; ++i) EXPECT_EQ(c.resolve("alice", "mlp", i)->sha256, shas[i - 1]);
  // Same bytes again: a new version (4) with the same sha; version 1 is unchanged.
  auto again = push(alice, "alice", "mlp", zip_bytes("weights 1"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->version, 4);
  EXPECT_EQ(again->sha256, shas[0]);
  EXPECT_EQ(c.resolve("alice", "mlp", 1)->sha256, shas[0]);
  EXPECT_EQ(c.resolve("alice", "mlp", 5).status().code(), StatusCode::kNotFound);

  auto m = c.get_model("alice", "mlp");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->versions.size(), 4u);
  EXPECT_EQ(m->versions[2].sha256, shas[2]);
  ASSERT_TRUE(m->latest);
  EXPECT_EQ(m->latest->version, 4);
  EXPECT_EQ(m->visibility, "public");  // kept: the later pushes gave no visibility

  auto r = raw().Get("/api/v1/models/alice/mlp/versions/latest");
  EXPECT_EQ(body(r)["version"], 4);
  r = raw().Get("/api/v1/models/alice/mlp/versions/abc");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "positive integer or 'latest'");
  r = raw().Get("/api/v1/models/alice/mlp/versions/0");
  EXPECT_EQ(r->status, 400);
  // A plugin model.
  auto p = push(alice, "alice", "native", elf_bytes("code"), "", "plugin");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->format, "plugin");
  EXPECT_EQ(p->version, 1);
}

TEST_F(HubTest, SizeLimits) {
  std::string alice = user("alice");
  auto r =
      push_raw(alice, "/api/v1/models/alice/big/versions",
               push_items(R"({"format":"torchscript"})", zip_bytes(std::string(65 << 10, 'w'))));
  EXPECT_EQ(r->status, 413);
  EXPECT_CONTAINS(message(r), "max_artifact_bytes");
  auto items = push_items(R"({"format":"torchscript"})", zip_bytes("w"));
  items.push_back({"source", std::string(3 << 10, 'a'), "a.py", "text/plain"});
  items.push_back({"source", std::string(2 << 10, 'b'), "b.py", "text/plain"});
  r = push_raw(alice, "/api/v1/models/alice/big/versions", items);
  EXPECT_EQ(r->status, 413);
  EXPECT_CONTAINS(message(r), "max_source_bytes");
  // Far over every limit: cut off by the transport limit, still a JSON 413.
  r = push_raw(alice, "/api/v1/models/alice/big/versions",
               push_items(R"({"format":"torchscript"})", zip_bytes(std::string(8 << 20, 'w'))));
  if (r) {  // httplib may also just close the connection on the sender
    EXPECT_EQ(r->status, 413);
  }
  EXPECT_EQ(client().get_model("alice", "big").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(raw().Get("/healthz")->status, 200);
}

// Peak resident memory of this process (the hub runs in it), in bytes.
int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// Sends `head` (request line and headers) and then up to `body_bytes` of body, and
// returns what the server answered (the status line first), "" if nothing.
std::string raw_exchange(int port, const std::string& head, size_t body_bytes) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  (void)!::send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  // The answer comes before the body is read; read it first (until the JSON body ends).
  std::string reply;
  char buf[4096];
  while (reply.find("\r\n\r\n") == std::string::npos || reply.back() != '}') {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  const std::string chunk(1 << 20, 'x');
  for (size_t sent = 0; sent < body_bytes;) {
    ssize_t m = ::send(fd, chunk.data(), std::min(chunk.size(), body_bytes - sent), MSG_NOSIGNAL);
    if (m <= 0) break;  // the hub closed the connection: it will not read the body
    sent += static_cast<size_t>(m);
  }
  ::close(fd);
  return reply;
}

// Before a body is read, the hub checks the token of a push and every body's
// Content-Length against its endpoint: 20 unauthenticated 400 MiB pushes, and
// oversized bodies elsewhere, are refused on their headers, and the hub's memory
// does not grow by what they announce.
TEST(HubLimitsTest, UnauthenticatedAndOversizedBodiesAreRefusedBeforeTheyAreRead) {
  testing::TempDir dir;
  ServerOptions opt;
  opt.data_dir = (dir.path() / "data").string();  // default limits: 512 MiB artifacts
  RunningHub hub(opt);
  const int64_t before = peak_rss_bytes();
  const std::string push_head =
      "POST /api/v1/models/alice/net/versions HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
      "boundary=b\r\nContent-Length: " + std::to_string(size_t{400} << 20) + "\r\n";
  int refused = 0;
  for (int i = 0; i < 20; ++i) {
    const std::string head = push_head + (i % 2 ? "Authorization: Bearer not-a-token\r\n" : "") + "\r\n";
    const std::string reply = raw_exchange(hub.port(), head, size_t{16} << 20);
    EXPECT_EQ(reply.rfind("HTTP/1.1 401", 0), 0u) << reply.substr(0, 200);
    if (reply.find("checked before the upload is read") != std::string::npos ||
        reply.find("invalid token") != std::string::npos) {
      ++refused;
    }
  }
  EXPECT_EQ(refused, 20);
  // Small JSON endpoints: a body over max_json_bytes is refused on its length; one of
  // unknown length is refused too.
  std::string reply = raw_exchange(
      hub.port(), "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n", 4 << 20);
  EXPECT_EQ(reply.rfind("HTTP/1.1 413", 0), 0u) << reply;
  EXPECT_CONTAINS(reply, "over this endpoint's limit");
  reply = raw_exchange(hub.port(),
                       "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0);
  EXPECT_EQ(reply.rfind("HTTP/1.1 411", 0), 0u) << reply;
  reply = raw_exchange(hub.port(), "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n", 0);
  EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
  const int64_t growth = peak_rss_bytes() - before;
  EXPECT_LT(growth, int64_t{64} << 20) << "the hub buffered refused bodies";
  // And it still serves.
  httplib::Client c("127.0.0.1", hub.port());
  EXPECT_EQ(c.Get("/healthz")->status, 200);
  testing::record_fault("hub", "20 unauthenticated pushes announcing 400 MiB each, and oversized JSON bodies", 23,
                        "refused on their headers (401, 413, 411); peak RSS grew by " +
                            std::to_string(growth >> 20) + " MiB");
}

// A valid push streams its artifact to disk: a 300 MiB model, sent in 1 MiB pieces
// from one reused buffer, does not grow the hub's memory by what it carries, and is
// stored whole (its sha256 computed as it arrived).
TEST(HubLimitsTest, AnAuthenticatedPushIsStreamedToDiskNotHeldInMemory) {
  testing::TempDir dir;
  ServerOptions opt;
  opt.data_dir = (dir.path() / "data").string();
  RunningHub hub(opt);
  const auto keys = protocol::generate_curve_keypair();
  auto token = Client("127.0.0.1", hub.port()).register_user("alice", keys.public_key, keys.secret_key);
  ASSERT_TRUE(token.ok()) << token.status().to_string();
  // A zip-shaped artifact: local header, 300 MiB of filler, end-of-central-directory.
  const size_t filler = size_t{300} << 20;
  const std::string first = std::string("PK\x03\x04", 4), last = std::string("PK\x05\x06", 4) + std::string(18, '\0');
  const std::string meta = R"({"format":"torchscript","description":"big"})";
  const std::string pre = "--b\r\nContent-Disposition: form-data; name=\"meta\"\r\n\r\n" + meta +
                          "\r\n--b\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"m.pt\"\r\n"
                          "Content-Type: application/octet-stream\r\n\r\n" + first;
  const std::string post = last + "\r\n--b--\r\n";
  const size_t length = pre.size() + filler + post.size();
  std::ofstream("/proc/self/clear_refs") << "5";  // the peak so far: now (Linux >= 4.0)
  const int64_t before = peak_rss_bytes();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(hub.port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string head = "POST /api/v1/models/alice/big/versions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                           *token + "\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: " +
                           std::to_string(length) + "\r\n\r\n";
  Sha256 sha;
  sha.update(first.data(), first.size());
  auto send_all = [&](const char* p, size_t n) {
    for (size_t done = 0; done < n;) {
      const ssize_t m = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
      if (m <= 0) return false;
      done += static_cast<size_t>(m);
    }
    return true;
  };
  ASSERT_TRUE(send_all(head.data(), head.size()));
  ASSERT_TRUE(send_all(pre.data(), pre.size()));
  const std::string chunk(size_t{1} << 20, 'w');
  for (size_t sent = 0; sent < filler; sent += chunk.size()) {
    ASSERT_TRUE(send_all(chunk.data(), chunk.size()));
    sha.update(chunk.data(), chunk.size());
  }
  ASSERT_TRUE(send_all(post.data(), post.size()));
  sha.update(last.data(), last.size());
  std::string reply;
  char buf[4096];
  while (reply.find("\r\n\r\n") == std::string::npos || reply.back() != '}') {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  ASSERT_EQ(reply.rfind("HTTP/1.1 201", 0), 0u) << reply;
  const int64_t growth = peak_rss_bytes() - before;
  EXPECT_LT(growth, int64_t{64} << 20) << "the hub held the upload in memory";
  const json stored = json::parse(reply.substr(reply.find("\r\n\r\n") + 4));
  const std::string sha_hex = sha.hex();
  EXPECT_EQ(stored["sha256"], sha_hex);
  EXPECT_EQ(stored["size"], static_cast<int64_t>(first.size() + filler + last.size()));
  EXPECT_EQ(std::filesystem::file_size(dir.path() / "data" / "artifacts" / sha_hex.substr(0, 2) / sha_hex),
            first.size() + filler + last.size());
  EXPECT_TRUE(std::filesystem::is_empty(dir.path() / "data" / "artifacts" / "uploads"));
  testing::record_fault("hub", "an authenticated 300 MiB push", 1,
                        "streamed to disk, stored whole; peak RSS grew by " + std::to_string(growth >> 20) + " MiB");
}

TEST_F(HubTest, MalformedPushes) {
  std::string alice = user("alice");
  const std::string path = "/api/v1/models/alice/m/versions";
  auto expect_400 = [&](httplib::MultipartFormDataItems items, const std::string& part,
                        const std::string& p) {
    auto r = push_raw(alice, p, std::move(items));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_CONTAINS(message(r), part);
  };
  expect_400(push_items("{oops", zip_bytes("x")), "part 'meta' is not valid JSON", path);
  expect_400({{"artifact", zip_bytes("x"), "m.pt", ""}}, "missing part 'meta'", path);
  expect_400({{"meta", R"({"format":"torchscript"})", "", ""}}, "missing part 'artifact'", path);
  expect_400(push_items(R"({"description":"d"})", zip_bytes("x")), "missing field 'format'", path);
  expect_400(push_items(R"({"format":"onnx"})", zip_bytes("x")), "format must be", path);
  expect_400(push_items(R"({"format":"torchscript","visibility":"secret"})", zip_bytes("x")),
             "visibility", path);
  expect_400(push_items(R"({"format":"torchscript"})", "def forward(x): return x"), "zip", path);
  expect_400(push_items(R"({"format":"torchscript"})",
                        std::string("PK\x03\x04", 4) + std::string(100, 't')),
             "end-of-central-directory", path);
  expect_400(push_items(R"({"format":"plugin"})", zip_bytes("x")), "ELF", path);
  expect_400(push_items(R"({"format":"torchscript"})", zip_bytes("x")), "model ref",
             "/api/v1/models/alice/Bad!/versions");
  auto items = push_items(R"({"format":"torchscript"})", zip_bytes("x"));
  items.push_back({"source", "x", "../etc/passwd", ""});
  expect_400(items, "'..'", path);
  items = push_items(R"({"format":"torchscript"})", zip_bytes("x"));
  items.push_back({"source", "x", "a.py", ""});
  items.push_back({"source", "y", "a.py", ""});
  expect_400(items, "given twice", path);
  // Not multipart at all.
  auto r = raw().Post(path.c_str(), httplib::Headers{{"Authorization", "Bearer " + alice}}, "{}",
                      "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "multipart/form-data");
  // Nothing was stored; the server is fine.
  EXPECT_EQ(client(alice).get_model("alice", "m").status().code(), StatusCode::kNotFound);
  r = raw().Get("/api/v1/nowhere");
  EXPECT_EQ(r->status, 404);
  EXPECT_CONTAINS(message(r), "no such endpoint");
}

TEST_F(HubTest, PrivateModelsAreInvisibleToOthers) {
  std::string alice = user("alice");
  std::string bob = user("bob");
  ASSERT_TRUE(push(alice, "alice", "secret", zip_bytes("s")).ok());  // private by default
  ASSERT_TRUE(push(alice, "alice", "open", zip_bytes("o"), "public").ok());

  for (const std::string& token : {std::string(), bob}) {
    auto c = client(token);
    EXPECT_EQ(c.get_model("alice", "secret").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(c.resolve("alice", "secret", 0).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(c.get_source("alice", "secret", 1).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(
        c.download_artifact("alice", "secret", 1, (dir_.path() / "x").string()).status().code(),
        StatusCode::kNotFound);
    auto list = c.list_models();
    ASSERT_TRUE(list.ok());
    ASSERT_EQ(list->size(), 1u);
    EXPECT_EQ((*list)[0].model_ref, "open");
    ASSERT_TRUE((*list)[0].latest);
    EXPECT_EQ((*list)[0].latest->version, 1);
    EXPECT_TRUE(c.get_model("alice", "open").ok());
  }
  // The same message as a model that does not exist.
  auto r1 = raw().Get("/api/v1/models/alice/secret");
  auto r2 = raw().Get("/api/v1/models/alice/nothing");
  EXPECT_EQ(message(r1), "no model alice/secret");
  EXPECT_EQ(message(r2), "no model alice/nothing");

  auto c = client(alice);
  EXPECT_TRUE(c.get_model("alice", "secret").ok());
  auto list = c.list_models("alice");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
  EXPECT_EQ(c.list_models("bob")->size(), 0u);
}

TEST_F(HubTest, ArtifactAndSourceRoundTrip) {
  std::string alice = user("alice");
  std::string bytes = zip_bytes(std::string("\0\1\2binary\xff", 10) + std::string(40000, 'q'));
  std::string art = dir_.write("in/model.pt", bytes);
  std::string src1 = dir_.write("in/net.py", "import torch\nclass Net(torch.nn.Module): pass\n");
  std::string src2 = dir_.write("in/README.md", "# net\n");
  auto c = client(alice);
  auto v = c.push_model("alice", "net", "torchscript", "a net", "private", art, {src1, src2});
  ASSERT_TRUE(v.ok()) << v.status().to_string();

  std::string dest = (dir_.path() / "out" / "model.pt").string();
  std::filesystem::create_directories(dir_.path() / "out");
  auto sha = c.download_artifact("alice", "net", 0, dest, v->sha256);
  ASSERT_TRUE(sha.ok()) << sha.status().to_string();
  EXPECT_EQ(*sha, v->sha256);
  EXPECT_EQ(fedpod::testing::read_file(dest), bytes);
  EXPECT_FALSE(std::filesystem::exists(dest + ".part"));

  auto r = raw().Get("/api/v1/models/alice/net/versions/1/artifact",
                     httplib::Headers{{"Authorization", "Bearer " + alice}});
  EXPECT_EQ(r->get_header_value("X-Fedpod-Sha256"), v->sha256);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/octet-stream");

  // An expected sha that does not match: refused, nothing left at dest.
  std::string dest2 = (dir_.path() / "out" / "other.pt").string();
  auto bad = c.download_artifact("alice", "net", 1, dest2, std::string(64, '0'));
  EXPECT_EQ(bad.status().code(), StatusCode::kBadMessage);
  EXPECT_FALSE(std::filesystem::exists(dest2));
  EXPECT_FALSE(std::filesystem::exists(dest2 + ".part"));

  auto files = c.get_source("alice", "net", 0);
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].name, "README.md");
  EXPECT_EQ((*files)[1].name, "net.py");
  EXPECT_EQ((*files)[1].content, fedpod::testing::read_file(src1));
  // Content-addressed on disk.
  EXPECT_TRUE(std::filesystem::exists(dir_.path() / "data" / "artifacts" / v->sha256.substr(0, 2) /
                                      v->sha256));
}

TEST_F(HubTest, DataSurvivesRestart) {
  std::string alice = user("alice");
  auto v1 = push(alice, "alice", "m", zip_bytes("one"), "public");
  ASSERT_TRUE(v1.ok());
  ASSERT_TRUE(
      client(alice).register_pod("pod-a", "tcp://10.0.0.1:5555", kKey, json{{"x", 1}}).ok());
  restart();
  restart();  // migrations are idempotent
  auto c = client(alice);
  auto r = c.resolve("alice", "m", 0);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->sha256, v1->sha256);
  auto v2 = push(alice, "alice", "m", zip_bytes("two"));  // the token still works
  ASSERT_TRUE(v2.ok()) << v2.status().to_string();
  EXPECT_EQ(v2->version, 2);
  EXPECT_TRUE(c.get_pod("pod-a").ok());
  EXPECT_EQ(client().register_user("alice", keys("alice").public_key, keys("alice").secret_key).status().code(),
            StatusCode::kFailedPrecondition);
}

TEST_F(HubTest, Pods) {
  std::string alice = user("alice");
  auto c = client(alice);
  json schema = {{"columns", {{{"name", "label"}, {"type", "int"}}}}, {"rows", 1000}};
  ASSERT_TRUE(c.register_pod("pod-a", "tcp://10.0.0.1:5555", kKey, schema).ok());
  ASSERT_TRUE(c.register_pod("pod-b", "tcp://10.0.0.2:5555", kKey, json::object()).ok());
  auto dup = c.register_pod("pod-a", "tcp://elsewhere:1", kKey, json::object());
  EXPECT_EQ(dup.code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(dup.message(), "already exists");
  EXPECT_EQ(c.register_pod("pod-c", "tcp://x:1", "bad", json::object()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(c.register_pod("Pod C", "tcp://x:1", kKey, json::object()).code(),
            StatusCode::kInvalidArgument);
  auto r = raw().Post(
      "/api/v1/pods", httplib::Headers{{"Authorization", "Bearer " + alice}},
      json{{"name", "pod-d"}, {"address", "a"}, {"public_key", kKey}, {"schema", 3}}.dump(),
      "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "'schema' must be a JSON object");

  auto anon = client();
  auto pods = anon.list_pods();
  ASSERT_TRUE(pods.ok());
  ASSERT_EQ(pods->size(), 2u);
  EXPECT_EQ((*pods)[0].name, "pod-a");
  auto a = anon.get_pod("pod-a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->owner, "alice");
  EXPECT_EQ(a->address, "tcp://10.0.0.1:5555");
  EXPECT_EQ(a->public_key, kKey);
  EXPECT_EQ(a->schema, schema);
  EXPECT_EQ(anon.get_pod("pod-z").status().code(), StatusCode::kNotFound);
}

// `fedpod hub serve` killed with SIGKILL while a large push is in flight (at
// several points: reading the body, writing the artifact, committing). After a
// restart each version is whole (its artifact hashes to its sha256) or absent,
// versions stay 1..N without gaps, and the next push gets N+1.
TEST(HubCrashTest, KillDuringUploadLeavesWholeVersionOrNone) {
  TempDir dir;
  std::string data = (dir.path() / "data").string();
  int n = 0;  // starts of the server
  auto launch = [&](std::unique_ptr<Process>& proc) {
    std::string port_file = (dir.path() / ("port" + std::to_string(++n))).string();
    proc = std::make_unique<Process>(
        std::vector<std::string>{fedpod::testing::fedpod_bin(), "hub", "serve", "--data-dir", data,
                                 "--listen", "127.0.0.1:0", "--port-file", port_file, "--log-level",
                                 "warn"},
        (dir.path() / "hub.log").string());
    std::string port = fedpod::testing::wait_for_word(port_file, 30s);
    if (port.empty())
      throw std::runtime_error("hub did not start: " +
                               fedpod::testing::read_file((dir.path() / "hub.log").string()));
    return std::stoi(port);
  };
  std::unique_ptr<Process> proc;
  int port = launch(proc);
  const auto alice_keys = protocol::generate_curve_keypair();
  auto token = Client("127.0.0.1", port).register_user("alice", alice_keys.public_key, alice_keys.secret_key);
  ASSERT_TRUE(token.ok()) << token.status().to_string();
  std::vector<std::chrono::milliseconds> delays;

  // Calibration: how long one whole big push takes here, so the kills below land
  // before, during and right at the end of the server's work (the artifact fsync,
  // rename and the commit are in the last few percent).
  auto big_bytes = [](int round) {
    return zip_bytes(std::string(48 << 20, static_cast<char>('a' + round)));
  };
  int64_t expected_next = 1;
  {
    std::string art = dir.write("big.pt", big_bytes(-1));
    auto t0 = std::chrono::steady_clock::now();
    auto v = Client("127.0.0.1", port, *token)
                 .push_model("alice", "big", "torchscript", "", "", art, {});
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    ASSERT_EQ(v->version, expected_next++);
    auto full = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0);
    std::cout << "a whole 48 MiB push takes " << full.count() << " ms\n";
    for (double f : {0.1, 0.5, 0.8, 0.9, 0.95, 1.0, 1.05, 1.2})
      delays.push_back(
          std::chrono::milliseconds(static_cast<int64_t>(f * static_cast<double>(full.count()))));
  }
  int committed = 0;
  for (size_t round = 0; round < delays.size(); ++round) {
    std::string big = big_bytes(static_cast<int>(round));
    std::string art = dir.write("big.pt", big);
    std::thread pusher([&] {
      Client c("127.0.0.1", port, *token);
      (void)c.push_model("alice", "big", "torchscript", "round " + std::to_string(round), "", art,
                         {});
    });
    std::this_thread::sleep_for(delays[round]);
    proc->kill(SIGKILL);
    proc->wait(10s);
    pusher.join();
    port = launch(proc);

    Client c("127.0.0.1", port, *token);
    auto m = c.get_model("alice", "big");
    std::vector<VersionInfo> versions;
    if (m.ok())
      versions = m->versions;
    else
      ASSERT_EQ(m.status().code(), StatusCode::kNotFound) << m.status().to_string();
    // Versions are 1..N; the newest is either this round's upload, whole, or absent.
    ASSERT_TRUE(static_cast<int64_t>(versions.size()) == expected_next - 1 ||
                static_cast<int64_t>(versions.size()) == expected_next)
        << "round " << round << ": " << versions.size() << " versions, expected_next "
        << expected_next;
    for (size_t i = 0; i < versions.size(); ++i)
      EXPECT_EQ(versions[i].version, static_cast<int64_t>(i + 1));
    if (static_cast<int64_t>(versions.size()) == expected_next) {
      std::string dest = (dir.path() / "down.pt").string();
      auto sha = c.download_artifact("alice", "big", expected_next, dest, versions.back().sha256);
      ASSERT_TRUE(sha.ok()) << sha.status().to_string();
      EXPECT_EQ(fedpod::testing::read_file(dest), big) << "round " << round;
      std::cout << "round " << round << " (" << delays[round].count() << " ms): version "
                << expected_next << " committed whole\n";
      ++expected_next;
      ++committed;
    } else {
      std::cout << "round " << round << " (" << delays[round].count() << " ms): no version\n";
    }
    // The next push gets the next number.
    std::string small = dir.write("small.pt", zip_bytes("small " + std::to_string(round)));
    auto v = c.push_model("alice", "big", "torchscript", "", "", small, {});
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    EXPECT_EQ(v->version, expected_next);
    ++expected_next;
  }
  std::cout << committed << " of " << delays.size() << " killed pushes committed\n";
}

}  // namespace
}  // namespace fedpod::hub
