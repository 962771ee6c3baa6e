// Tests for fedpod/worker/audit.h: the hash chain, verification naming the broken
// line for each kind of tampering, reopening, torn last lines and file mode.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "fedpod/common/sha256.h"
#include "fedpod/worker/audit.h"
#include "testutil.h"

namespace fedpod::worker {
namespace {

using nlohmann::json;

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  for (const auto& l : lines) out << l << "\n";
}

json decision(int i) {
  return {{"event", "job_start"},
          {"user", "alice"},
          {"model", "alice/net"},
          {"version", i},
          {"decision", i % 2 ? "allowed" : "refused"},
          {"reason", i % 2 ? "ok" : "no_grant"},
          {"job", "job-" + std::to_string(i)}};
}

std::unique_ptr<AuditLog> open_log(const std::string& path) {
  auto log = AuditLog::open(path, nullptr);
  EXPECT_TRUE(log.ok()) << log.status().to_string();
  return log.ok() ? std::move(log).value() : nullptr;
}

// A log of `n` entries at dir/audit.log.
std::string make_log(const testing::TempDir& dir, int n) {
  const std::string path = (dir.path() / "audit.log").string();
  auto log = open_log(path);
  for (int i = 1; i <= n; ++i) EXPECT_TRUE(log->append(decision(i)).ok());
  return path;
}

TEST(AuditLogTest, AppendsAChainThatVerifies) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "audit.log").string();
  auto log = open_log(path);
  ASSERT_TRUE(log);
  EXPECT_EQ(log->entries(), 0);
  EXPECT_EQ(log->last_hash(), std::string(64, '0'));
  for (int i = 1; i <= 5; ++i) ASSERT_TRUE(log->append(decision(i)).ok());
  EXPECT_EQ(log->entries(), 5);

  // Each line: the caller's fields, seq, time, prev, and hash over prev + "\n" + the rest.
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 5u);
  std::string prev(64, '0');
  const std::regex iso(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z)");
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(i);
    json e = json::parse(lines[i]);
    EXPECT_EQ(e["seq"], int64_t(i + 1));
    EXPECT_EQ(e["prev"], prev);
    EXPECT_EQ(e["user"], "alice");
    EXPECT_EQ(e["job"], "job-" + std::to_string(i + 1));
    EXPECT_TRUE(std::regex_match(e["time"].get<std::string>(), iso)) << e["time"];
    const std::string hash = e["hash"];
    e.erase("hash");
    EXPECT_EQ(hash, sha256_hex(prev + "\n" + e.dump()));
    prev = hash;
  }
  EXPECT_EQ(log->last_hash(), prev);

  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 5);
  EXPECT_EQ(r.last_hash, prev);
  EXPECT_EQ(r.error, "");
}

TEST(AuditLogTest, EmptyLogVerifies) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 0);
  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 0);
  EXPECT_EQ(r.last_hash, std::string(64, '0'));
}

TEST(AuditLogTest, CreatesTheFileWithMode0600) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 1);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(AuditLogTest, ReopenContinuesTheChain) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 2);
  const std::string hash2 = json::parse(lines_of(path)[1])["hash"];
  {
    auto log = open_log(path);
    ASSERT_TRUE(log);
    EXPECT_EQ(log->entries(), 2);
    EXPECT_EQ(log->last_hash(), hash2);
    ASSERT_TRUE(log->append(decision(3)).ok());
  }
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 3u);
  json third = json::parse(lines[2]);
  EXPECT_EQ(third["seq"], 3);
  EXPECT_EQ(third["prev"], hash2);
  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 3);
}

TEST(AuditLogTest, ConcurrentAppendsStayOneChain) {
  testing::TempDir dir;
  const std::string path = (dir.path() / "audit.log").string();
  auto log = open_log(path);
  ASSERT_TRUE(log);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i)
        EXPECT_TRUE(log->append({{"event", "t" + std::to_string(t)}, {"i", i}}).ok());
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(log->entries(), 100);
  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 100);
}

TEST(AuditLogTest, RejectsFieldsItCannotChain) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 0);
  auto log = open_log(path);
  ASSERT_TRUE(log);
  for (const char* reserved : {"seq", "time", "prev", "hash"}) {
    Status st = log->append({{"event", "x"}, {reserved, 1}});
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_CONTAINS(st.message(), std::string("field '") + reserved + "' is set by the log");
  }
  Status st = log->append(json::array({1, 2}));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(st.message(), "must be a JSON object");
  st = log->append({{"user", std::string("\xff\xfe")}});  // not UTF-8
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(log->entries(), 0);
  EXPECT_TRUE(log->append(decision(1)).ok());
  EXPECT_TRUE(verify_audit_log(path).ok);
}

// ---- Tampering: each break is named by its line ----------------------------------------

