// Tests for fedpod/worker/policy.h: the decision matrix (who may run what, and what
// a refused modeller is told to do), strict parsing with its messages, policy files
// in YAML, and the JSON round trip.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fedpod/common/sha256.h"
#include "fedpod/worker/policy.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

using nlohmann::json;
using std::chrono::system_clock;

// Distinct, valid Z85 keys.
std::string key(char c) { return std::string(39, c) + "0"; }

const std::string kV2 = sha256_hex("alice/net version 2");
const std::string kV1 = sha256_hex("alice/net version 1");
const std::string kOther = sha256_hex("something else");

system_clock::time_point at(const std::string& text) {
  auto t = parse_utc(text);
  EXPECT_TRUE(t.has_value()) << text;
  return t.value_or(system_clock::time_point{});
}

// pod-a, owned by bob. Users: alice (general, grant 7 for alice/net:2), carol (no
// role), dave (general, no grants), erin (general, grant for v1 only), frank
// (general, expired grant for v2), sam (super).
json base_policy() {
  return json::parse(R"({
    "pod": "pod-a", "owner": "bob", "generated_at": "2026-11-29T01:00:00Z",
    "users": [{"username": "alice", "public_key": ")" +
                     key('a') + R"("},
              {"username": "carol", "public_key": ")" +
                     key('c') + R"("},
              {"username": "dave",  "public_key": ")" +
                     key('d') + R"("},
              {"username": "erin",  "public_key": ")" +
                     key('e') + R"("},
              {"username": "frank", "public_key": ")" +
                     key('f') + R"("},
              {"username": "sam",   "public_key": ")" +
                     key('s') + R"("}],
    "roles": [{"username": "alice", "role": "general-modeller"},
              {"username": "dave",  "role": "general-modeller"},
              {"username": "erin",  "role": "general-modeller"},
              {"username": "frank", "role": "general-modeller"},
              {"username": "sam",   "role": "super-modeller"}],
    "grants": [{"id": 7, "username": "alice", "model": "alice/net", "version": 2, "sha256": ")" +
                     kV2 + R"(",
                "format": "torchscript", "expires_at": "2027-01-01T00:00:00Z"},
               {"id": 8, "username": "erin", "model": "alice/net", "version": 1, "sha256": ")" +
                     kV1 + R"(",
                "format": "torchscript", "expires_at": null},
               {"id": 9, "username": "frank", "model": "alice/net", "version": 2, "sha256": ")" +
                     kV2 + R"(",
                "format": "torchscript", "expires_at": "2026-01-01T00:00:00Z"}]})");
}

Policy policy() {
  auto p = parse_policy(base_policy(), "policy.json");
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  return p.value();
}

// ---- The decision matrix ---------------------------------------------------------------

struct Case {
  const char* name;
  std::string user;
  std::string sha256;  // what the pod received (custom only)
  // built-in model
  bool builtin_allowed;
  std::string builtin_reason;
  std::vector<std::string> builtin_phrases;  // in basis when allowed, in message when refused
  // custom model alice/net:2
  bool custom_allowed;
  std::string custom_reason;
  std::vector<std::string> custom_phrases;
};

const std::string kRequest =
    "fedpod access request --model alice/net:2 --pod pod-a --purpose \"...\"";

