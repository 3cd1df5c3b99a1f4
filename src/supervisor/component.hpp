// The one interface of everything that starts and stops with the configuration
// (docs/architecture.md): the database, each process declared under "components", and COMMAND. The
// system starts them in dependency order and stops them in reverse, for every reason, through this
// interface only.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include "base/duration.hpp"

namespace sm::supervisor {

// One state enum for every component, in the order a life goes through them:
//   pending -> starting -> running <-> degraded -> stopping -> stopped
// plus `failed` (it cannot run, and by policy stays so) and `restarting` (a process between an
// exit and its next start, waiting out its restart delay). A component stopped on purpose may be
// started again: stopped -> starting.
enum class state { pending, starting, running, degraded, restarting, stopping, stopped, failed };
std::string_view name_of(state s);

// The system's state from its parts' states (as 003's containers -> models -> packages):
// none or all running -> running; any stopping -> stopping; any still starting -> starting;
// all failed -> error; some failed or stopped while others run -> degraded; all stopped ->
// stopped.
std::string_view cascade(std::span<const state> parts);

// Why a component is stopped; each flushes what that reason asks for.
enum class stop_reason {
  shutdown,  // state-manager exits: final replication sync, everything flushed
  release,   // POST /release-lease: the same; the next owner restores from the store
  fence,     // the lease was lost: stop writing to the store at once, flush nothing
  quiesce,   // a checkpoint holds the state still; resumed with start() afterwards
  restore,   // a restore replaces the state: flushed, then restore() and start() follow
};
std::string_view name_of(stop_reason r);

// A component's copy of its state in a checkpoint (the manifest records it).
struct snapshot_info {
  std::string file;  // relative to the checkpoint's directory
  std::uint64_t bytes = 0;
  std::uint32_t pages = 0;
  std::string sha256;  // of `file`, lower-case hex: a restore checks the copy against it
  std::string method;  // how it was made ("reflink", "backup API")
};

class component {
 public:
  virtual ~component() = default;

  virtual const std::string& name() const = 0;
  // Names of the components that must be running before this one starts.
  virtual const std::vector<std::string>& depends_on() const;

  // Starts it, from pending or after a stop. A component whose start is a long piece of work
  // (the database's restore from the store) returns when it is running or failed; a process
  // returns once it is launched, and wait_running() tells when it is up. Never throws: a
  // failure leaves the component `failed`, with the reason in status().
  virtual asio::awaitable<void> start() = 0;
  // Until it is running (true), has failed or stopped, or `timeout` passed (false).
  virtual asio::awaitable<bool> wait_running(duration timeout);
  // How long, once started, it may take to be running (readiness check, one restart).
  virtual duration patience() const { return duration{0}; }
  // Marks a component that will never start (a dependency failed) as failed, with `why`.
  virtual void fail_before_start(std::string why);

  // Stops it for `why`. Returns what was flushed ({"component": name, "error": ...}), or null
  // when the component flushes nothing. A component that can hold still while running keeps
  // running for `quiesce` (its snapshot is consistent anyway) and returns null. Safe in any
  // state, and more than once.
  virtual asio::awaitable<nlohmann::json> stop(stop_reason why) = 0;
  // Once stopped: lets what it still writes to our output finish, within `grace`.
  virtual asio::awaitable<void> drain_output(duration grace);

  virtual state current() const = 0;
  virtual nlohmann::json status() const = 0;  // GET / components.<name>
  virtual void append_metrics(std::string& out) const;
  // What an event about a change of its state carries besides name, old and new.
  virtual nlohmann::json event_fields() const;

  // Components that hold state take part in checkpoints: snapshot() copies it into a
  // checkpoint's directory while the component holds still (or consistently while it runs);
  // verify() checks a checkpoint's copy before anything is stopped (throws when it is damaged);
  // restore() sets the state it has aside and puts the checkpoint's copy in its place, while
  // it is stopped; then exactly one of keep_restored() (what was set aside becomes garbage) or
  // undo_restore() (it comes back); remove_replaced() removes the garbage, later. All throw
  // std::system_error (or another std::exception) on failure; none blocks the executor.
  virtual bool holds_state() const { return false; }
  virtual asio::awaitable<snapshot_info> snapshot(const std::filesystem::path& into);
  virtual asio::awaitable<void> verify(const std::filesystem::path& from,
                                       const snapshot_info& copy);
  virtual asio::awaitable<void> restore(const std::filesystem::path& from,
                                        const snapshot_info& copy);
  virtual asio::awaitable<void> keep_restored();
  virtual asio::awaitable<void> undo_restore();
  virtual asio::awaitable<void> remove_replaced();

  // Called on every change of state, after it happened (status() already shows it): the
  // system logs it and publishes the event.
  std::function<void(state from, state to)> on_transition;
};

}  // namespace sm::supervisor
