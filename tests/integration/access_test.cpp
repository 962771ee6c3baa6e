// Identity and permissions end to end: an in-process hub, a pod whose policy comes
// from that hub, and coordinators connecting as different modellers over real
// CURVE sockets on loopback. The matrix is every kind of modeller (no key, unknown
// key, registered without a role, General Modeller without, with the wrong, an
// expired and the right grant, Super Modeller) times {built-in, custom} model, each
// with the decision the permission model prescribes. Then: a tampered artifact, a
// non-owner trying to grant, a revocation reaching the next job, refusals in the
// metrics, and the audit log detecting an edited entry.
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <thread>
#include <sys/wait.h>

#include "fedpod/common/sha256.h"
#include "fedpod/coordinator/coordinator.h"
#include "fedpod/hub/client.h"
#include "fedpod/hub/server.h"
#include "fedpod/protocol/codec.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/protocol/socket.h"
#include "fedpod/worker/audit.h"
#include "fedpod/protocol/wire_convert.h"
#include "fedpod/worker/worker.h"
#include "reliability.h"
#include "running_hub.h"
#include "testutil.h"

namespace fedpod {
namespace {

using namespace std::chrono_literals;
using W = wire::Envelope::Body::Which;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// One cell of the matrix: who connects, and what should happen for each model kind.
struct Row {
  std::string user;         // modeller; "" = connects without a CURVE key
  std::string builtin;      // "ok" or a phrase of the refusal
  std::string custom;       // the same for the custom model (version 2)
  std::string builtin_why;  // the reason label counted in fedpod_access_denied_total ("" = accepted)
  std::string custom_why;
};

class AccessTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    // Two versions of one TorchScript model, different bytes (different seeds).
    for (int v = 1; v <= 2; ++v) {
      const std::string out = (dir_->path() / ("net-v" + std::to_string(v) + ".pt")).string();
      const std::string cmd = "/usr/bin/python3 " + testing::source_dir() + "/examples/torchscript_model/digits_net.py --out " +
                              out + " --seed " + std::to_string(v) + " > " + out + ".log 2>&1";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << testing::read_file(out + ".log");
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    hub::ServerOptions opt;
    opt.data_dir = (work_.path() / "hub").string();
    hub_ = std::make_unique<testing::RunningHub>(opt, testing::RunningHub::Tls::kOn);
    hub_port_ = hub_->port();
    hub_ca_ = hub_->ca_file();
    hub_signing_key_ = hub_->signing_key();
    // bob owns pod-a; alice owns the model; the others are modellers.
    for (const char* u : {"bob", "alice", "norole", "general", "genv1", "genexpired", "granted", "super"}) user(u);
    stranger_keys_ = protocol::generate_curve_keypair();  // never registered
    ASSERT_TRUE(protocol::write_key_files((work_.path() / "stranger").string(), stranger_keys_, true).ok());

    auto& alice = client("alice");
    for (int v = 1; v <= 2; ++v) {
      auto pushed = alice.push_model("alice", "net", "torchscript", "digits net", "public",
                                     (dir_->path() / ("net-v" + std::to_string(v) + ".pt")).string(),
                                     {testing::source_dir() + "/examples/torchscript_model/digits_net.py"});
      ASSERT_TRUE(pushed.ok()) << pushed.status().to_string();
      versions_.push_back(*pushed);
    }
    pod_keys_ = protocol::generate_curve_keypair();
    ASSERT_TRUE(protocol::write_key_files((work_.path() / "pod-a").string(), pod_keys_, true).ok());
    ASSERT_TRUE(client("bob").register_pod("pod-a", "tcp://127.0.0.1:1", pod_keys_.public_key, nlohmann::json::object()).ok());
    // The pod reads its policy with its own read-only token, never bob's.
    auto pod_token = client("bob").create_pod_token("pod-a");
    ASSERT_TRUE(pod_token.ok()) << pod_token.status().to_string();
    pod_token_ = *pod_token;

    auto& bob = client("bob");
    for (const char* u : {"general", "genv1", "genexpired", "granted"}) {
      ASSERT_TRUE(bob.grant_role("pod-a", u, "general-modeller").ok());
    }
    ASSERT_TRUE(bob.grant_role("pod-a", "super", "super-modeller").ok());
    // Grants: genv1 for version 1 only; genexpired for version 2 until two seconds from
    // now; granted for version 2.
    grant("genv1", 1);
    const auto soon = std::chrono::system_clock::now() + 2s;
    const std::time_t t = std::chrono::system_clock::to_time_t(soon);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    grant("genexpired", 2, std::string(buf));
    granted_request_ = grant("granted", 2);
    // A request from `general` that bob rejects: a rejection grants nothing.
    auto rejected = client("general").request_access("alice", "net", 2, "pod-a", "want to try");
    ASSERT_TRUE(rejected.ok());
    ASSERT_TRUE(bob.reject_access_request(rejected->id, "not with this data").ok());

    start_pod();
    std::this_thread::sleep_until(soon + 1500ms);  // the expiring grant has expired
  }