std::vector<Case> cases() {
  return {
      {"unauthenticated",
       "",
       kV2,
       false,
       "unauthenticated",
       {"pod pod-a", "not authenticated", "CURVE public key",
        "ask the pod owner (bob) to run: fedpod access grant-role --pod pod-a --user NAME --role "
        "general-modeller"},
       false,
       "unauthenticated",
       {"pod pod-a", "not authenticated", "request access with: " + kRequest}},
      {"unknown user",
       "mallory",
       kV2,
       false,
       "unknown_user",
       {"pod pod-a", "user mallory is not in this pod's policy",
        "the pod owner (bob) to run: fedpod access grant-role --pod pod-a --user mallory --role "
        "general-modeller"},
       false,
       "unknown_user",
       {"pod pod-a", "user mallory",
        "To run it, request access to that exact version with: " + kRequest,
        "fedpod access grant-role --pod pod-a --user mallory --role super-modeller"}},
      {"registered without role",
       "carol",
       kV2,
       false,
       "no_role",
       {"pod pod-a", "user carol has no role on this pod", "may not run built-in model logreg",
        "To get one, ask the pod owner (bob) to run: fedpod access grant-role --pod pod-a --user "
        "carol --role general-modeller"},
       false,
       "no_role",
       {"pod pod-a", "user carol has no role", "may not run custom model alice/net:2",
        "To run it, request access to that exact version with: " + kRequest,
        "general-modeller role",
        "fedpod access grant-role --pod pod-a --user carol --role super-modeller",
        "super-modeller runs any model"}},
      {"general without grant",
       "dave",
       kV2,
       true,
       "ok",
       {"general-modeller"},
       false,
       "no_grant",
       {"pod pod-a", "user dave (general-modeller) has no grant for custom model alice/net:2",
        "that exact version", "Request it with: " + kRequest}},
      {"general with grant for v1 running v2",
       "erin",
       kV2,
       true,
       "ok",
       {"general-modeller"},
       false,
       "grant_other_version",
       {"pod pod-a", "user erin (general-modeller) has grants for alice/net version 1 only",
        "not for the requested version 2", "Request it with: " + kRequest}},
      {"general with expired grant",
       "frank",
       kV2,
       true,
       "ok",
       {"general-modeller"},
       false,
       "grant_expired",
       {"pod pod-a", "user frank",
        "grant 9 for custom model alice/net:2 expired at 2026-01-01T00:00:00Z",
        "Request it again with: " + kRequest}},
      {"general with grant",
       "alice",
       kV2,
       true,
       "ok",
       {"general-modeller"},
       true,
       "ok",
       {"general-modeller with grant 7 (expires 2027-01-01T00:00:00Z)"}},
      {"general with grant, different sha256",
       "alice",
       kOther,
       true,
       "ok",
       {"general-modeller"},
       false,
       "hash_mismatch",
       {"pod pod-a", "user alice",
        "the artifact received hashes to " + kOther + ", the approved version 2 is " + kV2 +
            ": refusing",
        kRequest}},
      {"super", "sam", kOther, true, "ok", {"super-modeller"}, true, "ok", {"super-modeller"}},
  };
}

TEST(DecideTest, Matrix) {
  const Policy p = policy();
  const auto now = at("2026-06-01T00:00:00Z");
  for (const Case& c : cases()) {
    {
      SCOPED_TRACE(std::string(c.name) + " x built-in");
      AccessRequest req{c.user, false, "logreg", 0, ""};
      Decision d = decide(p, "pod-a", req, now);
      EXPECT_EQ(d.allowed, c.builtin_allowed);
      EXPECT_EQ(d.reason, c.builtin_reason);
      if (d.allowed) {
        EXPECT_EQ(d.basis, c.builtin_phrases.at(0));
        EXPECT_EQ(d.message, "");
      }
      for (const auto& phrase : c.builtin_phrases)
        EXPECT_CONTAINS(d.allowed ? d.basis : d.message, phrase);
    }
    {
      SCOPED_TRACE(std::string(c.name) + " x custom");
      AccessRequest req{c.user, true, "alice/net", 2, c.sha256, "torchscript"};
      Decision d = decide(p, "pod-a", req, now);
      EXPECT_EQ(d.allowed, c.custom_allowed);
      EXPECT_EQ(d.reason, c.custom_reason);
      if (d.allowed) {
        EXPECT_EQ(d.basis, c.custom_phrases.at(0));
      }
      for (const auto& phrase : c.custom_phrases)
        EXPECT_CONTAINS(d.allowed ? d.basis : d.message, phrase);
    }
  }
}

