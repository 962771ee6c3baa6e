#include "fedpod/worker/policy.h"

#include "fedpod/common/signing.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <limits>
#include <set>
#include <stdexcept>

#include "fedpod/common/names.h"

namespace fedpod::worker {
namespace {

using nlohmann::json;
using std::chrono::system_clock;

// ---- Validation ---------------------------------------------------------------------

// Thrown inside the parser with "path: what"; parse_policy() turns it into a Status.
struct PolicyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw PolicyError(path.empty() ? what : path + ": " + what);
}

std::string check_sha256(const std::string& s) {
  if (s.size() != 64)
    return "must be 64 lowercase hex characters, got " + std::to_string(s.size()) + " characters";
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return "must be 64 lowercase hex characters, contains '" + std::string(1, c) + "'";
  return "";
}

// "owner/ref": the owner is a username, the ref a model name.
std::string check_model(const std::string& s) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return "must be OWNER/REF (e.g. alice/net), got '" + s + "'";
  std::string err = check_username(s.substr(0, slash));
  if (!err.empty()) return "owner in '" + s + "' " + err;
  err = check_model_ref(s.substr(slash + 1));
  if (!err.empty()) return "model name in '" + s + "' " + err;
  return "";
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "a mapping";
    case json::value_t::array:
      return "a list";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    default:
      return "something else";
  }
}

// A short rendering of a value for messages: at most ~60 characters.
std::string show(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

void check_object_keys(const json& obj, std::initializer_list<const char*> allowed,
                       const std::string& path) {
  if (!obj.is_object())
    fail(path, std::string("expected a mapping, got ") + type_name(obj) + " " + show(obj));
  for (const auto& kv : obj.items()) {
    bool ok = false;
    std::string list;
    for (const char* a : allowed) {
      ok = ok || kv.key() == a;
      list += list.empty() ? a : std::string(", ") + a;
    }
    if (!ok) fail(path, "unknown key '" + kv.key() + "' (allowed: " + list + ")");
  }
}

const json* find(const json& obj, const char* key, bool required, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) fail(path, std::string("missing key '") + key + "'");
    return nullptr;
  }
  return &*it;
}

std::string get_string(const json& obj, const char* key, bool required, const std::string& path) {
  const json* v = find(obj, key, required, path);
  if (!v) return "";
  if (!v->is_string())
    fail(path, std::string(key) + " must be a string, got " + type_name(*v) + " " + show(*v));
  return v->get<std::string>();
}

int64_t get_int(const json& obj, const char* key, bool required, int64_t min,
                const std::string& path) {
  const json* v = find(obj, key, required, path);
  if (!v) return 0;
  bool ok = v->is_number_integer() &&
            !(v->is_number_unsigned() &&
              v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()));
  if (!ok)
    fail(path, std::string(key) + " must be an integer, got " + type_name(*v) + " " + show(*v));
  int64_t i = v->get<int64_t>();
  if (i < min)
    fail(path, std::string(key) + " must be at least " + std::to_string(min) + ", got " +
                   std::to_string(i));
  return i;
}

const json& get_list(const json& obj, const char* key, const std::string& where) {
  const json* v = find(obj, key, true, where);
  if (!v->is_array()) {
    fail(where, std::string(key) + " must be a list, got " +
                    (v->is_null() ? "nothing (write " + std::string(key) + ": [] for none)"
                                  : std::string(type_name(*v)) + " " + show(*v)));
  }
  return *v;
}

std::string entry(const char* list, size_t i) {
  return std::string(list) + "[" + std::to_string(i) + "]";
}

std::optional<Role> parse_role(const std::string& s) {
  if (s == "general-modeller") return Role::kGeneralModeller;
  if (s == "super-modeller") return Role::kSuperModeller;
  return std::nullopt;
}

