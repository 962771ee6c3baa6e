// Tests for fedpod/worker/policy_cache.h with an in-memory hub (a fetch function that
// signs a JSON value as the hub does, no network) and real files: revocations, the
// persisted fallback, staleness, bad policies, file mode, the wrong pod's policy, and
// every way a policy can be forged: unsigned, altered, signed by another key,
// expired, replayed (an older version), before and after a restart.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "fedpod/common/signing.h"
#include "fedpod/worker/policy_cache.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;
using std::chrono::system_clock;

std::string key(char c) { return std::string(39, c) + "0"; }

json policy_json(const std::string& pod = "pod-a") {
  return {{"pod", pod},
          {"owner", "bob"},
          {"generated_at", "2026-11-29T01:00:00Z"},
          {"users",
           {{{"username", "alice"}, {"public_key", key('a')}},
            {{"username", "sam"}, {"public_key", key('s')}}}},
          {"roles",
           {{{"username", "alice"}, {"role", "general-modeller"}},
            {{"username", "sam"}, {"role", "super-modeller"}}}},
          {"grants", json::array()}};
}

json revoked_alice() {
  json j = policy_json();
  j["roles"] = {{{"username", "sam"}, {"role", "super-modeller"}}};
  return j;
}

// The hub's signing key, and another one.
const SigningKeyPair& signer() {
  static const SigningKeyPair k = generate_signing_keypair();
  return k;
}
const SigningKeyPair& other_signer() {
  static const SigningKeyPair k = generate_signing_keypair();
  return k;
}

// `policy` signed as the hub signs it: issued now, valid for `ttl`, with a version
// above every earlier one (or `version` when given).
std::atomic<int64_t> g_version{1000};
json signed_doc(json policy, std::chrono::seconds ttl = 1h, const SigningKeyPair& key = signer(),
                int64_t version = 0) {
  const auto now = system_clock::now();
  policy["issued_at"] = format_utc(now - 1s);
  policy["expires_at"] = format_utc(now + ttl);
  policy["version"] = version ? version : ++g_version;
  return json::parse(sign_document(policy, key));
}

// The hub's policy endpoint, in memory. Thread-safe: the refresh thread calls fetch().
class FakeHub {
 public:
  // What the hub serves: `j` signed afresh at each fetch.
  void set(json j) {
    std::lock_guard<std::mutex> lk(mu_);
    policy_ = std::move(j);
    raw_ = json();
  }
  // Or exactly this document, served as it is (forgeries, replays).
  void set_raw(json doc) {
    std::lock_guard<std::mutex> lk(mu_);
    raw_ = std::move(doc);
  }
  void set_down(bool down) {
    std::lock_guard<std::mutex> lk(mu_);
    down_ = down;
  }
  int fetches() const { return fetches_; }
  std::function<StatusOr<json>()> fetcher() {
    return [this]() -> StatusOr<json> {
      ++fetches_;
      std::lock_guard<std::mutex> lk(mu_);
      if (down_) return Status(StatusCode::kUnavailable, "hub 127.0.0.1:1: connection refused");
      return raw_.is_null() ? signed_doc(policy_) : raw_;
    };
  }

 private:
  mutable std::mutex mu_;
  json policy_ = policy_json();
  json raw_;
  bool down_ = false;
  std::atomic<int> fetches_{0};
};

PolicyCacheOptions hub_options(FakeHub& hub, const std::string& cache_path = "") {
  PolicyCacheOptions o;
  o.fetch = hub.fetcher();
  o.cache_path = cache_path;
  o.refresh = 1h;  // tests that want the thread set their own
  o.pod_name = "pod-a";
  o.signing_key = signer().public_key;
  return o;
}

std::shared_ptr<const Policy> current(PolicyCache& cache) {
  auto p = cache.current();
  EXPECT_TRUE(p.ok()) << p.status().to_string();
  return p.ok() ? p.value() : nullptr;
}

Role role(PolicyCache& cache, const std::string& user) {
  auto p = current(cache);
  return p ? p->role_of(user) : Role::kNone;
}

