// The tensor channel (docs/tensor-encryption.md) against real `fedpod worker`
// processes, attacked as a peer on the network would: a captured message replayed,
// messages reordered, bytes altered, a message for one pod sent to another (as it is
// and with its session id rewritten), garbage from an unauthenticated peer. Each is
// dropped unread and counted by reason, the pod answers none of them, and it goes on
// serving the job's real messages. A whole job through `fedpod coordinator run` then
// runs with every pod's parameters sealed, and a pod that lost the job (and its keys)
// is started again at once on the notice it sends for the session it no longer holds.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <regex>
#include <thread>

#include "fedpod/coordinator/coordinator.h"
#include "fedpod/model/zoo.h"
#include "fedpod/protocol/bulk.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/protocol/wire_convert.h"
#include "digits_job.h"
#include "fault_jobs.h"
#include "identity.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using W = wire::Envelope::Body::Which;
using Frames = std::vector<zmq::message_t>;

Frames copy(const Frames& f) {
  Frames out;
  for (const auto& m : f) out.emplace_back(m.data(), m.size());
  return out;
}

int metrics_port(const testing::PodProcess& pod) {
  const std::regex listening("event=metrics_listening pod=" + pod.name + R"( address=127\.0\.0\.1:(\d+))");
  std::smatch m;
  const std::string log = testing::read_file(pod.log);
  return std::regex_search(log, m, listening) ? std::stoi(m[1]) : 0;
}

double refused(const testing::PodProcess& pod, const std::string& reason) {
  httplib::Client c("127.0.0.1", metrics_port(pod));
  c.set_read_timeout(5, 0);
  auto r = c.Get("/metrics");
  if (!r || r->status != 200) return -1;
  const double v =
      testing::metric_value(r->body, "fedpod_worker_tensor_messages_refused_total{reason=\"" + reason + "\"}");
  return std::isnan(v) ? 0 : v;
}

// Waits until `pod` has counted `n` refusals of `reason` (the gate passes messages on
// asynchronously); returns the last count seen.
double wait_refused(const testing::PodProcess& pod, const std::string& reason, double n) {
  double v = 0;
  for (auto until = std::chrono::steady_clock::now() + 10s; std::chrono::steady_clock::now() < until;) {
    v = refused(pod, reason);
    if (v >= n) return v;
    std::this_thread::sleep_for(50ms);
  }
  return v;
}

// The next message on `socket` within `timeout`; empty when none came.
Frames next(zmq::socket_t& socket, std::chrono::milliseconds timeout) {
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  Frames frames;
  if (protocol::poll(&item, 1, timeout) == 0) return frames;
  bool too_many = false;
  protocol::recv_frames(socket, frames, 20000, too_many);
  return frames;
}

// A job's two channels with one pod, as a coordinator holds them.
struct SealedJob {
  std::string job_id;
  zmq::socket_t curve;   // DEALER, CURVE
  zmq::socket_t tensor;  // DEALER, the pod's tensor endpoint
  protocol::BulkSession session;
  std::vector<model::ParamInfo> layout;
  uint64_t next_request = 1;

  // A train, fetchResult or evaluate (of `split`) message for round `round`, sealed.
  Frames sealed(W kind, uint32_t round, wire::Split split = wire::Split::VALIDATION) {
    protocol::Outgoing out(job_id, next_request++);
    auto body = out.envelope().getBody();
    std::vector<torch::Tensor> keep;
    if (kind == W::TRAIN) {
      auto t = body.initTrain();
      t.setRound(round);
      t.setLocalSteps(2);
      t.setBatchSize(16);
      attach_zeros(out, t.initTensors(layout.size()));
    } else if (kind == W::FETCH_RESULT) {
      body.initFetchResult().setRound(round);
    } else {
      auto e = body.initEvaluate();
      e.setRound(round);
      e.setSplit(split);
      e.setBatchSize(64);
      attach_zeros(out, e.initTensors(layout.size()));
    }
    return session.seal(out.frames(), round);
  }

