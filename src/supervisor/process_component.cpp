#include "supervisor/process_component.hpp"

#include <set>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <nlohmann/json.hpp>

namespace sm::supervisor {

process_component::process_component(asio::any_io_executor executor, role r,
                                     std::vector<std::string> depends_on,
                                     std::unique_ptr<supervised_process> process)
    : executor_(executor),
      role_(r),
      name_(process->settings().name),
      depends_on_(std::move(depends_on)),
      process_(std::move(process)) {
  const process_settings& s = process_->settings();
  // Time to start (and become ready, if it has a check), and fail and be restarted once.
  patience_ = (s.ready_command.empty() ? duration{0} : s.ready_timeout) + s.restart_delay +
              std::chrono::seconds(2);
  process_->on_transition = [this](state from, state to) {
    if (on_transition) on_transition(from, to);
  };
}

asio::awaitable<void> process_component::start() {
  // Stopped on purpose before: started anew (new PID); its history stays.
  if (process_->current() == state::stopped && !process_->rearm()) co_return;
  if (process_->current() != state::pending) co_return;  // running already, or failed for good
  asio::co_spawn(
      executor_,
      [this]() -> asio::awaitable<void> {
        co_await process_->run();
        if (const auto& status = process_->final_status(); status && on_ended) on_ended(*status);
      },
      asio::detached);
}

asio::awaitable<bool> process_component::wait_running(duration timeout) {
  return process_->wait_running(timeout);
}

void process_component::fail_before_start(std::string why) {
  process_->fail_before_start(std::move(why));
}

asio::awaitable<nlohmann::json> process_component::stop(stop_reason why) {
  if (role_ == role::command) {
    // COMMAND writes nothing to the store: a lost lease leaves it running. One that was never
    // started stays pending, except at shut-down, when it never will be.
    if (why == stop_reason::fence) co_return nullptr;
    if (process_->current() == state::pending && why != stop_reason::shutdown) co_return nullptr;
  }
  co_await process_->stop();
  co_return nullptr;
}

asio::awaitable<void> process_component::drain_output(duration grace) {
  return process_->drain_output(grace);
}

nlohmann::json process_component::status() const {
  nlohmann::json s = process_->status();
  if (role_ == role::declared) s["depends_on"] = depends_on_;
  return s;
}

nlohmann::json process_component::event_fields() const {
  const nlohmann::json s = process_->status();
  nlohmann::json out = {
      {"pid", s["pid"]}, {"restarts", s["restarts"]}, {"last_exit", s["last_exit"]}};
  if (role_ == role::declared) out["last_error"] = s["last_error"];
  return out;
}

std::unique_ptr<process_component> make_declared_component(asio::any_io_executor executor,
                                                           proc::reaper& reaper,
                                                           const std::string& name,
                                                           const config::component_config& c,
                                                           const declared_defaults& d) {
  process_settings settings;
  settings.name = name;
  settings.command = c.command;
  settings.extra_env = c.env;
  settings.ready_command = c.ready_command;
  settings.restart_delay = c.restart_delay.value_or(d.restart_delay);
  settings.timeout_stop = c.timeout_stop.value_or(d.timeout_stop);
  if (c.ready_timeout) settings.ready_timeout = *c.ready_timeout;
  if (c.health_interval) settings.health_interval = *c.health_interval;
  if (d.log_prefix) {
    settings.output_prefix = "[" + name + "] ";
    settings.output_to[0] = d.output_to[0];
    settings.output_to[1] = d.output_to[1];
  }
  return std::make_unique<process_component>(
      executor, process_component::role::declared, c.depends_on,
      std::make_unique<supervised_process>(executor, reaper, std::move(settings)));
}

std::vector<std::string> start_order(const config::configuration& config) {
  std::vector<std::string> order;
  std::set<std::string> placed;
  std::vector<std::string> wanted;
  for (const std::string& name : config.stacks) {
    if (config.components.count(name)) wanted.push_back(name);
  }
  // Depth first: a component's dependencies are placed before it. On a stack of its own, so
  // that a long chain of dependencies takes no frames of the thread's stack.
  struct frame {
    const std::string* name;
    const std::vector<std::string>* deps;
    std::size_t next = 0;
  };
  std::vector<frame> path;
  auto enter = [&](const std::string& name) {
    if (!placed.insert(name).second) return;
    path.push_back({&name, &config.components.at(name).depends_on});
  };
  for (const std::string& name : wanted) {
    enter(name);
    while (!path.empty()) {
      frame& top = path.back();
      if (top.next < top.deps->size()) {
        enter((*top.deps)[top.next++]);  // may invalidate `top`
      } else {
        order.push_back(*top.name);
        path.pop_back();
      }
    }
  }
  return order;
}

}  // namespace sm::supervisor
