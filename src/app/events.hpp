// The system's events, typed; GET /events streams them as Server-Sent Events.
#pragma once

#include <cstdint>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "base/clock.hpp"
#include "supervisor/component.hpp"

namespace sm::app {

// The system's state changed (GET / "state").
struct system_changed {
  std::string from, to;
};
// COMMAND ("process") or a component ("component", with its name) changed state; `fields` are
// what the part adds (pid, restarts, last_exit, last_error).
struct part_changed {
  enum class source { process, component } of;
  std::string name;
  supervisor::state from, to;
  nlohmann::json fields;
};
// A checkpoint, restore or upload reached a step.
struct operation_step {
  std::string kind, id, step;
};

struct event : std::variant<system_changed, part_changed, operation_step> {
  using variant::variant;
};

// One Server-Sent Event frame: "id: N\nevent: TYPE\ndata: {...}\n\n", `at` in data.
std::string to_sse(std::uint64_t id, const event& e, wall_time at);

}  // namespace sm::app
