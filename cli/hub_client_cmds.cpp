// The hub's client commands: fedpod user register, fedpod model push|list|show|pull,
// fedpod pod register|list.
//
// Where the hub is and who you are: see hub_access.h (--hub / --token, else
// FEDPOD_HUB / FEDPOD_TOKEN, else ~/.config/fedpod/config.yaml). Output is a table
// for people, JSON with --json.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>

#include "commands.h"
#include "hub_access.h"
#include "fedpod/protocol/curve.h"

namespace fedpod::cli {
namespace {
namespace fs = std::filesystem;

nlohmann::json to_json(const hub::VersionInfo& v) {
  return {{"username", v.username}, {"model_ref", v.model_ref}, {"version", v.version}, {"sha256", v.sha256},
          {"size", v.size},         {"format", v.format},       {"description", v.description},
          {"created_at", v.created_at}};
}

void print_versions(const std::vector<hub::VersionInfo>& versions) {
  std::cout << std::left << std::setw(9) << "VERSION" << std::setw(13) << "FORMAT" << std::setw(12) << "SIZE"
            << std::setw(22) << "CREATED" << "SHA256\n";
  for (const auto& v : versions) {
    std::cout << std::setw(9) << v.version << std::setw(13) << v.format << std::setw(12) << v.size << std::setw(22)
              << v.created_at << v.sha256 << "\n";
  }
}

}  // namespace

void add_user(CLI::App& app) {
  auto* user = app.add_subcommand("user", "Hub users");
  user->require_subcommand(1);
  struct Args {
    HubAccess access;
    std::string name, key, key_file;
    bool save = false;
  };
  auto a = std::make_shared<Args>();
  auto* reg = user->add_subcommand(
      "register",
      "Register a username with its CURVE key pair, proving you hold the secret key (it never leaves this "
      "machine); prints the API token");
  reg->add_option("username", a->name, "lowercase name, e.g. alice")->required();
  reg->add_option("--key-file", a->key_file, "your key pair (NAME.key from `fedpod keys generate`)");
  reg->add_option("--public-key", a->key, "no longer enough: registration proves possession of the secret key")
      ->group("");
  reg->add_flag("--save", a->save, "write the hub URL and token to ~/.config/fedpod/config.yaml (mode 0600)");
  add_access_options(reg, a->access);
  reg->callback([a] {
    if (a->key_file.empty()) {
      throw ConfigError(std::string(a->key.empty() ? "" : "--public-key is not enough: ") +
                        "registration proves you hold the secret key: give --key-file NAME.key (from `fedpod keys "
                        "generate --out NAME`)");
    }
    auto keys = protocol::read_key_file(a->key_file);
    if (!keys.ok()) throw ConfigError("--key-file: " + keys.status().message());
    if (keys->secret_key.empty()) {
      throw ConfigError("--key-file: " + a->key_file + " holds only a public key; give the .key file (the secret "
                        "key is used here to answer the hub's challenge and is never sent)");
    }
    auto client = connect(a->access);
    auto token = client->register_user(a->name, keys->public_key, keys->secret_key);
    check(token.status(), "user register");
    if (a->save) {
      const fs::path cfg = config_path();
      fs::create_directories(cfg.parent_path());
      const std::string tmp = cfg.string() + ".tmp";
      {
        std::ofstream out(tmp);
        out << "hub: " << a->access.hub << "\ntoken: " << *token << "\n";
        if (!a->access.hub_ca.empty()) out << "hub_ca: " << fs::absolute(a->access.hub_ca).string() << "\n";
      }
      ::chmod(tmp.c_str(), 0600);
      fs::rename(tmp, cfg);
    }
    if (a->access.json) {
      std::cout << nlohmann::json{{"username", a->name}, {"token", *token}}.dump(2) << "\n";
    } else {
      std::cout << "registered " << a->name << "\ntoken: " << *token << "\n"
                << (a->save ? "saved to " + config_path().string() + "\n"
                            : "the hub shows it only once: export FEDPOD_TOKEN=" + *token + "\n");
    }
  });
}

void add_model(CLI::App& app) {
  auto* model = app.add_subcommand("model", "Models on the hub");
  model->require_subcommand(1);

  struct PushArgs {
    HubAccess access;
    std::string name, format, artifact, description, visibility;
    std::vector<std::string> sources;
  };
  auto p = std::make_shared<PushArgs>();
  auto* push = model->add_subcommand("push", "Upload a new version of USER/REF");
  push->add_option("model", p->name, "USER/REF")->required();
  push->add_option("--format", p->format, "torchscript | plugin")->required()->check(CLI::IsMember({"torchscript", "plugin"}));
  push->add_option("--artifact", p->artifact, "the .pt archive or .so plugin")->required()->check(CLI::ExistingFile);
  push->add_option("--source", p->sources, "source files kept for the pod owners' review")->check(CLI::ExistingFile);
  push->add_option("--description", p->description, "one line about the model");
  push->add_option("--visibility", p->visibility, "private | public (default: unchanged; new models private)")
      ->check(CLI::IsMember({"private", "public"}));
  add_access_options(push, p->access);
  push->callback([p] {
    auto client = connect(p->access);
    require_token(p->access);
    ModelName m = parse_model(p->name);
    auto v = client->push_model(m.user, m.ref, p->format, p->description, p->visibility, p->artifact, p->sources);
    check(v.status(), "model push");
    if (p->access.json) {
      std::cout << to_json(*v).dump(2) << "\n";
    } else {
      std::cout << "pushed " << v->username << "/" << v->model_ref << " version " << v->version << " ("
                << v->format << ", " << v->size << " bytes, sha256 " << v->sha256 << ")\n";
    }
  });

  struct ListArgs {
    HubAccess access;
    std::string owner;
  };
  auto l = std::make_shared<ListArgs>();
  auto* list = model->add_subcommand("list", "Models you can see");
  list->add_option("--owner", l->owner, "only this user's models");
  add_access_options(list, l->access);
  list->callback([l] {
    auto client = connect(l->access);
    auto models = client->list_models(l->owner);
    check(models.status(), "model list");
    if (l->access.json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& m : *models) {
        out.push_back({{"username", m.username}, {"model_ref", m.model_ref}, {"visibility", m.visibility},
                       {"description", m.description}, {"latest", m.latest ? to_json(*m.latest) : nlohmann::json()}});
      }
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::cout << std::left << std::setw(32) << "MODEL" << std::setw(8) << "LATEST" << std::setw(13) << "FORMAT"
              << std::setw(10) << "VISIBLE" << "DESCRIPTION\n";
    for (const auto& m : *models) {
      std::cout << std::setw(32) << (m.username + "/" + m.model_ref) << std::setw(8)
                << (m.latest ? std::to_string(m.latest->version) : "-") << std::setw(13)
                << (m.latest ? m.latest->format : "-") << std::setw(10) << m.visibility << m.description << "\n";
    }
  });

  struct ShowArgs {
    HubAccess access;
    std::string name;
  };
  auto s = std::make_shared<ShowArgs>();
  auto* show = model->add_subcommand("show", "A model and its versions");
  show->add_option("model", s->name, "USER/REF")->required();
  add_access_options(show, s->access);
  show->callback([s] {
    auto client = connect(s->access);
    ModelName m = parse_model(s->name);
    auto info = client->get_model(m.user, m.ref);
    check(info.status(), "model show");
    if (s->access.json) {
      nlohmann::json versions = nlohmann::json::array();
      for (const auto& v : info->versions) versions.push_back(to_json(v));
      std::cout << nlohmann::json{{"username", info->username}, {"model_ref", info->model_ref},
                                  {"visibility", info->visibility}, {"description", info->description},
                                  {"versions", versions}}
                       .dump(2)
                << "\n";
      return;
    }
    std::cout << info->username << "/" << info->model_ref << "  (" << info->visibility << ")  " << info->description
              << "\n\n";
    print_versions(info->versions);
  });

  struct PullArgs {
    HubAccess access;
    std::string name, out;
  };
  auto pl = std::make_shared<PullArgs>();
  auto* pull = model->add_subcommand("pull", "Download a version's artifact, verifying its sha256");
  pull->add_option("model", pl->name, "USER/REF[:VERSION] (default latest)")->required();
  pull->add_option("-o,--output", pl->out, "file to write")->required();
  add_access_options(pull, pl->access);
  pull->callback([pl] {
    auto client = connect(pl->access);
    ModelName m = parse_model(pl->name);
    auto v = client->resolve(m.user, m.ref, m.version);
    check(v.status(), "model pull");
    auto sha = client->download_artifact(m.user, m.ref, v->version, pl->out, v->sha256);
    check(sha.status(), "model pull");
    if (pl->access.json) {
      auto j = to_json(*v);
      j["path"] = pl->out;
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "wrote " << pl->out << " (" << v->username << "/" << v->model_ref << " version " << v->version
                << ", sha256 " << *sha << " verified)\n";
    }
  });
}

void add_pod(CLI::App& app) {
  auto* pod = app.add_subcommand("pod", "Pods registered on the hub");
  pod->require_subcommand(1);
  struct RegArgs {
    HubAccess access;
    std::string name, address, key, schema_file;
  };
  auto r = std::make_shared<RegArgs>();
  auto* reg = pod->add_subcommand("register", "Register a pod you own");
  reg->add_option("name", r->name, "pod name")->required();
  reg->add_option("--address", r->address, "where coordinators reach it, e.g. tcp://10.0.0.5:5555")->required();
  reg->add_option("--public-key", r->key, "the pod's CURVE public key")->required();
  reg->add_option("--schema", r->schema_file, "JSON file describing the pod's columns")->check(CLI::ExistingFile);
  add_access_options(reg, r->access);
  reg->callback([r] {
    auto client = connect(r->access);
    require_token(r->access);
    nlohmann::json schema = nlohmann::json::object();
    if (!r->schema_file.empty()) {
      std::ifstream in(r->schema_file);
      schema = nlohmann::json::parse(in, nullptr, false);
      if (schema.is_discarded() || !schema.is_object()) {
        throw ConfigError(r->schema_file + ": not a JSON object");
      }
    }
    check(client->register_pod(r->name, r->address, r->key, schema), "pod register");
    std::cout << (r->access.json ? nlohmann::json{{"name", r->name}, {"address", r->address}}.dump(2)
                                 : "registered pod " + r->name + " at " + r->address)
              << "\n";
  });

  struct TokenArgs {
    HubAccess access;
    std::string name, out;
  };
  auto t = std::make_shared<TokenArgs>();
  auto* tok = pod->add_subcommand(
      "token",
      "Create (or rotate) the pod's own read-only token: it reads this pod's policy and nothing else. Put it in "
      "pod.yaml's policy.token_file; your own token never goes on the pod. Running this again revokes the old one");
  tok->add_option("name", t->name, "pod name")->required();
  tok->add_option("-o,--out", t->out, "write the token to this file (mode 0600) instead of printing it");
  add_access_options(tok, t->access, /*json=*/false);
  tok->callback([t] {
    auto client = connect(t->access);
    require_token(t->access);
    auto token = client->create_pod_token(t->name);
    check(token.status(), "pod token");
    if (t->out.empty()) {
      std::cout << *token << "\n";
      return;
    }
    const std::string tmp = t->out + ".tmp";
    ::unlink(tmp.c_str());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, token->data(), token->size()) != static_cast<ssize_t>(token->size()) || ::fsync(fd) != 0 ||
        ::close(fd) != 0 || std::rename(tmp.c_str(), t->out.c_str()) != 0) {
      if (fd >= 0) ::unlink(tmp.c_str());
      throw ConfigError("pod token: cannot write " + t->out + ": " + std::strerror(errno) +
                        " (the old token is revoked; run again to get a new one)");
    }
    std::cout << "wrote the token of pod " << t->name << " to " << t->out
              << " (pod.yaml: policy.token_file; any earlier token of this pod no longer works)\n";
  });

  auto la = std::make_shared<HubAccess>();
  auto* list = pod->add_subcommand("list", "Pods on the hub");
  add_access_options(list, *la);
  list->callback([la] {
    auto client = connect(*la);
    auto pods = client->list_pods();
    check(pods.status(), "pod list");
    if (la->json) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& p : *pods) {
        out.push_back({{"name", p.name}, {"owner", p.owner}, {"address", p.address}, {"public_key", p.public_key},
                       {"schema", p.schema}, {"created_at", p.created_at}});
      }
      std::cout << out.dump(2) << "\n";
      return;
    }
    std::cout << std::left << std::setw(20) << "POD" << std::setw(16) << "OWNER" << std::setw(32) << "ADDRESS"
              << "CREATED\n";
    for (const auto& p : *pods) {
      std::cout << std::setw(20) << p.name << std::setw(16) << p.owner << std::setw(32) << p.address << p.created_at
                << "\n";
    }
  });
}

}  // namespace fedpod::cli
