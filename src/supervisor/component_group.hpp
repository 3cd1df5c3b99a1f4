// The components declared in the configuration ("components", named in "stacks"): started in
// dependency order, each once what it depends on is running (ready), stopped in reverse.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include "config/config.hpp"
#include "supervisor/supervised_process.hpp"

namespace sm::supervisor {

// The system's state from its parts' states (as 003's containers -> models -> packages):
// none or all running -> running; any stopping -> stopping; any still starting -> starting;
// all failed -> error; some failed or stopped while others run -> degraded; all stopped ->
// stopped.
std::string_view cascade(std::span<const supervised_process::state> parts);

// `depends_on` order: every component after what it depends on; ties in `stacks` order.
// The configuration was validated (known names, no cycles).
std::vector<std::string> start_order(const config::configuration& config);

class component_group {
 public:
  struct defaults {
    duration restart_delay = std::chrono::seconds(1);
    duration timeout_stop = std::chrono::seconds(90);
    bool log_prefix = false;                          // prefix each output line with "[name] "
    std::shared_ptr<proc::line_output> output_to[2];  // shared with COMMAND (see process_settings)
  };
  using transition_hook = std::function<void(
      const std::string& name, supervised_process::state from, supervised_process::state to)>;

  component_group(asio::any_io_executor executor, proc::reaper& reaper,
                  const config::configuration& config, defaults d, transition_hook on_transition);

  // Starts every component in start_order(), each once its dependencies are running; one whose
  // dependency failed (or did not become ready within its ready_timeout plus its restart delay)
  // is failed too. Returns when each is running, has failed, or had that long to get there.
  asio::awaitable<void> start();
  // Stops them in the reverse order (each: SIGTERM, SIGKILL after its timeout_stop).
  asio::awaitable<void> stop();
  // After stop(): every member startable again (start() then starts them anew, new PIDs).
  void rearm();
  // See supervised_process::drain_output.
  asio::awaitable<void> drain_output(duration grace);

  std::vector<supervised_process::state> states() const;
  nlohmann::json status() const;  // {"name": {process status}, ...}
  // state_manager_component_* families, labelled component="name".
  void append_metrics(std::string& out) const;
  bool empty() const { return members_.empty(); }
  // The named component's process, or null.
  const supervised_process* find_process(const std::string& name) const;

 private:
  struct member {
    std::string name;
    std::vector<std::string> depends_on;
    std::unique_ptr<supervised_process> process;
    duration patience;  // how long it may take to be running, once started
    std::chrono::steady_clock::time_point running_by{};  // its start + patience
  };
  member* find(const std::string& name);
  static duration remaining(const member& m);

  asio::any_io_executor executor_;
  std::vector<member> members_;  // in start order
};

}  // namespace sm::supervisor
