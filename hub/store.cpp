#include "store.h"

#include <sqlite3.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "util.h"

namespace fedpod::hub::detail {
namespace {
namespace fs = std::filesystem;

// Schema migrations, applied in order; migration i (1-based) moves the schema from
// version i-1 to i. Append new ones; never edit one that has shipped.
const char* const kMigrations[] = {
    // 1: users, models, versions, their sources, pods.
    R"sql(
    CREATE TABLE users (
      id INTEGER PRIMARY KEY,
      username TEXT NOT NULL UNIQUE,
      public_key TEXT NOT NULL,
      token_sha256 TEXT NOT NULL UNIQUE,
      created_at TEXT NOT NULL);
    CREATE TABLE models (
      id INTEGER PRIMARY KEY,
      owner_id INTEGER NOT NULL REFERENCES users(id),
      ref TEXT NOT NULL,
      visibility TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
      description TEXT NOT NULL,
      created_at TEXT NOT NULL,
      UNIQUE (owner_id, ref));
    CREATE TABLE versions (
      id INTEGER PRIMARY KEY,
      model_id INTEGER NOT NULL REFERENCES models(id),
      version INTEGER NOT NULL,
      sha256 TEXT NOT NULL,
      size INTEGER NOT NULL,
      format TEXT NOT NULL CHECK (format IN ('torchscript', 'plugin')),
      description TEXT NOT NULL,
      created_at TEXT NOT NULL,
      UNIQUE (model_id, version));
    CREATE TABLE sources (
      version_id INTEGER NOT NULL REFERENCES versions(id),
      name TEXT NOT NULL,
      content BLOB NOT NULL,
      PRIMARY KEY (version_id, name));
    CREATE TABLE pods (
      id INTEGER PRIMARY KEY,
      name TEXT NOT NULL UNIQUE,
      owner_id INTEGER NOT NULL REFERENCES users(id),
      address TEXT NOT NULL,
      public_key TEXT NOT NULL,
      schema_json TEXT NOT NULL,
      created_at TEXT NOT NULL);
    )sql",
    // 2: the per-owner listing index.
    R"sql(
    CREATE INDEX models_visibility ON models (visibility, owner_id);
    )sql",
    // 3: the permission model: roles on pods, and access requests for one model
    //    version on one pod, decided by the pod's owner. A request keeps the sha256
    //    it was made for, so an approval names exact bytes. At most one pending
    //    request per (requester, pod, version): the partial unique index.
    R"sql(
    CREATE TABLE roles (
      pod_id INTEGER NOT NULL REFERENCES pods(id),
      user_id INTEGER NOT NULL REFERENCES users(id),
      role TEXT NOT NULL CHECK (role IN ('general-modeller', 'super-modeller')),
      granted_by INTEGER NOT NULL REFERENCES users(id),
      granted_at TEXT NOT NULL,
      PRIMARY KEY (pod_id, user_id));
    CREATE TABLE access_requests (
      id INTEGER PRIMARY KEY,
      pod_id INTEGER NOT NULL REFERENCES pods(id),
      user_id INTEGER NOT NULL REFERENCES users(id),
      version_id INTEGER NOT NULL REFERENCES versions(id),
      sha256 TEXT NOT NULL,
      purpose TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'revoked')),
      reason TEXT NOT NULL DEFAULT '',
      expires_at TEXT NULL,
      created_at TEXT NOT NULL,
      decided_at TEXT NULL,
      decided_by INTEGER NULL REFERENCES users(id));
    CREATE INDEX access_requests_pod_status ON access_requests (pod_id, status);
    CREATE UNIQUE INDEX access_requests_one_pending
      ON access_requests (user_id, pod_id, version_id) WHERE status = 'pending';
    )sql",
    // 4: pod tokens: a read-only token per pod, for the pod itself to fetch its
    //    policy with (its owner's token never sits on the pod). Only the hash is kept.
    R"sql(
    CREATE TABLE pod_tokens (
      pod_id INTEGER PRIMARY KEY REFERENCES pods(id),
      token_sha256 TEXT NOT NULL UNIQUE,
      created_at TEXT NOT NULL);
    )sql",
    // 5: audit heads: each pod's signed audit chain heads, append-only, so that a log
    //    cut at its end, replaced or deleted on the pod no longer matches what the pod
    //    published before. `reset` marks a head the pod's owner started anew.
    R"sql(
    CREATE TABLE audit_heads (
      id INTEGER PRIMARY KEY,
      pod_id INTEGER NOT NULL REFERENCES pods(id),
      entries INTEGER NOT NULL,
      head TEXT NOT NULL,
      reset INTEGER NOT NULL,
      signing_key TEXT NOT NULL,
      document TEXT NOT NULL,
      published_at TEXT NOT NULL);
    CREATE INDEX audit_heads_pod ON audit_heads (pod_id, id);
    )sql",
};

