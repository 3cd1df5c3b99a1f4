// What the command-line tests share: printing an action in a failed check, and an environment
// lookup made from a map.
#pragma once

#include <map>
#include <optional>
#include <ostream>
#include <string>

#include "cli/option_table.hpp"

namespace sm::cli {
inline std::ostream& operator<<(std::ostream& os, action a) {
  return os << name_of(a);
}
}  // namespace sm::cli

namespace test_support {

inline sm::cli::env_lookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

}  // namespace test_support
