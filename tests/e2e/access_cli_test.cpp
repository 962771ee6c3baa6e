// `fedpod access` as a modeller and a pod owner run it, against a real `fedpod hub serve`:
// request -> show (with source) -> approve --expires 30d -> list -> policy -o FILE,
// and roles. stdout and stderr are kept apart, so --json and policy output are checked
// as pure JSON and refusals by the hub's message on stderr.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdlib>
#include <ctime>
#include <nlohmann/json.hpp>

#include "fedpod/protocol/curve.h"
#include "testutil.h"

namespace fedpod {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kPodKey = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hIF";

struct CliRun {
  int code;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Seconds since the epoch of "YYYY-MM-DDTHH:MM:SSZ"; -1 when it is not that.
int64_t parse_utc(const std::string& s) {
  std::tm tm{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (end == nullptr || *end != '\0') return -1;
  return static_cast<int64_t>(timegm(&tm));
}

class AccessCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string port_file = (dir_.path() / "port").string();
    tls_ = testing::make_hub_tls((dir_.path() / "tls").string());
    hub_ = std::make_unique<testing::Process>(
        std::vector<std::string>{testing::fedpod_bin(), "hub", "serve", "--data-dir",
                                 (dir_.path() / "hub").string(), "--listen", "127.0.0.1:0",
                                 "--port-file", port_file, "--tls-cert", tls_.cert, "--tls-key", tls_.key},
        (dir_.path() / "hub.log").string());
    const std::string port = testing::wait_for_word(port_file, 60s);
    ASSERT_FALSE(port.empty()) << testing::read_file((dir_.path() / "hub.log").string());
    url_ = "https://127.0.0.1:" + port;
    setenv("FEDPOD_HUB_CA", tls_.ca.c_str(), 1);  // every CLI call verifies the hub's certificate
    setenv("HOME", dir_.path().c_str(), 1);  // no config file from the machine running the test
    unsetenv("XDG_CONFIG_HOME");
    unsetenv("FEDPOD_HUB");
    unsetenv("FEDPOD_TOKEN");

    alice_ = register_user("alice");
    bob_ = register_user("bob");
    const std::string artifact =
        dir_.write("net.pt", std::string("PK\x03\x04", 4) + std::string(64, 'x') +
                                 std::string("PK\x05\x06", 4) + std::string(18, '\0'));
    const std::string source =
        dir_.write("net.py", "class Net(torch.nn.Module):\n    # reviewed line\n    pass\n");
    auto push = as(alice_, {"model", "push", "alice/net", "--format", "torchscript", "--artifact",
                            artifact, "--source", source, "--json"});
    ASSERT_EQ(push.code, 0) << push.err;
    sha256_ = json::parse(push.out)["sha256"];
    auto pod = as(bob_, {"pod", "register", "pod-a", "--address", "tcp://10.0.0.5:5555",
                         "--public-key", kPodKey});
    ASSERT_EQ(pod.code, 0) << pod.err;
  }

  // Runs the fedpod binary with stdout and stderr in separate files.
  CliRun fedpod(const std::vector<std::string>& args) {
    const std::string out = (dir_.path() / "cli.out").string();
    const std::string err = (dir_.path() / "cli.err").string();
    std::remove(out.c_str());
    std::remove(err.c_str());
    std::vector<std::string> argv = {"/bin/sh", "-c", "e=$1; shift; exec \"$@\" 2>\"$e\"",
                                     "sh",      err,  testing::fedpod_bin()};
    argv.insert(argv.end(), args.begin(), args.end());
    testing::Process p(argv, out);
    const int status = p.wait(60s);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, testing::read_file(out),
            testing::read_file(err)};
  }
  // As the user holding `token`, on this test's hub.
  CliRun as(const std::string& token, std::vector<std::string> args) {
    args.insert(args.end(), {"--hub", url_, "--token", token});
    return fedpod(args);
  }

  // Registers `name` with a fresh key pair (NAME.key under the test's folder).
  std::string register_user(const std::string& name) {
    const std::string base = (dir_.path() / ("keys-" + name)).string();
    keys_[name] = protocol::generate_curve_keypair();
    EXPECT_TRUE(protocol::write_key_files(base, keys_[name], true).ok());
    auto r = fedpod({"user", "register", name, "--key-file", base + ".key", "--hub", url_, "--json"});
    EXPECT_EQ(r.code, 0) << r.err;
    return json::parse(r.out, nullptr, false).value("token", "");
  }

  testing::TempDir dir_;
  testing::HubTls tls_;
  std::map<std::string, protocol::CurveKeyPair> keys_;
  std::unique_ptr<testing::Process> hub_;
  std::string url_, alice_, bob_, sha256_;
};