  void attach_zeros(protocol::Outgoing& out, capnp::List<wire::TensorInfo>::Builder infos) {
    std::vector<protocol::NamedTensor> t;
    for (const auto& p : layout) t.push_back({p.name, torch::full(p.shape, 0.01f)});
    out.attach(infos, std::move(t));
  }

  bool send(Frames frames) { return protocol::send_frames(tensor, frames); }

  // The next sealed reply on the tensor channel, opened; nullptr when none came.
  std::unique_ptr<protocol::Incoming> reply(std::chrono::milliseconds timeout = 30s) {
    Frames f = next(tensor, timeout);
    if (f.empty()) return nullptr;
    auto opened = session.open(std::move(f), nullptr, nullptr);
    if (!opened.ok()) {
      ADD_FAILURE() << "the pod's reply did not open: " << opened.status().message();
      return nullptr;
    }
    auto in = protocol::Incoming::parse(std::move(*opened));
    return in.ok() ? std::move(*in) : nullptr;
  }
};

// Starts job `job_id` on `pod` over CURVE with a tensor key; the pod must answer
// jobAccepted with its own key and port.
// `hidden`: the mlp's hidden width; from 256 up its first weight (64 x hidden floats)
// is a frame large enough to cross between the pod's receiving process and worker
// through their shared ring (worker/gate.h).
SealedJob start_sealed_job(zmq::context_t& ctx, testing::TestIdentity& id, const testing::PodProcess& pod,
                           const std::string& job_id, int hidden = 16) {
  SealedJob j;
  j.job_id = job_id;
  j.curve = protocol::make_dealer(ctx, pod.endpoint, id.client_options(pod.name));
  auto m = model::make_builtin("mlp");
  const Hyperparameters hp(nlohmann::json{{"hidden", {hidden}}});
  m->create_model({64}, 10, hp);
  j.layout = m->flat().layout();
  protocol::BulkKeyPair mine;
  protocol::Outgoing out(job_id, j.next_request++);
  auto sj = out.envelope().getBody().initStartJob();
  sj.initModel().setModelRef("mlp");
  sj.getModel().setHyperparameters(hp.json().dump());
  data::Datastructure ds;
  ds.target = "label";
  ds.num_classes = 10;
  ds.scale = 1.0 / 16;
  protocol::to_wire(ds, sj.initDatastructure());
  const std::string pk = mine.public_key();
  sj.setTensorKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(pk.data()), pk.size()));
  Frames f = out.frames();
  EXPECT_TRUE(protocol::send_frames(j.curve, f));
  Frames r = next(j.curve, 60s);
  auto in = protocol::Incoming::parse(std::move(r));
  if (!in.ok()) {
    ADD_FAILURE() << "no jobAccepted from " << pod.name << ": " << in.status().message();
    return j;
  }
  auto body = (*in)->envelope().getBody();
  if (body.which() != W::JOB_ACCEPTED) {
    ADD_FAILURE() << pod.name << " answered " << protocol::body_name(body.which());
    return j;
  }
  auto a = body.getJobAccepted();
  EXPECT_EQ(a.getTensorKey().size(), 32u);
  EXPECT_NE(a.getTensorPort(), 0);
  auto key = a.getTensorKey();
  auto s = protocol::BulkSession::derive(protocol::BulkRole::kCoordinator, mine,
                                         std::string_view(reinterpret_cast<const char*>(key.begin()), key.size()),
                                         {job_id, pod.public_key});
  EXPECT_TRUE(s.ok());
  j.session = std::move(*s);
  j.tensor = protocol::make_dealer(ctx, protocol::with_port(pod.endpoint, a.getTensorPort()), {});
  return j;
}