class SqlError : public std::runtime_error {
 public:
  SqlError(sqlite3* db, const std::string& what)
      : std::runtime_error(what + ": " + sqlite3_errmsg(db)), code(sqlite3_extended_errcode(db)) {}
  int code;
};

// A prepared statement; binds by position (1-based), steps, reads columns.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) throw SqlError(db, "prepare");
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind_blob(int i, const std::string& v) {
    sqlite3_bind_blob(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // NULL when `v` is nullopt.
  Stmt& bind(int i, const std::optional<std::string>& v) {
    if (v) return bind(i, *v);
    sqlite3_bind_null(s_, i);
    return *this;
  }
  // True while a row is available.
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw SqlError(db_, "step");
  }
  int64_t i64(int c) { return sqlite3_column_int64(s_, c); }
  std::string str(int c) {
    const void* p = sqlite3_column_blob(s_, c);
    int n = sqlite3_column_bytes(s_, c);
    return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
  }
  std::optional<std::string> opt_str(int c) {
    if (sqlite3_column_type(s_, c) == SQLITE_NULL) return std::nullopt;
    return str(c);
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
};

void exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    throw std::runtime_error(std::string("sql: ") + msg);
  }
}

// BEGIN IMMEDIATE ... COMMIT, rolled back when destroyed uncommitted.
class Transaction {
 public:
  explicit Transaction(sqlite3* db) : db_(db) { exec(db_, "BEGIN IMMEDIATE"); }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  void commit() {
    exec(db_, "COMMIT");
    done_ = true;
  }

 private:
  sqlite3* db_;
  bool done_ = false;
};

bool is_unique_violation(const SqlError& e) {
  return e.code == SQLITE_CONSTRAINT_UNIQUE || e.code == SQLITE_CONSTRAINT_PRIMARYKEY;
}

const char* kModelColumns =
    "SELECT m.id, m.owner_id, u.username, m.ref, m.visibility, m.description, m.created_at "
    "FROM models m JOIN users u ON u.id = m.owner_id ";

Model read_model(Stmt& s) {
  Model m;
  m.id = s.i64(0);
  m.owner_id = s.i64(1);
  m.username = s.str(2);
  m.model_ref = s.str(3);
  m.visibility = s.str(4);
  m.description = s.str(5);
  m.created_at = s.str(6);
  return m;
}

}  // namespace

Store::Store(std::string data_dir) : data_dir_(std::move(data_dir)) {}

Store::~Store() {
  if (db_) sqlite3_close(db_);
}

