#include "impl.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace fedpod::coordinator {

Unreached detail::diagnose_unreached(const std::string& address, std::chrono::milliseconds budget) {
  // tcp://HOST:PORT, HOST possibly [v6]; validated when the job was loaded.
  std::string rest = address.rfind("tcp://", 0) == 0 ? address.substr(6) : address;
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return {"unreachable", "address", "'" + address + "' has no port"};
  std::string host = rest.substr(0, colon);
  const std::string port = rest.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &found); rc != 0 || !found) {
    return {"unreachable", "name_not_resolved",
            "the name '" + host + "' does not resolve (" + ::gai_strerror(rc) + "): check the pod's address"};
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> hold(found, ::freeaddrinfo);
  const int fd = ::socket(found->ai_family, found->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, found->ai_protocol);
  if (fd < 0) return {"unreachable", "socket", std::string("cannot open a socket: ") + std::strerror(errno)};
  int err = 0;
  if (::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    err = errno;
    if (err == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      const int ready = ::poll(&p, 1, static_cast<int>(budget.count()));
      if (ready == 0) {
        ::close(fd);
        return {"timeout", "no_tcp_answer",
                "no TCP answer from " + host + ":" + port + " within " + std::to_string(budget.count() / 1000.0).substr(0, 3) +
                    " s: the host is down, or a firewall drops the connection"};
      }
      socklen_t len = sizeof err;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    }
  }
  ::close(fd);
  if (err == ECONNREFUSED) {
    return {"unreachable", "connection_refused",
            "connection refused by " + host + ":" + port + ": nothing listens there (is the worker running, and is "
            "this its listen port?)"};
  }
  if (err != 0) {
    return {"unreachable", "network", "cannot connect to " + host + ":" + port + ": " + std::strerror(err)};
  }
  return {"timeout", "no_answer",
          "TCP connects to " + host + ":" + port + ", but nothing answered hello within connect_timeout (another "
          "program on that port, or a pod that is not a fedpod worker)"};
}

void Coordinator::Impl::count_responses(const std::map<size_t, PodRound>& replies) {
  for (const auto& [i, r] : replies) {
    job_metrics.pod_responses.Add({{"pod", pods[i].addr.name}, {"outcome", r.outcome}}).Increment();
  }
}

const char* Coordinator::Impl::discard_reason(size_t i, wire::Envelope::Reader env, uint64_t request_id) const {
  if (std::string(env.getJobId().cStr()) != spec.job_id) return kWrongJob;
  auto body = env.getBody();
  std::optional<uint32_t> round;
  if (body.which() == wire::Envelope::Body::TRAIN_DONE) round = body.getTrainDone().getRound();
  if (body.which() == wire::Envelope::Body::TRAIN_RESULT) round = body.getTrainResult().getRound();
  if (round) {
    const int r = static_cast<int>(*round);
    if (folded_updates.count({r, i})) return kDuplicate;
    if (r != open_round && r <= last_closed_round) return kClosedRound;
  }
  if (env.getRequestId() != request_id) return kStaleRequest;
  return nullptr;
}

void Coordinator::Impl::discard(const Pod& pod, const char* reason, wire::Envelope::Reader env, uint64_t expected_request) {
  job_metrics.discarded_replies.Add({{"reason", reason}}).Increment();
  ++round_discarded;
  auto& totals = history["discarded_replies_by_reason"];
  totals[reason] = totals.value(reason, 0) + 1;
  auto body = env.getBody();
  std::string detail;  // what the reply was about, when it says
  if (body.which() == wire::Envelope::Body::TRAIN_DONE) {
    detail = " reply_round=" + std::to_string(body.getTrainDone().getRound());
  } else if (body.which() == wire::Envelope::Body::TRAIN_RESULT) {
    detail = " reply_round=" + std::to_string(body.getTrainResult().getRound());
  } else if (body.which() == wire::Envelope::Body::ERROR) {
    detail = " error=\"" + peer_text(body.getError().getMessage().cStr(), 512) + "\"";
  }
  log->info("event=reply_discarded job={} round={} pod={} reason={} kind={} reply_job={} request={} "
            "expected_request={}{}",
            spec.job_id, current_round, pod.addr.name, reason, protocol::body_name(body.which()),
            env.getJobId().cStr(), env.getRequestId(), expected_request, detail);
}

