// fedpod: one binary, every subcommand. Parsing and wiring only.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <string>
#include <vector>
#include <iostream>

#include "commands.h"
#include "fedpod/common/config_util.h"
#include "fedpod/common/names.h"
#include "fedpod/common/process.h"
#include "fedpod/worker/gate.h"
#include "fedpod/worker/runner.h"


namespace {

// After a parse error: when a word where a command was expected is not one, names the
// nearest command of that level, or lists them, and returns true.
bool suggest_command(CLI::App& app, int argc, char** argv) {
  CLI::App* level = &app;
  std::string path = "fedpod";
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') return false;
    std::vector<std::string> names;
    CLI::App* next = nullptr;
    for (CLI::App* sub : level->get_subcommands([](CLI::App* s) { return !s->get_name().empty(); })) {
      if (sub->get_group().empty()) continue;  // hidden
      names.push_back(sub->get_name());
      if (sub->check_name(word)) next = sub;
    }
    if (names.empty()) return false;
    if (next) {
      level = next;
      path += " " + word;
      continue;
    }
    const std::string near = fedpod::nearest_name(word, names);
    std::cerr << "fedpod: '" << word << "' is not a command of `" << path << "`";
    if (!near.empty()) {
      std::cerr << "; did you mean `" << path << " " << near << "`?\n";
    } else {
      std::cerr << "; its commands:";
      for (const auto& n : names) std::cerr << " " << n;
      std::cerr << "\n";
    }
    std::cerr << "Run `" << path << " --help` for more information.\n";
    return true;
  }
  return false;
}

}  // namespace

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
  app.set_version_flag("--version", [] { return fedpod::cli::version_text(); },
                       "Print the version and the build's options, and exit");
  app.add_subcommand("version", "Print the version and the build's options")->callback([] {
    std::cout << fedpod::cli::version_text();
  });
  fedpod::cli::add_worker(app);
  fedpod::cli::add_coordinator(app);
  fedpod::cli::add_job(app);
  fedpod::cli::add_demo(app);
  fedpod::cli::add_simulate(app);
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
    // --help and --version exit 0; every real parse error is a usage error (2).
    if (e.get_exit_code() == 0) return app.exit(e);
    if (!suggest_command(app, argc, argv)) app.exit(e);
    return fedpod::cli::kExitConfig;
  } catch (const fedpod::cli::CommandExit& e) {
    return e.code;
  } catch (const fedpod::ConfigError& e) {
    std::cerr << "fedpod: " << e.what() << "\n";
    return fedpod::cli::kExitConfig;
  }
  return 0;
}