Status Store::open() {
  std::lock_guard<std::mutex> lock(mu_);
  if (data_dir_.empty()) return Status::invalid("hub: no data directory given");
  std::error_code ec;
  const fs::path artifacts = fs::path(data_dir_) / "artifacts";
  fs::create_directories(artifacts, ec);
  if (ec) return Status::invalid("hub: cannot create " + data_dir_ + "/artifacts: " + ec.message());
  // Temp files of artifact writes that a crash interrupted (write_file_durably names
  // them ".<name>.tmp-XXXXXX"): never renamed into place, so no version names them,
  // and with one hub per data directory none is being written now.
  removed_temp_files_ = 0;
  for (const auto& shard : fs::directory_iterator(artifacts, ec)) {
    std::error_code shard_ec;
    if (shard.is_directory(shard_ec)) removed_temp_files_ += remove_interrupted_writes(shard.path().string());
  }
  // Directory entries an earlier run made and may not have fsynced before it died
  // (artifacts/ itself, a shard directory created just before a crash): durable now.
  for (const std::string& dir : {data_dir_, artifacts.string()}) {
    std::string err = fsync_dir(dir);
    if (!err.empty()) return Status::internal("hub: " + err);
  }
  std::string path = (fs::path(data_dir_) / "hub.db").string();
  if (sqlite3_open_v2(path.c_str(), &db_,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    return Status::internal("hub: cannot open " + path + ": " + msg);
  }
  sqlite3_busy_timeout(db_, 5000);
  try {
    exec(db_, "PRAGMA journal_mode = WAL");
    exec(db_, "PRAGMA synchronous = FULL");  // a committed version survives power loss
    exec(db_, "PRAGMA foreign_keys = ON");
  } catch (const std::exception& e) {
    return Status::internal("hub: " + path + ": " + e.what());
  }
  Status migrated = migrate();
  open_ = migrated.ok();
  return migrated;
}

bool Store::is_open() {
  std::lock_guard<std::mutex> lock(mu_);
  return open_;
}

Counts Store::counts() {
  std::lock_guard<std::mutex> lock(mu_);
  Counts c;
  if (!open_) return c;
  Stmt s(db_,
         "SELECT (SELECT COUNT(*) FROM models), (SELECT COUNT(*) FROM versions), "
         "(SELECT COUNT(*) FROM pods), "
         "(SELECT COUNT(*) FROM access_requests WHERE status = 'pending')");
  if (s.step()) {
    c.models = s.i64(0);
    c.versions = s.i64(1);
    c.pods = s.i64(2);
    c.pending_requests = s.i64(3);
  }
  return c;
}

Status Store::migrate() {
  try {
    exec(db_,
         "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT "
         "NULL)");
    int64_t current = 0;
    {
      Stmt s(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_version");
      if (s.step()) current = s.i64(0);
    }
    const int64_t latest = static_cast<int64_t>(sizeof kMigrations / sizeof kMigrations[0]);
    if (current > latest)
      return Status::failed_precondition(
          "hub: " + data_dir_ + " has schema version " + std::to_string(current) +
          ", newer than this fedpod knows (" + std::to_string(latest) + ")");
    for (int64_t v = current + 1; v <= latest; ++v) {
      Transaction tx(db_);
      exec(db_, kMigrations[v - 1]);
      Stmt(db_, "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)")
          .bind(1, v)
          .bind(2, now_utc())
          .step();
      tx.commit();
    }
  } catch (const std::exception& e) {
    return Status::internal("hub: migrating " + data_dir_ + ": " + e.what());
  }
  return Status();
}

StatusOr<std::string> Store::create_user(const std::string& username,
                                         const std::string& public_key) {
  std::lock_guard<std::mutex> lock(mu_);
  {
    // A public key identifies one user: pods map keys to users, and a key claimed by
    // two users identifies neither (a squatter could lock its owner out of every pod).
    Stmt s(db_, "SELECT username FROM users WHERE public_key = ?");
    s.bind(1, public_key);
    if (s.step() && s.str(0) != username) {
      return Status::failed_precondition(
          "this public key is already registered to another user; every user needs their own key pair "
          "(fedpod keys generate)");
    }
  }
  std::string token = random_token();
  try {
    Stmt(db_,
         "INSERT INTO users (username, public_key, token_sha256, created_at) VALUES (?, ?, ?, ?)")
        .bind(1, username)
        .bind(2, public_key)
        .bind(3, sha256_hex(token))
        .bind(4, now_utc())
        .step();
  } catch (const SqlError& e) {
    if (is_unique_violation(e))
      return Status::failed_precondition("user '" + username + "' already exists");
    throw;
  }
  return token;
}

std::optional<User> Store::user_by_token(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT id, username, public_key FROM users WHERE token_sha256 = ?");
  s.bind(1, sha256_hex(token));
  if (!s.step()) return std::nullopt;
  return User{s.i64(0), s.str(1), s.str(2)};
}

std::optional<User> Store::find_user(const std::string& username) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT id, username, public_key FROM users WHERE username = ?");
  s.bind(1, username);
  if (!s.step()) return std::nullopt;
  return User{s.i64(0), s.str(1), s.str(2)};
}

std::vector<User> Store::list_users() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT id, username, public_key FROM users ORDER BY username");
  std::vector<User> out;
  while (s.step()) out.push_back(User{s.i64(0), s.str(1), s.str(2)});
  return out;
}

