// One log line per change of a component's state, with what explains it.
#pragma once

#include <string>

#include "supervisor/component.hpp"

namespace sm::app {

// `who`: "COMMAND" or "component <name>". Processes say how they exited, why they cannot
// start, when they give up; the database logs its own replication news.
void log_transition(const supervisor::component& c, const std::string& who, supervisor::state to);

}  // namespace sm::app