TEST(PolicyCacheTest, BeforeStartThereIsNoPolicy) {
  FakeHub hub;
  PolicyCache cache(hub_options(hub), nullptr);
  EXPECT_EQ(cache.snapshot(), nullptr);
  EXPECT_EQ(cache.current().status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache.loaded_at(), system_clock::time_point{});
}

TEST(PolicyCacheTest, StartFetchesAndRefreshNowSeesARevocation) {
  FakeHub hub;
  PolicyCache cache(hub_options(hub), nullptr);
  const auto before = system_clock::now();
  ASSERT_TRUE(cache.start().ok());
  EXPECT_GE(cache.loaded_at(), before);
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
  ASSERT_NE(cache.snapshot(), nullptr);
  EXPECT_EQ(cache.snapshot()->user_by_key(key('a')), std::optional<std::string>("alice"));

  auto held = current(cache);  // a decision in progress keeps its policy
  hub.set(revoked_alice());
  ASSERT_TRUE(cache.refresh_now().ok());
  EXPECT_EQ(role(cache, "alice"), Role::kNone);
  Decision d =
      decide(*current(cache), "pod-a", {"alice", false, "logreg", 0, ""}, system_clock::now());
  EXPECT_EQ(d.reason, "no_role");
  EXPECT_EQ(held->role_of("alice"), Role::kGeneralModeller);
}

