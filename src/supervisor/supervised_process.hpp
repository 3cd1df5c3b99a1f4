// One supervised process: started, watched, restarted by policy, stopped on purpose with
// SIGTERM then SIGKILL. The policy half of supervision; src/proc is the mechanism.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <nlohmann/json_fwd.hpp>

#include "base/clock.hpp"
#include "base/duration.hpp"
#include "proc/child.hpp"
#include "proc/output.hpp"
#include "supervisor/component.hpp"

namespace sm::supervisor {

enum class restart_policy { always, on_failure, never };
std::optional<restart_policy> parse_restart_policy(std::string_view text);

struct process_settings {
  std::string name = "COMMAND";  // for messages
  std::vector<std::string> command;
  std::map<std::string, std::string> extra_env;  // added to the inherited environment
  // Non-empty: stdout and stderr go through pipes and each line is written to ours with this
  // prefix ("[web] "); empty: the process writes to ours directly (unchanged, fastest).
  std::string output_prefix;
  // Where prefixed lines go (our stdout, our stderr): shared by every process that prefixes,
  // so that their lines queue for one writer. Unset: made for this process alone.
  std::shared_ptr<proc::line_output> output_to[2];
  // Run until it succeeds (every 200ms) after each start; the process counts as running only
  // then. Not ready within ready_timeout: it is stopped and counts as a failed start.
  std::vector<std::string> ready_command;
  duration ready_timeout = std::chrono::seconds(30);
  // Non-zero (and a ready_command): once running, the ready_command runs again every
  // health_interval; a failure makes the process `degraded` until a check succeeds again.
  duration health_interval{0};
  restart_policy restart = restart_policy::always;
  duration restart_delay = std::chrono::seconds(1);
  duration timeout_stop = std::chrono::seconds(90);
  // Exponential backoff: each restart after an unbroken run of failures doubles the delay (from
  // restart_delay, or 100ms when that is 0) up to this; a run at least this long resets it.
  // Zero: no backoff, always restart_delay.
  duration backoff_max{0};
  // Circuit breaker: after restart_max unexpected exits within restart_window, give up (the
  // process is `failed`). Zero: never give up.
  unsigned restart_max = 0;
  duration restart_window = std::chrono::seconds(60);
  std::vector<std::string> unset_env;  // removed from the child's environment (secrets)
};

// The restart policy's arithmetic, pure so that it can be tested without processes.
class restart_schedule {
 public:
  explicit restart_schedule(const process_settings& settings) : settings_(settings) {}

  // Records an unexpected exit at `now` of a run that lasted `ran`. Returns the delay before
  // the next start, or nullopt when the circuit breaker opens (no more restarts).
  std::optional<duration> after_exit(std::chrono::steady_clock::time_point now, duration ran);

 private:
  const process_settings& settings_;
  unsigned consecutive_ = 0;  // failures since the last long-enough run
  std::vector<std::chrono::steady_clock::time_point> recent_;  // exits within the window
};

class supervised_process {
 public:
  // States, in the order a life goes through them:
  //   pending -> starting -> running <-> degraded -> (exited: restarting -> starting ...)
  //   -> stopping -> stopped
  // plus `failed` (it ended and, by policy, stays ended with a failure). `degraded`: running,
  // but its health check (health_interval) fails. An intentional stop may be undone by
  // rearm(): stopped -> pending.
  using state = supervisor::state;
  static std::string_view name_of(state s) { return supervisor::name_of(s); }

  // The transition table: every change of state the supervisor may make. Anything else is a
  // bug, refused (the state stays) rather than applied.
  static constexpr bool allowed(state from, state to) {
    using enum state;
    switch (from) {
      case pending:
        return to == starting || to == stopped || to == failed;
      case starting:  // includes waiting for the ready_command
        return to == running || to == restarting || to == stopping || to == stopped || to == failed;
      case running:
        return to == degraded || to == restarting || to == stopping || to == stopped ||
               to == failed;
      case degraded:
        return to == running || to == restarting || to == stopping || to == stopped || to == failed;
      case restarting:
        return to == starting || to == stopping;
      case stopping:
        return to == stopped;
      case stopped:
        return to == pending;  // rearm(): started again after an intentional stop
      case failed:
        return false;  // final
    }
    return false;
  }

  supervised_process(asio::any_io_executor executor, proc::reaper& reaper,
                     process_settings settings);
  // schedule_ refers to settings_: the object stays where it was made.
  supervised_process(const supervised_process&) = delete;
  supervised_process& operator=(const supervised_process&) = delete;

  // Starts the process and keeps it running by policy. Returns when it was stopped on purpose,
  // or when it ended and the policy says not to restart it (see final_status()).
  asio::awaitable<void> run();