Policy parse_or_throw(const json& j) {
  check_object_keys(j, {"pod", "owner", "generated_at", "issued_at", "expires_at", "version", "users", "roles", "grants"},
                    "");
  Policy p;
  p.pod = get_string(j, "pod", true, "");
  std::string err = check_username(p.pod);
  if (!err.empty()) fail("pod", "'" + p.pod + "' " + err);
  p.owner = get_string(j, "owner", false, "");
  if (!p.owner.empty() && !(err = check_username(p.owner)).empty())
    fail("owner", "'" + p.owner + "' " + err);
  p.generated_at = get_string(j, "generated_at", false, "");
  p.version = get_int(j, "version", false, 0, "");
  for (const char* key : {"issued_at", "expires_at"}) {
    const std::string text = get_string(j, key, false, "");
    if (text.empty()) continue;
    auto t = parse_utc(text);
    if (!t) fail(key, "'" + text + "' is not a UTC time like 2027-01-01T00:00:00Z");
    (std::string(key) == "issued_at" ? p.issued_at : p.expires_at) = *t;
  }

  const json& users = get_list(j, "users", "");
  for (size_t i = 0; i < users.size(); ++i) {
    const std::string at = entry("users", i);
    check_object_keys(users[i], {"username", "public_key"}, at);
    std::string name = get_string(users[i], "username", true, at);
    if (!(err = check_username(name)).empty()) fail(at, "username '" + name + "' " + err);
    std::string key = get_string(users[i], "public_key", true, at);
    if (!(err = check_public_key(key)).empty()) fail(at, "public_key of " + name + " " + err);
    if (p.users.count(name)) fail(at, "user '" + name + "' is listed twice");
    p.users.emplace(name, key);
  }

  const json& roles = get_list(j, "roles", "");
  for (size_t i = 0; i < roles.size(); ++i) {
    const std::string at = entry("roles", i);
    check_object_keys(roles[i], {"username", "role"}, at);
    std::string name = get_string(roles[i], "username", true, at);
    std::string role_text = get_string(roles[i], "role", true, at);
    auto role = parse_role(role_text);
    if (!role) fail(at, "role '" + role_text + "' is not general-modeller or super-modeller");
    if (!p.users.count(name)) fail(at, "user '" + name + "' is not in users");
    if (p.roles.count(name))
      fail(at, "user '" + name + "' already has a role (" + to_string(p.roles[name]) + ")");
    p.roles.emplace(name, *role);
  }

  const json& grants = get_list(j, "grants", "");
  for (size_t i = 0; i < grants.size(); ++i) {
    const std::string at = entry("grants", i);
    const json& g = grants[i];
    check_object_keys(g, {"id", "username", "model", "version", "sha256", "format", "expires_at"},
                      at);
    Grant grant;
    grant.id = get_int(g, "id", false, 1, at);
    grant.username = get_string(g, "username", true, at);
    if (!p.users.count(grant.username)) fail(at, "user '" + grant.username + "' is not in users");
    grant.model = get_string(g, "model", true, at);
    if (!(err = check_model(grant.model)).empty()) fail(at, "model " + err);
    grant.version = get_int(g, "version", true, 1, at);
    grant.sha256 = get_string(g, "sha256", true, at);
    if (!(err = check_sha256(grant.sha256)).empty()) fail(at, "sha256 " + err);
    grant.format = get_string(g, "format", false, at);
    if (g.contains("format") && grant.format != "torchscript" && grant.format != "plugin")
      fail(at, "format '" + grant.format + "' is not torchscript or plugin");
    if (const json* e = find(g, "expires_at", false, at); e && !e->is_null()) {
      if (!e->is_string())
        fail(at, std::string("expires_at must be a date or time (or null), got ") + type_name(*e) +
                     " " + show(*e));
      grant.expires_at = parse_utc(e->get<std::string>());
      if (!grant.expires_at)
        fail(at, "expires_at '" + e->get<std::string>() +
                     "' is not a UTC time like 2027-01-01T00:00:00Z or a date like 2027-01-01");
    }
    p.grants.push_back(std::move(grant));
  }
  p.build_key_index();
  return p;
}

// ---- YAML -> JSON -------------------------------------------------------------------

