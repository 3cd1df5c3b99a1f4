// state-manager: the init process of a stateful sandbox. See README.md and `--help`.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "app/app.hpp"
#include "checkpoint_cli.hpp"
#include "config/config.hpp"
#include "options.hpp"
#include "restore_db.hpp"
#include "version.h"

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);

  // A subcommand runs on its own and exits: no server, no COMMAND, no lease.
  if (!args.empty() && args.front() == "restore-db") {
    return sm::run_restore_db({args.begin() + 1, args.end()}, sm::config::process_environment);
  }
  if (!args.empty() && args.front() == "checkpoint") {
    return sm::run_checkpoint_cli({args.begin() + 1, args.end()}, sm::config::process_environment);
  }

  // Read the command line and the environment (pure; errors are exit status 2).
  const sm::command_line cli = sm::parse_command_line(args, sm::config::process_environment);
  switch (cli.what) {
    case sm::command_line::action::help:
      std::cout << sm::usage_text();
      return 0;
    case sm::command_line::action::version:
      std::cout << "state-manager " << STATE_MANAGER_VERSION << "\n";
      return 0;
    case sm::command_line::action::error:
      std::cerr << "state-manager: " << cli.error << "\n";
      return 2;
    case sm::command_line::action::run:
      break;
  }

  // The token has been read; keep it out of /proc/1/environ and out of every child's
  // environment.
  ::unsetenv("STATE_MANAGER_TOKEN");

  // Run until SIGTERM or SIGINT, or until COMMAND ends for good.
  return sm::run_app(cli.opts);
}
