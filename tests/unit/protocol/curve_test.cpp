// CURVE key files and the ZAP allow-list over real sockets on loopback.
#include "fedpod/protocol/curve.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <fstream>

#include "fedpod/protocol/socket.h"
#include "testutil.h"

namespace fedpod::protocol {
namespace {

using namespace std::chrono_literals;

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 0777;
}

TEST(CurveKeysTest, GenerateWriteAndReadBack) {
  testing::TempDir dir;
  const auto keys = generate_curve_keypair();
  EXPECT_TRUE(is_z85_key(keys.public_key));
  EXPECT_TRUE(is_z85_key(keys.secret_key));
  EXPECT_EQ(*curve_public_of(keys.secret_key), keys.public_key);
  const std::string base = (dir.path() / "alice").string();
  ASSERT_TRUE(write_key_files(base, keys, false).ok());
  EXPECT_EQ(mode_of(base + ".key"), 0600u);
  EXPECT_EQ(mode_of(base + ".pub"), 0644u);
  auto both = read_key_file(base + ".key");
  ASSERT_TRUE(both.ok()) << both.status().to_string();
  EXPECT_EQ(both->public_key, keys.public_key);
  EXPECT_EQ(both->secret_key, keys.secret_key);
  auto pub = read_key_file(base + ".pub");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->public_key, keys.public_key);
  EXPECT_TRUE(pub->secret_key.empty());
  EXPECT_EQ(testing::read_file(base + ".pub").find(keys.secret_key), std::string::npos);
}

TEST(CurveKeysTest, RefusesToOverwriteWithoutForce) {
  testing::TempDir dir;
  const std::string base = (dir.path() / "alice").string();
  const auto first = generate_curve_keypair();
  ASSERT_TRUE(write_key_files(base, first, false).ok());
  Status st = write_key_files(base, generate_curve_keypair(), false);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(st.message(), base + ".key already exists; pass --force");
  EXPECT_EQ(read_key_file(base + ".key")->public_key, first.public_key);  // untouched
  const auto second = generate_curve_keypair();
  ASSERT_TRUE(write_key_files(base, second, true).ok());
  EXPECT_EQ(read_key_file(base + ".key")->public_key, second.public_key);
}

TEST(CurveKeysTest, BadKeyFilesAreNamed) {
  testing::TempDir dir;
  const auto keys = generate_curve_keypair();
  const auto other = generate_curve_keypair();
  auto expect_error = [&](const std::string& name, const std::string& content, const std::string& phrase,
                          mode_t mode = 0600) {
    const std::string path = dir.write(name, content);
    ::chmod(path.c_str(), mode);
    auto r = read_key_file(path);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_CONTAINS(r.status().message(), "key file " + path);
    EXPECT_CONTAINS(r.status().message(), phrase);
  };
  expect_error("short.pub", "public_key: \"abc\"\n", "public_key must be 40 Z85 characters");
  expect_error("extra.key", "public_key: \"" + keys.public_key + "\"\ncolor: red\n", "unknown key 'color'");
  expect_error("mixed.key",
               "public_key: \"" + other.public_key + "\"\nsecret_key: \"" + keys.secret_key + "\"\n",
               "public_key does not belong to secret_key");
  expect_error("open.key", "public_key: \"" + keys.public_key + "\"\nsecret_key: \"" + keys.secret_key + "\"\n",
               "readable by others (mode 0644): run chmod 600", 0644);
  expect_error("list.key", "- a\n- b\n", "expected public_key");
  auto missing = read_key_file((dir.path() / "nope.key").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_CONTAINS(missing.status().message(), "No such file");
}

// A CURVE server whose ZAP domain admits one key; clients with that key, another key
// and no CURVE at all.
class ZapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_keys_ = generate_curve_keypair();
    alice_ = generate_curve_keypair();
    zap_ = ZapHandler::for_context(ctx_);
    zap_->add_domain("pod-1", [this](const std::string& key, const std::string&) -> std::optional<std::string> {
      ++asked_;
      if (key == alice_.public_key) return std::string("alice");
      return std::nullopt;
    });
    SocketOptions o;
    o.curve_server_secret = server_keys_.secret_key;
    o.zap_domain = "pod-1";
    router_ = make_router(ctx_, "tcp://127.0.0.1:*", o);
    endpoint_ = bound_endpoint(router_);
  }
  void TearDown() override {
    router_.close();
    zap_->remove_domain("pod-1");
    zap_.reset();
  }

  // Sends "hi" from a DEALER with `opts`; returns the User-Id the server saw, or
  // "(nothing)" when no message arrived within `wait`. A message that should arrive
  // gets a long wait (poll returns as soon as it does: a loaded machine must not fail
  // the test); one that must not arrive is waited for kRefusedWait.
  static constexpr std::chrono::milliseconds kRefusedWait{1500};
  std::string exchange(const SocketOptions& opts, std::chrono::milliseconds wait = 20000ms) {
    zmq::socket_t d = make_dealer(ctx_, endpoint_, opts);
    (void)d.send(zmq::str_buffer("hi"), zmq::send_flags::none);
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    if (poll(&item, 1, wait) == 0) return "(nothing)";
    std::vector<zmq::message_t> frames;
    bool too_many;
    recv_frames(router_, frames, 8, too_many);
    return frames.size() == 2 ? user_id(frames[1]) : "(malformed)";
  }
  SocketOptions client(const CurveKeyPair& me, const std::string& server_key) {
    SocketOptions o;
    o.curve_client_public = me.public_key;
    o.curve_client_secret = me.secret_key;
    o.curve_server_public = server_key;
    return o;
  }

  zmq::context_t ctx_{1};
  CurveKeyPair server_keys_, alice_;
  std::shared_ptr<ZapHandler> zap_;
  zmq::socket_t router_;
  std::string endpoint_;
  std::atomic<int> asked_{0};
};

