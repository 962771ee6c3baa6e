#include "fedpod/protocol/socket.h"

#include "fedpod/protocol/curve.h"

namespace fedpod::protocol {
namespace {

void apply(zmq::socket_t& s, const SocketOptions& o) {
  s.set(zmq::sockopt::maxmsgsize, o.max_frame_bytes);
  s.set(zmq::sockopt::linger, static_cast<int>(o.linger.count()));
  s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(o.heartbeat_interval.count()));
  s.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(o.heartbeat_timeout.count()));
  s.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(o.heartbeat_timeout.count()));
  if (!o.curve_server_secret.empty()) make_curve_server(s, o.curve_server_secret, o.zap_domain);
  if (!o.curve_server_public.empty()) {
    make_curve_client(s, CurveKeyPair{o.curve_client_public, o.curve_client_secret}, o.curve_server_public);
  }
  // Messages, not bytes, count against the high-water mark. The protocol has one
  // outstanding request per peer, but a hostile peer need not follow it: a receiver
  // that expects few messages sets receive_hwm so that a flood queues at most that
  // many before ZeroMQ stops reading the connection.
  if (o.receive_hwm > 0) s.set(zmq::sockopt::rcvhwm, o.receive_hwm);
}

}  // namespace

zmq::socket_t make_router(zmq::context_t& ctx, const std::string& endpoint, const SocketOptions& opts) {
  zmq::socket_t s(ctx, zmq::socket_type::router);
  apply(s, opts);
  s.set(zmq::sockopt::router_mandatory, 1);
  s.bind(endpoint);
  return s;
}

zmq::socket_t make_dealer(zmq::context_t& ctx, const std::string& endpoint, const SocketOptions& opts) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  apply(s, opts);
  s.set(zmq::sockopt::reconnect_ivl, 100);
  s.set(zmq::sockopt::reconnect_ivl_max, 2000);
  if (!endpoint.empty()) s.connect(endpoint);
  return s;
}

std::string bound_endpoint(zmq::socket_t& socket) { return socket.get(zmq::sockopt::last_endpoint); }

bool recv_frames(zmq::socket_ref socket, std::vector<zmq::message_t>& out, size_t max_frames,
                 bool& too_many) {
  out.clear();
  too_many = false;
  zmq::message_t msg;
  if (!socket.recv(msg, zmq::recv_flags::dontwait)) return false;
  while (true) {
    bool more = msg.more();
    if (out.size() < max_frames) {
      out.push_back(std::move(msg));
    } else {
      too_many = true;
    }
    if (!more) break;
    msg = zmq::message_t();
    // Parts of a multipart message arrive atomically: the rest is already here.
    (void)socket.recv(msg, zmq::recv_flags::none);
  }
  return true;
}

int poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  try {
    return zmq::poll(items, count, timeout);
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
    for (size_t i = 0; i < count; ++i) items[i].revents = 0;
    return 0;
  }
}

bool send_frames(zmq::socket_ref socket, std::vector<zmq::message_t>& frames,
                 const zmq::message_t* routing_id) {
  try {
    if (routing_id) {
      zmq::message_t id(routing_id->data(), routing_id->size());
      if (!socket.send(id, zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    }
    for (size_t i = 0; i < frames.size(); ++i) {
      auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      // After the first part the rest of a multipart message is always accepted.
      if (!socket.send(frames[i], flags | (i == 0 && !routing_id ? zmq::send_flags::dontwait
                                                                 : zmq::send_flags::none))) {
        return false;
      }
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return false;  // ROUTER: the peer is gone
    throw;
  }
  return true;
}

int endpoint_port(const std::string& endpoint) {
  if (endpoint.rfind("tcp://", 0) != 0) return 0;
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon <= 6) return 0;
  const std::string port = endpoint.substr(colon + 1);
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return 0;
  const int p = std::stoi(port);
  return p <= 65535 ? p : 0;
}

std::string with_port(const std::string& endpoint, int port) {
  if (endpoint.rfind("tcp://", 0) != 0) return "";
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon <= 6 || port <= 0 || port > 65535) return "";
  return endpoint.substr(0, colon + 1) + std::to_string(port);
}

}  // namespace fedpod::protocol