// Like common's yaml_to_json, but keeps every plain scalar a string unless it is a
// null, a boolean or a decimal integer: a sha256 such as "1e5..." or a Z85 key must
// not turn into a number. Duplicate keys are an error (YAML would keep one silently).
json yaml_to_policy_json(const YAML::Node& node, const std::string& path) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      size_t i = 0;
      for (const auto& item : node) {
        arr.push_back(yaml_to_policy_json(item, path + "[" + std::to_string(i) + "]"));
        ++i;
      }
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) fail(path, "keys must be plain names");
        const std::string key = kv.first.Scalar();
        const std::string sub = path.empty() ? key : path + "." + key;
        if (obj.contains(key)) fail(path, "key '" + key + "' appears twice");
        obj[key] = yaml_to_policy_json(kv.second, sub);
      }
      return obj;
    }
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string s = node.Scalar();
  if (node.Tag() == "!") return s;  // quoted: always a string
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  size_t start = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (start < s.size() && s.size() - start <= 18 &&
      std::all_of(s.begin() + start, s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return static_cast<int64_t>(std::strtoll(s.c_str(), nullptr, 10));
  }
  return s;
}

// ---- Time ---------------------------------------------------------------------------

bool read_digits(const std::string& s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

bool leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int days_in_month(int y, int m) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && leap(y) ? 29 : days[m - 1];
}

// ---- Messages -----------------------------------------------------------------------

// `s` as one shell word: as is when it is plain, else in single quotes. The model
// name in a request comes from the wire, so it must not turn a suggested command
// into something else when pasted.
std::string shell_word(const std::string& s) {
  bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.' || c == '/' || c == ':' || c == '@' || c == '+' || c == '=';
  });
  if (plain) return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string model_label(const AccessRequest& req) {
  if (!req.custom) return "built-in model " + req.model;
  return "custom model " + req.model + (req.version > 0 ? ":" + std::to_string(req.version) : "");
}

struct Advice {
  const Policy& policy;
  const std::string& pod;
  const AccessRequest& req;

  std::string owner() const {
    return policy.owner.empty() ? "the pod owner" : "the pod owner (" + policy.owner + ")";
  }
  std::string grant_role(const std::string& user, Role role) const {
    return "fedpod access grant-role --pod " + shell_word(pod) + " --user " + user + " --role " +
           to_string(role);
  }
  std::string request() const {
    std::string model = req.model + (req.version > 0 ? ":" + std::to_string(req.version) : "");
    return "fedpod access request --model " + shell_word(model) + " --pod " + shell_word(pod) +
           " --purpose \"...\"";
  }
  // What a user without a role does to run the requested model (a sentence).
  std::string get_a_role(const std::string& user) const {
    if (!req.custom)
      return "To get one, ask " + owner() + " to run: " + grant_role(user, Role::kGeneralModeller);
    return "To run it, request access to that exact version with: " + request() + " (" + owner() +
           " reviews it and also gives you the general-modeller role), or ask the owner to run: " +
           grant_role(user, Role::kSuperModeller) +
           " (super-modeller runs any model, and so any code, on this pod)";
  }
};

Decision refuse(const char* reason, std::string message) {
  Decision d;
  d.reason = reason;
  d.message = std::move(message);
  return d;
}

Decision allow(std::string basis) {
  Decision d;
  d.allowed = true;
  d.reason = "ok";
  d.basis = std::move(basis);
  return d;
}

std::string expiry_text(const Grant& g) {
  return g.expires_at ? "expires " + format_utc(*g.expires_at) : "no expiry";
}

std::string grant_name(const Grant& g) {
  return g.id > 0 ? "grant " + std::to_string(g.id)
                  : "grant for " + g.model + ":" + std::to_string(g.version);
}

}  // namespace

std::string to_string(Role role) {
  switch (role) {
    case Role::kGeneralModeller:
      return "general-modeller";
    case Role::kSuperModeller:
      return "super-modeller";
    case Role::kNone:
      break;
  }
  return "none";
}

void Policy::build_key_index() {
  user_by_key_.clear();
  std::set<std::string> shared;
  for (const auto& [name, key] : users) {
    if (!user_by_key_.emplace(key, name).second) shared.insert(key);
  }
  for (const auto& key : shared) user_by_key_.erase(key);
  indexed_users_ = users.size();
}

