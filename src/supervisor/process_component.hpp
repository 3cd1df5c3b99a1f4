// A supervised process as a component: COMMAND, or one declared under "components".
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/any_io_executor.hpp>

#include "config/config.hpp"
#include "supervisor/component.hpp"
#include "supervisor/supervised_process.hpp"

namespace sm::supervisor {

class process_component final : public component {
 public:
  // COMMAND keeps running when the lease is lost (it writes nothing to the store) and is
  // stopped for a release or a checkpoint only once it was started; a declared component is
  // stopped for every reason.
  enum class role { command, declared };

  process_component(asio::any_io_executor executor, role r, std::vector<std::string> depends_on,
                    std::unique_ptr<supervised_process> process);

  const std::string& name() const override { return name_; }
  const std::vector<std::string>& depends_on() const override { return depends_on_; }
  asio::awaitable<void> start() override;
  asio::awaitable<bool> wait_running(duration timeout) override;
  duration patience() const override { return patience_; }
  void fail_before_start(std::string why) override;
  asio::awaitable<nlohmann::json> stop(stop_reason why) override;
  asio::awaitable<void> drain_output(duration grace) override;
  state current() const override { return process_->current(); }
  nlohmann::json status() const override;
  nlohmann::json event_fields() const override;

  supervised_process& process() { return *process_; }
  const supervised_process& process() const { return *process_; }
  // Called when the process ended for good (the policy says not to restart it), with its exit.
  std::function<void(const proc::exit_status&)> on_ended;

 private:
  asio::any_io_executor executor_;
  role role_;
  std::string name_;
  std::vector<std::string> depends_on_;
  std::unique_ptr<supervised_process> process_;
  duration patience_;
};

// Settings of a process declared under "components", with the command line's defaults for what
// it leaves out.
struct declared_defaults {
  duration restart_delay = std::chrono::seconds(1);
  duration timeout_stop = std::chrono::seconds(90);
  bool log_prefix = false;                          // prefix each output line with "[name] "
  std::shared_ptr<proc::line_output> output_to[2];  // shared with COMMAND (see process_settings)
};
std::unique_ptr<process_component> make_declared_component(asio::any_io_executor executor,
                                                           proc::reaper& reaper,
                                                           const std::string& name,
                                                           const config::component_config& c,
                                                           const declared_defaults& d);

// `depends_on` order: every declared component after what it depends on; ties in `stacks`
// order. Dependencies declared but not named in `stacks` are started too. The configuration
// was validated (known names, no cycles).
std::vector<std::string> start_order(const config::configuration& config);

}  // namespace sm::supervisor