std::string Store::artifact_path(const std::string& sha256) const {
  return (fs::path(data_dir_) / "artifacts" / sha256.substr(0, 2) / sha256).string();
}

StatusOr<std::string> Store::begin_upload(int* fd) {
  const fs::path dir = fs::path(data_dir_) / "artifacts" / "uploads";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::internal("hub: cannot create " + dir.string() + ": " + ec.message());
  std::string path = (dir / ".upload.tmp-XXXXXX").string();
  *fd = ::mkstemp(path.data());
  if (*fd < 0) return Status::internal("hub: cannot create a file in " + dir.string() + ": " + std::strerror(errno));
  return path;
}

StatusOr<Version> Store::push(const NewVersion& v) {
  const bool streamed = v.artifact == nullptr;
  const std::string sha = streamed ? v.artifact_sha256 : sha256_hex(*v.artifact);
  const int64_t size = streamed ? v.artifact_size : static_cast<int64_t>(v.artifact->size());
  std::lock_guard<std::mutex> lock(mu_);

  // 1. The artifact, durably. Same bytes, same path: an existing file was renamed
  //    into place only after its fsync, so it is whole and is reused.
  std::string path = artifact_path(sha);
  fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    bool new_dir = !fs::exists(dir, ec);
    fs::create_directories(dir, ec);
    if (ec) return Status::internal("hub: cannot create " + dir.string() + ": " + ec.message());
    if (new_dir) {
      std::string err = fsync_dir(dir.parent_path().string());
      if (!err.empty()) return Status::internal("hub: " + err);
    }
    if (streamed) {
      // Fsynced by the uploader; the rename and the directory's fsync make it durable.
      if (std::rename(v.artifact_file.c_str(), path.c_str()) != 0) {
        return Status::internal("hub: cannot move the upload to " + path + ": " + std::strerror(errno));
      }
      std::string err = fsync_dir(dir.string());
      if (!err.empty()) return Status::internal("hub: " + err);
    } else {
      std::string err = write_file_durably(path, *v.artifact);
      if (!err.empty()) return Status::internal("hub: " + err);
    }
  } else {
    if (streamed) fs::remove(v.artifact_file, ec);  // the same bytes are stored already
    // Whole (renamed into place only after its fsync), but a run that died between
    // the rename and the directory's fsync left its entry not yet durable.
    std::string err = fsync_dir(dir.string());
    if (!err.empty()) return Status::internal("hub: " + err);
  }

  // 2. The row, in one transaction. A crash before COMMIT leaves the artifact file
  //    above as an orphan (no row names it); that is acceptable and never served.
  Version out;
  out.username = v.owner->username;
  out.model_ref = v.model_ref;
  out.sha256 = sha;
  out.size = size;
  out.format = v.format;
  out.description = v.description;
  out.created_at = now_utc();
  Transaction tx(db_);
  int64_t model_id = 0;
  {
    Stmt s(db_, "SELECT id FROM models WHERE owner_id = ? AND ref = ?");
    s.bind(1, v.owner->id).bind(2, v.model_ref);
    if (s.step()) model_id = s.i64(0);
  }
  if (model_id == 0) {
    Stmt(db_,
         "INSERT INTO models (owner_id, ref, visibility, description, created_at) VALUES (?, ?, ?, "
         "?, ?)")
        .bind(1, v.owner->id)
        .bind(2, v.model_ref)
        .bind(3, v.visibility.empty() ? std::string("private") : v.visibility)
        .bind(4, v.description)
        .bind(5, out.created_at)
        .step();
    model_id = sqlite3_last_insert_rowid(db_);
  } else {
    Stmt s(db_,
           "UPDATE models SET description = ?, visibility = COALESCE(NULLIF(?, ''), visibility) "
           "WHERE id = ?");
    s.bind(1, v.description).bind(2, v.visibility).bind(3, model_id).step();
  }
  {
    Stmt s(db_, "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model_id = ?");
    s.bind(1, model_id);
    s.step();
    out.version = s.i64(0);
  }
  Stmt(db_,
       "INSERT INTO versions (model_id, version, sha256, size, format, description, created_at) "
       "VALUES (?, ?, ?, ?, ?, ?, ?)")
      .bind(1, model_id)
      .bind(2, out.version)
      .bind(3, sha)
      .bind(4, out.size)
      .bind(5, out.format)
      .bind(6, out.description)
      .bind(7, out.created_at)
      .step();
  out.id = sqlite3_last_insert_rowid(db_);
  for (const auto& [name, content] : v.sources)
    Stmt(db_, "INSERT INTO sources (version_id, name, content) VALUES (?, ?, ?)")
        .bind(1, out.id)
        .bind(2, name)
        .bind_blob(3, content)
        .step();
  tx.commit();
  return out;
}