TEST(DecideTest, GrantWithoutExpiryAndWithoutIdIsNamedByModel) {
  json j = base_policy();
  j["grants"][0].erase("id");
  j["grants"][0]["expires_at"] = nullptr;
  auto p = parse_policy(j, "policy.yaml");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  Decision d =
      decide(*p, "pod-a", {"alice", true, "alice/net", 2, kV2, "torchscript"}, at("2030-01-01T00:00:00Z"));
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.basis, "general-modeller with grant for alice/net:2 (no expiry)");
}

// A grant approves bytes as the format the reviewer saw. The same bytes loaded another
// way are other code (a plugin with a TorchScript archive appended), so a job asking
// for another format is refused; a grant without a format (a policy file may leave it
// out) approves the bytes however they are loaded.
TEST(DecideTest, AGrantApprovesItsBytesOnlyInItsFormat) {
  const Policy p = policy();
  const auto now = at("2026-06-01T00:00:00Z");
  EXPECT_TRUE(decide(p, "pod-a", {"alice", true, "alice/net", 2, kV2, "torchscript"}, now).allowed);
  Decision d = decide(p, "pod-a", {"alice", true, "alice/net", 2, kV2, "plugin"}, now);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "grant_other_format");
  EXPECT_CONTAINS(d.message, "grant 7 approved these bytes as a torchscript model; the job asks to load them as plugin");
  // A super-modeller runs any model, in any format.
  EXPECT_TRUE(decide(p, "pod-a", {"sam", true, "alice/net", 2, kV2, "plugin"}, now).allowed);
  json j = base_policy();
  j["grants"][0].erase("format");
  auto unformatted = parse_policy(j, "policy.yaml");
  ASSERT_TRUE(unformatted.ok()) << unformatted.status().to_string();
  EXPECT_TRUE(decide(*unformatted, "pod-a", {"alice", true, "alice/net", 2, kV2, "plugin"}, now).allowed);
}

TEST(DecideTest, GrantExpiresAtItsExactTime) {
  const Policy p = policy();
  AccessRequest req{"alice", true, "alice/net", 2, kV2, "torchscript"};
  EXPECT_TRUE(decide(p, "pod-a", req, at("2026-12-31T23:59:59Z")).allowed);
  Decision d = decide(p, "pod-a", req, at("2027-01-01T00:00:00Z"));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.reason, "grant_expired");
  EXPECT_CONTAINS(d.message, "grant 7");
  EXPECT_CONTAINS(d.message, "expired at 2027-01-01T00:00:00Z");
}

TEST(DecideTest, GrantIsForOneUserAndOneModel) {
  const Policy p = policy();
  const auto now = at("2026-06-01T00:00:00Z");
  // dave holds no grant: alice's grant does not carry over.
  EXPECT_EQ(decide(p, "pod-a", {"dave", true, "alice/net", 2, kV2, "torchscript"}, now).reason, "no_grant");
  // alice's grant is for alice/net, not alice/other.
  Decision d = decide(p, "pod-a", {"alice", true, "alice/other", 2, kV2, "torchscript"}, now);
  EXPECT_EQ(d.reason, "no_grant");
  EXPECT_CONTAINS(d.message, "fedpod access request --model alice/other:2 --pod pod-a");
}

TEST(DecideTest, SeveralOtherVersionsAreListed) {
  json j = base_policy();
  j["grants"].push_back({{"username", "erin"},
                         {"model", "alice/net"},
                         {"version", 3},
                         {"sha256", kOther},
                         {"expires_at", nullptr}});
  auto p = parse_policy(j, "policy.json");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  Decision d = decide(*p, "pod-a", {"erin", true, "alice/net", 2, kV2, "torchscript"}, at("2026-06-01T00:00:00Z"));
  EXPECT_EQ(d.reason, "grant_other_version");
  EXPECT_CONTAINS(d.message, "versions 1, 3 only, not for the requested version 2");
}