// Sends `job` a sealed train for `round` and checks the pod answers trainDone for it
// within `timeout`.
::testing::AssertionResult trains(SealedJob& job, uint32_t round, std::chrono::milliseconds timeout = 30s) {
  if (!job.send(job.sealed(W::TRAIN, round))) return ::testing::AssertionFailure() << "train not sent";
  auto done = job.reply(timeout);
  if (!done) return ::testing::AssertionFailure() << "no answer to train round " << round;
  auto body = done->envelope().getBody();
  if (body.which() != W::TRAIN_DONE) {
    return ::testing::AssertionFailure() << "train round " << round << " answered " << protocol::body_name(body.which());
  }
  if (body.getTrainDone().getRound() != round) {
    return ::testing::AssertionFailure() << "trainDone for round " << body.getTrainDone().getRound() << ", not "
                                         << round;
  }
  return ::testing::AssertionSuccess();
}

double gate_shared_bytes(const testing::PodProcess& pod) {
  httplib::Client c("127.0.0.1", metrics_port(pod));
  c.set_read_timeout(5, 0);
  auto r = c.Get("/metrics");
  if (!r || r->status != 200) return -1;
  return testing::metric_value(r->body, "fedpod_worker_gate_shared_memory_bytes_total");
}

// The counter once it reaches `at_least`, or its value after `timeout`. The worker
// adds a frame it sends through the ring to the counter just after handing the
// message to its receiving process, so a reply can reach the test a moment before
// the scrape shows it.
double gate_shared_bytes_reaching(const testing::PodProcess& pod, double at_least,
                                  std::chrono::milliseconds timeout = 5s) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  double v = gate_shared_bytes(pod);
  while (v < at_least && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(20ms);
    v = gate_shared_bytes(pod);
  }
  return v;
}