void Coordinator::Impl::connect_pods() {
  protocol::SocketOptions opts;
  for (size_t i = 0; i < spec.pods.size(); ++i) {
    Pod pod;
    pod.addr = spec.pods[i];
    protocol::SocketOptions o = opts;
    // ZMTP heartbeats at the job's pace: a connection that carries nothing at all
    // (not even upload bytes) for heartbeat_timeout is dropped, and the monitor
    // reports the pod disconnected. This covers a pod cut off mid-upload, which the
    // request-level heartbeats leave alone.
    o.heartbeat_interval = spec.heartbeat_interval;
    if (spec.heartbeat_timeout.count() > 0) o.heartbeat_timeout = spec.heartbeat_timeout;
    o.receive_hwm = kPodReceiveHwm;
    tensor_options = o;  // the same, without CURVE
    if (keys) {
      // The pod must prove it holds the secret of the key registered for it.
      o.curve_client_public = keys->public_key;
      o.curve_client_secret = keys->secret_key;
      o.curve_server_public = pod.addr.public_key;
    }
    try {
      pod.socket = protocol::make_dealer(ctx, "", o);
    } catch (const zmq::error_t& e) {
      throw ConfigError("pod " + pod.addr.name + ": cannot create a socket: " + e.what());
    }
    const std::string mon = "inproc://fedpod-monitor-" + std::to_string(reinterpret_cast<uintptr_t>(this)) +
                            "-" + std::to_string(i);
    if (zmq_socket_monitor(pod.socket.handle(), mon.c_str(), ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED |
                                                                 ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                                                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                                                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                                                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) != 0) {
      throw zmq::error_t();
    }
    pod.monitor = zmq::socket_t(ctx, zmq::socket_type::pair);
    pod.monitor.set(zmq::sockopt::linger, 0);
    pod.monitor.connect(mon);
    // Connect only now, so the monitor sees the first CONNECTED event.
    try {
      pod.socket.connect(pod.addr.address);
    } catch (const zmq::error_t& e) {
      throw ConfigError("pod " + pod.addr.name + ": bad address '" + pod.addr.address + "': " + e.what());
    }
    pods.push_back(std::move(pod));
  }
}

void Coordinator::Impl::close_pods() {
  for (auto& p : pods) {
    zmq_socket_monitor(p.socket.handle(), nullptr, 0);
    p.monitor.close();
    p.socket.close();
    p.tensor.close();
  }
}

Status Coordinator::Impl::open_tensor_channel(Pod& pod, const protocol::BulkKeyPair& mine, wire::JobAccepted::Reader a) {
  pod.sealed = false;
  auto key = a.getTensorKey();
  if (key.size() == 0 || a.getTensorPort() == 0 || !keys) return Status();
  const std::string address = protocol::with_port(pod.addr.address, a.getTensorPort());
  if (address.empty()) return Status();
  auto session = protocol::BulkSession::derive(
      protocol::BulkRole::kCoordinator, mine,
      std::string_view(reinterpret_cast<const char*>(key.begin()), key.size()), {spec.job_id, pod.addr.public_key});
  if (!session.ok()) return Status::bad_message("tensor channel: " + session.status().message());
  if (address != pod.tensor_address) {
    pod.tensor.close();
    try {
      pod.tensor = protocol::make_dealer(ctx, address, tensor_options);
    } catch (const zmq::error_t& e) {
      pod.tensor_address.clear();
      return Status(StatusCode::kUnavailable, "tensor channel: cannot connect to " + address + ": " + e.what());
    }
    pod.tensor_address = address;
  }
  pod.tensors = std::move(*session);
  pod.sealed = true;
  return Status();
}

static double frame_bytes(const std::vector<zmq::message_t>& frames) {
  double n = 0;
  for (const auto& f : frames) n += static_cast<double>(f.size());
  return n;
}