TEST_F(AccessCliTest, RequestShowApproveListPolicy) {
  // alice asks; bob must approve.
  auto req = as(alice_, {"access", "request", "--model", "alice/net:1", "--pod", "pod-a",
                         "--purpose", "fit digits on pod-a's scans"});
  ASSERT_EQ(req.code, 0) << req.err;
  EXPECT_CONTAINS(req.out, "request 1: run alice/net:1 on pod-a (pending)");
  EXPECT_CONTAINS(req.out, "the owner of pod-a (bob) must approve it: fedpod access approve 1");

  // A second pending request for the same version is refused by the hub.
  auto dup = as(alice_, {"access", "request", "--model", "alice/net", "--pod", "pod-a", "--purpose",
                         "again"});
  EXPECT_EQ(dup.code, 1);
  EXPECT_CONTAINS(dup.err, "access request: failed_precondition");
  EXPECT_CONTAINS(dup.err, "already has a pending request for alice/net:1 on pod 'pod-a'");

  // bob reviews it, source included (the model is private to alice otherwise).
  auto show = as(bob_, {"access", "show", "1"});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_CONTAINS(show.out, "status      pending");
  EXPECT_CONTAINS(show.out, "requester   alice");
  EXPECT_CONTAINS(show.out, "model       alice/net:1 (torchscript)");
  EXPECT_CONTAINS(show.out, "sha256      " + sha256_);
  EXPECT_CONTAINS(show.out, "purpose     fit digits on pod-a's scans");
  EXPECT_CONTAINS(show.out, "1 source file of alice/net:1:");
  EXPECT_CONTAINS(show.out, "===== net.py (");
  EXPECT_CONTAINS(show.out, "class Net(torch.nn.Module):\n    # reviewed line\n    pass\n");
  auto show_json = as(bob_, {"access", "show", "1", "--json"});
  ASSERT_EQ(show_json.code, 0) << show_json.err;
  json shown = json::parse(show_json.out);
  EXPECT_EQ(shown["status"], "pending");
  ASSERT_EQ(shown["source"].size(), 1u);
  EXPECT_EQ(shown["source"][0]["name"], "net.py");

  // alice cannot approve her own request.
  auto self = as(alice_, {"access", "approve", "1"});
  EXPECT_EQ(self.code, 1);
  EXPECT_CONTAINS(self.err, "access approve: permission_denied");
  EXPECT_CONTAINS(self.err,
                  "only the owner of pod 'pod-a' (bob) may approve access requests for it");

  const int64_t before = static_cast<int64_t>(std::time(nullptr));
  auto approve =
      as(bob_, {"access", "approve", "1", "--expires", "30d", "--reason", "reviewed net.py"});
  const int64_t after = static_cast<int64_t>(std::time(nullptr));
  ASSERT_EQ(approve.code, 0) << approve.err;
  EXPECT_CONTAINS(approve.out, "approved request 1: alice may run alice/net:1 on pod-a until ");

  auto list = as(bob_, {"access", "list", "--json"});
  ASSERT_EQ(list.code, 0) << list.err;
  json requests = json::parse(list.out);
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0]["status"], "approved");
  EXPECT_EQ(requests[0]["reason"], "reviewed net.py");
  EXPECT_EQ(requests[0]["decided_by"], "bob");
  const int64_t expires = parse_utc(requests[0]["expires_at"]);
  EXPECT_GE(expires, before + 30 * 86400);
  EXPECT_LE(expires, after + 30 * 86400);

  auto table = as(alice_, {"access", "list", "--pod", "pod-a", "--status", "approved"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_CONTAINS(table.out, "PURPOSE");
  EXPECT_CONTAINS(table.out, "alice/net:1");
  EXPECT_CONTAINS(table.out, "approved");
  EXPECT_CONTAINS(table.out, requests[0]["expires_at"].get<std::string>());
  auto none = as(alice_, {"access", "list", "--status", "pending", "--json"});
  ASSERT_EQ(none.code, 0) << none.err;
  EXPECT_EQ(json::parse(none.out), json::array());

  // The policy, to a file (for an air-gapped pod) and to stdout.
  const std::string file = (dir_.path() / "policy.json").string();
  auto policy = as(bob_, {"access", "policy", "--pod", "pod-a", "-o", file});
  ASSERT_EQ(policy.code, 0) << policy.err;
  EXPECT_CONTAINS(policy.out, "wrote the signed policy of pod-a to " + file + " (2 users, 0 roles, 1 grants; valid until ");
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  // Signed by the hub, whose key `fedpod hub signing-key` prints; `fedpod policy verify`
  // checks it as a pod would.
  auto key = as(bob_, {"hub", "signing-key"});
  ASSERT_EQ(key.code, 0) << key.err;
  const std::string hub_key = key.out.substr(0, key.out.find('\n'));
  EXPECT_CONTAINS(policy.out, "signed by the hub's key " + hub_key);
  auto verified = fedpod({"policy", "verify", "--signing-key", hub_key, "--pod", "pod-a", file});
  EXPECT_EQ(verified.code, 0) << verified.err;
  EXPECT_CONTAINS(verified.out, "pod pod-a, version ");
  auto wrong_pod = fedpod({"policy", "verify", "--signing-key", hub_key, "--pod", "pod-b", file});
  EXPECT_EQ(wrong_pod.code, 1);
  EXPECT_CONTAINS(wrong_pod.err, "the policy is for pod 'pod-a', not 'pod-b'");
  json p = json::parse(json::parse(testing::read_file(file))["payload"].get<std::string>());
  EXPECT_EQ(p["pod"], "pod-a");
  EXPECT_EQ(p["owner"], "bob");
  ASSERT_EQ(p["grants"].size(), 1u);
  EXPECT_EQ(p["grants"][0]["username"], "alice");
  EXPECT_EQ(p["grants"][0]["model"], "alice/net");
  EXPECT_EQ(p["grants"][0]["version"], 1);
  EXPECT_EQ(p["grants"][0]["sha256"], sha256_);
  EXPECT_EQ(p["grants"][0]["expires_at"], requests[0]["expires_at"]);
  ASSERT_EQ(p["users"].size(), 2u);
  EXPECT_EQ(p["users"][0], (json{{"username", "alice"}, {"public_key", keys_["alice"].public_key}}));
  auto to_stdout = as(bob_, {"access", "policy", "--pod", "pod-a"});
  ASSERT_EQ(to_stdout.code, 0) << to_stdout.err;
  EXPECT_EQ(json::parse(json::parse(to_stdout.out)["payload"].get<std::string>())["grants"], p["grants"]);
  // Rewriting replaces the file whole and leaves no temp files behind.
  ASSERT_EQ(as(bob_, {"access", "policy", "--pod", "pod-a", "-o", file}).code, 0);
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path()))
    if (e.path().filename().string().find("policy.json") != std::string::npos) ++entries;
  EXPECT_EQ(entries, 1);

  auto not_owner = as(alice_, {"access", "policy", "--pod", "pod-a"});
  EXPECT_EQ(not_owner.code, 1);
  EXPECT_EQ(not_owner.out, "");
  EXPECT_CONTAINS(not_owner.err, "only the owner of pod 'pod-a' (bob) may read its policy");

  // Revoke: gone from the policy; revoking again is refused.
  auto revoke = as(bob_, {"access", "revoke", "1", "--reason", "trial over"});
  ASSERT_EQ(revoke.code, 0) << revoke.err;
  EXPECT_CONTAINS(revoke.out, "revoked request 1 (alice, alice/net:1 on pod-a)");
  auto again = as(bob_, {"access", "revoke", "1"});
  EXPECT_EQ(again.code, 1);
  EXPECT_CONTAINS(again.err, "request 1 is revoked, not approved");
  auto after_revoke = as(bob_, {"access", "policy", "--pod", "pod-a"});
  EXPECT_EQ(json::parse(json::parse(after_revoke.out)["payload"].get<std::string>())["grants"], json::array());
}

