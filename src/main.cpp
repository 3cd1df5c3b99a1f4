// state-manager: the init process of a stateful sandbox. See README.md and `--help`.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "app/app.hpp"
#include "base/secret.hpp"
#include "cli/checkpoint_command.hpp"
#include "cli/restore_db_command.hpp"
#include "cli/server_options.hpp"
#include "config/config.hpp"
#include "version.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);

  // A subcommand runs on its own and exits: no server, no COMMAND, no lease.
  if (!args.empty() && args.front() == "restore-db") {
    return sm::cli::run_restore_db_command({args.begin() + 1, args.end()},
                                           sm::config::process_environment);
  }
  if (!args.empty() && args.front() == "checkpoint") {
    return sm::cli::run_checkpoint_command({args.begin() + 1, args.end()},
                                           sm::config::process_environment);
  }

  // Read the command line and the environment (pure; errors are exit status 2).
  const sm::cli::server_command_line cli =
      sm::cli::parse_server_command_line(args, sm::config::process_environment);
  switch (cli.what) {
    case sm::cli::server_command_line::action::help:
      std::cout << sm::cli::server_usage_text();
      return 0;
    case sm::cli::server_command_line::action::version:
      std::cout << "state-manager " << STATE_MANAGER_VERSION << "\n";
      return 0;
    case sm::cli::server_command_line::action::error:
      std::cerr << "state-manager: " << cli.error << "\n";
      return 2;
    case sm::cli::server_command_line::action::run:
      break;
  }

  // The token has been read (cli.opts holds it): out of every child's environment, and out of
  // the kernel's copy of ours, which /proc/<pid>/environ shows to any process of our user.
  sm::scrub_environment_variable("STATE_MANAGER_TOKEN");

  // Run until SIGTERM or SIGINT, or until COMMAND ends for good.
  return sm::run_app(cli.opts);
}