  void TearDown() override {
    stop_pod();
    hub_.reset();
  }

  void start_pod() {
    worker::PodConfig c;
    c.name = "pod-a";
    c.listen = "tcp://127.0.0.1:*";
    c.dataset_path = testing::source_dir() + "/examples/digits/pod-a.csv";
    c.devices = {"cpu"};
    c.threads = 1;
    c.key_file = (work_.path() / "pod-a.key").string();
    // The pod reads its policy over TLS, verifying the hub against its CA. The hub may
    // be down by now, so the address is the one it had.
    c.policy.hub_url = "https://127.0.0.1:" + std::to_string(hub_port_);
    c.policy.hub = parse_hub_url(c.policy.hub_url, "test");
    c.policy.hub.ca_file = hub_ca_;
    c.policy.token = pod_token_;
    c.policy.signing_key = hub_signing_key_;
    c.policy.refresh = 100ms;
    c.policy.cache_path = (work_.path() / "state" / "pod-a.policy.json").string();
    c.audit_log = audit_path();
    c.audit_publish = 200ms;
    c.audit_reset_reason = reset_reason_;
    c.metrics_listen = "127.0.0.1:0";
    stop_ = false;
    worker_ = std::make_unique<worker::Worker>(ctx_, c, null_logger());
    thread_ = std::thread([this] { worker_->serve(stop_); });
  }
  void stop_pod() {
    if (!worker_) return;
    stop_ = true;
    thread_.join();
    worker_.reset();
  }
  std::string audit_path() const { return (work_.path() / "state" / "pod-a.audit.log").string(); }

  // Registers `name` with a fresh key pair written to <work>/<name>.key.
  void user(const std::string& name) {
    auto keys = protocol::generate_curve_keypair();
    ASSERT_TRUE(protocol::write_key_files((work_.path() / name).string(), keys, true).ok());
    hub::Client c(hub_->hub_url());
    auto token = c.register_user(name, keys.public_key, keys.secret_key);
    ASSERT_TRUE(token.ok()) << token.status().to_string();
    tokens_[name] = *token;
    keys_[name] = keys;
  }
  hub::Client& client(const std::string& name) {
    auto& c = clients_[name];
    if (!c) c = std::make_unique<hub::Client>(hub_->hub_url(), tokens_[name]);
    return *c;
  }
  // `who` requests alice/net:`version` on pod-a and bob approves; returns the request id.
  int64_t grant(const std::string& who, int version, std::optional<std::string> expires = std::nullopt) {
    auto r = client(who).request_access("alice", "net", version, "pod-a", "federated digits study");
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    auto a = client("bob").approve_access_request(r->id, "reviewed", expires);
    EXPECT_TRUE(a.ok()) << a.status().to_string();
    return r->id;
  }