std::vector<Version> Store::query_versions(const Model& m, const char* tail, int64_t number) {
  std::string sql =
      "SELECT id, version, sha256, size, format, description, created_at FROM versions WHERE "
      "model_id = ? ";
  sql += tail;
  Stmt s(db_, sql.c_str());
  s.bind(1, m.id);
  if (number > 0) s.bind(2, number);
  std::vector<Version> out;
  while (s.step()) {
    Version v;
    v.id = s.i64(0);
    v.username = m.username;
    v.model_ref = m.model_ref;
    v.version = s.i64(1);
    v.sha256 = s.str(2);
    v.size = s.i64(3);
    v.format = s.str(4);
    v.description = s.str(5);
    v.created_at = s.str(6);
    out.push_back(std::move(v));
  }
  return out;
}

std::optional<Version> Store::version_locked(const Model& m, int64_t number) {
  auto vs = number > 0 ? query_versions(m, "AND version = ?", number)
                       : query_versions(m, "ORDER BY version DESC LIMIT 1", 0);
  if (vs.empty()) return std::nullopt;
  return vs.front();
}

std::vector<Model> Store::list_models(int64_t viewer_id, const std::string& owner) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql =
      std::string(kModelColumns) + "WHERE (m.visibility = 'public' OR m.owner_id = ?) ";
  if (!owner.empty()) sql += "AND u.username = ? ";
  sql += "ORDER BY u.username, m.ref";
  Stmt s(db_, sql.c_str());
  s.bind(1, viewer_id);
  if (!owner.empty()) s.bind(2, owner);
  std::vector<Model> out;
  while (s.step()) out.push_back(read_model(s));
  for (auto& m : out) m.latest = version_locked(m, 0);
  return out;
}

std::optional<Model> Store::find_model(const std::string& username, const std::string& ref) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kModelColumns) + "WHERE u.username = ? AND m.ref = ?").c_str());
  s.bind(1, username).bind(2, ref);
  if (!s.step()) return std::nullopt;
  Model m = read_model(s);
  m.latest = version_locked(m, 0);
  return m;
}

std::vector<Version> Store::versions(const Model& m) {
  std::lock_guard<std::mutex> lock(mu_);
  return query_versions(m, "ORDER BY version", 0);
}

std::optional<Version> Store::version(const Model& m, int64_t number) {
  std::lock_guard<std::mutex> lock(mu_);
  return version_locked(m, number);
}

Files Store::sources(const Version& v) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT name, content FROM sources WHERE version_id = ? ORDER BY name");
  s.bind(1, v.id);
  Files out;
  while (s.step()) out.emplace_back(s.str(0), s.str(1));
  return out;
}