std::optional<std::string> Policy::user_by_key(const std::string& public_key) const {
  if (indexed_users_ == users.size()) {
    auto it = user_by_key_.find(public_key);
    if (it == user_by_key_.end()) return std::nullopt;
    // The index may be stale if `users` was edited without build_key_index().
    auto u = users.find(it->second);
    return u != users.end() && u->second == public_key ? std::optional<std::string>(it->second)
                                                       : std::nullopt;
  }
  std::optional<std::string> found;
  for (const auto& [name, key] : users) {
    if (key != public_key) continue;
    if (found) return std::nullopt;  // shared: no one
    found = name;
  }
  return found;
}

std::vector<std::string> Policy::users_sharing_keys() const {
  std::map<std::string, int> count;
  for (const auto& [name, key] : users) ++count[key];
  std::vector<std::string> out;
  for (const auto& [name, key] : users)
    if (count[key] > 1) out.push_back(name);
  return out;
}

Role Policy::role_of(const std::string& username) const {
  auto it = roles.find(username);
  return it == roles.end() ? Role::kNone : it->second;
}

StatusOr<Policy> parse_policy(const nlohmann::json& j, const std::string& where) {
  try {
    return parse_or_throw(j);
  } catch (const PolicyError& e) {
    return Status::invalid(where + ": " + e.what());
  }
}

nlohmann::json to_json(const Policy& policy) {
  json j = {{"pod", policy.pod},
            {"users", json::array()},
            {"roles", json::array()},
            {"grants", json::array()}};
  if (!policy.owner.empty()) j["owner"] = policy.owner;
  if (!policy.generated_at.empty()) j["generated_at"] = policy.generated_at;
  if (policy.version > 0) j["version"] = policy.version;
  if (policy.issued_at) j["issued_at"] = format_utc(*policy.issued_at);
  if (policy.expires_at) j["expires_at"] = format_utc(*policy.expires_at);
  for (const auto& [name, key] : policy.users)
    j["users"].push_back({{"username", name}, {"public_key", key}});
  for (const auto& [name, role] : policy.roles) {
    if (role != Role::kNone) j["roles"].push_back({{"username", name}, {"role", to_string(role)}});
  }
  for (const auto& g : policy.grants) {
    json e = {{"username", g.username},
              {"model", g.model},
              {"version", g.version},
              {"sha256", g.sha256},
              {"expires_at", g.expires_at ? json(format_utc(*g.expires_at)) : json(nullptr)}};
    if (g.id > 0) e["id"] = g.id;
    if (!g.format.empty()) e["format"] = g.format;
    j["grants"].push_back(std::move(e));
  }
  return j;
}

StatusOr<Policy> load_policy_file(const std::string& path) {
  {
    std::ifstream probe(path);
    if (!probe)
      return Status::not_found(path + ": cannot read the policy file: " + std::strerror(errno));
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    return Status::invalid(path + ": not valid YAML: " + e.what());
  }
  json j;
  try {
    j = yaml_to_policy_json(root, "");
  } catch (const PolicyError& e) {
    return Status::invalid(path + ": " + e.what());
  }
  return parse_policy(j, path);
}

StatusOr<Policy> verify_signed_policy(const nlohmann::json& document, const std::string& signing_key,
                                      const std::string& pod, const std::string& where) {
  auto payload = verify_document(document, signing_key, where);
  if (!payload.ok()) return payload.status();
  auto p = parse_policy(*payload, where);
  if (!p.ok()) return p.status();
  if (!pod.empty() && p->pod != pod) {
    return Status::invalid(where + ": the policy is for pod '" + p->pod + "', not '" + pod + "'");
  }
  if (!p->issued_at || !p->expires_at || p->version <= 0) {
    return Status::invalid(where + ": a signed policy must carry issued_at, expires_at and version");
  }
  if (*p->expires_at <= *p->issued_at) return Status::invalid(where + ": expires_at is not after issued_at");
  return p;
}