TEST(PolicyCacheTest, RevocationArrivesWithinTheRefreshInterval) {
  FakeHub hub;
  auto options = hub_options(hub);
  options.refresh = 50ms;
  PolicyCache cache(options, nullptr);
  ASSERT_TRUE(cache.start().ok());
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
  hub.set(revoked_alice());
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (role(cache, "alice") != Role::kNone && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(role(cache, "alice"), Role::kNone);
  EXPECT_GE(hub.fetches(), 2);
}

TEST(PolicyCacheTest, DestructionIsPromptWithALongInterval) {
  FakeHub hub;
  const auto t0 = std::chrono::steady_clock::now();
  {
    PolicyCache cache(hub_options(hub), nullptr);  // refresh 1h
    ASSERT_TRUE(cache.start().ok());
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
}

TEST(PolicyCacheTest, FallsBackToThePersistedCopyWhenTheHubIsDown) {
  testing::TempDir dir;
  const std::string cache_path = (dir.path() / "policy-cache.json").string();
  FakeHub hub;
  system_clock::time_point fetched_at;
  {
    PolicyCache cache(hub_options(hub, cache_path), nullptr);
    ASSERT_TRUE(cache.start().ok());
    fetched_at = cache.loaded_at();
  }
  ASSERT_TRUE(std::filesystem::exists(cache_path));
  struct stat st {};
  ASSERT_EQ(::stat(cache_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // No temp files left beside it.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()),
            1);

  hub.set_down(true);
  PolicyCache restarted(hub_options(hub, cache_path), nullptr);
  ASSERT_TRUE(restarted.start().ok());
  EXPECT_EQ(role(restarted, "alice"), Role::kGeneralModeller);
  // The age counts from the original fetch, not from the restart.
  EXPECT_LE(std::chrono::abs(restarted.loaded_at() - fetched_at), 1ms);

  // The hub comes back: the next fetch replaces the persisted copy.
  hub.set_down(false);
  hub.set(revoked_alice());
  ASSERT_TRUE(restarted.refresh_now().ok());
  EXPECT_EQ(role(restarted, "alice"), Role::kNone);
  EXPECT_GT(restarted.loaded_at(), fetched_at);
}

TEST(PolicyCacheTest, NoHubAndNoPersistedCopyIsAnError) {
  testing::TempDir dir;
  FakeHub hub;
  hub.set_down(true);
  PolicyCache cache(hub_options(hub, (dir.path() / "missing.json").string()), nullptr);
  Status st = cache.start();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable);
  EXPECT_CONTAINS(st.message(), "connection refused");
  EXPECT_CONTAINS(st.message(), "there is no persisted copy at");
  EXPECT_EQ(cache.snapshot(), nullptr);
}

TEST(PolicyCacheTest, PersistedCopyOlderThanMaxStalenessIsRefused) {
  testing::TempDir dir;
  const std::string cache_path = dir.write(
      "policy-cache.json",
      json{{"fetched_at", format_utc(system_clock::now() - 48h)}, {"policy", signed_doc(policy_json(), 72h)}}
          .dump());
  FakeHub hub;
  hub.set_down(true);
  PolicyCache cache(hub_options(hub, cache_path), nullptr);
  ASSERT_TRUE(cache.start().ok());
  auto p = cache.current();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
  EXPECT_CONTAINS(p.status().message(), "pod pod-a: its access policy is 48h 0m old");
  EXPECT_CONTAINS(p.status().message(), "beyond max_staleness 24h 0m");
  // The authenticator still maps keys to users; only decisions are refused.
  ASSERT_NE(cache.snapshot(), nullptr);
  EXPECT_EQ(cache.snapshot()->user_by_key(key('s')), std::optional<std::string>("sam"));
}

TEST(PolicyCacheTest, GoesStaleDuringAnOutageAndRecovers) {
  FakeHub hub;
  auto options = hub_options(hub);
  options.max_staleness = 200ms;
  PolicyCache cache(options, nullptr);
  ASSERT_TRUE(cache.start().ok());
  EXPECT_TRUE(cache.current().ok());
  hub.set_down(true);
  EXPECT_EQ(cache.refresh_now().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(cache.current().ok());  // still within max_staleness
  std::this_thread::sleep_for(300ms);
  auto p = cache.current();
  EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
  EXPECT_CONTAINS(p.status().message(), "refusing new jobs until the hub can be reached again");
  hub.set_down(false);
  ASSERT_TRUE(cache.refresh_now().ok());
  EXPECT_TRUE(cache.current().ok());
}

TEST(PolicyCacheTest, BadFetchedPolicyKeepsTheOldOne) {
  FakeHub hub;
  PolicyCache cache(hub_options(hub), nullptr);
  ASSERT_TRUE(cache.start().ok());
  const auto loaded = cache.loaded_at();
  json bad = revoked_alice();
  bad["roles"][0]["role"] = "admin";
  hub.set_raw(signed_doc(bad));
  Status st = cache.refresh_now();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(), "policy from the hub: roles[0]: role 'admin'");
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
  EXPECT_EQ(cache.loaded_at(), loaded);  // a bad policy is not a successful fetch

  hub.set(policy_json("pod-b"));  // another pod's policy: ignored the same way
  st = cache.refresh_now();
  EXPECT_CONTAINS(st.message(), "the policy is for pod 'pod-b', but this pod is 'pod-a'");
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
}

TEST(PolicyCacheTest, WrongPodsPolicyAtStartIsAnError) {
  FakeHub hub;
  hub.set(policy_json("pod-b"));
  PolicyCache cache(hub_options(hub), nullptr);
  Status st = cache.start();
  ASSERT_FALSE(st.ok());
  EXPECT_CONTAINS(st.message(),
                  "the policy is for pod 'pod-b', but this pod is 'pod-a' (wrong pod's policy)");

  testing::TempDir dir;
  PolicyCacheOptions o;
  o.file = dir.write("policy.json", signed_doc(policy_json("pod-b")).dump());
  o.pod_name = "pod-a";
  o.signing_key = signer().public_key;
  PolicyCache file_cache(o, nullptr);
  st = file_cache.start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(), o.file + ": the policy is for pod 'pod-b'");
}

TEST(PolicyCacheTest, NeedsExactlyOneSourceAndAPinnedKey) {
  PolicyCache neither(PolicyCacheOptions{}, nullptr);
  EXPECT_CONTAINS(neither.start().message(), "not neither");
  FakeHub hub;
  auto o = hub_options(hub);
  o.file = "policy.yaml";
  PolicyCache both(o, nullptr);
  EXPECT_CONTAINS(both.start().message(), "not both");
  auto unpinned = hub_options(hub);
  unpinned.signing_key.clear();
  PolicyCache no_key(unpinned, nullptr);
  EXPECT_CONTAINS(no_key.start().message(), "no signing key is pinned (pod.yaml policy.signing_key)");
  unpinned.signing_key = "not-a-key";
  PolicyCache bad_key(unpinned, nullptr);
  EXPECT_CONTAINS(bad_key.start().message(), "is not a base64 Ed25519 public key");
}

// ---- File mode -----------------------------------------------------------------------

std::string yaml_policy(const std::string& alice_role) {
  return "pod: pod-a\nusers:\n  - {username: alice, public_key: " + key('a') +
         "}\nroles:\n  - {username: alice, role: " + alice_role + "}\ngrants: []\n";
}

// The YAML policy, converted and signed as `fedpod policy sign` writes it.
std::string signed_yaml_policy(const std::string& alice_role) {
  testing::TempDir tmp;
  auto p = load_policy_file(tmp.write("p.yaml", yaml_policy(alice_role)));
  if (!p.ok()) return yaml_policy(alice_role);  // unparseable: written as it is (a broken edit)
  return signed_doc(to_json(*p)).dump();
}

// Rewrites `path` and moves its mtime on, so the change is seen even on file systems
// with coarse timestamps.
void rewrite(const std::string& path, const std::string& content) {
  const auto before = std::filesystem::last_write_time(path);
  std::ofstream(path, std::ios::trunc) << content;
  std::filesystem::last_write_time(path, before + 2s);
}

TEST(PolicyCacheTest, FileModeRereadsAChangedFile) {
  testing::TempDir dir;
  PolicyCacheOptions o;
  o.file = dir.write("policy.json", signed_yaml_policy("general-modeller"));
  o.pod_name = "pod-a";
  o.signing_key = signer().public_key;
  PolicyCache cache(o, nullptr);
  ASSERT_TRUE(cache.start().ok());
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
  auto first = current(cache);
  EXPECT_EQ(current(cache), first);  // unchanged file: the same policy object

  rewrite(o.file, signed_yaml_policy("super-modeller"));
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);

  // A broken edit keeps the last good policy; so does an unsigned one.
  rewrite(o.file, yaml_policy("admin"));
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);
  EXPECT_EQ(cache.refresh_now().code(), StatusCode::kInvalidArgument);
  rewrite(o.file, yaml_policy("general-modeller"));
  EXPECT_CONTAINS(cache.refresh_now().message(), "not signed");
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);
  std::filesystem::remove(o.file);
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);

  // Fixed: picked up again.
  std::ofstream(o.file) << signed_yaml_policy("general-modeller");
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
}

