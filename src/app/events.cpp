#include "app/events.hpp"

namespace sm::app {

namespace {

struct formatter {
  std::string type;
  nlohmann::json data;

  void operator()(const system_changed& e) {
    type = "system";
    data = {{"old", e.from}, {"new", e.to}};
  }
  void operator()(const part_changed& e) {
    data = e.fields.is_object() ? e.fields : nlohmann::json::object();
    if (e.of == part_changed::source::component) {
      type = "component";
      data["name"] = e.name;
    } else {
      type = "process";
    }
    data["old"] = supervisor::name_of(e.from);
    data["new"] = supervisor::name_of(e.to);
  }
  void operator()(const operation_step& e) {
    type = "operation";
    data = {{"kind", e.kind}, {"id", e.id}, {"step", e.step}};
  }
};

}  // namespace

std::string to_sse(std::uint64_t id, const event& e, wall_time at) {
  formatter f;
  std::visit(f, static_cast<const event::variant&>(e));
  f.data["at"] = format_rfc3339(at, true);
  return "id: " + std::to_string(id) + "\nevent: " + f.type +
         "\ndata: " + f.data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
         "\n\n";
}

}  // namespace sm::app