bool Coordinator::Impl::send_to(Pod& pod, protocol::Outgoing& out) {
  auto frames = out.frames();
  if (pod.sealed && carries_tensors(out.envelope().getBody().which())) {
    const uint32_t round = protocol::round_of(frames[0]);
    auto sealed = pod.tensors.seal(std::move(frames), round);
    const double n = frame_bytes(sealed);
    if (!protocol::send_frames(pod.tensor, sealed)) return false;
    job_metrics.all_sent.Increment(n);
    return true;
  }
  const double n = frame_bytes(frames);
  if (!protocol::send_frames(pod.socket, frames)) return false;
  job_metrics.all_sent.Increment(n);
  return true;
}

Coordinator::Impl::TensorIn Coordinator::Impl::open_tensor(Pod& pod, std::vector<zmq::message_t>& frames, bool too_many) {
  auto refused = [&](const char* reason, const std::string& why) {
    job_metrics.tensor_refused.Add({{"reason", reason}}).Increment();
    log->warn("event=tensor_message_refused job={} pod={} reason={} message=\"{}\"", spec.job_id, pod.addr.name,
              reason, why);
    return TensorIn::kDropped;
  };
  if (too_many || frames.empty()) return refused("malformed", "too many frames");
  auto header = protocol::parse_bulk_header(frames[0]);
  if (!header.ok()) return refused("malformed", header.status().message());
  if (!pod.sealed || header->session != pod.tensors.id()) return refused("unknown_session", "not this job's session");
  if (header->kind == 2) return TensorIn::kNotice;
  uint32_t round = 0;
  protocol::BulkRefusal why = protocol::BulkRefusal::kNone;
  auto opened = pod.tensors.open(std::move(frames), &round, &why);
  if (!opened.ok()) return refused(protocol::to_string(why), opened.status().message());
  if (opened->empty() || protocol::round_of((*opened)[0]) != round) {
    return refused("round_mismatch", "the sealed header's round is not the message's");
  }
  frames = std::move(*opened);
  return TensorIn::kOpened;
}

std::string Coordinator::Impl::handshake_failure(const Pod& pod, uint16_t event, uint32_t value) const {
  const std::string who = "pod " + pod.addr.name + " at " + pod.addr.address;
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
    return who + " refused our CURVE key (ZAP status " + std::to_string(value) + "): the key in key_file (" +
           (keys ? keys->public_key : std::string("none")) +
           ") is not the key of a user with a role on this pod (a pod admits only its owner and its role "
           "holders): register the key on the hub (fedpod user register) if you have not, ask the pod's owner for "
           "a role (fedpod access grant-role --pod " + pod.addr.name + " --user <you> --role general-modeller), "
           "and let the pod refresh its policy";
  }
  if (!keys) {
    return who + " requires CURVE authentication and this job has no key: set key_file in the job (or "
                 "FEDPOD_KEY_FILE) to your key pair from `fedpod keys generate`, registered on the hub";
  }
  if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
    return who + " failed the CURVE handshake (protocol error " + std::to_string(value) +
           "): it may not run CURVE, or its server key differs from " + pod.addr.public_key;
  }
  return who + " closed the connection during the CURVE handshake: its key may not be the one registered for it (" +
         pod.addr.public_key + ")";
}

bool Coordinator::Impl::drain_monitor(Pod& pod) {
  bool disconnected = false;
  std::vector<zmq::message_t> ev;
  bool too_many;
  while (protocol::recv_frames(pod.monitor, ev, 4, too_many)) {
    if (ev.empty() || ev[0].size() < 6) continue;
    uint16_t event;
    uint32_t value;
    std::memcpy(&event, ev[0].data(), sizeof event);
    std::memcpy(&value, static_cast<const char*>(ev[0].data()) + 2, sizeof value);
    if (event == ZMQ_EVENT_CONNECTED) pod.connected = true;
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      pod.secured = true;
      pod.handshake_error.clear();
    }
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
        event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
      pod.handshake_error = handshake_failure(pod, event, value);
      pod.connected = false;
      disconnected = true;
    }
    if (event == ZMQ_EVENT_DISCONNECTED) {
      // Dropped before any handshake completed: with CURVE, the pod could not prove its key.
      if (keys && !pod.secured && pod.handshake_error.empty()) {
        pod.handshake_error = handshake_failure(pod, event, value);
      }
      pod.connected = false;
      disconnected = true;
    }
  }
  return disconnected;
}

