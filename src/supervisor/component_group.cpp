#include "supervisor/component_group.hpp"

#include <algorithm>
#include <set>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <nlohmann/json.hpp>

namespace sm::supervisor {

using state = supervised_process::state;

std::string_view cascade(std::span<const state> parts) {
  auto count = [&](auto predicate) {
    return std::size_t(std::count_if(parts.begin(), parts.end(), predicate));
  };
  const std::size_t n = parts.size();
  if (n == 0) return "running";
  if (count([](state s) { return s == state::stopping; })) return "stopping";
  if (count([](state s) {
        return s == state::pending || s == state::starting || s == state::restarting;
      })) {
    return "starting";
  }
  const std::size_t running = count([](state s) { return s == state::running; });
  const std::size_t failed = count([](state s) { return s == state::failed; });
  const std::size_t stopped = count([](state s) { return s == state::stopped; });
  if (running == n) return "running";
  if (failed == n) return "error";
  if (stopped == n) return "stopped";
  return "degraded";
}

std::vector<std::string> start_order(const config::configuration& config) {
  std::vector<std::string> order;
  std::set<std::string> placed;
  std::vector<std::string> wanted;
  for (const std::string& name : config.stacks) {
    if (config.components.count(name)) wanted.push_back(name);
  }
  // Depth first: a component's dependencies are placed before it. Dependencies that are
  // declared but not named in `stacks` are started too: they are needed.
  std::function<void(const std::string&)> place = [&](const std::string& name) {
    if (placed.count(name)) return;
    placed.insert(name);
    for (const std::string& dep : config.components.at(name).depends_on) place(dep);
    order.push_back(name);
  };
  for (const std::string& name : wanted) place(name);
  return order;
}

component_group::component_group(asio::any_io_executor executor, proc::reaper& reaper,
                                 const config::configuration& config, defaults d,
                                 transition_hook on_transition)
    : executor_(executor) {
  for (const std::string& name : start_order(config)) {
    const config::component_config& c = config.components.at(name);
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
    // Time to start (and become ready, if it has a check), and fail and be restarted once.
    const duration patience =
        (settings.ready_command.empty() ? duration{0} : settings.ready_timeout) +
        settings.restart_delay + std::chrono::seconds(2);
    member m{name, c.depends_on, std::make_unique<supervised_process>(executor, reaper, settings),
             patience};
    if (on_transition) {
      m.process->on_transition = [on_transition, name](state from, state to) {
        on_transition(name, from, to);
      };
    }
    members_.push_back(std::move(m));
  }
}

component_group::member* component_group::find(const std::string& name) {
  for (member& m : members_) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

const supervised_process* component_group::find_process(const std::string& name) const {
  for (const member& m : members_) {
    if (m.name == name) return m.process.get();
  }
  return nullptr;
}

duration component_group::remaining(const member& m) {
  const auto left = m.running_by - std::chrono::steady_clock::now();
  return std::max(duration{0}, std::chrono::duration_cast<duration>(left));
}

asio::awaitable<void> component_group::start() {
  for (member& m : members_) {
    if (m.process->current() != state::pending) continue;  // stopped before its turn
    std::string failed_dependency;
    for (const std::string& dep : m.depends_on) {
      member* d = find(dep);
      if (!d || !co_await d->process->wait_running(remaining(*d))) {
        failed_dependency = dep;
        break;
      }
    }
    if (!failed_dependency.empty()) {
      m.process->fail_before_start("dependency \"" + failed_dependency + "\" is not running");
      continue;
    }
    m.running_by = std::chrono::steady_clock::now() + m.patience;
    asio::co_spawn(executor_, m.process->run(), asio::detached);
  }
  // Started: now until each is running, has failed for good, or ran out of patience. Each
  // deadline is absolute, so a component already waited for costs nothing more here.
  for (member& m : members_) co_await m.process->wait_running(remaining(m));
}

asio::awaitable<void> component_group::stop() {
  for (auto it = members_.rbegin(); it != members_.rend(); ++it) co_await it->process->stop();
}

void component_group::rearm() {
  for (member& m : members_) m.process->rearm();
}

asio::awaitable<void> component_group::drain_output(duration grace) {
  for (member& m : members_) co_await m.process->drain_output(grace);
}

void component_group::append_metrics(std::string& out) const {
  std::vector<labelled_process> members;
  for (const member& m : members_) {
    members.emplace_back("component=\"" + m.name + "\"", m.process.get());
  }
  append_process_metrics(out, "state_manager_component", "a component", members);
}

std::vector<state> component_group::states() const {
  std::vector<state> out;
  for (const member& m : members_) out.push_back(m.process->current());
  return out;
}

nlohmann::json component_group::status() const {
  nlohmann::json out = nlohmann::json::object();
  for (const member& m : members_) {
    nlohmann::json s = m.process->status();
    s["depends_on"] = m.depends_on;
    out[m.name] = std::move(s);
  }
  return out;
}

}  // namespace sm::supervisor
