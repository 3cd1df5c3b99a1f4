#include "supervisor/component.hpp"

#include <algorithm>
#include <stdexcept>

#include <asio/this_coro.hpp>
#include <nlohmann/json.hpp>

namespace sm::supervisor {

std::string_view name_of(state s) {
  switch (s) {
    case state::pending:
      return "pending";
    case state::starting:
      return "starting";
    case state::running:
      return "running";
    case state::degraded:
      return "degraded";
    case state::restarting:
      return "restarting";
    case state::stopping:
      return "stopping";
    case state::stopped:
      return "stopped";
    case state::failed:
      return "failed";
  }
  return "unknown";
}

std::string_view name_of(stop_reason r) {
  switch (r) {
    case stop_reason::shutdown:
      return "shutdown";
    case stop_reason::release:
      return "release";
    case stop_reason::fence:
      return "fence";
    case stop_reason::quiesce:
      return "quiesce";
    case stop_reason::restore:
      return "restore";
  }
  return "unknown";
}

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

const std::vector<std::string>& component::depends_on() const {
  static const std::vector<std::string> none;
  return none;
}

asio::awaitable<bool> component::wait_running(duration) {
  co_return current() == state::running || current() == state::degraded;
}

void component::fail_before_start(std::string) {}

asio::awaitable<void> component::drain_output(duration) {
  co_return;
}

void component::append_metrics(std::string&) const {}

nlohmann::json component::event_fields() const {
  return nlohmann::json::object();
}

namespace {
std::logic_error stateless(const component& c) {
  return std::logic_error("component \"" + c.name() + "\" holds no state to snapshot or restore");
}
}  // namespace

asio::awaitable<snapshot_info> component::snapshot(const std::filesystem::path&) {
  throw stateless(*this);
}

asio::awaitable<void> component::verify(const std::filesystem::path&, const snapshot_info&) {
  throw stateless(*this);
}

asio::awaitable<void> component::restore(const std::filesystem::path&, const snapshot_info&) {
  throw stateless(*this);
}

asio::awaitable<void> component::keep_restored() {
  co_return;
}

asio::awaitable<void> component::undo_restore() {
  co_return;
}

asio::awaitable<void> component::remove_replaced() {
  co_return;
}

}  // namespace sm::supervisor