TEST(PolicyCacheTest, FileModeBadFileAtStartIsAnError) {
  testing::TempDir dir;
  PolicyCacheOptions o;
  json admin = policy_json();
  admin["roles"][0]["role"] = "admin";
  o.file = dir.write("policy.json", signed_doc(admin).dump());
  o.signing_key = signer().public_key;
  PolicyCache cache(o, nullptr);
  Status st = cache.start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(),
                  o.file + ": roles[0]: role 'admin' is not general-modeller or super-modeller");

  // A hand-written policy file that nobody signed.
  PolicyCacheOptions unsigned_file;
  unsigned_file.file = dir.write("policy.yaml", yaml_policy("general-modeller"));
  unsigned_file.signing_key = signer().public_key;
  PolicyCache cache3(unsigned_file, nullptr);
  st = cache3.start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(), unsigned_file.file + ": not signed");
  EXPECT_CONTAINS(st.message(), "fedpod policy sign");

  PolicyCacheOptions missing;
  missing.signing_key = signer().public_key;
  missing.file = (dir.path() / "none.yaml").string();
  PolicyCache cache2(missing, nullptr);
  EXPECT_EQ(cache2.start().code(), StatusCode::kNotFound);
}

// ---- Forged policies -----------------------------------------------------------------

// Each forgery the hub's channel could carry is refused, naming why, and the policy in
// force stays: alice keeps general-modeller, nobody gains super-modeller.
TEST(PolicyCacheTest, ForgedPoliciesFromTheHubAreRefusedNamingWhy) {
  FakeHub hub;
  PolicyCache cache(hub_options(hub), nullptr);
  ASSERT_TRUE(cache.start().ok());
  json promoted = policy_json();
  promoted["roles"][0]["role"] = "super-modeller";  // what an attacker on the path wants

  // Unsigned (the old format).
  hub.set_raw(promoted);
  EXPECT_CONTAINS(cache.refresh_now().message(), "policy from the hub: not signed");
  // Signed, then the payload rewritten in transit.
  json altered = signed_doc(policy_json());
  std::string payload = altered["payload"];
  payload.replace(payload.find("general-modeller"), 16, "super-modeller\",\"x\":\"");
  altered["payload"] = payload;
  hub.set_raw(altered);
  EXPECT_CONTAINS(cache.refresh_now().message(), "the signature does not verify with the pinned key");
  // Signed by another key (the attacker's own), even naming the real key.
  json forged = signed_doc(promoted, 1h, other_signer());
  forged["key"] = signer().public_key;
  hub.set_raw(forged);
  EXPECT_CONTAINS(cache.refresh_now().message(), "the document was altered, or signed by another key");
  // Genuinely signed, but for another pod.
  hub.set_raw(signed_doc(policy_json("pod-b")));
  EXPECT_CONTAINS(cache.refresh_now().message(), "the policy is for pod 'pod-b'");
  // Genuinely signed, but expired.
  json expired = policy_json();
  expired["issued_at"] = format_utc(system_clock::now() - 48h);
  expired["expires_at"] = format_utc(system_clock::now() - 24h);
  expired["version"] = ++g_version;
  hub.set_raw(json::parse(sign_document(expired, signer())));
  EXPECT_CONTAINS(cache.refresh_now().message(), "the policy expired at");
  // A signed policy without the fields that bound its use.
  hub.set_raw(json::parse(sign_document(policy_json(), signer())));
  EXPECT_CONTAINS(cache.refresh_now().message(), "must carry issued_at, expires_at and version");

  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
  EXPECT_EQ(role(cache, "sam"), Role::kSuperModeller);
}