// Every attack of the test below, on two pods running jobs of an mlp `hidden` wide;
// then pod A's receiving process is killed, and the job's next round must still cross
// (through the new process's rings when the frames are large).
void attack_the_tensor_channel(int hidden) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path());
  auto a = testing::start_digits_pod(dir, id, "pod-a", "general-modeller", "metrics_listen: 127.0.0.1:0\n");
  auto b = testing::start_digits_pod(dir, id, "pod-b", "general-modeller", "metrics_listen: 127.0.0.1:0\n");
  ASSERT_FALSE(a.endpoint.empty()) << testing::read_file(a.log);
  ASSERT_FALSE(b.endpoint.empty()) << testing::read_file(b.log);
  zmq::context_t ctx(1);
  SealedJob ja = start_sealed_job(ctx, id, a, "job-a", hidden);
  SealedJob jb = start_sealed_job(ctx, id, b, "job-b", hidden);
  ASSERT_FALSE(::testing::Test::HasFailure());

  // The real thing works: train round 1, answered sealed.
  Frames train = ja.sealed(W::TRAIN, 1);
  const Frames captured = copy(train);
  ASSERT_TRUE(ja.send(std::move(train)));
  auto done = ja.reply();
  ASSERT_TRUE(done);
  ASSERT_EQ(done->envelope().getBody().which(), W::TRAIN_DONE);
  EXPECT_EQ(done->envelope().getBody().getTrainDone().getRound(), 1u);

  // 1. The captured train replayed: dropped, counted, unanswered.
  ASSERT_TRUE(ja.send(copy(captured)));
  EXPECT_EQ(wait_refused(a, "replay", 1), 1);
  EXPECT_TRUE(next(ja.tensor, 500ms).empty());

  // 2. A fetchResult with one ciphertext byte altered: dropped as tampered; the
  //    untouched original (same sequence number) still opens afterwards.
  Frames fetch = ja.sealed(W::FETCH_RESULT, 1);
  Frames altered = copy(fetch);
  static_cast<uint8_t*>(altered[1].data())[3] ^= 0x40;
  ASSERT_TRUE(ja.send(std::move(altered)));
  EXPECT_EQ(wait_refused(a, "tampered", 1), 1);
  EXPECT_TRUE(next(ja.tensor, 500ms).empty());
  ASSERT_TRUE(ja.send(std::move(fetch)));
  auto result = ja.reply();
  ASSERT_TRUE(result);
  ASSERT_EQ(result->envelope().getBody().which(), W::TRAIN_RESULT);
  std::vector<protocol::TensorSpec> specs = protocol::tensor_specs(ja.layout);
  auto tensors = result->take_tensors(result->envelope().getBody().getTrainResult().getTensors(), specs);
  ASSERT_TRUE(tensors.ok()) << tensors.status().message();
  EXPECT_EQ(tensors->size(), ja.layout.size());

  // 3. Reordered: the later of two evaluations arrives first; the earlier is then stale.
  Frames first = ja.sealed(W::EVALUATE, 1);
  Frames second = ja.sealed(W::EVALUATE, 1);
  ASSERT_TRUE(ja.send(std::move(second)));
  auto eval = ja.reply();
  ASSERT_TRUE(eval);
  EXPECT_EQ(eval->envelope().getBody().which(), W::EVAL_RESULT);
  ASSERT_TRUE(ja.send(std::move(first)));
  EXPECT_EQ(wait_refused(a, "replay", 2), 2);
  EXPECT_TRUE(next(ja.tensor, 500ms).empty());

  // 4. A message for pod A sent to pod B: B holds no such session and says so (a
  //    notice naming the session, nothing else); with the session id rewritten to
  //    B's own, its tag fails.
  Frames for_a = ja.sealed(W::EVALUATE, 1);
  zmq::socket_t to_b = protocol::make_dealer(ctx, jb.tensor.get(zmq::sockopt::last_endpoint), {});
  Frames moved = copy(for_a);
  ASSERT_TRUE(protocol::send_frames(to_b, moved));
  Frames notice = next(to_b, 10s);
  ASSERT_EQ(notice.size(), 1u);
  auto header = protocol::parse_bulk_header(notice[0]);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->kind, 2);
  EXPECT_EQ(header->session, ja.session.id());
  EXPECT_EQ(wait_refused(b, "unknown_session", 1), 1);
  Frames rewritten = copy(for_a);
  std::memcpy(static_cast<uint8_t*>(rewritten[0].data()) + 8, jb.session.id().data(), 16);
  ASSERT_TRUE(protocol::send_frames(to_b, rewritten));
  EXPECT_EQ(wait_refused(b, "tampered", 1), 1);
  EXPECT_TRUE(next(to_b, 500ms).empty());

  // 5. Garbage from a peer that holds no keys: malformed headers, a sealed-looking
  //    message of another session; none is answered but the notice.
  zmq::socket_t stranger = protocol::make_dealer(ctx, ja.tensor.get(zmq::sockopt::last_endpoint), {});
  Frames junk;
  junk.emplace_back("GET / HTTP/1.0\r\n\r\n", 18);
  junk.emplace_back(std::string(4096, 'x').data(), 4096);
  ASSERT_TRUE(protocol::send_frames(stranger, junk));
  EXPECT_EQ(wait_refused(a, "malformed", 1), 1);

  // Through all of it pod A lost nothing: its job's next round trains and answers.
  ASSERT_TRUE(trains(ja, 2));
  // And pod B's own job is untouched.
  ASSERT_TRUE(trains(jb, 1));
  // A plaintext train on the tensor port, as a peer without keys would send it, is
  // not a sealed message: dropped as malformed, never trained on.
  protocol::Outgoing plain("job-a", 999);
  auto t = plain.envelope().getBody().initTrain();
  t.setRound(3);
  t.setLocalSteps(1);
  t.setBatchSize(16);
  ja.attach_zeros(plain, t.initTensors(ja.layout.size()));
  Frames pf = plain.frames();
  ASSERT_TRUE(protocol::send_frames(stranger, pf));
  EXPECT_EQ(wait_refused(a, "malformed", 2), 2);
  EXPECT_TRUE(next(stranger, 500ms).empty());
  EXPECT_TRUE(next(ja.tensor, 200ms).empty());

  // 6. A train whose largest frame (a weight's ciphertext) has one byte altered:
  //    dropped as tampered, however that frame crossed to the worker.
  Frames train3 = ja.sealed(W::TRAIN, 3);
  size_t largest = 1;
  for (size_t i = 1; i < train3.size(); ++i) {
    if (train3[i].size() > train3[largest].size()) largest = i;
  }
  static_cast<uint8_t*>(train3[largest].data())[train3[largest].size() / 2] ^= 0x01;
  ASSERT_TRUE(ja.send(std::move(train3)));
  EXPECT_EQ(wait_refused(a, "tampered", 2), 2);
  EXPECT_TRUE(next(ja.tensor, 500ms).empty());
  // The same round's train, untouched, still trains: nothing was taken from it.
  ASSERT_TRUE(trains(ja, 3));
  // Which way the frames crossed: frames from 64 KiB up through the shared ring
  // (every train and evaluate in, fetchResult's answer out), smaller ones never.
  const bool large = hidden * 64 * 4 >= 64 * 1024;
  const double shared = large ? gate_shared_bytes_reaching(a, 6.0 * 64 * hidden * 4 + 1) : gate_shared_bytes(a);
  if (large) {
    EXPECT_GT(shared, 6.0 * 64 * hidden * 4);
  } else {
    EXPECT_EQ(shared, 0);
  }

  // 7. The receiving process dies (its ring may still hold blocks): a new one takes
  //    over the same endpoints with new rings, and round 4 trains and answers.
  const pid_t old_gate = testing::receiving_process_pid(a);
  ASSERT_GT(old_gate, 0) << testing::read_file(a.log);
  ASSERT_EQ(::kill(old_gate, SIGKILL), 0);
  pid_t new_gate = old_gate;
  for (auto until = std::chrono::steady_clock::now() + 60s;
       new_gate == old_gate && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(20ms);
    new_gate = testing::receiving_process_pid(a);
  }
  ASSERT_NE(new_gate, old_gate) << "not restarted: " << testing::read_file(a.log);
  // Sent until answered: a message sent before the new process listened is lost.
  ::testing::AssertionResult trained4 = ::testing::AssertionFailure();
  for (int attempt = 0; attempt < 20 && !trained4; ++attempt) trained4 = trains(ja, 4, 3s);
  ASSERT_TRUE(trained4) << testing::read_file(a.log);
  ASSERT_TRUE(ja.send(ja.sealed(W::FETCH_RESULT, 4)));
  auto result4 = ja.reply();
  ASSERT_TRUE(result4);
  EXPECT_EQ(result4->envelope().getBody().which(), W::TRAIN_RESULT);
  if (large) {
    EXPECT_GE(gate_shared_bytes_reaching(a, shared + 2.0 * 64 * hidden * 4), shared + 2.0 * 64 * hidden * 4);
  }
}

