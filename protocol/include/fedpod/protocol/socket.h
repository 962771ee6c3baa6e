// Socket setup and multipart send/receive for fedpod's ZeroMQ sockets.
//
// Pods bind a ROUTER; the coordinator connects one DEALER per pod. Each socket is
// created, used and closed by one thread. Every blocking call takes a timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace fedpod::protocol {

struct SocketOptions {
  // Largest accepted frame (ZMQ_MAXMSGSIZE applies per frame). A peer sending more
  // is disconnected by ZeroMQ before the bytes are buffered. 2 GiB by default: a
  // model of 500M float32 parameters in its largest tensor.
  int64_t max_frame_bytes = int64_t{2} << 30;
  // Pending outgoing messages are dropped this long after close (never hang on exit).
  std::chrono::milliseconds linger{1000};
  // ZMTP heartbeats: a peer silent for `heartbeat_timeout` is considered gone and the
  // connection is re-established (DEALER) or dropped (ROUTER).
  std::chrono::milliseconds heartbeat_interval{2000};
  std::chrono::milliseconds heartbeat_timeout{10000};
  // Messages queued for receipt before ZeroMQ stops reading from the connection
  // (ZMQ_RCVHWM: the peer then meets TCP backpressure). 0: ZeroMQ's default (1000).
  int receive_hwm = 0;
  // CURVE (fedpod/protocol/curve.h), applied before bind/connect. Server (ROUTER):
  // its secret key and the ZAP domain that authenticates clients. Client (DEALER):
  // its key pair and the server's public key. Empty: no CURVE.
  std::string curve_server_secret;
  std::string zap_domain;
  std::string curve_client_public, curve_client_secret, curve_server_public;
};

// A ROUTER bound to `endpoint` ("tcp://0.0.0.0:5555", "tcp://127.0.0.1:*").
// Throws zmq::error_t when the address cannot be bound.
zmq::socket_t make_router(zmq::context_t& ctx, const std::string& endpoint, const SocketOptions& opts);

// A DEALER connected to `endpoint` (connection happens in the background); an empty
// endpoint leaves it unconnected, for the caller to attach a monitor first.
zmq::socket_t make_dealer(zmq::context_t& ctx, const std::string& endpoint, const SocketOptions& opts);

// The endpoint a socket is bound to, with the real port for "*" binds.
std::string bound_endpoint(zmq::socket_t& socket);

// The port of a "tcp://host:port" endpoint; 0 when it has none or is not tcp.
int endpoint_port(const std::string& endpoint);

// `endpoint` ("tcp://host:port") with its port replaced by `port`; "" when it is not
// a tcp endpoint with a port.
std::string with_port(const std::string& endpoint, int port);

// Receives every part of one message without blocking. Returns false when none is
// waiting. Keeps at most `max_frames` parts; the rest are received and dropped so
// the next message starts clean, and `too_many` is set.
bool recv_frames(zmq::socket_ref socket, std::vector<zmq::message_t>& out, size_t max_frames,
                 bool& too_many);

// zmq::poll that treats an interrupted call (EINTR, e.g. a signal) as a timeout
// with nothing ready, so callers re-check their stop flag instead of dying.
int poll(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout);

// Sends `frames` as one multipart message, preceded by `routing_id` when it is given
// (ROUTER). Returns false if the peer is unknown or cannot take the message now.
bool send_frames(zmq::socket_ref socket, std::vector<zmq::message_t>& frames,
                 const zmq::message_t* routing_id = nullptr);

}  // namespace fedpod::protocol