Status Store::create_pod(const User& owner, const Pod& pod) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    Stmt(db_,
         "INSERT INTO pods (name, owner_id, address, public_key, schema_json, created_at) "
         "VALUES (?, ?, ?, ?, ?, ?)")
        .bind(1, pod.name)
        .bind(2, owner.id)
        .bind(3, pod.address)
        .bind(4, pod.public_key)
        .bind(5, pod.schema_json)
        .bind(6, pod.created_at)
        .step();
  } catch (const SqlError& e) {
    if (is_unique_violation(e))
      return Status::failed_precondition("pod '" + pod.name + "' already exists");
    throw;
  }
  return Status();
}

namespace {
const char* kPodColumns =
    "SELECT p.name, u.username, p.address, p.public_key, p.schema_json, p.created_at, p.id, "
    "p.owner_id FROM pods p JOIN users u ON u.id = p.owner_id ";
Pod read_pod(Stmt& s) {
  return Pod{s.str(0), s.str(1), s.str(2), s.str(3), s.str(4), s.str(5), s.i64(6), s.i64(7)};
}
}  // namespace

std::vector<Pod> Store::list_pods() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kPodColumns) + "ORDER BY p.name").c_str());
  std::vector<Pod> out;
  while (s.step()) out.push_back(read_pod(s));
  return out;
}

std::string Store::rotate_pod_token(const Pod& pod) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::string token = std::string(kPodTokenPrefix) + random_token();
  Stmt(db_,
       "INSERT INTO pod_tokens (pod_id, token_sha256, created_at) VALUES (?, ?, ?) "
       "ON CONFLICT (pod_id) DO UPDATE SET token_sha256 = excluded.token_sha256, created_at = excluded.created_at")
      .bind(1, pod.id)
      .bind(2, sha256_hex(token))
      .bind(3, now_utc())
      .step();
  return token;
}

std::optional<std::string> Store::pod_by_token(const std::string& token) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, "SELECT p.name FROM pod_tokens t JOIN pods p ON p.id = t.pod_id WHERE t.token_sha256 = ?");
  s.bind(1, sha256_hex(token));
  if (!s.step()) return std::nullopt;
  return s.str(0);
}

StatusOr<bool> Store::add_audit_head(const Pod& pod, const AuditHead& h) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt last(db_,
            "SELECT entries, head, signing_key FROM audit_heads WHERE pod_id = ? ORDER BY id DESC LIMIT 1");
  last.bind(1, pod.id);
  if (last.step() && !h.reset) {
    const int64_t entries = last.i64(0);
    const std::string head = last.str(1), key = last.str(2);
    if (key != h.signing_key) {
      return Status::failed_precondition(
          "this head is signed with another key than pod '" + pod.name +
          "' published its earlier heads with; a new key comes only with a reset of the audit log (fedpod worker "
          "--reset-audit-log REASON)");
    }
    if (h.entries < entries) {
      return Status::failed_precondition("pod '" + pod.name + "' published a head at entry " +
                                         std::to_string(entries) + " before; a head at entry " +
                                         std::to_string(h.entries) +
                                         " means its audit log shrank (cut, or replaced)");
    }
    if (h.entries == entries) {
      if (h.head == head) return false;  // already recorded
      return Status::failed_precondition("pod '" + pod.name + "' published another hash for entry " +
                                         std::to_string(entries) + " before: its audit log was replaced");
    }
  }
  Stmt(db_,
       "INSERT INTO audit_heads (pod_id, entries, head, reset, signing_key, document, published_at) "
       "VALUES (?, ?, ?, ?, ?, ?, ?)")
      .bind(1, pod.id)
      .bind(2, h.entries)
      .bind(3, h.head)
      .bind(4, int64_t{h.reset ? 1 : 0})
      .bind(5, h.signing_key)
      .bind(6, h.document)
      .bind(7, now_utc())
      .step();
  return true;
}

std::vector<AuditHead> Store::audit_heads(const Pod& pod) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT entries, head, reset, signing_key, document, published_at FROM audit_heads WHERE pod_id = ? "
         "ORDER BY id");
  s.bind(1, pod.id);
  std::vector<AuditHead> out;
  while (s.step()) out.push_back({s.i64(0), s.str(1), s.i64(2) != 0, s.str(3), s.str(4), s.str(5)});
  return out;
}

