// CURVE keys and authentication for fedpod's ZeroMQ sockets.
//
// Identities. Every modeller and every pod has a CURVE key pair (Curve25519, as
// ZeroMQ's CurveZMQ uses it): 40-character Z85 texts. A pod's ROUTER is a CURVE
// server holding the pod's secret key; a coordinator connects as a CURVE client
// with the modeller's key pair and the pod's public (server) key, so the handshake
// fails unless the pod really holds the key registered for it on the hub.
//
// Key files, written by `fedpod keys generate --out NAME`:
//   NAME.key  mode 0600, both keys:       public_key: "..."  secret_key: "..."
//   NAME.pub  mode 0644, the public key:  public_key: "..."
// Both are YAML; Z85 never contains a quote or a backslash, so the values are
// written double-quoted.
//
// Authentication. CURVE alone only encrypts: without a ZAP handler a server
// accepts any client key. ZapHandler is the allow-list: one per ZeroMQ context
// (it binds inproc://zeromq.zap.01), serving any number of server sockets that
// each set a distinct ZAP domain. For every handshake it asks the domain's
// Authenticator for the client key; a returned user id is admitted ("200") and
// becomes the User-Id property of every message from that connection (read it
// with user_id()); nullopt refuses the handshake ("400").
//
// Threading: ZapHandler runs its own thread; register/unregister from any thread.
// Authenticators are called on that thread and must be thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "fedpod/common/status.h"

namespace fedpod::protocol {

struct CurveKeyPair {
  std::string public_key;  // 40 Z85 characters
  std::string secret_key;  // 40 Z85 characters; empty when read from a .pub file
};

// A fresh key pair from libzmq (zmq_curve_keypair). Throws zmq::error_t if this
// libzmq was built without CURVE.
CurveKeyPair generate_curve_keypair();

// True for a 40-character string of the Z85 alphabet that decodes to 32 bytes.
bool is_z85_key(const std::string& key);

// The public key of a Z85 secret key (zmq_curve_public).
StatusOr<std::string> curve_public_of(const std::string& secret_key);

// Writes `<base>.key` (0600) and `<base>.pub` (0644). Refuses (kFailedPrecondition,
// naming the file) to overwrite either unless `force`.
Status write_key_files(const std::string& base, const CurveKeyPair& keys, bool force);

// Reads a .key or .pub file. A .key file's keys must match each other. Errors
// (kInvalidArgument) name the file and what is wrong; a secret key file readable by
// group or others is an error too ("chmod 600 FILE").
StatusOr<CurveKeyPair> read_key_file(const std::string& path);

// Makes `socket` a CURVE server with `secret_key`; `zap_domain` routes its
// handshakes to the ZapHandler's authenticator of that domain.
void make_curve_server(zmq::socket_t& socket, const std::string& secret_key, const std::string& zap_domain);

// Makes `socket` a CURVE client of a server whose public key is `server_key`.
void make_curve_client(zmq::socket_t& socket, const CurveKeyPair& client, const std::string& server_key);

// The authenticated user of a received message (its "User-Id" property); empty
// when the message came through an unauthenticated socket.
std::string user_id(const zmq::message_t& message);

class ZapHandler {
 public:
  // Returns the user id for a client's Z85 public key, or nullopt to refuse it.
  // `address` is the peer's IP address, for logs.
  using Authenticator =
      std::function<std::optional<std::string>(const std::string& public_key_z85, const std::string& address)>;

  // The handler of `ctx`, started on first use and stopped when the last holder
  // releases it (which must happen before the context is closed).
  static std::shared_ptr<ZapHandler> for_context(zmq::context_t& ctx);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Routes handshakes of `domain` to `auth`. Throws std::invalid_argument when
  // the domain is taken or empty.
  void add_domain(const std::string& domain, Authenticator auth);
  void remove_domain(const std::string& domain);

 private:
  explicit ZapHandler(zmq::context_t& ctx);
  void run();

  zmq::context_t& ctx_;
  std::string control_;  // inproc endpoint that stops the thread
  std::mutex mu_;
  std::map<std::string, Authenticator> domains_;
  std::thread thread_;
};

}  // namespace fedpod::protocol
