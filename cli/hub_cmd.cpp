// fedpod hub serve: the model hub's HTTP API over a data directory.
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "commands.h"
#include "fedpod/metrics/metrics.h"
#include "hub_access.h"
#include "fedpod/common/signing.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/hub_url.h"
#include "fedpod/hub/tls.h"
#include "fedpod/common/log.h"
#include "fedpod/hub/server.h"

namespace fedpod::cli {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct HubArgs {
  std::string data_dir;
  std::string listen = "127.0.0.1:8470";
  std::string port_file;
  std::string log_level = "info";
  std::string tls_cert, tls_key;
  bool insecure_plaintext = false;
  int session_hours = 8;
};

void serve(const HubArgs& args) {
  hub::ServerOptions opt;
  opt.data_dir = args.data_dir;
  auto colon = args.listen.rfind(':');
  if (colon == std::string::npos)
    throw ConfigError("--listen: expected HOST:PORT, got '" + args.listen + "'");
  opt.host = args.listen.substr(0, colon);
  try {
    size_t used = 0;
    opt.port = std::stoi(args.listen.substr(colon + 1), &used);
    if (used != args.listen.size() - colon - 1 || opt.port < 0 || opt.port > 65535)
      throw std::out_of_range("");
  } catch (const std::exception&) {
    throw ConfigError("--listen: bad port in '" + args.listen + "'");
  }
  opt.tls_cert_file = args.tls_cert;
  opt.tls_key_file = args.tls_key;
  opt.session_ttl = std::chrono::hours(args.session_hours);
  if (args.tls_cert.empty() != args.tls_key.empty()) throw ConfigError("--tls-cert and --tls-key go together");
  const bool plain = args.tls_cert.empty();
  if (plain && !is_loopback_host(opt.host)) {
    if (!args.insecure_plaintext) {
      throw ConfigError("--listen " + args.listen + ": serving plain HTTP beyond loopback would send every bearer "
                        "token and policy readable and rewritable over the network. Give --tls-cert and --tls-key "
                        "(`fedpod tls dev-ca --out tls --name HOST` makes a development pair), or add "
                        "--insecure-plaintext to accept the risk (behind a TLS-terminating proxy, say)");
    }
    std::cerr << "fedpod hub: WARNING: --insecure-plaintext: serving plain HTTP on " << args.listen
              << "; tokens and policies cross the network in clear\n";
  }
  // SIGINT/SIGTERM set a flag that a watcher thread turns into server.stop()
  // (stop() is not async-signal-safe, so the handler cannot call it).
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);

  // The registry the hub's /metrics serves, built here and injected (no global one).
  opt.registry = std::make_shared<prometheus::Registry>();
  metrics::set_component("hub");
  hub::Server server(opt, make_logger("hub", args.log_level));
  Status s = server.start();
  if (!s.ok()) {
    std::cerr << "fedpod hub: " << s.message() << "\n";
    throw CommandExit{kExitConfig};
  }
  if (!args.port_file.empty()) {
    std::string tmp = args.port_file + ".tmp";
    std::ofstream(tmp) << server.port() << "\n";
    std::rename(tmp.c_str(), args.port_file.c_str());
  }
  std::atomic<bool> done{false};
  std::thread watcher([&server, &done] {
    while (!g_stop && !done) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server.stop();
  });
  bool ok = server.serve();
  done = true;
  watcher.join();
  if (!ok) throw CommandExit{kExitFailed};
}

}  // namespace