std::optional<Pod> Store::find_pod(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kPodColumns) + "WHERE p.name = ?").c_str());
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return read_pod(s);
}

// --- Roles and access requests ---

namespace {

const char* kRoleColumns =
    "SELECT p.name, u.username, r.role, g.username, r.granted_at FROM roles r "
    "JOIN pods p ON p.id = r.pod_id JOIN users u ON u.id = r.user_id "
    "JOIN users g ON g.id = r.granted_by ";

Role read_role(Stmt& s) { return Role{s.str(0), s.str(1), s.str(2), s.str(3), s.str(4)}; }

const char* kRequestColumns =
    "SELECT ar.id, p.name, p.owner_id, po.username, ar.user_id, ru.username, mu.username, m.ref, "
    "v.version, ar.sha256, v.format, ar.purpose, ar.status, ar.reason, ar.expires_at, "
    "ar.created_at, ar.decided_at, du.username FROM access_requests ar "
    "JOIN pods p ON p.id = ar.pod_id JOIN users po ON po.id = p.owner_id "
    "JOIN users ru ON ru.id = ar.user_id JOIN versions v ON v.id = ar.version_id "
    "JOIN models m ON m.id = v.model_id JOIN users mu ON mu.id = m.owner_id "
    "LEFT JOIN users du ON du.id = ar.decided_by ";

AccessRequest read_request(Stmt& s) {
  AccessRequest r;
  r.id = s.i64(0);
  r.pod = s.str(1);
  r.pod_owner_id = s.i64(2);
  r.pod_owner = s.str(3);
  r.requester_id = s.i64(4);
  r.requester = s.str(5);
  r.model_user = s.str(6);
  r.model_ref = s.str(7);
  r.version = s.i64(8);
  r.sha256 = s.str(9);
  r.format = s.str(10);
  r.purpose = s.str(11);
  r.status = s.str(12);
  r.reason = s.str(13);
  r.expires_at = s.opt_str(14);
  r.created_at = s.str(15);
  r.decided_at = s.opt_str(16);
  r.decided_by = s.opt_str(17);
  return r;
}

}  // namespace

StatusOr<Role> Store::grant_role(const Pod& pod, const User& user, const std::string& role,
                                 const User& by) {
  std::lock_guard<std::mutex> lock(mu_);
  Role out{pod.name, user.username, role, by.username, now_utc()};
  Stmt(db_,
       "INSERT INTO roles (pod_id, user_id, role, granted_by, granted_at) VALUES (?, ?, ?, ?, ?) "
       "ON CONFLICT (pod_id, user_id) DO UPDATE SET role = excluded.role, "
       "granted_by = excluded.granted_by, granted_at = excluded.granted_at")
      .bind(1, pod.id)
      .bind(2, user.id)
      .bind(3, role)
      .bind(4, by.id)
      .bind(5, out.granted_at)
      .step();
  return out;
}

Status Store::revoke_role(const Pod& pod, const User& user) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt(db_, "DELETE FROM roles WHERE pod_id = ? AND user_id = ?")
      .bind(1, pod.id)
      .bind(2, user.id)
      .step();
  if (sqlite3_changes(db_) == 0)
    return Status::not_found("user '" + user.username + "' has no role on pod '" + pod.name + "'");
  return Status();
}

std::vector<Role> Store::roles(const Pod& pod) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kRoleColumns) + "WHERE r.pod_id = ? ORDER BY u.username").c_str());
  s.bind(1, pod.id);
  std::vector<Role> out;
  while (s.step()) out.push_back(read_role(s));
  return out;
}