TEST(TensorChannel, ForgedReplayedReorderedAndMovedMessagesAreDroppedAndCounted) {
  attack_the_tensor_channel(16);
}

// The same attacks with frames large enough to cross between each pod's receiving
// process and worker through their shared ring (a 64 x 1024 weight: 256 KiB), in
// both directions: the pods answer fetchResult and evaluate with such frames too.
TEST(TensorChannel, AttacksOnLargeFramesThatCrossThroughSharedMemoryFailTheSameWay) {
  attack_the_tensor_channel(1024);
}

TEST(TensorChannel, AJobRunsSealedAndAPodThatLostItsSessionIsStartedAgainOnItsNotice) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path());
  std::vector<testing::PodProcess> pods;
  // pod-b ends a job idle for 3 s, and with it the job's keys. (1 s was shorter than
  // the gap between startJob and round 1 on a loaded 2-core machine: the job expired
  // before its first round.)
  pods.push_back(testing::start_digits_pod(dir, id, "pod-a"));
  pods.push_back(testing::start_digits_pod(dir, id, "pod-b", "general-modeller", "job_idle_timeout: 3s\n"));
  for (const auto& p : pods) ASSERT_FALSE(p.endpoint.empty()) << testing::read_file(p.log);
  std::vector<const testing::PodProcess*> refs = {&pods[0], &pods[1]};
  const std::string out = (dir.path() / "out").string();
  const std::string log = (dir.path() / "coordinator.log").string();
  const std::string job = dir.write("job.yaml", testing::digits_job_yaml(id, refs, out, "rounds: 5\nmin_pods: 1\n"));
  testing::Process c(testing::coordinator_argv(job), log);
  // Once round 2 is done, the coordinator sleeps (SIGSTOP) long enough for pod-b to
  // end the job: its next sealed message to pod-b meets no session.
  bool paused = false;
  for (auto by = std::chrono::steady_clock::now() + 120s; std::chrono::steady_clock::now() < by && c.running();) {
    if (testing::read_file(log).find("round 2/5") != std::string::npos) {
      ::kill(c.pid(), SIGSTOP);
      paused = true;
      break;
    }
    std::this_thread::sleep_for(2ms);
  }
  ASSERT_TRUE(paused) << testing::read_file(log);
  for (auto by = std::chrono::steady_clock::now() + 30s;
       std::chrono::steady_clock::now() < by &&
       testing::read_file(pods[1].log).find("event=job_expired") == std::string::npos;) {
    std::this_thread::sleep_for(50ms);
  }
  ::kill(c.pid(), SIGCONT);
  const int status = c.wait(240s);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << testing::read_file(log);
  ASSERT_NE(testing::read_file(pods[1].log).find("event=job_expired"), std::string::npos);

  const auto history = testing::read_history(out);
  EXPECT_EQ(history["status"], "completed");
  for (const auto& p : pods) {
    EXPECT_EQ(history["pods"][p.name]["tensor_channel"], "aes-256-gcm") << history["pods"].dump();
  }
  for (const auto& o : testing::outcomes(history, "pod-a")) EXPECT_EQ(o, "ok");
  // pod-b answered its next sealed message with a notice: the coordinator learnt at
  // once that the job was gone there (no deadline passed), started it again, and
  // pod-b trained the last round. That message is a train, a fetchResult or an
  // evaluation, depending on where the coordinator was stopped (round 3's update may
  // have come back with its trainDone before the job expired): the history records
  // the notice with that exchange's outcome.
  EXPECT_NE(testing::read_file(pods[1].log).find("reason=unknown_session"), std::string::npos)
      << testing::read_file(pods[1].log);
  EXPECT_NE(history.dump().find("tensor channel: unknown session"), std::string::npos) << history.dump(1);
  EXPECT_NE(testing::read_file(log).find("pod-b rejoined"), std::string::npos) << testing::read_file(log);
  const auto b = testing::outcomes(history, "pod-b");
  ASSERT_EQ(b.size(), 5u);
  EXPECT_EQ(b[0], "ok");
  EXPECT_EQ(b[4], "ok");
  for (const auto& r : history["rounds"]) {
    if (!r["pods"].contains("pod-b") || r["pods"]["pod-b"]["outcome"] == "ok") continue;
    EXPECT_EQ(r["pods"]["pod-b"]["outcome"], "error") << r.dump();  // the notice, not a timeout
  }
}