void add_hub(CLI::App& app) {
  auto* hub = app.add_subcommand("hub", "The model hub: users, models, pods over HTTP");
  hub->require_subcommand(1);
  auto args = std::make_shared<HubArgs>();
  auto* cmd = hub->add_subcommand("serve", "Serve the hub's HTTP API and its web pages (open / in a browser)");
  cmd->add_option("--data-dir", args->data_dir,
                  "directory for hub.db and artifacts/ (created if missing)")
      ->required();
  cmd->add_option("--listen", args->listen, "HOST:PORT to listen on (port 0 picks a free one)")
      ->capture_default_str();
  cmd->add_option("--port-file", args->port_file, "write the bound port here once listening");
  cmd->add_option("--tls-cert", args->tls_cert, "PEM certificate (chain) to serve HTTPS with (`fedpod tls dev-ca`)");
  cmd->add_option("--tls-key", args->tls_key, "PEM private key of --tls-cert");
  cmd->add_flag("--insecure-plaintext", args->insecure_plaintext,
                "serve plain HTTP on a non-loopback address (tokens cross the network in clear)");
  cmd->add_option("--session-hours", args->session_hours,
                  "how long a sign-in to the web pages lasts before the user signs in again")
      ->check(CLI::Range(1, 24 * 30))
      ->capture_default_str();
  cmd->add_option("--log-level", args->log_level, "debug | info | warn | error")
      ->capture_default_str();
  cmd->callback([args] { serve(*args); });

  auto access = std::make_shared<HubAccess>();
  auto local_dir = std::make_shared<std::string>();
  auto* sk = hub->add_subcommand(
      "signing-key",
      "Print the key the hub signs pod policies with: pin it in each pod.yaml (policy.signing_key). With "
      "--data-dir it is read from the hub's own files (hub.sign.pub), which is the safer source: over plain "
      "HTTP a key fetched from the network is only as trustworthy as the network");
  sk->add_option("--data-dir", *local_dir, "the hub's data directory, read locally instead of asking the hub");
  add_access_options(sk, *access, /*json=*/false);
  sk->callback([access, local_dir] {
    if (!local_dir->empty()) {
      auto k = read_signing_key_file(*local_dir + "/hub.sign.pub");
      if (!k.ok()) {
        std::cerr << "fedpod: hub signing-key: " << k.status().message() << "\n";
        throw CommandExit{kExitFailed};
      }
      std::cout << k->public_key << "\n";
      return;
    }
    auto client = connect(*access);
    auto key = client->get_signing_key();
    check(key.status(), "hub signing-key");
    std::cout << *key << "\n";
  });
}

void add_tls(CLI::App& app) {
  auto* tls = app.add_subcommand("tls", "TLS for the hub: a development CA and certificate");
  tls->require_subcommand(1);
  struct Args {
    std::string out = "tls";
    std::vector<std::string> names;
    int days = 365;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = tls->add_subcommand(
      "dev-ca",
      "Make a local CA (DIR/ca.crt, ca.key; reused when present) and a hub certificate from it (DIR/hub.crt, "
      "hub.key) for the given names. Serve with `fedpod hub serve --tls-cert DIR/hub.crt --tls-key DIR/hub.key`; "
      "give clients DIR/ca.crt (--hub-ca, FEDPOD_HUB_CA, job.yaml hub_ca:, pod.yaml policy.hub_ca:)");
  cmd->add_option("--out", args->out, "directory for the four files")->capture_default_str();
  cmd->add_option("--name", args->names,
                  "a DNS name or IP address clients reach the hub by (repeatable; default: localhost, 127.0.0.1, ::1)");
  cmd->add_option("--days", args->days, "validity of the hub certificate, days")->capture_default_str();
  cmd->callback([args] {
    std::vector<std::string> names = args->names;
    if (names.empty()) names = {"localhost", "127.0.0.1", "::1"};
    auto r = hub::make_dev_ca(args->out, names, args->days);
    if (!r.ok()) throw ConfigError(r.status().message());
    std::cout << (r->created_ca ? "created CA " : "reused CA ") << r->ca_cert << " (key " << r->ca_key
              << ", keep it private)\n"
              << "issued " << r->cert << " and " << r->key << " for";
    for (const auto& n : names) std::cout << " " << n;
    std::cout << "\n\n  fedpod hub serve --tls-cert " << r->cert << " --tls-key " << r->key << " ...\n"
              << "  export FEDPOD_HUB_CA=" << r->ca_cert << "   # for the CLI, coordinator and pods\n";
  });
}

}  // namespace fedpod::cli