std::string sign_policy(Policy policy, const SigningKeyPair& key, std::chrono::seconds ttl, int64_t min_version) {
  const auto now = system_clock::now();
  policy.issued_at = std::chrono::time_point_cast<std::chrono::seconds>(now);
  policy.expires_at = *policy.issued_at + ttl;
  policy.generated_at = format_utc(*policy.issued_at);
  policy.version =
      std::max(min_version, std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count());
  return sign_document(to_json(policy), key);
}

StatusOr<Policy> load_signed_policy_file(const std::string& path, const std::string& signing_key,
                                         const std::string& pod) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::not_found(path + ": cannot read the policy file: " + std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !is_signed_document(doc)) {
    return Status::invalid(path + ": not signed: a pod accepts only signed policies; sign this file with `fedpod "
                           "policy sign --key OWNER.sign.key " + path + " -o POLICY.signed.json` and pin OWNER.sign.pub's "
                           "key in pod.yaml (policy.signing_key)");
  }
  return verify_signed_policy(doc, signing_key, pod, path);
}

std::string format_utc(system_clock::time_point t) {
  auto secs = std::chrono::floor<std::chrono::seconds>(t);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - secs).count();
  std::time_t tt = system_clock::to_time_t(system_clock::time_point(secs));
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string out = buf;
  if (ms != 0) {
    char frac[8];
    std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms));
    out += frac;
  }
  return out + "Z";
}

std::optional<system_clock::time_point> parse_utc(const std::string& s) {
  std::tm tm{};
  int y, mo, d, h = 0, mi = 0, sec = 0;
  if (!read_digits(s, 0, 4, y) || s.size() < 10 || s[4] != '-' || !read_digits(s, 5, 2, mo) ||
      s[7] != '-' || !read_digits(s, 8, 2, d))
    return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return std::nullopt;
  std::chrono::nanoseconds frac{0};
  int offset_minutes = 0;
  if (s.size() > 10) {
    if (s[10] != 'T' || s.size() < 20 || !read_digits(s, 11, 2, h) || s[13] != ':' ||
        !read_digits(s, 14, 2, mi) || s[16] != ':' || !read_digits(s, 17, 2, sec))
      return std::nullopt;
    if (h > 23 || mi > 59 || sec > 59) return std::nullopt;
    size_t i = 19;
    if (s[i] == '.') {
      size_t start = ++i;
      int64_t ns = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (i - start < 9) ns = ns * 10 + (s[i] - '0');
        ++i;
      }
      if (i == start) return std::nullopt;
      for (size_t n = std::min<size_t>(i - start, 9); n < 9; ++n) ns *= 10;
      frac = std::chrono::nanoseconds(ns);
    }
    if (i >= s.size()) return std::nullopt;  // a time needs its zone
    if (s[i] == 'Z' && i + 1 == s.size()) {
      // UTC
    } else if ((s[i] == '+' || s[i] == '-') && s.size() == i + 6 && s[i + 3] == ':') {
      int oh, om;
      if (!read_digits(s, i + 1, 2, oh) || !read_digits(s, i + 4, 2, om) || oh > 23 || om > 59)
        return std::nullopt;
      offset_minutes = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
    } else {
      return std::nullopt;
    }
  }
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  std::time_t tt = timegm(&tm);
  auto t = system_clock::from_time_t(tt) - std::chrono::minutes(offset_minutes);
  return t + std::chrono::duration_cast<system_clock::duration>(frac);
}

