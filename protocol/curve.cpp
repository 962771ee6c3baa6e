#include "fedpod/protocol/curve.h"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>
#include <zmq.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "fedpod/protocol/socket.h"

namespace fedpod::protocol {
namespace {

namespace fs = std::filesystem;

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

std::string frame_text(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

// Writes `text` to `path` through a temp file and rename, with `mode`.
Status write_text(const std::string& path, const std::string& text, mode_t mode) {
  const std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  FILE* f = nullptr;
  {
    const mode_t old = ::umask(0077);
    f = std::fopen(tmp.c_str(), "wx");
    ::umask(old);
  }
  if (!f) return Status::invalid("cannot write " + tmp + ": " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(::fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok || ::chmod(tmp.c_str(), mode) != 0 || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Status::invalid("cannot write " + path + ": " + std::strerror(err));
  }
  return Status();
}

}  // namespace

CurveKeyPair generate_curve_keypair() {
  char pub[41] = {0}, sec[41] = {0};
  if (zmq_curve_keypair(pub, sec) != 0) throw zmq::error_t();
  return CurveKeyPair{pub, sec};
}

bool is_z85_key(const std::string& key) {
  if (key.size() != 40) return false;
  uint8_t out[32];
  return zmq_z85_decode(out, key.c_str()) != nullptr;
}

StatusOr<std::string> curve_public_of(const std::string& secret_key) {
  if (!is_z85_key(secret_key)) return Status::invalid("secret key is not 40 Z85 characters");
  char pub[41] = {0};
  if (zmq_curve_public(pub, secret_key.c_str()) != 0) return Status::internal("zmq_curve_public failed");
  return std::string(pub);
}

Status write_key_files(const std::string& base, const CurveKeyPair& keys, bool force) {
  const std::string key_path = base + ".key", pub_path = base + ".pub";
  if (!force) {
    for (const auto& p : {key_path, pub_path}) {
      if (fs::exists(p)) {
        return Status::failed_precondition(p + " already exists; pass --force to overwrite it (the old key is lost, "
                                               "and whoever registered it must register the new public key)");
      }
    }
  }
  // A folder that does not exist yet is made, private (0700): it holds secret keys.
  const fs::path parent = fs::path(key_path).parent_path();
  if (!parent.empty() && !fs::exists(parent)) {
    std::error_code ec;
    fs::create_directories(parent, ec);
    if (ec) return Status::invalid("cannot create the folder " + parent.string() + " for " + key_path + ": " + ec.message());
    fs::permissions(parent, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  const std::string header =
      "# fedpod CURVE key pair, written by `fedpod keys generate`.\n"
      "# The secret key identifies you: keep this file private (mode 0600).\n";
  FEDPOD_RETURN_IF_ERROR(write_text(key_path,
                                    header + "public_key: \"" + keys.public_key + "\"\nsecret_key: \"" +
                                        keys.secret_key + "\"\n",
                                    0600));
  return write_text(pub_path,
                    "# fedpod CURVE public key: register it on the hub; safe to share.\npublic_key: \"" +
                        keys.public_key + "\"\n",
                    0644);
}

StatusOr<CurveKeyPair> read_key_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::invalid("key file " + path + ": " + std::strerror(errno));
  // A directory opens as a stream on Linux, and reading it throws std::ios_base::failure
  // out of yaml-cpp (`public_key_file: ""` in a job.yaml names the job's own folder;
  // found by tests/fuzz).
  if (S_ISDIR(st.st_mode)) return Status::invalid("key file " + path + ": is a directory");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Status::invalid("key file " + path + ": not a fedpod key file: " + e.what());
  } catch (const std::ios_base::failure& e) {
    return Status::invalid("key file " + path + ": cannot read: " + e.what());
  }
  if (!root.IsMap()) return Status::invalid("key file " + path + ": expected public_key (and secret_key)");
  CurveKeyPair keys;
  for (const auto& kv : root) {
    const std::string k = kv.first.as<std::string>();
    if (k != "public_key" && k != "secret_key") return Status::invalid("key file " + path + ": unknown key '" + k + "'");
    if (!kv.second.IsScalar()) return Status::invalid("key file " + path + ": " + k + " must be a string");
    (k == "public_key" ? keys.public_key : keys.secret_key) = kv.second.as<std::string>();
  }
  if (!is_z85_key(keys.public_key)) {
    return Status::invalid("key file " + path + ": public_key must be 40 Z85 characters (fedpod keys generate)");
  }
  if (root["secret_key"]) {
    if (st.st_mode & 0077) {
      return Status::invalid("key file " + path + " holds a secret key but is readable by others (mode " +
                             ([&] {
                               char b[8];
                               std::snprintf(b, sizeof b, "%04o", st.st_mode & 07777);
                               return std::string(b);
                             })() +
                             "): run chmod 600 " + path);
    }
    auto pub = curve_public_of(keys.secret_key);
    if (!pub.ok()) return Status::invalid("key file " + path + ": " + pub.status().message());
    if (*pub != keys.public_key) {
      return Status::invalid("key file " + path + ": public_key does not belong to secret_key");
    }
  }
  return keys;
}

void make_curve_server(zmq::socket_t& socket, const std::string& secret_key, const std::string& zap_domain) {
  socket.set(zmq::sockopt::curve_server, 1);
  socket.set(zmq::sockopt::curve_secretkey, secret_key);
  // libzmq 4.3.4 as Debian 12 ships it refuses an empty ZAP domain with EINVAL; an
  // empty one means "no domain" anyway.
  if (!zap_domain.empty()) socket.set(zmq::sockopt::zap_domain, zap_domain);
}

void make_curve_client(zmq::socket_t& socket, const CurveKeyPair& client, const std::string& server_key) {
  socket.set(zmq::sockopt::curve_serverkey, server_key);
  socket.set(zmq::sockopt::curve_publickey, client.public_key);
  socket.set(zmq::sockopt::curve_secretkey, client.secret_key);
}

std::string user_id(const zmq::message_t& message) {
  const char* v = zmq_msg_gets(const_cast<zmq_msg_t*>(message.handle()), "User-Id");
  return v ? std::string(v) : std::string();
}

// ---- ZapHandler ----

namespace {
std::mutex registry_mu;
std::map<void*, std::weak_ptr<ZapHandler>>& registry() {
  static auto* r = new std::map<void*, std::weak_ptr<ZapHandler>>();
  return *r;
}
}  // namespace

std::shared_ptr<ZapHandler> ZapHandler::for_context(zmq::context_t& ctx) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto& slot = registry()[ctx.handle()];
  if (auto existing = slot.lock()) return existing;
  // A handler whose last holder just let go may still be unbinding the ZAP endpoint.
  for (int attempt = 0;; ++attempt) {
    try {
      std::shared_ptr<ZapHandler> h(new ZapHandler(ctx));
      slot = h;
      return h;
    } catch (const zmq::error_t& e) {
      if (e.num() != EADDRINUSE || attempt >= 100) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

ZapHandler::ZapHandler(zmq::context_t& ctx)
    : ctx_(ctx), control_("inproc://fedpod-zap-control-" + std::to_string(reinterpret_cast<uintptr_t>(this))) {
  // Bind both sockets here, so a failure surfaces to the caller, then hand them to the thread.
  auto rep = std::make_shared<zmq::socket_t>(ctx_, zmq::socket_type::rep);
  rep->set(zmq::sockopt::linger, 0);
  rep->bind(kZapEndpoint);
  auto control = std::make_shared<zmq::socket_t>(ctx_, zmq::socket_type::pair);
  control->set(zmq::sockopt::linger, 0);
  control->bind(control_);
  thread_ = std::thread([this, rep, control] {
    std::vector<zmq::message_t> req;
    while (true) {
      zmq::pollitem_t items[] = {{rep->handle(), 0, ZMQ_POLLIN, 0}, {control->handle(), 0, ZMQ_POLLIN, 0}};
      poll(items, 2, std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) break;
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      bool too_many = false;
      if (!recv_frames(*rep, req, 16, too_many)) continue;
      // ZAP 1.0 request: version, request id, domain, address, identity, mechanism, credentials...
      std::string status = "400", text = "refused", user;
      const std::string request_id = req.size() > 1 ? frame_text(req[1]) : "";
      if (!too_many && req.size() >= 7 && frame_text(req[0]) == "1.0" && frame_text(req[5]) == "CURVE" &&
          req[6].size() == 32) {
        const std::string domain = frame_text(req[2]), address = frame_text(req[3]);
        char z85[41] = {0};
        zmq_z85_encode(z85, static_cast<const uint8_t*>(req[6].data()), 32);
        Authenticator auth;
        {
          std::lock_guard<std::mutex> lock(mu_);
          auto it = domains_.find(domain);
          if (it != domains_.end()) auth = it->second;
        }
        std::optional<std::string> who;
        if (auth) {
          try {
            who = auth(z85, address);
          } catch (const std::exception&) {
            who.reset();
          }
        }
        if (who) {
          status = "200";
          text = "OK";
          user = *who;
        } else {
          text = "unknown public key";
        }
      }
      std::vector<zmq::message_t> reply;
      reply.emplace_back("1.0", 3);
      reply.emplace_back(request_id.data(), request_id.size());
      reply.emplace_back(status.data(), status.size());
      reply.emplace_back(text.data(), text.size());
      reply.emplace_back(user.data(), user.size());
      reply.emplace_back();
      for (size_t i = 0; i < reply.size(); ++i) {
        (void)rep->send(reply[i], i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    }
    rep->close();
    control->close();
  });
}

ZapHandler::~ZapHandler() {
  {
    std::lock_guard<std::mutex> lock(registry_mu);
    auto it = registry().find(ctx_.handle());
    if (it != registry().end() && it->second.expired()) registry().erase(it);
  }
  try {
    zmq::socket_t stop(ctx_, zmq::socket_type::pair);
    stop.set(zmq::sockopt::linger, 0);
    stop.connect(control_);
    (void)stop.send(zmq::str_buffer("stop"), zmq::send_flags::none);
    thread_.join();
  } catch (const zmq::error_t&) {
    if (thread_.joinable()) thread_.detach();  // the context is already gone
  }
}

void ZapHandler::add_domain(const std::string& domain, Authenticator auth) {
  if (domain.empty()) throw std::invalid_argument("ZAP domain must not be empty");
  std::lock_guard<std::mutex> lock(mu_);
  if (!domains_.emplace(domain, std::move(auth)).second) {
    throw std::invalid_argument("ZAP domain '" + domain + "' is already served in this context");
  }
}

void ZapHandler::remove_domain(const std::string& domain) {
  std::lock_guard<std::mutex> lock(mu_);
  domains_.erase(domain);
}

}  // namespace fedpod::protocol
