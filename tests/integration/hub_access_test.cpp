// The hub's permission model over real HTTP on loopback: roles on pods, access
// requests for model versions, and the policy a pod fetches. A Server in a thread
// (RunningHub), spoken to with fedpod::hub::Client and raw httplib.
#include <gtest/gtest.h>
#include <httplib.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include "fedpod/common/signing.h"
#include "fedpod/common/utc.h"
#include "fedpod/worker/policy.h"
#include "fedpod/hub/client.h"
#include "fedpod/protocol/curve.h"
#include "fedpod/hub/server.h"
#include "running_hub.h"
#include "testutil.h"

namespace fedpod::hub {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using fedpod::testing::RunningHub;
using fedpod::testing::TempDir;

// A CURVE key pair per letter, made on first use: users register with theirs
// (proving the secret key), pods are registered with theirs.
const protocol::CurveKeyPair& keys_for(char c) {
  static std::map<char, protocol::CurveKeyPair> keys;
  auto it = keys.find(c);
  if (it == keys.end()) it = keys.emplace(c, protocol::generate_curve_keypair()).first;
  return it->second;
}
std::string key_for(char c) { return keys_for(c).public_key; }

std::string zip_bytes(const std::string& payload) {
  return std::string("PK\x03\x04", 4) + payload + std::string("PK\x05\x06", 4) +
         std::string(18, '\0');
}

// alice is a modeller with a private model alice/net (two versions); bob owns
// pod-a, carol owns pod-b; dave is a bystander.
class HubAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    start();
    alice_ = user("alice", 'a');
    bob_ = user("bob", 'b');
    carol_ = user("carol", 'c');
    dave_ = user("dave", 'd');
    ASSERT_TRUE(client(bob_)
                    .register_pod("pod-a", "tcp://10.0.0.1:5555", key_for('p'), json::object())
                    .ok());
    ASSERT_TRUE(client(carol_)
                    .register_pod("pod-b", "tcp://10.0.0.2:5555", key_for('q'), json::object())
                    .ok());
    std::string src = dir_.write("push/net.py", "class Net(torch.nn.Module):\n    pass\n");
    for (int i = 1; i <= 2; ++i) {
      std::string art = dir_.write("push/net.pt", zip_bytes("weights " + std::to_string(i)));
      auto v = client(alice_).push_model("alice", "net", "torchscript", "a net", "", art, {src});
      ASSERT_TRUE(v.ok()) << v.status().to_string();
      net_sha_.push_back(v->sha256);
    }
  }

  void start() {
    ServerOptions opt;
    opt.data_dir = (dir_.path() / "data").string();
    hub_ = std::make_unique<RunningHub>(opt);
  }

  Client client(const std::string& token = "") { return Client("127.0.0.1", hub_->port(), token); }
  // A pod's policy as the pod sees it: the hub's signed document, verified with the
  // hub's key, and its payload returned.
  StatusOr<json> policy_of(const std::string& token, const std::string& pod) {
    auto doc = client(token).get_pod_policy(pod);
    if (!doc.ok()) return doc.status();
    return verify_document(*doc, hub_->signing_key(), "policy of " + pod);
  }
  httplib::Client raw() { return httplib::Client("127.0.0.1", hub_->port()); }
  static httplib::Headers bearer(const std::string& token) {
    return {{"Authorization", "Bearer " + token}};
  }

  std::string user(const std::string& name, char key) {
    auto t = client().register_user(name, keys_for(key).public_key, keys_for(key).secret_key);
    EXPECT_TRUE(t.ok()) << t.status().to_string();
    return t.ok() ? *t : "";
  }

  // alice asks to run alice/net (`version`, 0 = latest) on `pod`.
  AccessRequestInfo request(const std::string& pod = "pod-a", int64_t version = 0) {
    auto r = client(alice_).request_access("alice", "net", version, pod, "fit a digits classifier");
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? *r : AccessRequestInfo{};
  }

  static json body(const httplib::Result& r) { return json::parse(r->body, nullptr, false); }
  static std::string message(const httplib::Result& r) {
    json j = body(r);
    return j.is_object() && j.contains("error") ? j["error"].value("message", "")
                                                : "<no error body: " + r->body + ">";
  }

  TempDir dir_;
  std::unique_ptr<RunningHub> hub_;
  std::string alice_, bob_, carol_, dave_;
  std::vector<std::string> net_sha_;
};