TEST(AuditVerifyTest, EditedMiddleEntryFailsAtItsLine) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 5);
  auto lines = lines_of(path);
  json e = json::parse(lines[2]);
  ASSERT_EQ(e["decision"], "allowed");
  e["decision"] = "refused";
  e["user"] = "mallory";
  lines[2] = e.dump();
  write_lines(path, lines);

  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "line 3: edited entry (hash mismatch)");
  EXPECT_EQ(r.entries, 2);  // what verified before the break

  // The worker will not append to a broken log.
  auto log = AuditLog::open(path, nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kInvalidArgument);
  EXPECT_CONTAINS(log.status().message(), "audit log " + path + ": line 3: edited entry");
}

TEST(AuditVerifyTest, EditedEntryWithRecomputedHashBreaksTheNextLink) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 4);
  auto lines = lines_of(path);
  json e = json::parse(lines[1]);
  e["user"] = "mallory";
  e.erase("hash");
  e["hash"] = sha256_hex(e["prev"].get<std::string>() + "\n" + e.dump());
  lines[1] = e.dump();
  write_lines(path, lines);

  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "line 3: broken link: prev is");
  EXPECT_CONTAINS(r.error, "the entry before it (seq 2) has hash");
}

TEST(AuditVerifyTest, DeletedLineIsASeqGap) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 5);
  auto lines = lines_of(path);
  lines.erase(lines.begin() + 2);
  write_lines(path, lines);

  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "line 3: seq gap: expected seq 3, found 4");
  EXPECT_FALSE(AuditLog::open(path, nullptr).ok());
}

TEST(AuditVerifyTest, DeletedFirstLineBreaksTheGenesisLink) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 3);
  auto lines = lines_of(path);
  // Delete entry 1 and renumber entry 2 as 1, recomputing its hash: only prev is wrong.
  lines.erase(lines.begin());
  json e = json::parse(lines[0]);
  e["seq"] = 1;
  e.erase("hash");
  e["hash"] = sha256_hex(e["prev"].get<std::string>() + "\n" + e.dump());
  lines[0] = e.dump();
  write_lines(path, lines);
  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "line 1: broken link");
  EXPECT_CONTAINS(r.error, "64 zeros");
}

TEST(AuditVerifyTest, GarbageLinesAreNamed) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 3);
  auto lines = lines_of(path);
  lines[1] = "this is not json";
  write_lines(path, lines);
  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "line 2: not JSON");

  lines = lines_of(path);
  lines[1] = "";
  write_lines(path, lines);
  r = verify_audit_log(path);
  EXPECT_CONTAINS(r.error, "line 2: empty line");

  lines[1] = R"({"seq": 2})";
  write_lines(path, lines);
  r = verify_audit_log(path);
  EXPECT_CONTAINS(r.error, "line 2: edited entry: it has no \"hash\" string");
}

TEST(AuditVerifyTest, MissingFile) {
  testing::TempDir dir;
  AuditVerifyResult r = verify_audit_log((dir.path() / "none.log").string());
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "cannot read");
}

// ---- Crashes mid-append --------------------------------------------------------------

TEST(AuditLogTest, TornLastLineIsCutOnOpen) {
  testing::TempDir dir;
  const std::string path = make_log(dir, 3);
  const auto whole = std::filesystem::file_size(path);
  const std::string hash3 = json::parse(lines_of(path)[2])["hash"];
  {
    std::ofstream out(path, std::ios::app | std::ios::binary);
    out << R"({"event":"job_start","seq":4,"ti)";  // the crash came mid-write
  }
  AuditVerifyResult r = verify_audit_log(path);
  EXPECT_FALSE(r.ok);
  EXPECT_CONTAINS(r.error, "line 4: torn last line");
  EXPECT_EQ(r.entries, 3);

  auto log = open_log(path);
  ASSERT_TRUE(log);
  EXPECT_EQ(std::filesystem::file_size(path), whole);
  EXPECT_EQ(log->entries(), 3);
  EXPECT_EQ(log->last_hash(), hash3);
  ASSERT_TRUE(log->append(decision(4)).ok());
  r = verify_audit_log(path);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_EQ(r.entries, 4);
  EXPECT_EQ(json::parse(lines_of(path)[3])["prev"], hash3);
}

TEST(AuditLogTest, TornFirstLineLeavesAnEmptyLog) {
  testing::TempDir dir;
  const std::string path = dir.write("audit.log", R"({"seq":1,"ev)");
  auto log = open_log(path);
  ASSERT_TRUE(log);
  EXPECT_EQ(log->entries(), 0);
  EXPECT_EQ(std::filesystem::file_size(path), 0u);
  ASSERT_TRUE(log->append(decision(1)).ok());
  EXPECT_TRUE(verify_audit_log(path).ok);
}

TEST(AuditLogTest, UnopenablePathIsUnavailable) {
  testing::TempDir dir;
  auto log = AuditLog::open((dir.path() / "no" / "such" / "dir" / "audit.log").string(), nullptr);
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(log.status().code(), StatusCode::kUnavailable);
  EXPECT_CONTAINS(log.status().message(), "cannot open");
}

}  // namespace
}  // namespace fedpod::worker