  // Runs a one-round job as `who` ("" = no key, "stranger" = unregistered key).
  struct Outcome {
    bool ok = false;
    std::string message;
    std::string progress;
  };
  Outcome run_job(const std::string& who, bool custom, const std::string& job_id) {
    std::ostringstream progress;
    Outcome o = run_job(who, custom, job_id, 1, progress);
    o.progress = progress.str();
    return o;
  }
  // The same with `rounds` rounds, its progress written to `progress`.
  Outcome run_job(const std::string& who, bool custom, const std::string& job_id, int rounds, std::ostream& progress) {
    coordinator::JobSpec spec;
    spec.job_id = job_id;
    if (custom) {
      spec.model.username = "alice";
      spec.model.ref = "net";
      spec.model.version = 2;
      spec.datastructure.input_shape = {1, 8, 8};
      spec.model.hyperparameters = Hyperparameters(nlohmann::json{{"lr", 0.01}});
    } else {
      spec.model.ref = "logreg";
    }
    spec.hub_url = hub_->url();
    spec.hub_ca = hub_->ca_file();
    if (!who.empty()) {
      spec.key_file = (work_.path() / (who + ".key")).string();
      spec.hub_token = tokens_.count(who) ? tokens_[who] : "";
    }
    spec.datastructure.target = "label";
    spec.datastructure.num_classes = 10;
    spec.datastructure.scale = 1.0 / 16;
    spec.pods.push_back({"pod-a", worker_->endpoint(), pod_keys_.public_key});
    spec.rounds = rounds;
    spec.local_epochs = 0;
    spec.local_steps = 3;
    spec.eval_every = 0;
    spec.connect_timeout = 10s;
    spec.round_timeout = 60s;
    spec.output_dir = (work_.path() / "out" / job_id).string();
    coordinator::validate(spec, "access test");
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, spec, null_logger(), progress);
    auto r = c.run();
    return {r.ok(), r.ok() ? "" : r.status().to_string(), ""};
  }

  // fedpod_access_denied_total{reason="..."} from the pod's /metrics.
  double denied(const std::string& reason) {
    httplib::Client c("127.0.0.1", worker_->metrics_port());
    auto res = c.Get("/metrics");
    if (!res || res->status != 200) return -1;
    const std::string needle = "fedpod_access_denied_total{reason=\"" + reason + "\"} ";
    auto at = res->body.find(needle);
    if (at == std::string::npos) return 0;
    return std::stod(res->body.substr(at + needle.size()));
  }

  static testing::TempDir* dir_;
  testing::TempDir work_;
  std::unique_ptr<testing::RunningHub> hub_;
  int hub_port_ = 0;
  std::string hub_ca_;
  std::string pod_token_;
  std::string reset_reason_;  // the next start_pod's --reset-audit-log
  std::string hub_signing_key_;  // what the pod pins
  std::map<std::string, std::string> tokens_;
  std::map<std::string, protocol::CurveKeyPair> keys_;
  std::map<std::string, std::unique_ptr<hub::Client>> clients_;
  protocol::CurveKeyPair stranger_keys_, pod_keys_;
  std::vector<hub::VersionInfo> versions_;
  int64_t granted_request_ = 0;
  zmq::context_t ctx_{1};
  std::atomic<bool> stop_{false};
  std::unique_ptr<worker::Worker> worker_;
  std::thread thread_;
};
testing::TempDir* AccessTest::dir_ = nullptr;