  // Stops it on purpose: SIGTERM to its process group, SIGKILL to the group after
  // timeout_stop, then waits for the exit to be collected. It is not restarted. Safe to call
  // in any state, and more than once.
  asio::awaitable<void> stop();

  // Waits until the process is running (true: started and ready), or has ended for good, or
  // `timeout` passed (false). For dependencies: a component starts once what it depends on is
  // running.
  asio::awaitable<bool> wait_running(duration timeout);

  // After stop() has finished (state `stopped`, run() returned): makes it startable again
  // (state `pending`), for run() to start anew. History (restarts, last exit, errors) stays.
  // False, and nothing changes, in any other state.
  bool rearm();

  // Marks a process that will never start (a dependency failed) as failed, with `why`.
  void fail_before_start(std::string why);

  // Once stopped: lets the output forwarders (--log-prefix) finish for up to `grace`, then
  // closes what a lingering grandchild still holds open and gives the forwarders 500 ms to
  // write what they still hold.
  asio::awaitable<void> drain_output(duration grace);

  // Sends `signal` to the process group; false when no process runs.
  bool forward_signal(int signal);

  state current() const { return state_; }
  const process_settings& settings() const { return settings_; }
  // Set once run() has returned because the process ended for good (not after stop()).
  const std::optional<proc::exit_status>& final_status() const { return final_status_; }
  // The last exit, whatever its cause.
  const std::optional<proc::exit_status>& last_exit() const { return last_exit_; }

  // GET / "process": command, pid, state, restarts, started_at, last_exit, last_error.
  nlohmann::json status() const;

  unsigned restarts() const { return restarts_; }
  pid_t pid() const { return pid_; }             // 0 when none runs
  std::chrono::duration<double> uptime() const;  // of the current process; 0 when none runs

  // Called on every change of state, after it happened (status() already shows it): the
  // orchestrator logs it, and the event stream will publish it.
  std::function<void(state from, state to)> on_transition;

 private:
  void set_state(state s);
  void wake_waiters();  // every wait_until() checks its condition again
  asio::awaitable<void> wait_until(std::function<bool()> done);
  asio::awaitable<void> wait_final();  // until run() returned and the state is final
  proc::spawn_request request_for(const std::vector<std::string>& argv, bool capture_output) const;
  void record_error(std::string message);  // last_error_, and the bounded history
  asio::awaitable<void> await_readiness(unsigned generation);
  asio::awaitable<void> watch_health(unsigned generation);
  // Runs the ready_command once, killed at `deadline`: "" when it succeeded, else why not.
  asio::awaitable<std::string> run_check(std::chrono::steady_clock::time_point deadline);
  void notify_exit();

  asio::any_io_executor executor_;
  proc::reaper& reaper_;
  process_settings settings_;
  state state_ = state::pending;
  pid_t pid_ = 0;  // 0 when no process runs
  unsigned restarts_ = 0;
  bool stop_requested_ = false;
  bool running_loop_ = false;
  bool stop_started_ = false;  // the first stop() does the work; later ones wait for it
  bool spawning_ = false;      // run()'s start of the process is in flight (pid_ not known yet)
  pid_t check_pid_ = 0;        // a ready_command running now, or 0
  pid_t leftover_group_ = 0;   // the last run's group, sent SIGTERM when its leader exited
  std::optional<wall_time> started_at_;
  std::chrono::steady_clock::time_point started_steady_{};
  std::optional<proc::exit_status> last_exit_;
  std::optional<wall_time> last_exit_at_;
  std::optional<proc::exit_status> final_status_;
  std::string last_error_;
  static constexpr std::size_t max_errors = 10;
  std::deque<std::pair<wall_time, std::string>> errors_;  // the last max_errors, oldest first
  unsigned refused_transitions_ = 0;  // bugs caught by the table (shown in status())
  restart_schedule schedule_;
  std::optional<duration> next_delay_;        // while restarting: the delay being waited
  bool breaker_open_ = false;                 // the circuit breaker gave up
  asio::steady_timer delay_;                  // the restart delay; cancelled by stop()
  asio::steady_timer exited_;                 // cancelled each time the process exits or run() ends
  std::vector<asio::steady_timer*> waiters_;  // wait_running()s, wait_until()s: woken on changes
  unsigned generation_ = 0;  // counts starts, so a readiness check knows its process
  std::vector<std::weak_ptr<asio::posix::stream_descriptor>> outputs_;  // being forwarded
};

// Prometheus text for processes: families <family>_restarts_total, _up, _uptime_seconds,
// _state{state=...} and _last_exit_status, one sample per member with its labels
// ("" or `component="web"`). `what` names them in the help text.
using labelled_process = std::pair<std::string, const supervised_process*>;
void append_process_metrics(std::string& out, std::string_view family, std::string_view what,
                            const std::vector<labelled_process>& members);

}  // namespace sm::supervisor