void Coordinator::Impl::forget_finished_uploads(const std::vector<size_t>& pending, std::set<size_t>& fetching) {
  for (auto it = fetching.begin(); it != fetching.end();) {
    it = std::find(pending.begin(), pending.end(), *it) == pending.end() ? fetching.erase(it) : std::next(it);
  }
}

void Coordinator::Impl::fill_upload_window(const std::vector<size_t>& pending, std::set<size_t>& fetching,
                                           std::deque<size_t>& ready, protocol::Outgoing& fetch) {
  forget_finished_uploads(pending, fetching);
  while (static_cast<int>(fetching.size()) < spec.max_concurrent_uploads && !ready.empty()) {
    if (send_to(pods[ready.front()], fetch)) fetching.insert(ready.front());
    ready.pop_front();
  }
}

std::map<size_t, PodRound> Coordinator::Impl::exchange(protocol::Outgoing& out, uint64_t request_id,
                                    const std::vector<size_t>& targets, const Kinds& want,
                                    Clock::time_point deadline, bool require_connected,
                                    const ReplyHandler& on_reply,
                                    const std::function<void(const std::vector<size_t>&)>& on_tick,
                                    size_t* sent_count, bool heartbeats,
                                    const std::function<bool(size_t)>& exempt) {
  return exchange_each([&](size_t) -> protocol::Outgoing& { return out; }, request_id, targets, want, deadline,
                       require_connected, on_reply, on_tick, sent_count, heartbeats, exempt);
}