TEST_F(AccessCliTest, RejectWithReasonAndBadExpiry) {
  auto req = as(alice_, {"access", "request", "--model", "alice/net", "--pod", "pod-a", "--purpose",
                         "p", "--json"});
  ASSERT_EQ(req.code, 0) << req.err;
  const std::string id = std::to_string(json::parse(req.out)["id"].get<int64_t>());

  auto past = as(bob_, {"access", "approve", id, "--expires", "2020-01-01"});
  EXPECT_EQ(past.code, 1);
  EXPECT_CONTAINS(past.err, "expires_at 2020-01-01T00:00:00Z is not in the future");
  auto garbage = as(bob_, {"access", "approve", id, "--expires", "next week"});
  EXPECT_EQ(garbage.code, 1);
  EXPECT_CONTAINS(garbage.err, "YYYY-MM-DD");

  auto reject = as(bob_, {"access", "reject", id, "--reason", "no labels here"});
  ASSERT_EQ(reject.code, 0) << reject.err;
  EXPECT_CONTAINS(reject.out, "rejected request " + id);
  auto seen = as(alice_, {"access", "show", id});
  ASSERT_EQ(seen.code, 0) << seen.err;
  EXPECT_CONTAINS(seen.out, "status      rejected");
  EXPECT_CONTAINS(seen.out, "reason      no labels here");
  auto approve = as(bob_, {"access", "approve", id});
  EXPECT_EQ(approve.code, 1);
  EXPECT_CONTAINS(approve.err, "request " + id + " is rejected, not pending");
}