Decision decide(const Policy& policy, const std::string& pod_name, const AccessRequest& req,
                system_clock::time_point now) {
  const Advice advice{policy, pod_name, req};
  const std::string what = model_label(req);
  const std::string pod = "pod " + pod_name + ": ";

  if (req.user.empty()) {
    std::string msg =
        pod + "refusing " + what +
        ": the connection is not authenticated as a user of this pod (its CURVE public key is not "
        "in the pod's policy), and a pod runs nothing for anonymous peers. Connect with the key "
        "pair "
        "you registered on the hub (fedpod keys generate; fedpod user register NAME --key-file "
        "NAME.key), "
        "then get a role: ";
    msg += req.custom ? "request access with: " + advice.request() + " (" + advice.owner() +
                            " reviews it and gives you the general-modeller role)"
                      : "ask " + advice.owner() +
                            " to run: " + advice.grant_role("NAME", Role::kGeneralModeller);
    return refuse("unauthenticated", std::move(msg));
  }
  const std::string& user = req.user;
  if (!policy.users.count(user)) {
    return refuse("unknown_user",
                  pod + "user " + user +
                      " is not in this pod's policy, so has no role here and may not run " + what +
                      ". " + advice.get_a_role(user));
  }
  const Role role = policy.role_of(user);
  if (role == Role::kNone) {
    return refuse("no_role", pod + "user " + user +
                                 " has no role on this pod (general-modeller or super-modeller), " +
                                 "so may not run " + what + ". " + advice.get_a_role(user));
  }
  if (!req.custom) return allow(to_string(role));
  if (role == Role::kSuperModeller) return allow("super-modeller");

  // A general-modeller running a custom model: find the grant for these exact bytes.
  const Grant* expired = nullptr;   // right version and bytes, but expired
  const Grant* mismatch = nullptr;  // right version, other bytes
  const Grant* other_format = nullptr;  // right bytes, reviewed as another format
  std::set<int64_t> other_versions;
  for (const auto& g : policy.grants) {
    if (g.username != user || g.model != req.model) continue;
    if (g.version != req.version) {
      other_versions.insert(g.version);
      continue;
    }
    if (g.sha256 != req.sha256) {
      if (!mismatch || (mismatch->expires_at && *mismatch->expires_at <= now)) mismatch = &g;
      continue;
    }
    // The same bytes loaded another way are other code: a reviewed plugin with a zip
    // appended is also a TorchScript archive nobody reviewed.
    if (!g.format.empty() && g.format != req.format) {
      other_format = &g;
      continue;
    }
    if (g.expires_at && *g.expires_at <= now) {
      if (!expired || *g.expires_at > *expired->expires_at) expired = &g;
      continue;
    }
    return allow("general-modeller with " + grant_name(g) + " (" + expiry_text(g) + ")");
  }
  const std::string who = "user " + user + " (general-modeller)";
  if (other_format) {
    return refuse("grant_other_format",
                  pod + who + ", " + what + ": " + grant_name(*other_format) + " approved these bytes as a " +
                      other_format->format + " model; the job asks to load them as " +
                      (req.format.empty() ? std::string("(no format)") : req.format) +
                      ": refusing. Loaded another way they are other code, which needs its own review: " +
                      advice.request());
  }
  if (expired) {
    return refuse("grant_expired", pod + who + ": " + grant_name(*expired) + " for " + what +
                                       " expired at " + format_utc(*expired->expires_at) +
                                       ". Request it again with: " + advice.request());
  }
  if (mismatch) {
    const std::string got = req.sha256.empty() ? "(no hash)" : req.sha256;
    return refuse("hash_mismatch",
                  pod + who + ", " + what + ": the artifact received hashes to " + got +
                      ", the approved version " + std::to_string(req.version) + " is " +
                      mismatch->sha256 + ": refusing. The pod runs only the exact bytes " +
                      advice.owner() +
                      " reviewed; if these bytes are meant to run, they need their own review: " +
                      advice.request());
  }
  if (!other_versions.empty()) {
    std::string list;
    for (int64_t v : other_versions) list += (list.empty() ? "" : ", ") + std::to_string(v);
    return refuse("grant_other_version",
                  pod + who + " has grants for " + req.model +
                      (other_versions.size() == 1 ? " version " : " versions ") + list +
                      " only, not for the requested version " + std::to_string(req.version) +
                      ": each version needs its own review. Request it with: " + advice.request());
  }
  return refuse(
      "no_grant",
      pod + who + " has no grant for " + what +
          ": a general-modeller may run a custom model only with the pod owner's approval of "
          "that exact version. Request it with: " +
          advice.request());
}

}  // namespace fedpod::worker
