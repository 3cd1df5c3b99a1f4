#include "base/crash_point.hpp"

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <string>

namespace sm {

#ifdef SM_CRASH_POINTS

namespace {

// Read before main, so that nothing that rewrites the environment later (the token's scrub)
// can disarm it.
const std::string crash_at = [] {
  const char* value = std::getenv("STATE_MANAGER_CRASH_AT");
  return std::string(value ? value : "");
}();

}  // namespace

void crash_point(crash_point_name at) {
  if (crash_at.empty() || at.name() != crash_at) return;
  const std::string line = "state-manager: crash point " + crash_at + ": killed\n";
  [[maybe_unused]] const auto written = ::write(2, line.data(), line.size());
  std::raise(SIGKILL);
  ::_exit(137);  // PID 1 of a namespace cannot SIGKILL itself
}

#else

void crash_point(crash_point_name) {}

#endif

}  // namespace sm