// A replayed policy: genuinely signed and unexpired, but older than the one in force
// (it still holds a role since revoked). Refused, also after a restart, through the
// persisted copy's version.
TEST(PolicyCacheTest, AReplayedOlderPolicyIsRefusedAlsoAfterARestart) {
  testing::TempDir dir;
  const std::string cache_path = (dir.path() / "policy-cache.json").string();
  FakeHub hub;
  const json old_with_alice = signed_doc(policy_json());  // captured by an attacker
  hub.set(revoked_alice());
  {
    PolicyCache cache(hub_options(hub, cache_path), nullptr);
    ASSERT_TRUE(cache.start().ok());
    EXPECT_EQ(role(cache, "alice"), Role::kNone);
    hub.set_raw(old_with_alice);
    Status st = cache.refresh_now();
    EXPECT_CONTAINS(st.message(), "is older than version");
    EXPECT_CONTAINS(st.message(), "a replayed or rolled-back policy");
    EXPECT_EQ(role(cache, "alice"), Role::kNone);
  }
  // Restarted while the attacker answers for the hub.
  PolicyCache restarted(hub_options(hub, cache_path), nullptr);
  ASSERT_TRUE(restarted.start().ok());  // the persisted (newer) copy
  EXPECT_EQ(role(restarted, "alice"), Role::kNone);
}

// A policy in force that expires refuses new jobs until a newer one arrives.
TEST(PolicyCacheTest, AnExpiredPolicyInForceRefusesNewJobs) {
  FakeHub hub;
  hub.set_raw(signed_doc(policy_json(), 1s));
  PolicyCache cache(hub_options(hub), nullptr);
  ASSERT_TRUE(cache.start().ok());
  EXPECT_TRUE(cache.current().ok());
  std::this_thread::sleep_for(1500ms);
  auto p = cache.current();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), StatusCode::kUnavailable);
  EXPECT_CONTAINS(p.status().message(), "expired at");
  hub.set(policy_json());
  ASSERT_TRUE(cache.refresh_now().ok());
  EXPECT_TRUE(cache.current().ok());
}

}  // namespace
}  // namespace fedpod::worker