TEST_F(HubAccessTest, OwnerGrantsReplacesAndRevokesRoles) {
  auto bob = client(bob_);
  auto granted = bob.grant_role("pod-a", "alice", "general-modeller");
  ASSERT_TRUE(granted.ok()) << granted.status().to_string();
  EXPECT_EQ(granted->pod, "pod-a");
  EXPECT_EQ(granted->username, "alice");
  EXPECT_EQ(granted->role, "general-modeller");
  EXPECT_EQ(granted->granted_by, "bob");
  EXPECT_EQ(granted->granted_at.size(), 20u);
  ASSERT_TRUE(bob.grant_role("pod-a", "dave", "super-modeller").ok());

  auto roles = bob.list_roles("pod-a");
  ASSERT_TRUE(roles.ok()) << roles.status().to_string();
  ASSERT_EQ(roles->size(), 2u);
  EXPECT_EQ((*roles)[0].username, "alice");
  EXPECT_EQ((*roles)[1].username, "dave");
  EXPECT_EQ((*roles)[1].role, "super-modeller");

  // Re-granting replaces the role.
  ASSERT_TRUE(bob.grant_role("pod-a", "alice", "super-modeller").ok());
  roles = bob.list_roles("pod-a");
  ASSERT_EQ(roles->size(), 2u);
  EXPECT_EQ((*roles)[0].role, "super-modeller");

  // The raw reply shapes.
  auto r = raw().Put("/api/v1/pods/pod-a/roles/carol", bearer(bob_),
                     json{{"role", "general-modeller"}}.dump(), "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body(r)["pod"], "pod-a");
  EXPECT_EQ(body(r)["granted_by"], "bob");
  r = raw().Delete("/api/v1/pods/pod-a/roles/carol", bearer(bob_));
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body(r), (json{{"pod", "pod-a"}, {"username", "carol"}, {"role", nullptr}}));

  ASSERT_TRUE(bob.revoke_role("pod-a", "alice").ok());
  roles = bob.list_roles("pod-a");
  ASSERT_EQ(roles->size(), 1u);
  EXPECT_EQ((*roles)[0].username, "dave");
  auto again = bob.revoke_role("pod-a", "alice");
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(again.message(), "user 'alice' has no role on pod 'pod-a'");

  // Roles are per pod: pod-b has none.
  EXPECT_EQ(client(carol_).list_roles("pod-b")->size(), 0u);

  // Roles survive a restart (they are in the database).
  hub_.reset();
  start();
  roles = client(bob_).list_roles("pod-a");
  ASSERT_TRUE(roles.ok()) << roles.status().to_string();
  ASSERT_EQ(roles->size(), 1u);
  EXPECT_EQ((*roles)[0].role, "super-modeller");
}

TEST_F(HubAccessTest, OnlyThePodOwnerManagesRoles) {
  for (const std::string& token : {carol_, alice_, dave_}) {
    auto c = client(token);
    auto s = c.grant_role("pod-a", "alice", "super-modeller");
    EXPECT_EQ(s.status().code(), StatusCode::kPermissionDenied);
    EXPECT_CONTAINS(s.status().message(),
                    "only the owner of pod 'pod-a' (bob) may grant roles on it");
    EXPECT_EQ(c.revoke_role("pod-a", "alice").code(), StatusCode::kPermissionDenied);
    auto l = c.list_roles("pod-a");
    EXPECT_EQ(l.status().code(), StatusCode::kPermissionDenied);
    EXPECT_CONTAINS(l.status().message(), "may list roles on it");
  }
  EXPECT_EQ(client(bob_).list_roles("pod-a")->size(), 0u);

  // Unauthenticated.
  auto r = raw().Put("/api/v1/pods/pod-a/roles/alice", json{{"role", "general-modeller"}}.dump(),
                     "application/json");
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(raw().Get("/api/v1/pods/pod-a/roles")->status, 401);
  EXPECT_EQ(raw().Delete("/api/v1/pods/pod-a/roles/alice")->status, 401);

  // Unknown pod, unknown user, bad role.
  auto bob = client(bob_);
  auto s = bob.grant_role("pod-z", "alice", "general-modeller");
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(s.status().message(), "no pod 'pod-z'");
  s = bob.grant_role("pod-a", "zed", "general-modeller");
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(s.status().message(), "no user 'zed'");
  s = bob.grant_role("pod-a", "alice", "admin");
  EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(s.status().message(),
                  "\"general-modeller\" or \"super-modeller\", got \"admin\"");
  EXPECT_EQ(bob.revoke_role("pod-a", "zed").code(), StatusCode::kNotFound);
  EXPECT_EQ(bob.list_roles("pod-a")->size(), 0u);
}