TEST_F(AccessTest, DecisionMatrixOverRealSocketsAndHub) {
  const std::string request_v2 = "fedpod access request --model alice/net:2 --pod pod-a";
  const std::vector<Row> rows = {
      {"", "requires CURVE authentication and this job has no key", "requires CURVE authentication", "", ""},
      {"stranger", "refused our CURVE key", "refused our CURVE key", "unknown_key", "unknown_key"},
      // A hub user without a role on the pod is not in its policy: refused at the handshake.
      {"norole", "refused our CURVE key", "refused our CURVE key", "unknown_key", "unknown_key"},
      {"general", "ok", request_v2, "", "no_grant"},
      {"genv1", "ok", "version 1", "", "grant_other_version"},
      {"genexpired", "ok", "expired", "", "grant_expired"},
      {"granted", "ok", "ok", "", ""},
      {"super", "ok", "ok", "", ""},
  };
  int job = 0;
  for (const auto& row : rows) {
    for (bool custom : {false, true}) {
      const std::string& want = custom ? row.custom : row.builtin;
      const std::string& why = custom ? row.custom_why : row.builtin_why;
      const std::string label = (row.user.empty() ? std::string("no key") : row.user) + " x " +
                                (custom ? "custom alice/net:2" : "built-in logreg");
      const double before = why.empty() ? 0 : denied(why);
      Outcome o = run_job(row.user, custom, "job-" + std::to_string(++job));
      if (want == "ok") {
        EXPECT_TRUE(o.ok) << label << ": " << o.message << "\n" << o.progress;
        EXPECT_CONTAINS(o.progress, "pod-a: accepted (");
      } else {
        EXPECT_FALSE(o.ok) << label;
        EXPECT_CONTAINS(o.message, want) << label;
        EXPECT_CONTAINS(o.message, "min_pods is 1: pod-a refused") << label;  // the job says why it cannot run
        EXPECT_CONTAINS(o.progress, "pod-a: left out: refused") << label;
        if (why != "unknown_key" && !why.empty()) {
          EXPECT_EQ(denied(why), before + 1) << label;
        } else if (why == "unknown_key") {
          EXPECT_GE(denied(why), before + 1) << label;  // ZeroMQ may retry the handshake
        }
      }
    }
  }
  // The decisions name their basis.
  EXPECT_CONTAINS(run_job("granted", true, "job-basis").progress,
                  "pod-a: accepted (general-modeller with grant " + std::to_string(granted_request_));
  EXPECT_CONTAINS(run_job("super", true, "job-basis-2").progress, "pod-a: accepted (super-modeller)");
  // Every startJob decision is in the audit log, and the chain verifies.
  auto v = worker::verify_audit_log(audit_path());
  EXPECT_TRUE(v.ok) << v.error;
  EXPECT_GE(v.entries, 12);
  const std::string log = testing::read_file(audit_path());
  EXPECT_CONTAINS(log, "\"reason\":\"grant_expired\"");
  EXPECT_CONTAINS(log, "\"event\":\"handshake_refused\"");
  EXPECT_CONTAINS(log, keys_["norole"].public_key);
}

TEST_F(AccessTest, TamperedArtifactIsRefusedAndThePodKeepsServing) {
  // As `granted`, send version 2's reference with bytes that are not version 2's.
  auto send_start = [&](const std::string& bytes, const std::string& job_id) {
    protocol::SocketOptions o;
    o.curve_client_public = keys_["granted"].public_key;
    o.curve_client_secret = keys_["granted"].secret_key;
    o.curve_server_public = pod_keys_.public_key;
    zmq::socket_t s = protocol::make_dealer(ctx_, worker_->endpoint(), o);
    protocol::Outgoing out(job_id, 1);
    auto sj = out.envelope().getBody().initStartJob();
    auto m = sj.initModel();
    m.setUsername("alice");
    m.setModelRef("net");
    m.setModelVersion(2);
    m.setHyperparameters("{}");
    m.setSha256(versions_[1].sha256);
    m.setFormat("torchscript");
    auto blob = std::make_shared<const std::string>(bytes);
    m.setArtifactBytes(blob->size());
    m.setArtifactFrame(out.attach_bytes(blob));
    data::Datastructure ds;
    ds.target = "label";
    ds.num_classes = 10;
    ds.input_shape = {1, 8, 8};
    protocol::to_wire(ds, sj.initDatastructure());
    auto frames = out.frames();
    EXPECT_TRUE(protocol::send_frames(s, frames));
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 20s) == 0) return std::string("no reply");
    std::vector<zmq::message_t> reply;
    bool too_many;
    protocol::recv_frames(s, reply, 100, too_many);
    auto in = protocol::Incoming::parse(std::move(reply));
    if (!in.ok()) return in.status().to_string();
    auto body = (*in)->envelope().getBody();
    if (body.which() != W::ERROR) return std::string("accepted");
    return std::string(body.getError().getMessage().cStr());
  };
  std::string v2 = slurp((dir_->path() / "net-v2.pt").string());
  std::string tampered = v2;
  tampered[tampered.size() / 3] ^= 0x20;
  const std::string err = send_start(tampered, "tampered-job");
  EXPECT_CONTAINS(err, "hashes to " + sha256_hex(tampered));
  EXPECT_CONTAINS(err, versions_[1].sha256);
  EXPECT_EQ(denied("hash_mismatch"), 1);
  // Version 1's genuine bytes under version 2's name: also not what was approved.
  EXPECT_CONTAINS(send_start(slurp((dir_->path() / "net-v1.pt").string()), "swapped-job"), "hashes to");
  EXPECT_EQ(worker_->counters().jobs_started, 0);
  // The pod still serves, and the genuine artifact runs.
  Outcome o = run_job("granted", true, "after-tamper");
  EXPECT_TRUE(o.ok) << o.message;
}