TEST(DecideTest, OwnerlessPolicyAndOddModelNamesStillGiveAPastableCommand) {
  json j = base_policy();
  j.erase("owner");
  auto p = parse_policy(j, "policy.yaml");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  Decision d = decide(*p, "pod-a", {"carol", false, "logreg", 0, ""}, at("2026-06-01T00:00:00Z"));
  EXPECT_CONTAINS(d.message, "To get one, ask the pod owner to run: fedpod access grant-role");
  // The model name arrives from the wire: it is quoted, never pasted raw into a command.
  d = decide(*p, "pod-a", {"dave", true, "x/y; rm -rf ~", 2, kV2}, at("2026-06-01T00:00:00Z"));
  EXPECT_CONTAINS(d.message, "--model 'x/y; rm -rf ~:2' --pod pod-a");
}

// ---- Keys -> users ----------------------------------------------------------------------

TEST(PolicyTest, UserByKey) {
  const Policy p = policy();
  EXPECT_EQ(p.user_by_key(key('a')), std::optional<std::string>("alice"));
  EXPECT_EQ(p.user_by_key(key('s')), std::optional<std::string>("sam"));
  EXPECT_EQ(p.user_by_key(key('z')), std::nullopt);
  EXPECT_EQ(p.user_by_key(""), std::nullopt);
  EXPECT_EQ(p.role_of("sam"), Role::kSuperModeller);
  EXPECT_EQ(p.role_of("carol"), Role::kNone);
  EXPECT_EQ(p.role_of("nobody"), Role::kNone);

  // Built by hand without build_key_index(): still right (a linear scan).
  Policy hand;
  hand.users["zoe"] = key('z');
  EXPECT_EQ(hand.user_by_key(key('z')), std::optional<std::string>("zoe"));
  hand.build_key_index();
  EXPECT_EQ(hand.user_by_key(key('z')), std::optional<std::string>("zoe"));
  // A key changed after indexing: the stale index never answers with the old key.
  hand.users["zoe"] = key('y');
  EXPECT_EQ(hand.user_by_key(key('z')), std::nullopt);
  hand.build_key_index();
  EXPECT_EQ(hand.user_by_key(key('y')), std::optional<std::string>("zoe"));
  // A user added without reindexing: the index has the wrong size and is bypassed.
  hand.users["yves"] = key('x');
  EXPECT_EQ(hand.user_by_key(key('x')), std::optional<std::string>("yves"));
}

// Anyone can register another user's public key on the hub: the policy stays valid,
// and the shared key authenticates neither user.
TEST(PolicyTest, SharedPublicKeyIdentifiesNoOne) {
  json j = base_policy();
  j["users"].push_back({{"username", "mallory"}, {"public_key", key('s')}});  // sam's key
  auto p = parse_policy(j, "policy.json");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->user_by_key(key('s')), std::nullopt);
  EXPECT_EQ(p->user_by_key(key('a')), std::optional<std::string>("alice"));
  EXPECT_EQ(p->users_sharing_keys(), (std::vector<std::string>{"mallory", "sam"}));
  EXPECT_EQ(policy().users_sharing_keys(), std::vector<std::string>{});

  Policy hand;  // unindexed: the linear scan says the same
  hand.users = {{"sam", key('s')}, {"mallory", key('s')}, {"zoe", key('z')}};
  EXPECT_EQ(hand.user_by_key(key('s')), std::nullopt);
  EXPECT_EQ(hand.user_by_key(key('z')), std::optional<std::string>("zoe"));
  hand.build_key_index();
  EXPECT_EQ(hand.user_by_key(key('s')), std::nullopt);
  EXPECT_EQ(hand.user_by_key(key('z')), std::optional<std::string>("zoe"));
}

TEST(PolicyTest, RoleNames) {
  EXPECT_EQ(to_string(Role::kNone), "none");
  EXPECT_EQ(to_string(Role::kGeneralModeller), "general-modeller");
  EXPECT_EQ(to_string(Role::kSuperModeller), "super-modeller");
}

// ---- Parsing: error paths --------------------------------------------------------------

struct BadPolicy {
  const char* name;
  std::function<void(json&)> edit;
  std::string message;
};