TEST_F(ZapTest, AdmitsKnownKeyAndStampsUserId) {
  EXPECT_EQ(exchange(client(alice_, server_keys_.public_key)), "alice");
  EXPECT_GE(asked_.load(), 1);
}

TEST_F(ZapTest, RefusesUnknownKeyNoCurveAndWrongServerKey) {
  EXPECT_EQ(exchange(client(generate_curve_keypair(), server_keys_.public_key), kRefusedWait), "(nothing)");
  EXPECT_EQ(exchange(SocketOptions(), kRefusedWait), "(nothing)");
  // Alice's key, but the server is not the one she expects: the handshake cannot complete.
  EXPECT_EQ(exchange(client(alice_, generate_curve_keypair().public_key), kRefusedWait), "(nothing)");
  // And the server still admits alice afterwards.
  EXPECT_EQ(exchange(client(alice_, server_keys_.public_key)), "alice");
}

TEST_F(ZapTest, OneHandlerPerContextServesSeveralDomains) {
  EXPECT_EQ(ZapHandler::for_context(ctx_), zap_);
  EXPECT_THROW(zap_->add_domain("pod-1", [](const std::string&, const std::string&) { return std::nullopt; }),
               std::invalid_argument);
  zap_->add_domain("pod-2", [](const std::string&, const std::string&) { return std::optional<std::string>("bob"); });
  SocketOptions o;
  const auto keys2 = generate_curve_keypair();
  o.curve_server_secret = keys2.secret_key;
  o.zap_domain = "pod-2";
  zmq::socket_t r2 = make_router(ctx_, "tcp://127.0.0.1:*", o);
  zmq::socket_t d = make_dealer(ctx_, bound_endpoint(r2), client(alice_, keys2.public_key));
  (void)d.send(zmq::str_buffer("hi"), zmq::send_flags::none);
  zmq::pollitem_t item{r2.handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(poll(&item, 1, 20000ms), 1);
  std::vector<zmq::message_t> frames;
  bool too_many;
  recv_frames(r2, frames, 8, too_many);
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(user_id(frames[1]), "bob");  // pod-2's authenticator decided, not pod-1's
  zap_->remove_domain("pod-2");
}

}  // namespace
}  // namespace fedpod::protocol