// A job belongs to the user who started it: another admitted user (here `granted`,
// a General Modeller of the same pod) cannot keep it alive with heartbeats, read its
// result or end it; the owner still can.
TEST_F(AccessTest, AJobsMessagesAreAcceptedOnlyFromItsOwner) {
  auto dealer = [&](const std::string& user) {
    protocol::SocketOptions o;
    o.curve_client_public = keys_[user].public_key;
    o.curve_client_secret = keys_[user].secret_key;
    o.curve_server_public = pod_keys_.public_key;
    return protocol::make_dealer(ctx_, worker_->endpoint(), o);
  };
  auto call = [](zmq::socket_t& s, const std::string& job, const std::function<void(wire::Envelope::Builder)>& fill)
      -> std::pair<W, std::string> {
    protocol::Outgoing out(job, 1);
    fill(out.envelope());
    auto frames = out.frames();
    if (!protocol::send_frames(s, frames)) return {W::ERROR, "not sent"};
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, 20s) == 0) return {W::ERROR, "no reply"};
    std::vector<zmq::message_t> reply;
    bool too_many;
    protocol::recv_frames(s, reply, 100, too_many);
    auto in = protocol::Incoming::parse(std::move(reply));
    if (!in.ok()) return {W::ERROR, in.status().to_string()};
    auto body = (*in)->envelope().getBody();
    return {body.which(), body.which() == W::ERROR ? body.getError().getMessage().cStr() : ""};
  };
  zmq::socket_t owner = dealer("super"), other = dealer("granted");
  auto start = call(owner, "owned-job", [](wire::Envelope::Builder e) {
    auto sj = e.getBody().initStartJob();
    auto m = sj.initModel();
    m.setModelRef("logreg");
    m.setHyperparameters("{}");
    data::Datastructure ds;
    ds.target = "label";
    ds.num_classes = 10;
    ds.scale = 1.0 / 16;
    protocol::to_wire(ds, sj.initDatastructure());
  });
  ASSERT_EQ(start.first, W::JOB_ACCEPTED) << start.second;
  const std::string not_yours = "job 'owned-job' on pod pod-a belongs to user 'super', not 'granted'";
  auto hb = call(other, "owned-job", [](wire::Envelope::Builder e) { e.getBody().initHeartbeat(); });
  EXPECT_EQ(hb.first, W::ERROR);
  EXPECT_CONTAINS(hb.second, not_yours);
  auto fetch = call(other, "owned-job", [](wire::Envelope::Builder e) { e.getBody().initFetchResult().setRound(1); });
  EXPECT_EQ(fetch.first, W::ERROR);
  EXPECT_CONTAINS(fetch.second, not_yours);
  auto end = call(other, "owned-job", [](wire::Envelope::Builder e) { e.getBody().initEndJob().setReason("hijack"); });
  EXPECT_EQ(end.first, W::ERROR);
  EXPECT_CONTAINS(end.second, not_yours);
  // A second startJob under the same id is not a way in either.
  auto restart = call(other, "owned-job", [](wire::Envelope::Builder e) {
    auto sj = e.getBody().initStartJob();
    sj.initModel().setModelRef("logreg");
  });
  EXPECT_EQ(restart.first, W::ERROR);
  EXPECT_CONTAINS(restart.second, not_yours);
  // The owner's messages work.
  EXPECT_EQ(call(owner, "owned-job", [](wire::Envelope::Builder e) { e.getBody().initHeartbeat(); }).first,
            W::HEARTBEAT);
  EXPECT_EQ(call(owner, "owned-job", [](wire::Envelope::Builder e) { e.getBody().initEndJob().setReason("done"); })
                .first,
            W::JOB_ENDED);
}

