#include "store.h"

#include <sqlite3.h>

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
  fs::create_directories(fs::path(data_dir_) / "artifacts", ec);
  if (ec) return Status::invalid("hub: cannot create " + data_dir_ + "/artifacts: " + ec.message());
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
  return migrate();
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
          .bind(2, now_iso8601())
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
  std::string token = random_token();
  try {
    Stmt(db_,
         "INSERT INTO users (username, public_key, token_sha256, created_at) VALUES (?, ?, ?, ?)")
        .bind(1, username)
        .bind(2, public_key)
        .bind(3, sha256_hex(token))
        .bind(4, now_iso8601())
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

std::string Store::artifact_path(const std::string& sha256) const {
  return (fs::path(data_dir_) / "artifacts" / sha256.substr(0, 2) / sha256).string();
}

StatusOr<Version> Store::push(const NewVersion& v) {
  const std::string& bytes = *v.artifact;
  std::string sha = sha256_hex(bytes);
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
    std::string err = write_file_durably(path, bytes);
    if (!err.empty()) return Status::internal("hub: " + err);
  }

  // 2. The row, in one transaction. A crash before COMMIT leaves the artifact file
  //    above as an orphan (no row names it); that is acceptable and never served.
  Version out;
  out.username = v.owner->username;
  out.model_ref = v.model_ref;
  out.sha256 = sha;
  out.size = static_cast<int64_t>(bytes.size());
  out.format = v.format;
  out.description = v.description;
  out.created_at = now_iso8601();
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
    "SELECT p.name, u.username, p.address, p.public_key, p.schema_json, p.created_at "
    "FROM pods p JOIN users u ON u.id = p.owner_id ";
Pod read_pod(Stmt& s) { return Pod{s.str(0), s.str(1), s.str(2), s.str(3), s.str(4), s.str(5)}; }
}  // namespace

std::vector<Pod> Store::list_pods() {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kPodColumns) + "ORDER BY p.name").c_str());
  std::vector<Pod> out;
  while (s.step()) out.push_back(read_pod(s));
  return out;
}

std::optional<Pod> Store::find_pod(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  Stmt s(db_, (std::string(kPodColumns) + "WHERE p.name = ?").c_str());
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return read_pod(s);
}

}  // namespace fedpod::hub::detail