TEST(ParsePolicyTest, RejectsEachKindOfBadPolicyNamingTheEntry) {
  const std::vector<BadPolicy> bad = {
      {"not an object", [](json& j) { j = json::array(); },
       "policy.json: expected a mapping, got a list"},
      {"unknown top-level key", [](json& j) { j["grant"] = json::array(); },
       "policy.json: unknown key 'grant' (allowed: pod, owner, generated_at, issued_at, expires_at, version, users, roles, "
       "grants)"},
      {"missing pod", [](json& j) { j.erase("pod"); }, "policy.json: missing key 'pod'"},
      {"pod of the wrong type", [](json& j) { j["pod"] = 5; },
       "policy.json: pod must be a string, got an integer 5"},
      {"missing grants", [](json& j) { j.erase("grants"); }, "policy.json: missing key 'grants'"},
      {"users not a list", [](json& j) { j["users"] = json::object(); },
       "policy.json: users must be a list, got a mapping"},
      {"null grants", [](json& j) { j["grants"] = nullptr; },
       "policy.json: grants must be a list, got nothing (write grants: [] for none)"},
      {"unknown key in a user", [](json& j) { j["users"][1]["email"] = "c@x"; },
       "policy.json: users[1]: unknown key 'email' (allowed: username, public_key)"},
      {"bad username", [](json& j) { j["users"][0]["username"] = "Alice"; },
       "policy.json: users[0]: username 'Alice' must start with a lowercase letter"},
      {"short key", [](json& j) { j["users"][0]["public_key"] = "abcde"; },
       "policy.json: users[0]: public_key of alice must be a 40-character Z85 CURVE public key, "
       "got 5 characters"},
      {"key outside Z85", [](json& j) { j["users"][2]["public_key"] = std::string(39, 'd') + "~"; },
       "policy.json: users[2]: public_key of dave is not Z85: contains '~'"},
      {"key of the wrong type", [](json& j) { j["users"][0]["public_key"] = 12; },
       "policy.json: users[0]: public_key must be a string, got an integer 12"},
      {"duplicate user",
       [](json& j) {
         j["users"].push_back({{"username", "alice"}, {"public_key", key('x')}});
       },
       "policy.json: users[6]: user 'alice' is listed twice"},
      {"bad role name", [](json& j) { j["roles"][2]["role"] = "admin"; },
       "policy.json: roles[2]: role 'admin' is not general-modeller or super-modeller"},
      {"role for an unknown user", [](json& j) { j["roles"][0]["username"] = "zed"; },
       "policy.json: roles[0]: user 'zed' is not in users"},
      {"two roles for one user",
       [](json& j) {
         j["roles"].push_back({{"username", "alice"}, {"role", "super-modeller"}});
       },
       "policy.json: roles[5]: user 'alice' already has a role (general-modeller)"},
      {"unknown key in a grant", [](json& j) { j["grants"][0]["expiry"] = nullptr; },
       "policy.json: grants[0]: unknown key 'expiry'"},
      {"grant for an unknown user", [](json& j) { j["grants"][1]["username"] = "zed"; },
       "policy.json: grants[1]: user 'zed' is not in users"},
      {"uppercase sha256", [](json& j) { j["grants"][0]["sha256"] = std::string(64, 'A'); },
       "policy.json: grants[0]: sha256 must be 64 lowercase hex characters, contains 'A'"},
      {"short sha256", [](json& j) { j["grants"][0]["sha256"] = "abc"; },
       "policy.json: grants[0]: sha256 must be 64 lowercase hex characters, got 3 characters"},
      {"version as a string", [](json& j) { j["grants"][0]["version"] = "2"; },
       "policy.json: grants[0]: version must be an integer, got a string \"2\""},
      {"version 0", [](json& j) { j["grants"][0]["version"] = 0; },
       "policy.json: grants[0]: version must be at least 1, got 0"},
      {"fractional version", [](json& j) { j["grants"][0]["version"] = 2.5; },
       "policy.json: grants[0]: version must be an integer, got a number 2.5"},
      {"model without owner", [](json& j) { j["grants"][0]["model"] = "net"; },
       "policy.json: grants[0]: model must be OWNER/REF (e.g. alice/net), got 'net'"},
      {"bad expiry", [](json& j) { j["grants"][0]["expires_at"] = "next year"; },
       "policy.json: grants[0]: expires_at 'next year' is not a UTC time"},
      {"expiry without a zone",
       [](json& j) { j["grants"][0]["expires_at"] = "2027-01-01T00:00:00"; },
       "policy.json: grants[0]: expires_at '2027-01-01T00:00:00' is not a UTC time"},
      {"bad format", [](json& j) { j["grants"][2]["format"] = "onnx"; },
       "policy.json: grants[2]: format 'onnx' is not torchscript or plugin"},
      {"negative id", [](json& j) { j["grants"][0]["id"] = -3; },
       "policy.json: grants[0]: id must be at least 1, got -3"},
  };
  for (const auto& b : bad) {
    SCOPED_TRACE(b.name);
    json j = base_policy();
    b.edit(j);
    auto p = parse_policy(j, "policy.json");
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_CONTAINS(p.status().message(), b.message);
  }
}