TEST_F(AccessTest, OnlyThePodOwnerGrantsAndApproves) {
  auto& mallory = client("norole");
  auto g = mallory.grant_role("pod-a", "norole", "super-modeller");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kPermissionDenied);
  auto r = client("norole").request_access("alice", "net", 2, "pod-a", "please");
  ASSERT_TRUE(r.ok());
  auto a = client("norole").approve_access_request(r->id, "self-approved");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), StatusCode::kPermissionDenied);
  // Nothing changed on the pod: still no role.
  Outcome o = run_job("norole", false, "still-refused");
  EXPECT_FALSE(o.ok);
  EXPECT_CONTAINS(o.message, "is not the key of a user with a role on this pod");
}

TEST_F(AccessTest, RevocationsAreHonouredForTheNextJob) {
  ASSERT_TRUE(run_job("granted", true, "before-revoke").ok);
  ASSERT_TRUE(client("bob").revoke_access_request(granted_request_, "study over").ok());
  ASSERT_TRUE(run_job("super", false, "super-before").ok);
  ASSERT_TRUE(client("bob").revoke_role("pod-a", "super").ok());
  // The pod polls every 100 ms here; the next job after that sees the revocations.
  std::this_thread::sleep_for(400ms);
  Outcome o = run_job("granted", true, "after-revoke");
  EXPECT_FALSE(o.ok);
  EXPECT_CONTAINS(o.message, "fedpod access request --model alice/net:2 --pod pod-a");
  // Without a role, not even the handshake completes.
  Outcome s = run_job("super", false, "super-after");
  EXPECT_FALSE(s.ok);
  EXPECT_CONTAINS(s.message, "refused our CURVE key");
  // The revoked general modeller still runs built-in models.
  EXPECT_TRUE(run_job("granted", false, "granted-builtin").ok);
}

// A job is admitted under a role and, for a general modeller's custom model, a grant;
// taking either away while it runs ends it at its next request, not at its end. The
// revocation happens after round 2 (the coordinator waits 2 s there, twenty of the
// pod's policy refreshes); round 3's train is refused with the reason, the pod ends
// the job and audits it as job_revoked, and serves the next job.
TEST_F(AccessTest, ARevokedGrantOrRoleEndsTheRunningJobAtItsNextRequest) {
  struct Case {
    std::string who;
    bool custom;
    std::function<void()> revoke;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"granted", true,
       [&] { ASSERT_TRUE(client("bob").revoke_access_request(granted_request_, "study over").ok()); }, "no_grant"},
      {"super", false, [&] { ASSERT_TRUE(client("bob").revoke_role("pod-a", "super").ok()); }, "unknown_user"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.who);
    std::vector<std::string> lines;
    testing::LineHook hook([&](const std::string& line) {
      lines.push_back(line);
      if (line.rfind("round 2/", 0) == 0) {
        c.revoke();
        std::this_thread::sleep_for(2s);
      }
    });
    std::ostream progress(&hook);
    Outcome o = run_job(c.who, c.custom, "revoked-" + c.who, 10, progress);
    std::string all;
    for (const auto& l : lines) all += l + "\n";
    ASSERT_FALSE(o.ok) << all;
    EXPECT_CONTAINS(o.message, "pod pod-a ended job 'revoked-" + c.who + "': the permission it ran under is gone (" +
                                   c.reason + ")");
    EXPECT_CONTAINS(all, "round 2/10");
    EXPECT_EQ(all.find("round 3/10"), std::string::npos) << all;
    const std::string audit = testing::read_file(audit_path());
    EXPECT_CONTAINS(audit, "\"event\":\"job_revoked\"");
    EXPECT_CONTAINS(audit, "\"job\":\"revoked-" + c.who + "\"");
  }
  EXPECT_EQ(denied("no_grant") >= 1 && denied("unknown_user") >= 1, true);
  // The pod serves on: a built-in job of a user who kept a role.
  EXPECT_TRUE(run_job("general", false, "after-revocations").ok);
}

