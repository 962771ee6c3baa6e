// fedpod access: the permission model from the command line.
//
// A modeller asks to run one model version on one pod (`access request`); the pod's
// owner reviews it with its source (`access show`) and decides (`approve`, `reject`,
// later `revoke`). The owner also grants roles on the pod (`grant-role`,
// `revoke-role`, `roles`) and exports the pod's policy for an air-gapped pod
// (`policy -o FILE`). Every command talks to the hub as hub_access.h describes and
// needs a token; a call the hub refuses exits 1 with the hub's message.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include "commands.h"
#include "fedpod/common/utc.h"
#include "hub_access.h"

namespace fedpod::cli {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

const char* const kRoleHelp =
    "general-modeller (built-in models and approved ones) | super-modeller (anything)";

// A request id given on the command line.
int64_t parse_id(const std::string& text) {
  try {
    size_t used = 0;
    int64_t id = std::stoll(text, &used);
    if (used == text.size() && id > 0) return id;
  } catch (const std::exception&) {
  }
  throw ConfigError("request id must be a positive integer, got '" + text + "'");
}

// --expires: a relative "30d" / "12h" / "90m" / "45s" becomes the UTC datetime that
// far from `now`; anything else ("2027-01-01", "2027-01-01T12:00:00Z") goes to the
// hub as given, which checks it and says what it accepts.
std::string expiry_from_flag(const std::string& text, std::time_t now) {
  if (text.size() < 2) return text;
  const char unit = text.back();
  const std::string digits = text.substr(0, text.size() - 1);
  if (digits.find_first_not_of("0123456789") != std::string::npos) return text;
  int64_t per = unit == 'd' ? 86400 : unit == 'h' ? 3600 : unit == 'm' ? 60 : unit == 's' ? 1 : 0;
  if (per == 0) return text;
  // 100 years bounds the arithmetic; a longer expiry is no expiry: leave --expires out.
  const int64_t kMaxSeconds = int64_t{100} * 366 * 86400;
  if (digits.size() > 12 || std::stoll(digits) * per > kMaxSeconds)
    throw ConfigError("--expires " + text +
                      " is more than 100 years away; leave --expires out for no expiry");
  if (std::stoll(digits) == 0) throw ConfigError("--expires " + text + " is not in the future");
  return format_utc(now + static_cast<std::time_t>(std::stoll(digits) * per));
}

json nullable(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

json to_json(const hub::AccessRequestInfo& r) {
  return {{"id", r.id},
          {"pod", r.pod},
          {"pod_owner", r.pod_owner},
          {"requester", r.requester},
          {"model", r.model},
          {"version", r.version},
          {"sha256", r.sha256},
          {"format", r.format},
          {"purpose", r.purpose},
          {"status", r.status},
          {"reason", r.reason},
          {"expires_at", nullable(r.expires_at)},
          {"created_at", r.created_at},
          {"decided_at", nullable(r.decided_at)},
          {"decided_by", nullable(r.decided_by)}};
}

json to_json(const hub::RoleInfo& r) {
  return {{"pod", r.pod},
          {"username", r.username},
          {"role", r.role},
          {"granted_by", r.granted_by},
          {"granted_at", r.granted_at}};
}

std::string model_version(const hub::AccessRequestInfo& r) {
  return r.model + ":" + std::to_string(r.version);
}

// One line of at most `width` characters, for a table cell.
std::string cell(std::string s, size_t width) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  if (s.size() > width) s = s.substr(0, width - 3) + "...";
  return s;
}

void print_request(const hub::AccessRequestInfo& r) {
  // Continuation lines of a multi-line value stay in the value column.
  auto line = [](const char* key, const std::string& value) {
    std::string indented;
    for (char c : value)
      indented += c == '\n' ? std::string("\n") + std::string(12, ' ') : std::string(1, c);
    std::cout << std::left << std::setw(12) << key << indented << "\n";
  };
  line("request", std::to_string(r.id));
  line("status", r.status);
  line("pod", r.pod + " (owner " + r.pod_owner + ")");
  line("requester", r.requester);
  line("model", model_version(r) + " (" + r.format + ")");
  line("sha256", r.sha256);
  line("purpose", r.purpose);
  line("created", r.created_at);
  line("expires", r.expires_at.value_or(r.status == "approved" ? "never" : "-"));
  if (r.decided_at) line("decided", *r.decided_at + " by " + r.decided_by.value_or("?"));
  if (!r.reason.empty()) line("reason", r.reason);
}

void print_requests(const std::vector<hub::AccessRequestInfo>& requests) {
  std::cout << std::left << std::setw(6) << "ID" << std::setw(16) << "POD" << std::setw(14)
            << "REQUESTER" << std::setw(30) << "MODEL" << std::setw(10) << "STATUS" << std::setw(22)
            << "EXPIRES"
            << "PURPOSE\n";
  for (const auto& r : requests) {
    std::cout << std::setw(6) << r.id << std::setw(16) << r.pod << std::setw(14) << r.requester
              << std::setw(30) << model_version(r) << std::setw(10) << r.status << std::setw(22)
              << r.expires_at.value_or("-") << cell(r.purpose, 50) << "\n";
  }
}

// Writes `data` to `path` with mode 0644 through a temp file in the same directory
// renamed over it, so a pod reading the file never sees half a policy. Returns ""
// or what went wrong.
std::string write_atomically(const std::string& path, const std::string& data) {
  fs::path p(path);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  std::string tmp = (dir / ("." + p.filename().string() + ".tmp-XXXXXX")).string();
  int fd = ::mkstemp(tmp.data());
  if (fd < 0) return "cannot create " + tmp + ": " + std::strerror(errno);
  auto fail = [&](const std::string& what) {
    std::string err = what + ": " + std::strerror(errno);
    ::close(fd);
    ::unlink(tmp.c_str());
    return err;
  };
  if (::fchmod(fd, 0644) != 0) return fail("cannot chmod " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write " + tmp);
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot fsync " + tmp);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string err = "cannot rename " + tmp + " to " + path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return err;
  }
  return "";
}

// Connects with a token: every access command acts as a user.
std::unique_ptr<hub::Client> connect_as_user(HubAccess& a) {
  auto client = connect(a);
  require_token(a);
  return client;
}

void add_request_commands(CLI::App* access) {
  struct RequestArgs {
    HubAccess access;
    std::string model, pod, purpose;
  };
  auto rq = std::make_shared<RequestArgs>();
  auto* request = access->add_subcommand(
      "request", "Ask a pod's owner to let you run one model version on their pod");
  request
      ->add_option("--model", rq->model,
                   "USER/REF[:VERSION] (default: the latest version, pinned now)")
      ->required();
  request->add_option("--pod", rq->pod, "the pod to run it on")->required();
  request
      ->add_option("--purpose", rq->purpose,
                   "what you want to learn and why, for the owner (1-2000 characters)")
      ->required();
  add_access_options(request, rq->access);
  request->callback([rq] {
    ModelName m = parse_model(rq->model);
    auto client = connect_as_user(rq->access);
    auto r = client->request_access(m.user, m.ref, m.version, rq->pod, rq->purpose);
    check(r.status(), "access request");
    if (rq->access.json) {
      std::cout << to_json(*r).dump(2) << "\n";
      return;
    }
    std::cout << "request " << r->id << ": run " << model_version(*r) << " on " << r->pod << " ("
              << r->status << ")\n"
              << "the owner of " << r->pod << " (" << r->pod_owner
              << ") must approve it: fedpod access approve " << r->id << "\n";
  });

  struct ListArgs {
    HubAccess access;
    std::string pod, status;
  };
  auto l = std::make_shared<ListArgs>();
  auto* list =
      access->add_subcommand("list", "Access requests you made or must decide, newest first");
  list->add_option("--pod", l->pod, "only requests for this pod");
  list->add_option("--status", l->status, "pending | approved | expired | rejected | revoked");
  add_access_options(list, l->access);
  list->callback([l] {
    if (!l->status.empty() && l->status != "pending" && l->status != "approved" &&
        l->status != "expired" && l->status != "rejected" && l->status != "revoked") {
      throw ConfigError("--status must be pending, approved, expired, rejected or revoked, got '" +
                        l->status + "'");
    }
    auto client = connect_as_user(l->access);
    auto requests = client->list_access_requests(l->pod, l->status);
    check(requests.status(), "access list");
    if (l->access.json) {
      json out = json::array();
      for (const auto& r : *requests) out.push_back(to_json(r));
      std::cout << out.dump(2) << "\n";
      return;
    }
    print_requests(*requests);
  });

  struct ShowArgs {
    HubAccess access;
    std::string id;
  };
  auto s = std::make_shared<ShowArgs>();
  auto* show = access->add_subcommand(
      "show",
      "An access request, then every source file of the model version it names, for review");
  show->add_option("id", s->id, "request id")->required();
  add_access_options(show, s->access);
  show->callback([s] {
    const int64_t id = parse_id(s->id);
    auto client = connect_as_user(s->access);
    auto r = client->get_access_request(id);
    check(r.status(), "access show");
    ModelName m = parse_model(r->model);
    auto files = client->get_source(m.user, m.ref, r->version);
    check(files.status(), "access show: source of " + model_version(*r));
    if (s->access.json) {
      json j = to_json(*r);
      j["source"] = json::array();
      for (const auto& f : *files)
        j["source"].push_back({{"name", f.name}, {"content", f.content}});
      std::cout << j.dump(2) << "\n";
      return;
    }
    print_request(*r);
    std::cout << "\n"
              << files->size() << " source file" << (files->size() == 1 ? "" : "s") << " of "
              << model_version(*r) << ":\n";
    for (const auto& f : *files) {
      std::cout << "\n===== " << f.name << " (" << f.content.size() << " bytes) =====\n"
                << f.content;
      if (!f.content.empty() && f.content.back() != '\n') std::cout << "\n";
    }
  });
}

void add_decision_commands(CLI::App* access) {
  struct ApproveArgs {
    HubAccess access;
    std::string id, reason, expires;
  };
  auto a = std::make_shared<ApproveArgs>();
  auto* approve = access->add_subcommand("approve", "Approve a pending request for a pod you own");
  approve->add_option("id", a->id, "request id")->required();
  approve->add_option("--reason", a->reason, "a note for the requester");
  approve->add_option(
      "--expires", a->expires,
      "when the approval ends: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (UTC), or from now 30d, 12h, 90m, "
      "45s (default: never)");
  add_access_options(approve, a->access);
  approve->callback([a] {
    const int64_t id = parse_id(a->id);
    std::optional<std::string> expires;
    if (!a->expires.empty()) expires = expiry_from_flag(a->expires, std::time(nullptr));
    auto client = connect_as_user(a->access);
    auto r = client->approve_access_request(id, a->reason, expires);
    check(r.status(), "access approve");
    if (a->access.json) {
      std::cout << to_json(*r).dump(2) << "\n";
      return;
    }
    std::cout << "approved request " << r->id << ": " << r->requester << " may run "
              << model_version(*r) << " on " << r->pod
              << (r->expires_at ? " until " + *r->expires_at : std::string(", with no expiry"))
              << "\n";
  });

  // reject and revoke differ only in their words.
  struct DecideArgs {
    HubAccess access;
    std::string id, reason;
  };
  for (const bool reject : {true, false}) {
    auto d = std::make_shared<DecideArgs>();
    auto* cmd = access->add_subcommand(reject ? "reject" : "revoke",
                                       reject ? "Reject a pending request for a pod you own"
                                              : "Revoke an approved request for a pod you own");
    cmd->add_option("id", d->id, "request id")->required();
    cmd->add_option("--reason", d->reason, "why, for the requester");
    add_access_options(cmd, d->access);
    cmd->callback([d, reject] {
      const int64_t id = parse_id(d->id);
      auto client = connect_as_user(d->access);
      auto r = reject ? client->reject_access_request(id, d->reason)
                      : client->revoke_access_request(id, d->reason);
      check(r.status(), reject ? "access reject" : "access revoke");
      if (d->access.json) {
        std::cout << to_json(*r).dump(2) << "\n";
        return;
      }
      std::cout << (reject ? "rejected" : "revoked") << " request " << r->id << " (" << r->requester
                << ", " << model_version(*r) << " on " << r->pod << ")\n";
    });
  }
}

void add_role_commands(CLI::App* access) {
  struct GrantArgs {
    HubAccess access;
    std::string pod, user, role;
  };
  auto g = std::make_shared<GrantArgs>();
  auto* grant = access->add_subcommand(
      "grant-role", "Give a user a role on a pod you own (replacing their current one)");
  grant->add_option("--pod", g->pod, "the pod")->required();
  grant->add_option("--user", g->user, "the user")->required();
  grant->add_option("--role", g->role, kRoleHelp)->required();
  add_access_options(grant, g->access);
  grant->callback([g] {
    if (g->role != "general-modeller" && g->role != "super-modeller") {
      throw ConfigError("--role must be general-modeller or super-modeller, got '" + g->role + "'");
    }
    auto client = connect_as_user(g->access);
    auto r = client->grant_role(g->pod, g->user, g->role);
    check(r.status(), "access grant-role");
    if (g->access.json) {
      std::cout << to_json(*r).dump(2) << "\n";
      return;
    }
    std::cout << "granted " << r->role << " on " << r->pod << " to " << r->username << "\n";
  });

  struct RevokeArgs {
    HubAccess access;
    std::string pod, user;
  };
  auto rv = std::make_shared<RevokeArgs>();
  auto* revoke = access->add_subcommand("revoke-role", "Take a user's role on a pod you own away");
  revoke->add_option("--pod", rv->pod, "the pod")->required();
  revoke->add_option("--user", rv->user, "the user")->required();
  add_access_options(revoke, rv->access, /*json=*/false);
  revoke->callback([rv] {
    auto client = connect_as_user(rv->access);
    check(client->revoke_role(rv->pod, rv->user), "access revoke-role");
    std::cout << "revoked the role of " << rv->user << " on " << rv->pod << "\n";
  });

  struct RolesArgs {
    HubAccess access;
    std::string pod;
  };
  auto rl = std::make_shared<RolesArgs>();
  auto* roles = access->add_subcommand("roles", "The roles on a pod you own");
  roles->add_option("--pod", rl->pod, "the pod")->required();
  add_access_options(roles, rl->access);
  roles->callback([rl] {
    auto client = connect_as_user(rl->access);
    auto list = client->list_roles(rl->pod);
    check(list.status(), "access roles");
    if (rl->access.json) {
      json out = json::array();
      for (const auto& r : *list) out.push_back(to_json(r));
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::cout << std::left << std::setw(20) << "USER" << std::setw(18) << "ROLE" << std::setw(16)
              << "GRANTED BY"
              << "GRANTED AT\n";
    for (const auto& r : *list) {
      std::cout << std::setw(20) << r.username << std::setw(18) << r.role << std::setw(16)
                << r.granted_by << r.granted_at << "\n";
    }
  });

  struct PolicyArgs {
    HubAccess access;
    std::string pod, out;
  };
  auto p = std::make_shared<PolicyArgs>();
  auto* policy = access->add_subcommand("policy",
                                        "A pod's policy (users' keys, roles, approved models) as the "
                                        "hub signs it, e.g. for an air-gapped pod's policy.file (which "
                                        "then pins the hub's key: fedpod hub signing-key)");
  policy->add_option("--pod", p->pod, "a pod you own")->required();
  policy->add_option("-o,--output", p->out,
                     "file to write (mode 0644, replaced atomically); default stdout");
  add_access_options(policy, p->access, /*json=*/false);
  policy->callback([p] {
    auto client = connect_as_user(p->access);
    auto j = client->get_pod_policy(p->pod);
    check(j.status(), "access policy");
    const std::string text = j->dump(2) + "\n";
    if (p->out.empty()) {
      std::cout << text;
      return;
    }
    const std::string err = write_atomically(p->out, text);
    if (!err.empty()) {
      std::cerr << "fedpod: access policy: " << err << "\n";
      throw CommandExit{kExitFailed};
    }
    // What the hub signed (the pod verifies the signature; this only summarises).
    json payload = json::parse(j->value("payload", std::string("{}")), nullptr, false);
    if (!payload.is_object()) payload = json::object();
    std::cout << "wrote the signed policy of " << p->pod << " to " << p->out << " ("
              << payload.value("users", json::array()).size() << " users, "
              << payload.value("roles", json::array()).size() << " roles, "
              << payload.value("grants", json::array()).size() << " grants; valid until "
              << payload.value("expires_at", std::string("?")) << "; signed by the hub's key "
              << j->value("key", std::string("?")) << ")\n";
  });
}

}  // namespace

void add_access(CLI::App& app) {
  auto* access = app.add_subcommand(
      "access",
      "Who may run what on a pod: access requests for model versions, roles, and the pod's "
      "policy.\n"
      "Modellers request; the pod's owner reviews, approves or rejects, and grants roles.");
  access->require_subcommand(1);
  add_request_commands(access);
  add_decision_commands(access);
  add_role_commands(access);
}

}  // namespace fedpod::cli