// A job id and a model's names go into the pod's audit log, log lines and the keys that
// coalesce its refusals: a startJob whose job id is a megabyte, or holds a newline,
// or whose model names are not names, is refused as a bad message before anything is
// decided or written; the pod then takes a well-formed job.
TEST(TensorChannel, AStartJobWithMalformedNamesIsRefusedBeforeItIsAudited) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path());
  auto pod = testing::start_digits_pod(dir, id, "pod-a", "general-modeller");
  ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
  zmq::context_t ctx(1);
  zmq::socket_t curve = protocol::make_dealer(ctx, pod.endpoint, id.client_options(pod.name));
  const size_t audit_before = testing::read_file(id.audit_log("pod-a")).size();
  struct Case {
    std::string job_id, username, ref, says;
  };
  const std::vector<Case> cases = {
      {std::string(1 << 19, 'j'), "", "mlp", "startJob: job id must be 1 to 128 characters, got 524288"},
      {"job\nevent=forged", "", "mlp", "startJob: job id may only contain letters, digits"},
      {"job-1", "", "../../etc/passwd", "startJob: model ref must start with a lowercase letter or digit"},
      {"job-1", "Alice\n", "net", "startJob: the model's username"},
  };
  uint64_t rid = 1;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.says);
    protocol::Outgoing out(c.job_id, rid++);
    auto sj = out.envelope().getBody().initStartJob();
    sj.initModel().setModelRef(c.ref);
    if (!c.username.empty()) sj.getModel().setUsername(c.username);
    Frames f = out.frames();
    ASSERT_TRUE(protocol::send_frames(curve, f));
    Frames r = next(curve, 30s);
    ASSERT_FALSE(r.empty());
    auto in = protocol::Incoming::parse(std::move(r));
    ASSERT_TRUE(in.ok()) << in.status().message();
    auto body = (*in)->envelope().getBody();
    ASSERT_EQ(body.which(), W::ERROR) << protocol::body_name(body.which());
    EXPECT_EQ(protocol::from_wire(body.getError().getCode()), StatusCode::kBadMessage);
    EXPECT_CONTAINS(std::string(body.getError().getMessage().cStr()), c.says);
  }
  EXPECT_EQ(testing::read_file(id.audit_log("pod-a")).size(), audit_before);
  SealedJob job = start_sealed_job(ctx, id, pod, "job-after");
  ASSERT_FALSE(::testing::Test::HasFailure());
  EXPECT_TRUE(trains(job, 1));
}