std::map<size_t, PodRound> Coordinator::Impl::exchange_each(const MessageFor& message_for, uint64_t request_id,
                                         const std::vector<size_t>& targets, const Kinds& want,
                                         Clock::time_point deadline, bool require_connected,
                                         const ReplyHandler& on_reply,
                                         const std::function<void(const std::vector<size_t>&)>& on_tick,
                                         size_t* sent_count, bool heartbeats,
                                         const std::function<bool(size_t)>& exempt) {
  std::map<size_t, PodRound> result;
  std::map<size_t, Clock::time_point> sent_at;
  // Heartbeats: every heartbeat_interval each pending pod is pinged; one that has
  // said nothing at all (reply, heartbeat answer) for heartbeat_timeout is "silent"
  // and leaves the exchange before the deadline. A pod uploading its update is
  // exempt (`exempt`): its answers queue behind the upload on the same connection.
  const bool detect_silence = heartbeats && spec.heartbeat_timeout.count() > 0;
  std::map<size_t, Clock::time_point> last_heard;
  std::optional<protocol::Outgoing> beat;
  Clock::time_point next_beat = Clock::time_point::max();
  if (detect_silence) {
    beat.emplace(spec.job_id, next_request++);
    beat->envelope().getBody().initHeartbeat();
    next_beat = Clock::now() + spec.heartbeat_interval;
  }
  std::vector<size_t> waiting;
  // A message sealed for each pod is a copy per pod (CURVE encrypts as it sends):
  // at most four copies' worth waits in ZeroMQ at once, so the coordinator's memory
  // does not grow with the number of pods. A pod that does not read cannot hold the
  // others back for long: after kSealedStall the next copy goes anyway.
  std::deque<size_t> unsent(targets.begin(), targets.end());
  const bool sealed_copies =
      !targets.empty() && carries_tensors(message_for(targets.front()).envelope().getBody().which());
  const size_t sealed_budget =
      std::max<size_t>(size_t{64} << 20, targets.empty() ? 0 : 4 * message_for(targets.front()).payload_bytes());
  auto last_send = Clock::now();
  size_t sent_ok = 0;
  // Pods that answered `busy` (kBusyRetryFirst): when each is asked again, how often
  // it was, and the refusal that stands if the deadline comes first. A pod not yet in
  // a job (hello, startJob) that is busy runs another job: that answer is final.
  const auto kind = targets.empty() ? wire::Envelope::Body::HELLO : message_for(targets.front()).envelope().getBody().which();
  const bool retry_busy = kind != wire::Envelope::Body::HELLO && kind != wire::Envelope::Body::START_JOB;
  std::map<size_t, Clock::time_point> retry_at;
  std::map<size_t, PodRound> busy_answer;
  std::map<size_t, int> retries;
  auto ask_again_later = [&](size_t i, PodRound& r) {
    if (!retry_busy || r.code != to_string(StatusCode::kBusy)) return false;
    // A pod past the request's first answer (trainDone: uploading) is asked nothing
    // again: the resend would be the train, not what it refused.
    if (exempt && exempt(i)) return false;
    // Each retry sends the whole request again (a train carries the model): a few
    // of them cover a pod finishing earlier work, and cap what a pod that answers
    // busy on purpose can make the coordinator send.
    int& n = retries[i];
    if (n >= kBusyRetries) return false;
    const auto pause = kBusyRetryFirst * (1 << n);
    const auto at = Clock::now() + pause;
    if (at >= deadline) return false;
    ++n;
    log->info("event=pod_busy_retry job={} round={} pod={} kind={} request={} in_ms={}", spec.job_id, current_round,
              pods[i].addr.name, protocol::body_name(kind), request_id, pause.count());
    retry_at[i] = at;
    busy_answer[i] = std::move(r);
    return true;
  };
  auto due_again = [&] {
    const auto now = Clock::now();
    for (auto it = retry_at.begin(); it != retry_at.end();) {
      if (it->second <= now) {
        unsent.push_back(it->first);
        it = retry_at.erase(it);
      } else {
        ++it;
      }
    }
  };
  auto pump = [&] {
    while (!unsent.empty()) {
      const size_t i = unsent.front();
      Pod& pod = pods[i];
      if (sealed_copies && pod.sealed && sent_ok > 0 &&
          protocol::BulkSession::sealed_bytes_in_flight() > sealed_budget && Clock::now() - last_send < kSealedStall) {
        return;
      }
      unsent.pop_front();
      drain_monitor(pod);
      if (require_connected && !pod.connected) {
        result[i] = {"unreachable", "not connected", 0, 0, {}};
        continue;
      }
      if (!send_to(pod, message_for(i))) {
        // A refused CURVE handshake tears the connection's queue down, so a send after
        // it fails at once: say why (the model is loaded before hello, which gives the
        // handshake time to fail first).
        drain_monitor(pod);
        if (!pod.handshake_error.empty() && !pod.secured) {
          result[i] = {"refused", pod.handshake_error, 0, 0, {}};
        } else {
          result[i] = {"unreachable", "send queue full", 0, 0, {}};
        }
        continue;
      }
      const auto now = Clock::now();
      sent_at.emplace(i, now);  // a pod asked again keeps its first send's time
      last_heard[i] = now;
      last_send = now;
      ++sent_ok;
      waiting.push_back(i);
    }
  };
  pump();
  std::vector<zmq::message_t> frames;
  bool stopped_here = false;
  while (!waiting.empty() || !unsent.empty() || !retry_at.empty()) {
    if (stopping()) {
      stopped_here = true;
      break;
    }
    due_again();
    pump();
    if (on_tick) {
      // Every pod still owed an answer, those whose copy waits to be sent (or to be
      // sent again) included: a hook that keeps per-pod state (the upload window) must
      // not take a pod not yet sent to for one that has finished.
      std::vector<size_t> pending = waiting;
      pending.insert(pending.end(), unsent.begin(), unsent.end());
      for (const auto& [i, at] : retry_at) pending.push_back(i);
      on_tick(pending);
    }
    auto now = Clock::now();
    if (now >= deadline) break;
    if (detect_silence && now >= next_beat) {
      for (size_t i : waiting) {
        if (exempt && exempt(i)) continue;
        auto frames = beat->frames();
        const double n = frame_bytes(frames);
        // A full queue: the silence check settles it.
        if (protocol::send_frames(pods[i].socket, frames)) job_metrics.all_sent.Increment(n);
      }
      next_beat = now + spec.heartbeat_interval;
    }
    std::vector<zmq::pollitem_t> items;
    std::vector<size_t> base;  // each waiting pod's first item: socket, monitor, tensor channel
    for (size_t i : waiting) {
      base.push_back(items.size());
      items.push_back({pods[i].socket.handle(), 0, ZMQ_POLLIN, 0});
      items.push_back({pods[i].monitor.handle(), 0, ZMQ_POLLIN, 0});
      if (pods[i].tensor) items.push_back({pods[i].tensor.handle(), 0, ZMQ_POLLIN, 0});
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(std::min(deadline, next_beat) - now) +
                std::chrono::milliseconds(1);
    if (!unsent.empty()) wait = std::min(wait, std::chrono::milliseconds(2));  // copies still to send
    for (const auto& [i, at] : retry_at) {
      // Never negative: a retry due while this pass sent copies is due now (a
      // negative timeout would make the poll wait forever).
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(std::max(at, now) - now) +
                                std::chrono::milliseconds(1));
    }
    wait = std::max(wait, std::chrono::milliseconds(0));
    if (stop_flag && !ignore_stop) wait = std::min(wait, kStopPoll);
    protocol::poll(items.data(), items.size(), wait);
    std::vector<size_t> still;
    for (size_t k = 0; k < waiting.size(); ++k) {
      size_t i = waiting[k];
      Pod& pod = pods[i];
      bool done = false;
      bool retrying = false;  // it answered busy: asked again at retry_at[i]
      if (pod.tensor && (items[base[k] + 2].revents & ZMQ_POLLIN)) {
        bool too_many = false;
        while (!done && protocol::recv_frames(pod.tensor, frames, protocol::Limits().max_frames + 2, too_many)) {
          job_metrics.all_received.Increment(frame_bytes(frames));
          last_heard[i] = Clock::now();
          const TensorIn got = open_tensor(pod, frames, too_many);
          if (got == TensorIn::kDropped) continue;
          if (got == TensorIn::kNotice) {
            // The pod holds no session for this job: it restarted or ended the job.
            pod.sealed = false;
            result[i] = {"error", "the pod no longer holds this job (tensor channel: unknown session)", 0,
                         std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {},
                         to_string(StatusCode::kFailedPrecondition)};
            done = true;
            break;
          }
          auto r = receive(pod, frames, false, request_id, want, on_reply);
          if (r) {
            r->seconds = std::chrono::duration<double>(Clock::now() - sent_at[i]).count();
            if (ask_again_later(i, *r)) {
              retrying = true;
              break;
            }
            result[i] = std::move(*r);
            done = true;
          }
        }
      }
      if (!done && !retrying && (items[base[k]].revents & ZMQ_POLLIN)) {
        bool too_many = false;
        while (!done && protocol::recv_frames(pod.socket, frames, protocol::Limits().max_frames + 1, too_many)) {
          job_metrics.all_received.Increment(frame_bytes(frames));
          pod.connected = true;  // a reply proves the connection
          last_heard[i] = Clock::now();
          auto r = receive(pod, frames, too_many, request_id, want, on_reply);
          if (r) {
            r->seconds = std::chrono::duration<double>(Clock::now() - sent_at[i]).count();
            if (ask_again_later(i, *r)) {
              retrying = true;
              break;
            }
            result[i] = std::move(*r);
            done = true;
          }
        }
      }
      if (retrying) continue;
      if (!done && (items[base[k] + 1].revents & ZMQ_POLLIN) && drain_monitor(pod)) {
        if (!pod.handshake_error.empty() && !pod.secured) {
          result[i] = {"refused", pod.handshake_error, 0, 0, {}};
          done = true;
        } else if (require_connected || pod.secured) {
          // ZeroMQ's own heartbeats (same heartbeat_timeout) drop a connection that
          // carried nothing for that long, which can come a moment before the check
          // below: a pod quiet for the whole timeout was silent, whichever noticed.
          const auto quiet = Clock::now() - last_heard[i];
          if (detect_silence && !(exempt && exempt(i)) && quiet >= spec.heartbeat_timeout) {
            result[i] = {"silent",
                         "no answer, not even to heartbeats, for " +
                             fmt(std::chrono::duration<double>(quiet).count(), 1) +
                             " s (heartbeat_timeout); the connection was dropped",
                         0, std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {}};
          } else {
            result[i] = {"disconnected", "pod disconnected while the request was pending", 0, 0, {}};
          }
          done = true;
        }
        // Otherwise (hello, startJob): not yet connected; ZeroMQ keeps retrying until the deadline.
      }
      if (!done && detect_silence) {
        const auto t = Clock::now();
        if (exempt && exempt(i)) {
          last_heard[i] = t;  // silence counts from the end of its upload
        } else if (t - last_heard[i] >= spec.heartbeat_timeout) {
          const double quiet = std::chrono::duration<double>(t - last_heard[i]).count();
          result[i] = {"silent", "no answer, not even to heartbeats, for " + fmt(quiet, 1) + " s (heartbeat_timeout)",
                       0, std::chrono::duration<double>(t - sent_at[i]).count(), {}};
          done = true;
        }
      }
      if (!done) still.push_back(i);
      else if (settled_hook) settled_hook(i, result[i]);
    }
    waiting.swap(still);
    if (waiting_hook) waiting_hook(waiting);
  }
  if (sent_count) *sent_count = sent_ok;
  // A pod that was busy and not asked again in time: its refusal stands.
  for (const auto& [i, at] : retry_at) result[i] = std::move(busy_answer[i]);
  for (auto it = unsent.begin(); it != unsent.end();) {
    if (busy_answer.count(*it)) {
      result[*it] = std::move(busy_answer[*it]);
      it = unsent.erase(it);
    } else {
      ++it;
    }
  }
  if (stopped_here) {
    const std::string why = "the job was stopped (signal " + std::to_string(stop_flag->load()) + ") before it answered";
    for (size_t i : unsent) result[i] = {"stopped", why, 0, 0, {}};
    for (size_t i : waiting) {
      result[i] = {"stopped", why, 0, std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {}};
    }
    return result;
  }
  for (size_t i : unsent) {
    result[i] = {"timeout", "the round's deadline passed before its parameters could be sent (other pods were "
                            "not reading theirs)", 0, 0, {}};
  }
  for (size_t i : waiting) {
    if (!pods[i].handshake_error.empty() && !pods[i].secured) {
      result[i] = {"refused", pods[i].handshake_error, 0, 0, {}};
      continue;
    }
    result[i] = {"timeout", "no answer within the deadline", 0,
                 std::chrono::duration<double>(Clock::now() - sent_at[i]).count(), {}};
  }
  return result;
}