TEST_F(HubAccessTest, RequestApproveWithExpiryAppearsInPolicy) {
  AccessRequestInfo req = request();
  EXPECT_GT(req.id, 0);
  EXPECT_EQ(req.status, "pending");
  EXPECT_EQ(req.pod, "pod-a");
  EXPECT_EQ(req.pod_owner, "bob");
  EXPECT_EQ(req.requester, "alice");
  EXPECT_EQ(req.model, "alice/net");
  EXPECT_EQ(req.version, 2);  // "latest" resolved to a number
  EXPECT_EQ(req.sha256, net_sha_[1]);
  EXPECT_EQ(req.format, "torchscript");
  EXPECT_EQ(req.purpose, "fit a digits classifier");
  EXPECT_FALSE(req.expires_at);
  EXPECT_FALSE(req.decided_at);
  EXPECT_FALSE(req.decided_by);

  // Pending requests are not grants.
  auto policy = policy_of(bob_, "pod-a");
  ASSERT_TRUE(policy.ok()) << policy.status().to_string();
  EXPECT_EQ((*policy)["grants"].size(), 0u);

  auto approved = client(bob_).approve_access_request(req.id, "looks fine", "2099-01-01");
  ASSERT_TRUE(approved.ok()) << approved.status().to_string();
  EXPECT_EQ(approved->status, "approved");
  EXPECT_EQ(approved->reason, "looks fine");
  EXPECT_EQ(approved->expires_at, std::optional<std::string>("2099-01-01T00:00:00Z"));
  EXPECT_EQ(approved->decided_by, std::optional<std::string>("bob"));
  ASSERT_TRUE(approved->decided_at);
  EXPECT_EQ(approved->decided_at->size(), 20u);

  // A second request, for version 1, approved without expiry.
  AccessRequestInfo v1 = request("pod-a", 1);
  EXPECT_EQ(v1.version, 1);
  EXPECT_EQ(v1.sha256, net_sha_[0]);
  ASSERT_TRUE(client(bob_).approve_access_request(v1.id, "").ok());

  policy = policy_of(bob_, "pod-a");
  ASSERT_TRUE(policy.ok());
  const json& p = *policy;
  EXPECT_EQ(p["pod"], "pod-a");
  EXPECT_EQ(p["owner"], "bob");
  EXPECT_EQ(p["generated_at"].get<std::string>().size(), 20u);
  ASSERT_EQ(p["grants"].size(), 2u);
  EXPECT_EQ(p["grants"][0], (json{{"id", req.id},
                                  {"username", "alice"},
                                  {"model", "alice/net"},
                                  {"version", 2},
                                  {"sha256", net_sha_[1]},
                                  {"format", "torchscript"},
                                  {"expires_at", "2099-01-01T00:00:00Z"}}));
  EXPECT_EQ(p["grants"][1]["version"], 1);
  EXPECT_EQ(p["grants"][1]["sha256"], net_sha_[0]);
  EXPECT_TRUE(p["grants"][1]["expires_at"].is_null());
  // pod-b's policy has none of pod-a's grants.
  EXPECT_EQ((*policy_of(carol_, "pod-b"))["grants"].size(), 0u);

  // The datetime form is accepted and normalized as is.
  AccessRequestInfo third = request("pod-b");
  auto b = client(carol_).approve_access_request(third.id, "", "2098-06-30T12:34:56Z");
  ASSERT_TRUE(b.ok()) << b.status().to_string();
  EXPECT_EQ(b->expires_at, std::optional<std::string>("2098-06-30T12:34:56Z"));
}

TEST_F(HubAccessTest, OnlyThePodOwnerDecides) {
  AccessRequestInfo req = request();
  for (const std::string& token : {alice_, carol_, dave_}) {
    auto c = client(token);
    auto a = c.approve_access_request(req.id, "");
    EXPECT_EQ(a.status().code(), StatusCode::kPermissionDenied);
    EXPECT_CONTAINS(a.status().message(),
                    "only the owner of pod 'pod-a' (bob) may approve access requests for it");
    auto r = c.reject_access_request(req.id, "");
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied);
    EXPECT_CONTAINS(r.status().message(), "may reject access requests");
    EXPECT_EQ(c.revoke_access_request(req.id, "").status().code(), StatusCode::kPermissionDenied);
  }
  // Unauthenticated.
  auto r = raw().Post(("/api/v1/access-requests/" + std::to_string(req.id) + "/approve").c_str(),
                      "{}", "application/json");
  EXPECT_EQ(r->status, 401);
  // Nothing changed.
  auto now = client(alice_).get_access_request(req.id);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->status, "pending");
  EXPECT_FALSE(now->decided_by);

  // Approving once bob holds it works, and the owner of another pod still cannot revoke.
  ASSERT_TRUE(client(bob_).approve_access_request(req.id, "").ok());
  auto revoke = client(carol_).revoke_access_request(req.id, "");
  EXPECT_EQ(revoke.status().code(), StatusCode::kPermissionDenied);
  EXPECT_CONTAINS(revoke.status().message(), "may revoke access requests");
  EXPECT_EQ(client(bob_).get_access_request(req.id)->status, "approved");
}

