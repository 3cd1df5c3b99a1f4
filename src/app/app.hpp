// The program: start-up and shut-down as named steps around one executor.
#pragma once

#include "cli/server_options.hpp"

namespace sm {

// Runs state-manager until SIGTERM or SIGINT. Returns the process's exit status:
// 0 after an orderly shut-down, 1 when start-up failed.
int run_app(const cli::server_options& opts);

}  // namespace sm
