// Secrets: comparison whose duration does not depend on where two strings differ, and secrets
// that came through the process's environment.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sm {

// True when a and b are equal. Runs over every byte of `expected` whatever `given` holds, so the
// time taken leaks neither the position of the first difference nor (beyond `expected`'s own
// length) anything about `given`.
bool constant_time_equal(std::string_view given, std::string_view expected);

// Removes `name` from the environment, both copies of it:
// - `environ` (unsetenv), so that no child started afterwards inherits it;
// - the original environment block the kernel shows in /proc/<pid>/environ
//   (mm->env_start..env_end, which unsetenv never touches): every "name=value" entry there is
//   overwritten with NUL bytes, in place, as shells' tools do.
// The first call reads the block's bounds from /proc/self/stat (fields 50 and 51): make it before
// the executor runs (main scrubs the API token). Without /proc nothing can read the block
// either, and only `environ` is changed.
void scrub_environment_variable(const std::string& name);

// Takes a secret out of the environment: its value (nullopt when unset), kept in memory from the
// first take on, and the variable scrubbed as above. A later take, or environment_value(),
// returns the kept value: a configuration applied again resolves the same {"$env": "NAME"}.
std::optional<std::string> take_environment_secret(const std::string& name);

// The value of `name`: the one taken by take_environment_secret(), else the environment's now.
std::optional<std::string> environment_value(const std::string& name);

}  // namespace sm