// ---- Round trip and files ---------------------------------------------------------------

TEST(ParsePolicyTest, ToJsonRoundTrips) {
  json j = base_policy();
  j["grants"][1]["expires_at"] = "2027-03-04T05:06:07.250Z";  // milliseconds survive
  j["grants"][2].erase("format");
  j["grants"][2].erase("id");
  auto p = parse_policy(j, "policy.json");
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  json out = to_json(*p);
  auto again = parse_policy(out, "round trip");
  ASSERT_TRUE(again.ok()) << again.status().to_string() << "\n" << out.dump(2);
  EXPECT_EQ(to_json(*again), out);
  EXPECT_EQ(again->pod, "pod-a");
  EXPECT_EQ(again->owner, "bob");
  EXPECT_EQ(again->generated_at, "2026-11-29T01:00:00Z");
  EXPECT_EQ(again->users, p->users);
  EXPECT_EQ(again->roles, p->roles);
  ASSERT_EQ(again->grants.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    SCOPED_TRACE(i);
    const Grant& a = p->grants[i];
    const Grant& b = again->grants[i];
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.username, b.username);
    EXPECT_EQ(a.model, b.model);
    EXPECT_EQ(a.version, b.version);
    EXPECT_EQ(a.sha256, b.sha256);
    EXPECT_EQ(a.format, b.format);
    EXPECT_EQ(a.expires_at, b.expires_at);
  }
  EXPECT_EQ(out["grants"][1]["expires_at"], "2027-03-04T05:06:07.250Z");
  EXPECT_EQ(out["grants"][1]["id"], 8);
  EXPECT_FALSE(out["grants"][2].contains("id"));
  EXPECT_EQ(again->user_by_key(key('e')), std::optional<std::string>("erin"));
}

TEST(PolicyFileTest, YamlWithDateOnlyExpiryAndOptionalFields) {
  testing::TempDir dir;
  // The sha256 looks like a number to a YAML reader ("1e5..."): it must stay text.
  const std::string sha = "1e5" + std::string(61, '0');
  const std::string path = dir.write("policy.yaml", R"(# pod-a's policy, air-gapped
pod: pod-a
users:
  - username: alice
    public_key: ")" + std::string("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7") +
                                                        R"("
  - {username: sam, public_key: )" + key('s') + R"(}
roles:
  - {username: alice, role: general-modeller}
  - {username: sam, role: super-modeller}
grants:
  - username: alice
    model: alice/net
    version: 2
    sha256: )" + sha + R"(
    expires_at: 2027-01-01
  - {username: alice, model: alice/net, version: 3, sha256: )" +
                                                        kV2 + R"(, expires_at: ~}
)");
  auto p = load_policy_file(path);
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->pod, "pod-a");
  EXPECT_EQ(p->owner, "");
  EXPECT_EQ(p->user_by_key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"),
            std::optional<std::string>("alice"));
  ASSERT_EQ(p->grants.size(), 2u);
  EXPECT_EQ(p->grants[0].id, 0);
  EXPECT_EQ(p->grants[0].format, "");
  EXPECT_EQ(p->grants[0].sha256, sha);
  ASSERT_TRUE(p->grants[0].expires_at.has_value());
  EXPECT_EQ(format_utc(*p->grants[0].expires_at), "2027-01-01T00:00:00Z");
  EXPECT_FALSE(p->grants[1].expires_at.has_value());

  AccessRequest req{"alice", true, "alice/net", 2, sha, "torchscript"};
  EXPECT_TRUE(decide(*p, "pod-a", req, at("2026-12-31T23:59:59Z")).allowed);
  Decision d = decide(*p, "pod-a", req, at("2027-01-01T00:00:00Z"));
  EXPECT_EQ(d.reason, "grant_expired");
  EXPECT_CONTAINS(d.message, "grant for alice/net:2");
  EXPECT_CONTAINS(d.message, "expired at 2027-01-01T00:00:00Z");
}