std::optional<PodRound> Coordinator::Impl::receive(Pod& pod, std::vector<zmq::message_t>& frames, bool too_many,
                                uint64_t request_id, const Kinds& want, const ReplyHandler& on_reply) {
  if (too_many) return PodRound{"error", "reply has too many frames", 0, 0, {}};
  auto parsed = protocol::Incoming::parse(std::move(frames));
  if (!parsed.ok()) return PodRound{"error", "bad reply: " + parsed.status().message(), 0, 0, {}};
  try {
    auto env = (*parsed)->envelope();
    // A heartbeat's answer only says the pod is alive (exchange() noted that).
    if (env.getBody().which() == wire::Envelope::Body::HEARTBEAT && std::string(env.getJobId().cStr()) == spec.job_id) {
      return std::nullopt;
    }
    if (const char* reason = discard_reason(static_cast<size_t>(&pod - pods.data()), env, request_id)) {
      discard(pod, reason, env, request_id);
      return std::nullopt;
    }
    auto body = env.getBody();
    if (body.which() == wire::Envelope::Body::ERROR) {
      auto err = body.getError();
      StatusCode code = protocol::from_wire(err.getCode());
      std::string outcome = (code == StatusCode::kBusy || code == StatusCode::kPermissionDenied ||
                             code == StatusCode::kSchemaMismatch)
                                ? "refused"
                                : "error";
      // The pod's own words, kept in history.json: made valid UTF-8, bounded.
      return PodRound{outcome, std::string(to_string(code)) + ": " + peer_text(err.getMessage().cStr()), 0, 0, {},
                      to_string(code)};
    }
    if (std::find(want.begin(), want.end(), body.which()) == want.end()) {
      return PodRound{"error", std::string("unexpected reply '") + protocol::body_name(body.which()) + "'", 0, 0, {}};
    }
    return on_reply(pod, **parsed);
  } catch (const kj::Exception& e) {
    return PodRound{"error", std::string("malformed reply: ") + e.getDescription().cStr(), 0, 0, {}};
  }
}

}  // namespace fedpod::coordinator