TEST_F(HubAccessTest, RejectionReasonReachesTheRequester) {
  AccessRequestInfo req = request();
  auto rejected = client(bob_).reject_access_request(req.id, "this pod holds no labels for digits");
  ASSERT_TRUE(rejected.ok()) << rejected.status().to_string();
  EXPECT_EQ(rejected->status, "rejected");

  auto seen = client(alice_).get_access_request(req.id);
  ASSERT_TRUE(seen.ok()) << seen.status().to_string();
  EXPECT_EQ(seen->status, "rejected");
  EXPECT_EQ(seen->reason, "this pod holds no labels for digits");
  EXPECT_EQ(seen->decided_by, std::optional<std::string>("bob"));
  EXPECT_FALSE(seen->expires_at);

  // Decided is decided.
  auto a = client(bob_).approve_access_request(req.id, "");
  EXPECT_EQ(a.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(a.status().message(),
                  "request " + std::to_string(req.id) + " is rejected, not pending");
  auto v = client(bob_).revoke_access_request(req.id, "");
  EXPECT_EQ(v.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(v.status().message(), "is rejected, not approved");
  EXPECT_EQ((*policy_of(bob_, "pod-a"))["grants"].size(), 0u);

  // The requester may ask again once the first is no longer pending.
  AccessRequestInfo again = request();
  EXPECT_NE(again.id, req.id);
  EXPECT_EQ(again.status, "pending");
}

TEST_F(HubAccessTest, RevokeRemovesTheGrantFromThePolicy) {
  AccessRequestInfo keep = request("pod-a", 1);
  AccessRequestInfo drop = request("pod-a", 2);
  ASSERT_TRUE(client(bob_).approve_access_request(keep.id, "").ok());
  ASSERT_TRUE(client(bob_).approve_access_request(drop.id, "").ok());
  EXPECT_EQ((*policy_of(bob_, "pod-a"))["grants"].size(), 2u);

  auto revoked = client(bob_).revoke_access_request(drop.id, "found a leak in net.py");
  ASSERT_TRUE(revoked.ok()) << revoked.status().to_string();
  EXPECT_EQ(revoked->status, "revoked");
  EXPECT_EQ(revoked->reason, "found a leak in net.py");
  auto grants = (*policy_of(bob_, "pod-a"))["grants"];
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_EQ(grants[0]["id"], keep.id);
  EXPECT_EQ(client(alice_).get_access_request(drop.id)->status, "revoked");

  auto twice = client(bob_).revoke_access_request(drop.id, "");
  EXPECT_EQ(twice.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(twice.status().message(), "is revoked, not approved");
  // A pending request cannot be revoked either: it is rejected.
  AccessRequestInfo pending = request("pod-b");
  auto p = client(carol_).revoke_access_request(pending.id, "");
  EXPECT_EQ(p.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(p.status().message(), "is pending, not approved");
}

TEST_F(HubAccessTest, ApprovingTwiceAndDuplicateRequestsConflict) {
  AccessRequestInfo req = request();
  auto dup = client(alice_).request_access("alice", "net", 2, "pod-a", "again");
  EXPECT_EQ(dup.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(dup.status().message(),
                  "already has a pending request for alice/net:2 on pod 'pod-a'");
  // Other versions and other pods are other requests.
  EXPECT_TRUE(client(alice_).request_access("alice", "net", 1, "pod-a", "v1").ok());
  EXPECT_TRUE(client(alice_).request_access("alice", "net", 2, "pod-b", "pod b").ok());

  ASSERT_TRUE(client(bob_).approve_access_request(req.id, "").ok());
  auto twice = client(bob_).approve_access_request(req.id, "");
  EXPECT_EQ(twice.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(twice.status().message(),
                  "request " + std::to_string(req.id) + " is approved, not pending");
  auto reject = client(bob_).reject_access_request(req.id, "");
  EXPECT_EQ(reject.status().code(), StatusCode::kFailedPrecondition);
  // Once approved, a new pending request for the same version is allowed.
  EXPECT_TRUE(client(alice_).request_access("alice", "net", 2, "pod-a", "renewal").ok());
}

TEST_F(HubAccessTest, BadExpiryIsRefusedAndChangesNothing) {
  AccessRequestInfo req = request();
  const std::string path = "/api/v1/access-requests/" + std::to_string(req.id) + "/approve";
  auto approve = [&](const json& expires) {
    return raw().Post(path.c_str(), bearer(bob_),
                      json{{"reason", ""}, {"expires_at", expires}}.dump(), "application/json");
  };
  for (const char* bad : {"tomorrow", "2027-1-1", "2027-01-01 12:00:00", "2027-01-01T12:00:00",
                          "2027-02-30", "2027-13-01", "2027-01-01T24:00:00Z", ""}) {
    auto r = approve(bad);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << bad << ": " << r->body;
    EXPECT_CONTAINS(message(r), "expires_at");
    EXPECT_CONTAINS(message(r), "YYYY-MM-DD");
  }
  auto r = approve(20270101);
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "field 'expires_at' must be a string");

  auto past = client(bob_).approve_access_request(req.id, "", "2020-01-01");
  EXPECT_EQ(past.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(past.status().message(), "expires_at 2020-01-01T00:00:00Z is not in the future");
  past = client(bob_).approve_access_request(req.id, "", format_utc(std::time(nullptr) - 5));
  EXPECT_EQ(past.status().code(), StatusCode::kInvalidArgument);

  auto still = client(bob_).get_access_request(req.id);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->status, "pending");
  EXPECT_FALSE(still->expires_at);
  // Leap day: valid in 2096.
  EXPECT_TRUE(client(bob_).approve_access_request(req.id, "", "2096-02-29").ok());
}

TEST_F(HubAccessTest, PrivateModelIsVisibleToTheOwnerOfARequestedPod) {
  // Before any request: bob, carol and anonymous see nothing.
  for (const std::string& token : {std::string(), bob_, carol_}) {
    auto c = client(token);
    EXPECT_EQ(c.get_model("alice", "net").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(c.get_source("alice", "net", 2).status().code(), StatusCode::kNotFound);
  }
  // A stranger cannot even ask for it: it is reported like a missing model.
  auto ask = client(carol_).request_access("alice", "net", 0, "pod-b", "curious");
  EXPECT_EQ(ask.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(ask.status().message(), "no model alice/net");

  request("pod-a", 1);
  // bob, the owner of pod-a, reviews it: the model, every version, sources, artifact.
  auto bob = client(bob_);
  auto m = bob.get_model("alice", "net");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->versions.size(), 2u);
  auto src = bob.get_source("alice", "net", 1);
  ASSERT_TRUE(src.ok()) << src.status().to_string();
  ASSERT_EQ(src->size(), 1u);
  EXPECT_EQ((*src)[0].name, "net.py");
  EXPECT_CONTAINS((*src)[0].content, "class Net");
  EXPECT_TRUE(bob.resolve("alice", "net", 0).ok());
  auto sha =
      bob.download_artifact("alice", "net", 1, (dir_.path() / "net.pt").string(), net_sha_[0]);
  ASSERT_TRUE(sha.ok()) << sha.status().to_string();
  // It is still not listed for bob (only direct reads), and carol still sees nothing.
  EXPECT_EQ(bob.list_models()->size(), 0u);
  EXPECT_EQ(client(carol_).get_model("alice", "net").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client(carol_).get_source("alice", "net", 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client().get_model("alice", "net").status().code(), StatusCode::kNotFound);

  // Reading is not passing on: bob cannot ask for alice's model on carol's pod, which
  // would show it to carol (regression: request creation used the reviewer's view).
  auto relay = client(bob_).request_access("alice", "net", 1, "pod-b", "relay");
  EXPECT_EQ(relay.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(relay.status().message(), "no model alice/net");
  EXPECT_EQ(client(carol_).get_model("alice", "net").status().code(), StatusCode::kNotFound);

  // A rejected request still lets the owner read what was asked of them.
  auto reqs = client(bob_).list_access_requests("pod-a");
  ASSERT_EQ(reqs->size(), 1u);
  ASSERT_TRUE(client(bob_).reject_access_request((*reqs)[0].id, "no").ok());
  EXPECT_TRUE(bob.get_model("alice", "net").ok());
}

TEST_F(HubAccessTest, PolicyIsTheOwnersAndListsEveryUsersKey) {
  ASSERT_TRUE(client(bob_).grant_role("pod-a", "alice", "general-modeller").ok());
  ASSERT_TRUE(client(bob_).grant_role("pod-a", "dave", "super-modeller").ok());
  for (const std::string& token : {alice_, carol_, dave_}) {
    auto p = policy_of(token, "pod-a");
    EXPECT_EQ(p.status().code(), StatusCode::kPermissionDenied);
    EXPECT_CONTAINS(p.status().message(),
                    "only the owner of pod 'pod-a' (bob) may read its policy");
  }
  EXPECT_EQ(raw().Get("/api/v1/pods/pod-a/policy")->status, 401);
  auto missing = policy_of(bob_, "pod-z");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  auto doc = client(bob_).get_pod_policy("pod-a");
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  // Signed by the hub's key, which the hub publishes.
  auto key = client(bob_).get_signing_key();
  ASSERT_TRUE(key.ok()) << key.status().to_string();
  EXPECT_EQ(*key, hub_->signing_key());
  auto p = verify_document(*doc, *key, "policy");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_FALSE(verify_document(*doc, generate_signing_keypair().public_key, "policy").ok());
  // Exactly the documented keys.
  std::vector<std::string> keys;
  for (auto it = p->begin(); it != p->end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"expires_at", "generated_at", "grants", "issued_at", "owner", "pod",
                                            "roles", "users", "version"}));
  auto parsed = worker::verify_signed_policy(*doc, *key, "pod-a", "policy");
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  EXPECT_GT(*parsed->expires_at, std::chrono::system_clock::now() + std::chrono::hours(23));
  // A later policy has a higher version.
  auto doc2 = client(bob_).get_pod_policy("pod-a");
  ASSERT_TRUE(doc2.ok());
  EXPECT_GT(worker::verify_signed_policy(*doc2, *key, "pod-a", "policy")->version, parsed->version);
  // The owner and the role holders only: carol, a hub user without a role here, is
  // unknown to the pod and cannot complete its CURVE handshake.
  EXPECT_EQ((*p)["users"], (json::array({{{"username", "alice"}, {"public_key", key_for('a')}},
                                         {{"username", "bob"}, {"public_key", key_for('b')}},
                                         {{"username", "dave"}, {"public_key", key_for('d')}}})));
  EXPECT_EQ((*p)["roles"], (json::array({{{"username", "alice"}, {"role", "general-modeller"}},
                                         {{"username", "dave"}, {"role", "super-modeller"}}})));
  EXPECT_EQ((*p)["grants"], json::array());
}

// A pod holds a token that reads its own policy and does nothing else: whoever steals
// it from the pod's disk cannot grant roles, approve requests, push models, read
// another pod's policy or mint tokens; rotating it cuts the stolen copy off.
TEST_F(HubAccessTest, PodTokenReadsOnlyItsOwnPolicy) {
  // Only the owner makes one.
  for (const std::string& token : {alice_, carol_}) {
    auto t = client(token).create_pod_token("pod-a");
    EXPECT_EQ(t.status().code(), StatusCode::kPermissionDenied);
    EXPECT_CONTAINS(t.status().message(), "only the owner of pod 'pod-a' (bob) may create its token");
  }
  auto made = client(bob_).create_pod_token("pod-a");
  ASSERT_TRUE(made.ok()) << made.status().to_string();
  const std::string pod_token = *made;
  EXPECT_EQ(pod_token.rfind("pod_", 0), 0u);
  EXPECT_NE(pod_token, bob_);

  auto doc = client(pod_token).get_pod_policy("pod-a");
  ASSERT_TRUE(doc.ok()) << doc.status().to_string();
  EXPECT_TRUE(worker::verify_signed_policy(*doc, hub_->signing_key(), "pod-a", "policy").ok());

  // Everything else is refused.
  auto other = client(pod_token).get_pod_policy("pod-b");
  EXPECT_EQ(other.status().code(), StatusCode::kPermissionDenied);
  EXPECT_CONTAINS(other.status().message(), "this token belongs to pod 'pod-a'");
  auto role = client(pod_token).grant_role("pod-a", "dave", "super-modeller");
  EXPECT_EQ(role.status().code(), StatusCode::kPermissionDenied);
  EXPECT_CONTAINS(role.status().message(), "a pod token may only read its own pod's policy");
  EXPECT_EQ(client(pod_token).create_pod_token("pod-a").status().code(), StatusCode::kPermissionDenied);
  EXPECT_EQ(client(pod_token).list_access_requests("", "").status().code(), StatusCode::kPermissionDenied);
  std::string art = dir_.write("push/evil.pt", zip_bytes("evil"));
  EXPECT_EQ(client(pod_token).push_model("bob", "evil", "torchscript", "", "", art, {}).status().code(),
            StatusCode::kPermissionDenied);  // 401 before the body is read: not a user's token
  EXPECT_TRUE(client(bob_).list_roles("pod-a")->empty());

  // Rotation: the old token stops at once, the new one works.
  auto rotated = client(bob_).create_pod_token("pod-a");
  ASSERT_TRUE(rotated.ok());
  EXPECT_NE(*rotated, pod_token);
  auto stale = client(pod_token).get_pod_policy("pod-a");
  EXPECT_EQ(stale.status().code(), StatusCode::kPermissionDenied);
  EXPECT_CONTAINS(stale.status().message(), "invalid token");
  EXPECT_TRUE(client(*rotated).get_pod_policy("pod-a").ok());
  // Nor does a forged one in the pod-token shape.
  EXPECT_CONTAINS(client("pod_" + std::string(64, 'a')).get_pod_policy("pod-a").status().message(), "invalid token");
}

// The hub keeps every audit head a pod publishes and refuses one that contradicts the
// last: fewer entries (a log cut), another hash at the same entry (a log replaced),
// another key (a forger with a key of their own); only a reset starts anew.
TEST_F(HubAccessTest, AuditHeadsOnlyGrowExceptThroughAReset) {
  const std::string pod_token = *client(bob_).create_pod_token("pod-a");
  const SigningKeyPair key = generate_signing_keypair();
  auto head = [&](int64_t entries, char h, bool reset = false, const SigningKeyPair* k = nullptr,
                  const std::string& pod = "pod-a") {
    return json::parse(sign_document(
        {{"pod", pod}, {"entries", entries}, {"head", std::string(64, h)}, {"reset", reset}, {"time", "t"}},
        k ? *k : key));
  };
  auto publish = [&](const json& doc, const std::string& token) { return client(token).publish_audit_head("pod-a", doc); };
  EXPECT_TRUE(*publish(head(3, 'a'), pod_token));
  EXPECT_FALSE(*publish(head(3, 'a'), pod_token));  // the same head again: nothing new
  EXPECT_TRUE(*publish(head(5, 'b'), pod_token));
  auto cut = publish(head(4, 'c'), pod_token);
  EXPECT_EQ(cut.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(cut.status().message(), "its audit log shrank");
  auto replaced = publish(head(5, 'd'), pod_token);
  EXPECT_CONTAINS(replaced.status().message(), "its audit log was replaced");
  const SigningKeyPair other = generate_signing_keypair();
  EXPECT_CONTAINS(publish(head(9, 'e', false, &other), pod_token).status().message(), "signed with another key");
  // Forged or misdirected documents.
  json altered = head(6, 'f');
  altered["payload"] = head(60, 'f')["payload"];
  EXPECT_EQ(publish(altered, pod_token).status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(publish(head(7, 'a', false, nullptr, "pod-b"), pod_token).status().message(), "another pod");
  EXPECT_EQ(publish(json{{"entries", 7}}, pod_token).status().code(), StatusCode::kInvalidArgument);
  // Who may publish: the pod (its token) or its owner; nobody else.
  EXPECT_EQ(publish(head(8, 'a'), carol_).status().code(), StatusCode::kPermissionDenied);
  const std::string other_pod = *client(carol_).create_pod_token("pod-b");
  EXPECT_CONTAINS(publish(head(8, 'a'), other_pod).status().message(), "belongs to pod 'pod-b'");
  // A reset is recorded as one, with any key, and the heads after it are checked anew.
  EXPECT_TRUE(*publish(head(1, '0', true, &other), pod_token));
  EXPECT_TRUE(*publish(head(2, '1', false, &other), pod_token));
  auto heads = client(bob_).get_audit_heads("pod-a");
  ASSERT_TRUE(heads.ok()) << heads.status().to_string();
  ASSERT_EQ(heads->size(), 4u);
  EXPECT_EQ((*heads)[1]["entries"], 5);
  EXPECT_EQ((*heads)[2]["reset"], true);
  EXPECT_EQ((*heads)[3]["signing_key"], other.public_key);
  EXPECT_TRUE(verify_document((*heads)[3]["document"], other.public_key, "head").ok());
  EXPECT_EQ(client(alice_).get_audit_heads("pod-a").status().code(), StatusCode::kPermissionDenied);
}

TEST_F(HubAccessTest, ListsFilterByPodAndStatusAndHideOthersRequests) {
  AccessRequestInfo a1 = request("pod-a", 1);
  AccessRequestInfo a2 = request("pod-a", 2);
  AccessRequestInfo b1 = request("pod-b", 1);
  ASSERT_TRUE(client(bob_).approve_access_request(a1.id, "").ok());
  ASSERT_TRUE(client(carol_).reject_access_request(b1.id, "").ok());

  auto ids = [](const StatusOr<std::vector<AccessRequestInfo>>& list) {
    EXPECT_TRUE(list.ok()) << list.status().to_string();
    std::vector<int64_t> out;
    if (list.ok())
      for (const auto& r : list.value()) out.push_back(r.id);
    return out;
  };
  using Ids = std::vector<int64_t>;
  // The requester sees all three, newest first.
  EXPECT_EQ(ids(client(alice_).list_access_requests()), (Ids{b1.id, a2.id, a1.id}));
  EXPECT_EQ(ids(client(alice_).list_access_requests("pod-a")), (Ids{a2.id, a1.id}));
  EXPECT_EQ(ids(client(alice_).list_access_requests("", "approved")), (Ids{a1.id}));
  EXPECT_EQ(ids(client(alice_).list_access_requests("", "pending")), (Ids{a2.id}));
  EXPECT_EQ(ids(client(alice_).list_access_requests("", "rejected")), (Ids{b1.id}));
  EXPECT_EQ(ids(client(alice_).list_access_requests("pod-b", "pending")), Ids{});
  EXPECT_EQ(ids(client(alice_).list_access_requests("", "revoked")), Ids{});
  // Each pod owner sees their pod's only.
  EXPECT_EQ(ids(client(bob_).list_access_requests()), (Ids{a2.id, a1.id}));
  EXPECT_EQ(ids(client(bob_).list_access_requests("pod-b")), Ids{});
  EXPECT_EQ(ids(client(carol_).list_access_requests()), (Ids{b1.id}));
  // A bystander sees none, and cannot read one by id (404, like a missing one).
  EXPECT_EQ(ids(client(dave_).list_access_requests()), Ids{});
  EXPECT_EQ(ids(client(dave_).list_access_requests("pod-a")), Ids{});
  auto one = client(dave_).get_access_request(a1.id);
  EXPECT_EQ(one.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(one.status().message(), "no access request " + std::to_string(a1.id));
  EXPECT_EQ(client(carol_).get_access_request(a1.id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(client(bob_).get_access_request(a1.id).ok());

  auto bad = client(alice_).list_access_requests("", "done");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(bad.status().message(), "status must be one of");
  EXPECT_CONTAINS(bad.status().message(), "got \"done\"");
  auto nopod = client(alice_).list_access_requests("pod-z");
  EXPECT_EQ(nopod.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(nopod.status().message(), "no pod 'pod-z'");
  EXPECT_EQ(raw().Get("/api/v1/access-requests")->status, 401);
}

TEST_F(HubAccessTest, ApprovalExpiresAndIsReportedAsExpired) {
  AccessRequestInfo req = request();
  const std::string expires = format_utc(std::time(nullptr) + 3);
  auto a = client(bob_).approve_access_request(req.id, "short trial", expires);
  ASSERT_TRUE(a.ok()) << a.status().to_string();
  EXPECT_EQ(a->status, "approved");
  EXPECT_EQ(a->expires_at, std::optional<std::string>(expires));

  std::this_thread::sleep_for(4500ms);
  auto r = client(alice_).get_access_request(req.id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, "expired");
  auto expired = client(bob_).list_access_requests("pod-a", "expired");
  ASSERT_TRUE(expired.ok());
  ASSERT_EQ(expired->size(), 1u);
  EXPECT_EQ((*expired)[0].status, "expired");
  EXPECT_EQ(client(bob_).list_access_requests("pod-a", "approved")->size(), 0u);
  // Still a grant in the policy: the pod checks expiry itself.
  auto grants = (*policy_of(bob_, "pod-a"))["grants"];
  ASSERT_EQ(grants.size(), 1u);
  EXPECT_EQ(grants[0]["expires_at"], expires);
  // It cannot be approved again, but it can be revoked.
  auto again = client(bob_).approve_access_request(req.id, "");
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_CONTAINS(again.status().message(), "is expired, not pending");
  ASSERT_TRUE(client(bob_).revoke_access_request(req.id, "").ok());
  EXPECT_EQ((*policy_of(bob_, "pod-a"))["grants"].size(), 0u);
}

TEST_F(HubAccessTest, RequestValidation) {
  auto post = [&](const std::string& b, const std::string& token) {
    return raw().Post("/api/v1/access-requests", bearer(token), b, "application/json");
  };
  auto expect = [&](const json& b, int status, const std::string& part) {
    auto r = post(b.dump(), alice_);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, status) << b.dump() << ": " << r->body;
    EXPECT_CONTAINS(message(r), part);
  };
  const json ok = {{"model", "alice/net"}, {"version", 1}, {"pod", "pod-a"}, {"purpose", "p"}};
  auto without = [&](const char* key) {
    json j = ok;
    j.erase(key);
    return j;
  };
  auto with = [&](const char* key, const json& v) {
    json j = ok;
    j[key] = v;
    return j;
  };
  expect(without("purpose"), 400, "missing field 'purpose'");
  expect(without("model"), 400, "missing field 'model'");
  expect(without("pod"), 400, "missing field 'pod'");
  expect(with("purpose", ""), 400, "purpose must not be empty");
  expect(with("purpose", "  \n"), 400, "purpose must not be empty");
  expect(with("purpose", std::string(2001, 'x')), 400, "2001 characters, over the limit of 2000");
  expect(with("version", -1), 400, "field 'version' must be a non-negative integer");
  expect(with("version", "2"), 400, "field 'version'");
  expect(with("version", 1.5), 400, "field 'version'");
  expect(with("model", "net"), 400, "model must be \"user/ref\", got \"net\"");
  expect(with("model", "alice/net/x"), 400, "model must be");
  expect(with("model", "alice/nothing"), 404, "no model alice/nothing");
  expect(with("pod", "pod-z"), 404, "no pod 'pod-z'");
  expect(with("version", 9), 404, "model alice/net has no version 9");
  // 2000 characters is fine, counted as characters (é is two bytes).
  std::string accents;
  for (int i = 0; i < 2000; ++i) accents += "\xc3\xa9";
  auto r = post(with("purpose", accents).dump(), alice_);
  EXPECT_EQ(r->status, 201) << r->body;
  // Absent or 0: the latest version.
  r = post(without("version").dump(), alice_);
  EXPECT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(body(r)["version"], 2);
  EXPECT_EQ(body(r)["expires_at"], nullptr);
  EXPECT_EQ(body(r)["decided_by"], nullptr);
  // No token.
  r = raw().Post("/api/v1/access-requests", ok.dump(), "application/json");
  EXPECT_EQ(r->status, 401);
  // A public model can be requested by anyone.
  std::string art = dir_.write("pub.pt", zip_bytes("public"));
  ASSERT_TRUE(
      client(carol_).push_model("carol", "open", "torchscript", "", "public", art, {}).ok());
  auto pub = client(dave_).request_access("carol", "open", 0, "pod-a", "try it");
  ASSERT_TRUE(pub.ok()) << pub.status().to_string();
  EXPECT_EQ(pub->requester, "dave");
  EXPECT_EQ(pub->model, "carol/open");
}

TEST_F(HubAccessTest, KeepsServingAfterBadInput) {
  AccessRequestInfo req = request();
  const std::string base = "/api/v1/access-requests/" + std::to_string(req.id);
  auto r = raw().Post("/api/v1/access-requests", bearer(alice_), "{not json", "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "not valid JSON");
  r = raw().Post("/api/v1/access-requests", bearer(alice_), "[1]", "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "must be a JSON object");
  r = raw().Post((base + "/approve").c_str(), bearer(bob_), "{\"reason\":", "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "not valid JSON");
  r = raw().Post((base + "/reject").c_str(), bearer(bob_), json{{"reason", 7}}.dump(),
                 "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "field 'reason' must be a string");
  r = raw().Post((base + "/reject").c_str(), bearer(bob_),
                 json{{"reason", std::string(2001, 'r')}}.dump(), "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "reason is 2001 characters");
  r = raw().Put("/api/v1/pods/pod-a/roles/alice", bearer(bob_), "role=admin", "text/plain");
  EXPECT_EQ(r->status, 400);
  r = raw().Put("/api/v1/pods/pod-a/roles/alice", bearer(bob_), json{{"role", 1}}.dump(),
                "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "field 'role' must be a string");
  r = raw().Put("/api/v1/pods/pod-a/roles/alice", bearer(bob_), json{{"role", "root"}}.dump(),
                "application/json");
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "role must be");

  // Unknown and malformed ids.
  r = raw().Get("/api/v1/access-requests/999", bearer(bob_));
  EXPECT_EQ(r->status, 404);
  EXPECT_CONTAINS(message(r), "no access request 999");
  r = raw().Post("/api/v1/access-requests/999/approve", bearer(bob_), "{}", "application/json");
  EXPECT_EQ(r->status, 404);
  EXPECT_CONTAINS(message(r), "no access request 999");
  r = raw().Get("/api/v1/access-requests/abc", bearer(bob_));
  EXPECT_EQ(r->status, 400);
  EXPECT_CONTAINS(message(r), "request id must be a positive integer, got 'abc'");
  r = raw().Post("/api/v1/access-requests/-3/revoke", bearer(bob_), "{}", "application/json");
  EXPECT_EQ(r->status, 400);
  r = raw().Post((base + "/explode").c_str(), bearer(bob_), "{}", "application/json");
  EXPECT_EQ(r->status, 404);
  EXPECT_CONTAINS(message(r), "no such endpoint");
  r = raw().Get("/api/v1/access-requests?status=whatever", bearer(bob_));
  EXPECT_EQ(r->status, 400);

  // An empty body is an approval without reason or expiry.
  r = raw().Post((base + "/approve").c_str(), bearer(bob_), "", "application/json");
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(body(r)["status"], "approved");
  EXPECT_EQ(body(r)["expires_at"], nullptr);

  EXPECT_EQ(raw().Get("/healthz")->status, 200);
  EXPECT_TRUE(client(bob_).grant_role("pod-a", "alice", "general-modeller").ok());
  EXPECT_EQ((*policy_of(bob_, "pod-a"))["grants"].size(), 1u);
}

}  // namespace
}  // namespace fedpod::hub