TEST_F(AccessTest, PolicyCacheKeepsThePodRunningWhenTheHubIsDown) {
  stop_pod();
  hub_.reset();  // the hub is gone; the pod starts from its persisted policy cache
  start_pod();
  Outcome o = [&] {
    // run_job needs a hub URL for custom models only; a built-in job does not touch it.
    coordinator::JobSpec s;
    s.job_id = "hub-down";
    s.model.ref = "logreg";
    s.key_file = (work_.path() / "general.key").string();
    s.datastructure.target = "label";
    s.datastructure.num_classes = 10;
    s.datastructure.scale = 1.0 / 16;
    s.pods.push_back({"pod-a", worker_->endpoint(), pod_keys_.public_key});
    s.rounds = 1;
    s.local_epochs = 0;
    s.local_steps = 2;
    s.eval_every = 0;
    s.output_dir = (work_.path() / "out" / "hub-down").string();
    coordinator::validate(s, "access test");
    std::ostringstream progress;
    zmq::context_t ctx(1);
    coordinator::Coordinator c(ctx, s, null_logger(), progress);
    auto r = c.run();
    return Outcome{r.ok(), r.ok() ? "" : r.status().to_string(), progress.str()};
  }();
  EXPECT_TRUE(o.ok) << o.message;
}

