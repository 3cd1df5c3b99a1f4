// The program: start-up and shut-down as named steps around one executor.
#pragma once

#include "options.hpp"

namespace sm {

// Runs state-manager until SIGTERM or SIGINT. Returns the process's exit status:
// 0 after an orderly shut-down, 1 when start-up failed.
int run_app(const options& opts);

}  // namespace sm
