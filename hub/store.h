// Store: the hub's state in its data directory (internal to the hub library).
//
// `<data_dir>/hub.db` is a SQLite database (WAL journal, foreign keys on, a busy
// timeout) whose schema is built by numbered migrations recorded in `schema_version`;
// each migration runs in its own transaction, so opening an old or new directory is
// idempotent. Artifacts live outside the database, content-addressed by sha256 in
// `<data_dir>/artifacts/<first two hex>/<sha256>`.
//
// Crash safety of a push: the artifact file is written durably first (temp file,
// fsync, rename, fsync of the directory), and only then is the version row inserted
// in one transaction with its source files. A crash before the commit leaves no
// version (at most an orphan artifact file that no row names: harmless, and reused
// if the same bytes are pushed again); a crash after it leaves a whole version.
//
// Threading: all methods may be called from any thread; one mutex serializes them
// (one SQLite connection). Ownership: owns the connection.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "fedpod/common/status.h"

struct sqlite3;

namespace fedpod::hub::detail {

struct User {
  int64_t id = 0;
  std::string username;
  std::string public_key;
};

struct Version {
  int64_t id = 0;
  std::string username;
  std::string model_ref;
  int64_t version = 0;
  std::string sha256;
  int64_t size = 0;
  std::string format;
  std::string description;
  std::string created_at;
};

struct Model {
  int64_t id = 0;
  int64_t owner_id = 0;
  std::string username;
  std::string model_ref;
  std::string visibility;
  std::string description;
  std::string created_at;
  std::optional<Version> latest;
};

struct Pod {
  std::string name;
  std::string owner;
  std::string address;
  std::string public_key;
  std::string schema_json;
  std::string created_at;
};

using Files = std::vector<std::pair<std::string, std::string>>;  // name, content

struct NewVersion {
  const User* owner = nullptr;
  std::string model_ref;
  std::string format;
  std::string description;
  std::string visibility;  // "" keeps the model's (private for a new model)
  const std::string* artifact = nullptr;
  Files sources;
};

class Store {
 public:
  explicit Store(std::string data_dir);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Creates the directories, opens the database and applies pending migrations.
  Status open();

  // Returns the new user's token; kFailedPrecondition when the name is taken.
  StatusOr<std::string> create_user(const std::string& username, const std::string& public_key);
  std::optional<User> user_by_token(const std::string& token);

  // Stores the artifact durably, then records the next version of the model.
  StatusOr<Version> push(const NewVersion& v);

  // Models `viewer_id` may see (public ones and its own; 0 = anonymous).
  std::vector<Model> list_models(int64_t viewer_id, const std::string& owner);
  std::optional<Model> find_model(const std::string& username, const std::string& ref);
  std::vector<Version> versions(const Model& m);
  // `number` 0 = latest.
  std::optional<Version> version(const Model& m, int64_t number);
  Files sources(const Version& v);
  std::string artifact_path(const std::string& sha256) const;

  // kFailedPrecondition when the name is taken.
  Status create_pod(const User& owner, const Pod& pod);
  std::vector<Pod> list_pods();
  std::optional<Pod> find_pod(const std::string& name);

 private:
  Status migrate();
  std::optional<Version> version_locked(const Model& m, int64_t number);
  std::vector<Version> query_versions(const Model& m, const char* tail, int64_t number);

  std::string data_dir_;
  std::mutex mu_;
  sqlite3* db_ = nullptr;
};

}  // namespace fedpod::hub::detail
