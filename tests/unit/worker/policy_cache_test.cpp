// Tests for fedpod/worker/policy_cache.h with an in-memory hub (a fetch function over
// a JSON value, no network) and real files: revocations, the persisted fallback,
// staleness, bad policies, file mode and the wrong pod's policy.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

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

// The hub's policy endpoint, in memory. Thread-safe: the refresh thread calls fetch().
class FakeHub {
 public:
  void set(json j) {
    std::lock_guard<std::mutex> lk(mu_);
    policy_ = std::move(j);
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
      return policy_;
    };
  }

 private:
  mutable std::mutex mu_;
  json policy_ = policy_json();
  bool down_ = false;
  std::atomic<int> fetches_{0};
};

PolicyCacheOptions hub_options(FakeHub& hub, const std::string& cache_path = "") {
  PolicyCacheOptions o;
  o.fetch = hub.fetcher();
  o.cache_path = cache_path;
  o.refresh = 1h;  // tests that want the thread set their own
  o.pod_name = "pod-a";
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
      json{{"fetched_at", format_utc(system_clock::now() - 48h)}, {"policy", policy_json()}}
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
  hub.set(bad);
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
  o.file = dir.write("policy.json", policy_json("pod-b").dump());
  o.pod_name = "pod-a";
  PolicyCache file_cache(o, nullptr);
  st = file_cache.start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(), o.file + ": the policy is for pod 'pod-b'");
}

TEST(PolicyCacheTest, NeedsExactlyOneSource) {
  PolicyCache neither(PolicyCacheOptions{}, nullptr);
  EXPECT_CONTAINS(neither.start().message(), "not neither");
  FakeHub hub;
  auto o = hub_options(hub);
  o.file = "policy.yaml";
  PolicyCache both(o, nullptr);
  EXPECT_CONTAINS(both.start().message(), "not both");
}

// ---- File mode -----------------------------------------------------------------------

std::string yaml_policy(const std::string& alice_role) {
  return "pod: pod-a\nusers:\n  - {username: alice, public_key: " + key('a') +
         "}\nroles:\n  - {username: alice, role: " + alice_role + "}\ngrants: []\n";
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
  o.file = dir.write("policy.yaml", yaml_policy("general-modeller"));
  o.pod_name = "pod-a";
  PolicyCache cache(o, nullptr);
  ASSERT_TRUE(cache.start().ok());
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
  auto first = current(cache);
  EXPECT_EQ(current(cache), first);  // unchanged file: the same policy object

  rewrite(o.file, yaml_policy("super-modeller"));
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);

  // A broken edit keeps the last good policy.
  rewrite(o.file, yaml_policy("admin"));
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);
  EXPECT_EQ(cache.refresh_now().code(), StatusCode::kInvalidArgument);
  std::filesystem::remove(o.file);
  EXPECT_EQ(role(cache, "alice"), Role::kSuperModeller);

  // Fixed: picked up again.
  std::ofstream(o.file) << yaml_policy("general-modeller");
  EXPECT_EQ(role(cache, "alice"), Role::kGeneralModeller);
}

TEST(PolicyCacheTest, FileModeBadFileAtStartIsAnError) {
  testing::TempDir dir;
  PolicyCacheOptions o;
  o.file = dir.write("policy.yaml", yaml_policy("admin"));
  PolicyCache cache(o, nullptr);
  Status st = cache.start();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(),
                  o.file + ": roles[0]: role 'admin' is not general-modeller or super-modeller");

  PolicyCacheOptions missing;
  missing.file = (dir.path() / "none.yaml").string();
  PolicyCache cache2(missing, nullptr);
  EXPECT_EQ(cache2.start().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedpod::worker