TEST_F(AccessCliTest, RolesAndUsageErrors) {
  auto grant = as(bob_, {"access", "grant-role", "--pod", "pod-a", "--user", "alice", "--role",
                         "general-modeller"});
  ASSERT_EQ(grant.code, 0) << grant.err;
  EXPECT_CONTAINS(grant.out, "granted general-modeller on pod-a to alice");
  auto roles = as(bob_, {"access", "roles", "--pod", "pod-a", "--json"});
  ASSERT_EQ(roles.code, 0) << roles.err;
  json list = json::parse(roles.out);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["username"], "alice");
  EXPECT_EQ(list[0]["role"], "general-modeller");
  EXPECT_EQ(list[0]["granted_by"], "bob");
  auto table = as(bob_, {"access", "roles", "--pod", "pod-a"});
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_CONTAINS(table.out, "GRANTED BY");
  EXPECT_CONTAINS(table.out, "general-modeller");

  // alice may not grant herself more.
  auto self = as(alice_, {"access", "grant-role", "--pod", "pod-a", "--user", "alice", "--role",
                          "super-modeller"});
  EXPECT_EQ(self.code, 1);
  EXPECT_CONTAINS(self.err, "access grant-role: permission_denied");
  EXPECT_CONTAINS(self.err, "only the owner of pod 'pod-a' (bob) may grant roles on it");
  auto unknown = as(bob_, {"access", "grant-role", "--pod", "pod-a", "--user", "zed", "--role",
                           "super-modeller"});
  EXPECT_EQ(unknown.code, 1);
  EXPECT_CONTAINS(unknown.err, "no user 'zed'");

  auto revoke = as(bob_, {"access", "revoke-role", "--pod", "pod-a", "--user", "alice"});
  ASSERT_EQ(revoke.code, 0) << revoke.err;
  EXPECT_CONTAINS(revoke.out, "revoked the role of alice on pod-a");
  auto twice = as(bob_, {"access", "revoke-role", "--pod", "pod-a", "--user", "alice"});
  EXPECT_EQ(twice.code, 1);
  EXPECT_CONTAINS(twice.err, "user 'alice' has no role on pod 'pod-a'");
  roles = as(bob_, {"access", "roles", "--pod", "pod-a", "--json"});
  EXPECT_EQ(json::parse(roles.out), json::array());

  // Usage and configuration errors exit 2 before reaching the hub.
  auto bad_role =
      as(bob_, {"access", "grant-role", "--pod", "pod-a", "--user", "alice", "--role", "admin"});
  EXPECT_EQ(bad_role.code, 2);
  EXPECT_CONTAINS(bad_role.err, "--role must be general-modeller or super-modeller, got 'admin'");
  auto bad_id = as(bob_, {"access", "show", "abc"});
  EXPECT_EQ(bad_id.code, 2);
  EXPECT_CONTAINS(bad_id.err, "request id must be a positive integer, got 'abc'");
  auto bad_status = as(bob_, {"access", "list", "--status", "done"});
  EXPECT_EQ(bad_status.code, 2);
  EXPECT_CONTAINS(bad_status.err, "--status must be");
  auto bad_model =
      as(alice_, {"access", "request", "--model", "net", "--pod", "pod-a", "--purpose", "p"});
  EXPECT_EQ(bad_model.code, 2);
  EXPECT_CONTAINS(bad_model.err, "expected USER/REF[:VERSION]");
  auto no_token = fedpod({"access", "list", "--hub", url_});
  EXPECT_EQ(no_token.code, 2);
  EXPECT_CONTAINS(no_token.err, "needs a token");
  auto no_hub = fedpod({"access", "roles", "--pod", "pod-a"});
  EXPECT_EQ(no_hub.code, 2);
  EXPECT_CONTAINS(no_hub.err, "no hub given");
  auto unknown_request = as(bob_, {"access", "show", "42"});
  EXPECT_EQ(unknown_request.code, 1);
  EXPECT_CONTAINS(unknown_request.err, "no access request 42");

  // Every command explains itself.
  auto help = fedpod({"access", "--help"});
  EXPECT_EQ(help.code, 0);
  for (const char* sub : {"request", "list", "show", "approve", "reject", "revoke", "grant-role",
                          "revoke-role", "roles", "policy"}) {
    EXPECT_CONTAINS(help.out, sub);
    auto h = fedpod({"access", sub, "--help"});
    EXPECT_EQ(h.code, 0) << sub;
    EXPECT_CONTAINS(h.out, "--hub");
  }
  EXPECT_CONTAINS(fedpod({"access", "approve", "--help"}).out, "30d");
}

}  // namespace
}  // namespace fedpod