std::optional<AccessRequest> Store::access_request_locked(int64_t id) {
  Stmt s(db_, (std::string(kRequestColumns) + "WHERE ar.id = ?").c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_request(s);
}

std::optional<AccessRequest> Store::access_request(int64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  return access_request_locked(id);
}

StatusOr<AccessRequest> Store::create_access_request(const Pod& pod, const User& requester,
                                                     const Version& v, const std::string& purpose,
                                                     const std::string& now) {
  std::lock_guard<std::mutex> lock(mu_);
  try {
    Stmt(db_,
         "INSERT INTO access_requests (pod_id, user_id, version_id, sha256, purpose, status, "
         "created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)")
        .bind(1, pod.id)
        .bind(2, requester.id)
        .bind(3, v.id)
        .bind(4, v.sha256)
        .bind(5, purpose)
        .bind(6, now)
        .step();
  } catch (const SqlError& e) {
    if (is_unique_violation(e))
      return Status::failed_precondition(
          "user '" + requester.username + "' already has a pending request for " + v.username +
          "/" + v.model_ref + ":" + std::to_string(v.version) + " on pod '" + pod.name + "'");
    throw;
  }
  auto out = access_request_locked(sqlite3_last_insert_rowid(db_));
  if (!out) return Status::internal("hub: the new access request vanished");
  return *out;
}

std::vector<AccessRequest> Store::list_access_requests(const AccessRequestFilter& f) {
  std::lock_guard<std::mutex> lock(mu_);
  std::string sql = std::string(kRequestColumns) + "WHERE (ar.user_id = ?1 OR p.owner_id = ?1) ";
  if (!f.pod.empty()) sql += "AND p.name = ?2 ";
  if (f.status == "approved")
    sql += "AND ar.status = 'approved' AND (ar.expires_at IS NULL OR ar.expires_at > ?3) ";
  else if (f.status == "expired")
    sql += "AND ar.status = 'approved' AND ar.expires_at IS NOT NULL AND ar.expires_at <= ?3 ";
  else if (!f.status.empty())
    sql += "AND ar.status = ?4 ";
  sql += "ORDER BY ar.id DESC";
  Stmt s(db_, sql.c_str());
  s.bind(1, f.viewer_id);
  if (!f.pod.empty()) s.bind(2, f.pod);
  if (f.status == "approved" || f.status == "expired")
    s.bind(3, f.now);
  else if (!f.status.empty())
    s.bind(4, f.status);
  std::vector<AccessRequest> out;
  while (s.step()) out.push_back(read_request(s));
  return out;
}

StatusOr<AccessRequest> Store::decide(const Decision& d) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction tx(db_);
  auto current = access_request_locked(d.id);
  if (!current) return Status::not_found("no access request " + std::to_string(d.id));
  if (current->status != d.from) {
    std::string status = current->status;
    if (status == "approved" && current->expires_at && *current->expires_at <= d.now)
      status = "expired";
    return Status::failed_precondition("request " + std::to_string(d.id) + " is " + status +
                                       ", not " + d.from);
  }
  Stmt s(db_,
         "UPDATE access_requests SET status = ?, reason = ?, decided_at = ?, decided_by = ?, "
         "expires_at = CASE WHEN ? = 'approved' THEN ? ELSE expires_at END WHERE id = ?");
  s.bind(1, d.to).bind(2, d.reason).bind(3, d.now).bind(4, d.by->id).bind(5, d.to);
  s.bind(6, d.expires_at).bind(7, d.id).step();
  auto out = access_request_locked(d.id);
  tx.commit();
  if (!out) return Status::internal("hub: access request " + std::to_string(d.id) + " vanished");
  return *out;
}

std::vector<AccessRequest> Store::grants(const Pod& pod) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kRequestColumns) + "WHERE ar.pod_id = ? AND ar.status = 'approved' "
                                              "ORDER BY ar.id")
                  .c_str());
  s.bind(1, pod.id);
  std::vector<AccessRequest> out;
  while (s.step()) out.push_back(read_request(s));
  return out;
}

bool Store::reviews_model(int64_t user_id, int64_t model_id) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_,
         "SELECT 1 FROM access_requests ar JOIN pods p ON p.id = ar.pod_id "
         "JOIN versions v ON v.id = ar.version_id WHERE p.owner_id = ? AND v.model_id = ? LIMIT 1");
  s.bind(1, user_id).bind(2, model_id);
  return s.step();
}

}  // namespace fedpod::hub::detail
