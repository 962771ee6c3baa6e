// fedpod: one binary, every subcommand. Parsing and wiring only.
#include <CLI/CLI.hpp>

#include <csignal>
#include <iostream>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/process.h"
#include "fedpod/worker/gate.h"
#include "fedpod/worker/runner.h"

int main(int argc, char** argv) {
  // A job runner (worker/runner.h), started by `fedpod worker` for each job; not a
  // command for people, so not in --help.
  if (argc > 1 && std::string(argv[1]) == "runner") return fedpod::worker::runner_main(argc - 2, argv + 2);
  // The pod's receiving process (worker/gate.h), started by `fedpod worker`.
  if (argc > 1 && std::string(argv[1]) == "gate") {
    fedpod::tune_malloc_for_large_messages();
    return fedpod::worker::gate_main(argc - 2, argv + 2);
  }
  fedpod::tune_malloc_for_large_messages();  // before any thread starts
  // A peer that closes a TLS connection mid-write (OpenSSL writes with write(2)) must
  // fail that one exchange, not kill the hub, a pod or a CLI call with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"fedpod: federated learning across data pods.\n"
               "Pods keep their data; a coordinator trains a model across them."};
  app.require_subcommand(1);
  app.add_subcommand("version", "Print the version")->callback([] {
    std::cout << "fedpod " << FEDPOD_VERSION << "\n";
  });
  fedpod::cli::add_worker(app);
  fedpod::cli::add_coordinator(app);
  fedpod::cli::add_demo(app);
  fedpod::cli::add_hub(app);
  fedpod::cli::add_tls(app);
  fedpod::cli::add_user(app);
  fedpod::cli::add_model(app);
  fedpod::cli::add_pod(app);
  fedpod::cli::add_keys(app);
  fedpod::cli::add_access(app);
  fedpod::cli::add_policy(app);
  fedpod::cli::add_audit(app);
  fedpod::cli::add_privacy(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const fedpod::cli::CommandExit& e) {
    return e.code;
  } catch (const fedpod::ConfigError& e) {
    std::cerr << "fedpod: " << e.what() << "\n";
    return fedpod::cli::kExitConfig;
  }
  return 0;
}
