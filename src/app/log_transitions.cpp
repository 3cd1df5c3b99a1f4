#include "app/log_transitions.hpp"

#include <nlohmann/json.hpp>

#include "base/log.hpp"
#include "supervisor/process_component.hpp"

namespace sm::app {

namespace {

std::string text_of(const nlohmann::json& v) {
  return v.is_string() ? v.get<std::string>() : v.is_null() ? std::string() : v.dump();
}

// A component that holds state (the database): what its status says about the change.
void log_stateful_transition(const supervisor::component& c, const std::string& who,
                             supervisor::state to) {
  using state = supervisor::state;
  const nlohmann::json s = c.status();
  const nlohmann::json none;
  const nlohmann::json& restored = s.contains("restored") ? s["restored"] : none;
  const nlohmann::json& replication = s.contains("replication") ? s["replication"] : none;
  switch (to) {
    case state::running:
      if (restored.is_object()) {
        log::info(who + " restored from the store",
                  {{"generation", text_of(restored["generation"])},
                   {"segments", text_of(restored["segments"])},
                   {"why", text_of(restored["because"])}});
        if (!restored["stopped_early"].is_null()) {
          log::warn(who + " restore stopped at the last verified transaction",
                    {{"why", text_of(restored["stopped_early"])}});
        }
      }
      log::info(
          who + " running",
          {{"generation", replication.is_object() ? text_of(replication["generation"]) : ""}});
      break;
    case state::degraded:
      log::warn(who + " degraded", {{"error", text_of(c.event_fields()["last_error"])}});
      break;
    case state::failed:
      log::error(who + " cannot start", {{"error", text_of(s["last_error"])}});
      break;
    case state::stopped:
      log::info(who + " stopped", {{"note", text_of(s["last_error"])}});
      break;
    default:
      break;
  }
}

}  // namespace

void log_transition(const supervisor::component& c, const std::string& who, supervisor::state to) {
  const auto* p = dynamic_cast<const supervisor::process_component*>(&c);
  if (!p) return log_stateful_transition(c, who, to);
  using state = supervisor::state;
  const nlohmann::json s = p->process().status();
  const std::string name(supervisor::name_of(to));
  auto exit_text = [&] {
    const auto& last = s["last_exit"];
    if (last.is_null()) return std::string();
    return last["signal"].is_null() ? "exit code " + last["code"].dump()
                                    : "killed by " + last["signal"].get<std::string>();
  };
  switch (to) {
    case state::running:
      log::info(who + " running", {{"pid", s["pid"].dump()}});
      break;
    case state::degraded:
      log::warn(who + " degraded",
                {{"pid", s["pid"].dump()},
                 {"error",
                  s["last_error"].is_null() ? std::string() : s["last_error"].get<std::string>()}});
      break;
    case state::restarting:
    case state::failed:
    case state::stopped:
      if (!s["last_error"].is_null()) {
        log::error(
            who + " cannot start",
            {{"state", name},
             {"error", s["last_error"].get<std::string>()},
             {"status", s["last_exit"].is_null() ? "none" : s["last_exit"]["status"].dump()}});
      } else if (to == state::restarting) {
        log::info(who + " exited", {{"how", exit_text()},
                                    {"restart_in", s["restart_in"].get<std::string>()},
                                    {"restarts", s["restarts"].dump()}});
      } else {
        log::write(to == state::failed ? log::level::warn : log::level::info, who + " exited",
                   {{"state", name}, {"how", exit_text()}});
      }
      if (s["gave_up"].get<bool>()) {
        log::error(who + " failed too often; not restarting it (--restart-max)",
                   {{"restarts", s["restarts"].dump()}});
      }
      break;
    case state::stopping:
      log::info("stopping " + who, {{"pid", s["pid"].dump()}});
      break;
    default:
      break;
  }
}

}  // namespace sm::app