TEST_F(AccessTest, AuditVerifyDetectsAnEditedEntry) {
  run_job("norole", false, "audited-1");
  run_job("general", false, "audited-2");
  run_job("general", true, "audited-3");
  stop_pod();
  ASSERT_TRUE(worker::verify_audit_log(audit_path()).ok);
  // Turn the refusal of norole into an acceptance, as someone covering tracks would.
  std::string text = testing::read_file(audit_path());
  const auto at = text.find("\"event\":\"job_refused\"");
  ASSERT_NE(at, std::string::npos);
  const std::string line = "line " + std::to_string(1 + std::count(text.begin(), text.begin() + at, '\n'));
  text.replace(at, std::string("\"event\":\"job_refused\"").size(), "\"event\":\"job_accepted\"");
  std::ofstream(audit_path(), std::ios::trunc) << text;
  auto v = worker::verify_audit_log(audit_path());
  EXPECT_FALSE(v.ok);
  EXPECT_CONTAINS(v.error, line);
  // And through the command a pod owner runs.
  testing::Process p({testing::fedpod_bin(), "audit", "verify", audit_path()},
                     (work_.path() / "verify.log").string());
  const int status = p.wait(30s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
  EXPECT_CONTAINS(testing::read_file((work_.path() / "verify.log").string()), line);
}

// The pod signs its audit chain head and publishes it; what it published makes a log
// cut at its end, replaced by a consistent chain, or deleted show up: in `fedpod
// audit verify --pod`, and at the pod's next start, which refuses such a log unless
// the owner resets it on purpose (and the reset is recorded, in the log and on the hub).
TEST_F(AccessTest, AnAuditLogCutReplacedOrDeletedIsDetected) {
  run_job("norole", false, "anchored-1");
  run_job("general", true, "anchored-2");
  // Published within audit_publish (200 ms) of the last entry.
  int64_t published = 0;
  const int64_t local = [&] {
    for (int i = 0; i < 100; ++i) {
      auto heads = client("bob").get_audit_heads("pod-a");
      if (heads.ok() && !heads->empty()) published = heads->back()["entries"].get<int64_t>();
      const auto v = worker::verify_audit_log(audit_path());
      if (published > 0 && published == v.entries) return v.entries;
      std::this_thread::sleep_for(100ms);
    }
    return int64_t{-1};
  }();
  ASSERT_GT(local, 1) << "published " << published;
  stop_pod();
  const std::string original = testing::read_file(audit_path());
  auto verify = [&](const std::string& what) {
    const std::string log = (work_.path() / ("verify-" + what + ".log")).string();
    testing::Process p({testing::fedpod_bin(), "audit", "verify", audit_path(), "--pod", "pod-a", "--hub", hub_->url(),
                        "--hub-ca", hub_ca_, "--token", tokens_["bob"]},
                       log);
    const int status = p.wait(30s);
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, testing::read_file(log));
  };
  auto ok = verify("intact");
  EXPECT_EQ(ok.first, 0) << ok.second;
  EXPECT_CONTAINS(ok.second, "agrees with the");

  // 1. Cut at its end: the chain alone still verifies; the hub's head does not.
  std::string cut = original.substr(0, original.rfind('\n', original.size() - 2) + 1);
  std::ofstream(audit_path(), std::ios::trunc) << cut;
  ASSERT_TRUE(worker::verify_audit_log(audit_path()).ok);
  auto truncated = verify("cut");
  EXPECT_EQ(truncated.first, 1);
  EXPECT_CONTAINS(truncated.second, "truncated: the pod published a head at entry " + std::to_string(local));
  const std::string refused = testing::config_error([&] { start_pod(); });
  EXPECT_CONTAINS(refused, "audit_log: truncated");
  EXPECT_CONTAINS(refused, "--reset-audit-log");

  // 2. Replaced by a consistent chain of the same length (entries rewritten, every
  //    hash recomputed): the published hash of the last entry differs.
  {
    std::ofstream(audit_path(), std::ios::trunc) << "";
    std::filesystem::remove(audit_path());
    auto forged = worker::AuditLog::open(audit_path(), null_logger());
    ASSERT_TRUE(forged.ok());
    for (int64_t i = 0; i < local; ++i) ASSERT_TRUE((*forged)->append({{"event", "job_accepted"}}).ok());
  }
  ASSERT_TRUE(worker::verify_audit_log(audit_path()).ok);
  auto replaced = verify("replaced");
  EXPECT_EQ(replaced.first, 1);
  EXPECT_CONTAINS(replaced.second, "replaced: entry ");
  EXPECT_CONTAINS(testing::config_error([&] { start_pod(); }), "audit_log: replaced");

  // 3. Deleted: the pod kept a log before (its signing key is there), and the hub
  //    holds its heads.
  std::filesystem::remove(audit_path());
  EXPECT_CONTAINS(testing::config_error([&] { start_pod(); }), "audit_log: missing");

  // The owner restores the log: the pod starts and goes on publishing.
  std::ofstream(audit_path(), std::ios::trunc) << original;
  start_pod();
  stop_pod();

  // Or starts a new log on purpose: recorded in the new log and on the hub.
  std::filesystem::remove(audit_path());
  reset_reason_ = "disk replaced after a failure";
  start_pod();
  reset_reason_.clear();
  for (int i = 0; i < 100; ++i) {
    auto heads = client("bob").get_audit_heads("pod-a");
    if (heads.ok() && heads->back().value("reset", false)) break;
    std::this_thread::sleep_for(100ms);
  }
  stop_pod();
  const std::string fresh = testing::read_file(audit_path());
  EXPECT_CONTAINS(fresh, "\"event\":\"audit_log_reset\"");
  EXPECT_CONTAINS(fresh, "disk replaced after a failure");
  auto after_reset = verify("after-reset");
  EXPECT_EQ(after_reset.first, 0) << after_reset.second;
  EXPECT_CONTAINS(after_reset.second, "the audit log was reset on");
  // A reset with nothing to reset is refused, not silently taken.
  reset_reason_ = "just because";
  EXPECT_CONTAINS(testing::config_error([&] { start_pod(); }), "there is nothing to reset");
  reset_reason_.clear();
  testing::record_fault("pods", "audit log cut at its end, replaced by a recomputed chain, or deleted", 3,
                        "each detected by `audit verify --pod` against the heads on the hub, and the pod refused "
                        "to start on it; an explicit reset was recorded in the new log and on the hub");
}

}  // namespace
}  // namespace fedpod