// A coordinator may evaluate parameters it chose on the pod's validation and test
// splits, never on the training split: accuracy × rows at crafted parameters counts
// the training rows that meet a condition of its choosing, outside what protects the
// data that trains (the privacy limits, differential privacy's budget). Refused with
// the reason; the job goes on.
TEST(TensorChannel, APodRefusesToEvaluateItsTrainingSplit) {
  testing::TempDir dir;
  testing::TestIdentity id(dir.path());
  auto pod = testing::start_digits_pod(dir, id, "pod-a", "general-modeller");
  ASSERT_FALSE(pod.endpoint.empty()) << testing::read_file(pod.log);
  zmq::context_t ctx(1);
  SealedJob job = start_sealed_job(ctx, id, pod, "job-eval");
  ASSERT_FALSE(::testing::Test::HasFailure());
  ASSERT_TRUE(trains(job, 1));

  ASSERT_TRUE(job.send(job.sealed(W::EVALUATE, 1, wire::Split::TRAIN)));
  auto refused_reply = job.reply();
  ASSERT_TRUE(refused_reply);
  auto body = refused_reply->envelope().getBody();
  ASSERT_EQ(body.which(), W::ERROR) << protocol::body_name(body.which());
  EXPECT_EQ(protocol::from_wire(body.getError().getCode()), StatusCode::kPermissionDenied);
  EXPECT_CONTAINS(std::string(body.getError().getMessage().cStr()),
                  "pod pod-a evaluates only its validation and test splits; evaluate asked for the training split");

  for (auto split : {wire::Split::VALIDATION, wire::Split::TEST}) {
    ASSERT_TRUE(job.send(job.sealed(W::EVALUATE, 1, split)));
    auto ok = job.reply();
    ASSERT_TRUE(ok);
    ASSERT_EQ(ok->envelope().getBody().which(), W::EVAL_RESULT);
    EXPECT_GT(ok->envelope().getBody().getEvalResult().getNumSamples(), 0u);
  }
  ASSERT_TRUE(trains(job, 2));  // the job goes on
}

}  // namespace
}  // namespace fedpod