TEST(PolicyFileTest, JsonFileIsValidYaml) {
  testing::TempDir dir;
  auto p = load_policy_file(dir.write("policy.json", base_policy().dump(2)));
  ASSERT_TRUE(p.ok()) << p.status().to_string();
  EXPECT_EQ(p->grants.size(), 3u);
  EXPECT_EQ(p->grants[0].id, 7);
}

TEST(PolicyFileTest, FileErrorsNameTheFile) {
  testing::TempDir dir;
  const std::string missing = (dir.path() / "none.yaml").string();
  auto p = load_policy_file(missing);
  EXPECT_EQ(p.status().code(), StatusCode::kNotFound);
  EXPECT_CONTAINS(p.status().message(), missing);

  std::string path = dir.write("syntax.yaml", "pod: pod-a\nusers: [\n");
  p = load_policy_file(path);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(p.status().message(), path + ": not valid YAML");

  path = dir.write("dup.yaml", "pod: pod-a\npod: pod-b\nusers: []\nroles: []\ngrants: []\n");
  p = load_policy_file(path);
  EXPECT_CONTAINS(p.status().message(), path + ": key 'pod' appears twice");

  path =
      dir.write("role.yaml", "pod: pod-a\nusers:\n  - {username: alice, public_key: " + key('a') +
                                 "}\nroles:\n  - {username: alice, role: admin}\ngrants: []\n");
  p = load_policy_file(path);
  EXPECT_EQ(p.status().message(),
            path + ": roles[0]: role 'admin' is not general-modeller or super-modeller");

  path = dir.write("types.yaml", "pod: pod-a\nusers: []\nroles: []\ngrants:\n  - {version: two}\n");
  p = load_policy_file(path);
  EXPECT_CONTAINS(p.status().message(), path + ": grants[0]");
}

// ---- Time --------------------------------------------------------------------------------

TEST(UtcTest, ParsesAndFormats) {
  EXPECT_EQ(format_utc(at("2027-01-01")), "2027-01-01T00:00:00Z");
  EXPECT_EQ(format_utc(at("2027-01-01T12:30:05Z")), "2027-01-01T12:30:05Z");
  EXPECT_EQ(format_utc(at("2027-01-01T12:30:05.5Z")), "2027-01-01T12:30:05.500Z");
  EXPECT_EQ(format_utc(at("2027-01-01T12:30:05+02:00")), "2027-01-01T10:30:05Z");
  EXPECT_EQ(format_utc(at("2024-02-29T00:00:00-00:30")), "2024-02-29T00:30:00Z");
  EXPECT_EQ(format_utc(system_clock::from_time_t(0)), "1970-01-01T00:00:00Z");
  for (const char* bad :
       {"", "2027", "2027-1-01", "2027-13-01", "2023-02-29", "2027-01-01T", "2027-01-01T24:00:00Z",
        "2027-01-01T00:00:00", "2027-01-01 00:00:00Z", "2027-01-01T00:00:00.Z",
        "2027-01-01T00:00:00Zjunk", "2027-01-01T00:00:00+0200", "next year"}) {
    EXPECT_FALSE(parse_utc(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace fedpod::worker
