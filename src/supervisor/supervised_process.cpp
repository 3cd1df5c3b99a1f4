#include "supervisor/supervised_process.hpp"

#include <signal.h>

#include <cstring>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

namespace sm::supervisor {

using json = nlohmann::json;
using clock = std::chrono::steady_clock;

std::optional<restart_policy> parse_restart_policy(std::string_view text) {
  if (text == "always") return restart_policy::always;
  if (text == "on-failure") return restart_policy::on_failure;
  if (text == "never") return restart_policy::never;
  return std::nullopt;
}


std::optional<duration> restart_schedule::after_exit(std::chrono::steady_clock::time_point now,
                                                     duration ran) {
  if (settings_.restart_max > 0) {
    // Forget exits that left the window, then count this one.
    std::erase_if(recent_, [&](auto t) { return now - t >= settings_.restart_window; });
    recent_.push_back(now);
    if (recent_.size() >= settings_.restart_max) return std::nullopt;
  }
  if (settings_.backoff_max.count() == 0) return settings_.restart_delay;
  if (ran >= settings_.backoff_max) consecutive_ = 0;  // it ran well: start over
  const duration base = settings_.restart_delay.count() > 0 ? settings_.restart_delay
                                                            : std::chrono::milliseconds(100);
  duration delay = base;
  for (unsigned i = 0; i < consecutive_ && delay < settings_.backoff_max; ++i) delay *= 2;
  ++consecutive_;
  return std::min(delay, std::max(settings_.backoff_max, base));
}

supervised_process::supervised_process(asio::any_io_executor executor, proc::reaper& reaper,
                                       process_settings settings)
    : executor_(executor),
      reaper_(reaper),
      settings_(std::move(settings)),
      schedule_(settings_),
      delay_(executor),
      exited_(executor, clock::time_point::max()) {}

void supervised_process::set_state(state s) {
  if (s == state_) return;
  if (!allowed(state_, s)) {
    ++refused_transitions_;
    record_error(std::string("refused transition ") + std::string(name_of(state_)) + " -> " +
                 std::string(name_of(s)));
    return;
  }
  const state from = std::exchange(state_, s);
  wake_waiters();
  // The hook only observes (logs, events); its failure must not stop the supervision.
  if (on_transition) {
    try {
      on_transition(from, s);
    } catch (const std::exception&) {
    }
  }
}

asio::awaitable<bool> supervised_process::wait_running(duration timeout) {
  // A timer of its own: waiters sharing one would cancel each other's waits when re-arming.
  asio::steady_timer wake(executor_, clock::now() + timeout);
  waiters_.push_back(&wake);
  // Check, then wait, in one turn: a change cannot slip in between.
  auto up = [&] { return state_ == state::running || state_ == state::degraded; };
  while (!up() && state_ != state::failed && state_ != state::stopped) {
    std::error_code ec;
    co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) break;  // the deadline, not a change
  }
  std::erase(waiters_, &wake);
  co_return up();
}

void supervised_process::wake_waiters() {
  for (asio::steady_timer* waiter : waiters_) waiter->cancel();
}

asio::awaitable<void> supervised_process::wait_until(std::function<bool()> done) {
  asio::steady_timer wake(executor_, clock::time_point::max());
  waiters_.push_back(&wake);
  // Check, then wait, in one turn: a change cannot slip in between.
  while (!done()) {
    std::error_code ec;
    co_await wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  std::erase(waiters_, &wake);
}

proc::spawn_request supervised_process::request_for(const std::vector<std::string>& argv,
                                                    bool capture_output) const {
  return proc::spawn_request{argv, settings_.extra_env, settings_.unset_env, capture_output};
}

void supervised_process::fail_before_start(std::string why) {
  if (state_ != state::pending) return;  // stopped meanwhile (shut-down): nothing to fail
  record_error(std::move(why));
  set_state(state::failed);
}

asio::awaitable<std::string> supervised_process::run_check(clock::time_point deadline) {
  try {
    proc::child check = co_await proc::spawn(reaper_, request_for(settings_.ready_command, false));
    // A check that hangs is killed (its whole group) at the deadline, or by stop().
    struct limit {
      asio::steady_timer timer;
      bool done = false;  // set before the cancel: a kill already queued must not fire
    };
    auto bound = std::make_shared<limit>(limit{asio::steady_timer(executor_, deadline)});
    const pid_t check_pid = check.pid();
    asio::co_spawn(
        executor_,
        [bound, check_pid]() -> asio::awaitable<void> {
          std::error_code ec;
          co_await bound->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          if (!bound->done) ::kill(-check_pid, SIGKILL);
        },
        asio::detached);
    check_pid_ = check_pid;
    // stop() came while it started, and kills only a check it knows of: no grace for a check.
    if (stop_requested_) ::kill(-check_pid, SIGKILL);
    const proc::exit_status status = co_await reaper_.wait(check);
    check_pid_ = 0;
    bound->done = true;
    bound->timer.cancel();
    if (status.success()) co_return std::string();
    co_return "ready_command " + (status.signal
                                      ? std::string("killed by a signal")
                                      : "exited with code " + std::to_string(status.code));
  } catch (const std::system_error& e) {
    co_return std::string("ready_command: ") + e.what();
  }
}

asio::awaitable<void> supervised_process::await_readiness(unsigned generation) {
  const auto deadline = clock::now() + settings_.ready_timeout;
  asio::steady_timer pause(executor_);
  // Each check stops being ours as soon as the process it checks is gone.
  auto current = [&] { return generation == generation_ && state_ == state::starting; };
  while (current()) {
    const std::string failure = co_await run_check(deadline);
    if (!current()) co_return;
    if (failure.empty()) {
      set_state(state::running);
      if (settings_.health_interval.count() > 0) {
        asio::co_spawn(executor_, watch_health(generation), asio::detached);
      }
      co_return;
    }
    if (clock::now() >= deadline) {
      record_error("not ready after " + format_duration(settings_.ready_timeout) + ": " + failure);
      forward_signal(SIGKILL);  // a failed start: the policy decides what comes next
      co_return;
    }
    pause.expires_after(std::chrono::milliseconds(200));
    std::error_code ec;
    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<void> supervised_process::watch_health(unsigned generation) {
  // Liveness, for as long as this start's process runs: the ready_command again every
  // health_interval. A failure makes it `degraded` (it keeps running: its own exit is what
  // restarts it); the next success makes it `running` again.
  auto current = [&] {
    return generation == generation_ && (state_ == state::running || state_ == state::degraded);
  };
  asio::steady_timer pause(executor_);
  while (current()) {
    pause.expires_after(settings_.health_interval);
    std::error_code ec;
    co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!current()) co_return;
    // The check gets the smaller of the interval and ready_timeout: checks never pile up.
    const std::string failure = co_await run_check(
        clock::now() + std::min(settings_.health_interval, settings_.ready_timeout));
    if (!current()) co_return;
    if (!failure.empty() && state_ == state::running) {
      record_error("health check failed: " + failure);
      set_state(state::degraded);
    } else if (failure.empty() && state_ == state::degraded) {
      last_error_.clear();
      set_state(state::running);
    }
  }
}

void supervised_process::record_error(std::string message) {
  last_error_ = message;
  errors_.push_back({std::chrono::system_clock::now(), std::move(message)});
  if (errors_.size() > max_errors) errors_.pop_front();
}

void supervised_process::notify_exit() {
  exited_.cancel();
  exited_.expires_at(clock::time_point::max());
}

asio::awaitable<void> supervised_process::run() {
  running_loop_ = true;
  while (!stop_requested_) {
    set_state(state::starting);
    const auto run_began = clock::now();
    proc::exit_status status;
    bool exec_failed = false;
    // What the last run left in its group got SIGTERM when its leader exited; what still
    // lives now is killed before the next start (the group id cannot have been reused while
    // any member lives).
    if (leftover_group_ != 0 && ::kill(-leftover_group_, 0) == 0) {
      ::kill(-leftover_group_, SIGKILL);
    }
    leftover_group_ = 0;
    try {
      // The start is awaited (its exec runs off the executor): stop() may come meanwhile, and
      // waits for it to end (spawning_) to stop what it started.
      spawning_ = true;
      proc::child child = co_await proc::spawn(
          reaper_, request_for(settings_.command, !settings_.output_prefix.empty()));
      std::erase_if(outputs_, [](const auto& w) { return w.expired(); });
      for (int i = 0; i < 2; ++i) {
        if (!child.output[i]) continue;
        auto pipe = std::make_shared<asio::posix::stream_descriptor>(std::move(*child.output[i]));
        outputs_.push_back(pipe);
        if (!settings_.output_to[i]) {
          settings_.output_to[i] = std::make_shared<proc::line_output>(executor_, i + 1);
        }
        asio::co_spawn(executor_,
                       proc::forward_lines(pipe, settings_.output_to[i], settings_.output_prefix),
                       asio::detached);
      }
      pid_ = child.pid();
      spawning_ = false;
      wake_waiters();
      ++generation_;
      started_at_ = std::chrono::system_clock::now();
      started_steady_ = clock::now();
      last_error_.clear();
      if (stop_requested_) {
        // stop() came while it started: it is `stopping`, and stop() stops it now that its pid
        // is known.
      } else if (settings_.ready_command.empty()) {
        set_state(state::running);
      } else {
        asio::co_spawn(executor_, await_readiness(generation_), asio::detached);
      }
      status = co_await reaper_.wait(child);
      if (!stop_requested_) {
        // The leader died on its own: the rest of its tree (a "cmd &" of a shell, workers)
        // must not outlive it into the next run, holding its ports and files.
        if (::kill(-child.pid(), SIGTERM) == 0) leftover_group_ = child.pid();
      }
      // It had started: a failed health check is history now (kept in errors_), not the
      // reason for this exit.
      if (state_ == state::running || state_ == state::degraded) last_error_.clear();
    } catch (const std::system_error& e) {
      spawning_ = false;
      wake_waiters();
      // Could not start it at all (missing, not executable): retrying the same exec cannot
      // help, so it ends for good with the status a shell would report (127 or 126).
      record_error(e.what());
      status.code = proc::exec_failure_status(e.code().value());
      exec_failed = true;
    }
    pid_ = 0;
    last_exit_ = status;
    last_exit_at_ = std::chrono::system_clock::now();
    notify_exit();
    if (stop_requested_) break;

    const bool restart = settings_.restart == restart_policy::always ||
                         (settings_.restart == restart_policy::on_failure && !status.success());
    std::optional<duration> delay;
    if (restart && !exec_failed) {
      const auto now = clock::now();
      delay = schedule_.after_exit(now, std::chrono::duration_cast<duration>(now - run_began));
      breaker_open_ = !delay;
    }
    if (!delay) {
      // Ended for good: by policy, or the circuit breaker gave up on it.
      final_status_ = status;
      running_loop_ = false;  // before the state: wait_final() checks both when woken
      set_state(status.success() && !breaker_open_ ? state::stopped : state::failed);
      notify_exit();
      co_return;
    }
    ++restarts_;
    next_delay_ = delay;
    set_state(state::restarting);
    if (delay->count() > 0) {
      delay_.expires_after(*delay);
      std::error_code ec;
      co_await delay_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    next_delay_.reset();
  }
  running_loop_ = false;
  set_state(state::stopped);
  notify_exit();
}

asio::awaitable<void> supervised_process::drain_output(duration grace) {
  asio::steady_timer pause(executor_);
  auto open = [&] {
    std::erase_if(outputs_, [](const auto& w) { return w.expired(); });
    return !outputs_.empty();
  };
  auto wait_closed = [&](clock::time_point deadline) -> asio::awaitable<void> {
    while (open() && clock::now() < deadline) {
      pause.expires_after(std::chrono::milliseconds(10));
      std::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
  };
  co_await wait_closed(clock::now() + grace);
  for (const auto& weak : outputs_) {
    if (const auto pipe = weak.lock()) {
      std::error_code ignored;
      pipe->close(ignored);
    }
  }
  // The forwarders write what they still hold (an unfinished last line); one stalled on a
  // reader of our output that stopped reading is abandoned by the caller after this.
  co_await wait_closed(clock::now() + std::chrono::milliseconds(500));
}

bool supervised_process::forward_signal(int signal) {
  if (pid_ == 0) return false;
  // The child leads its own group (spawn made it so): the signal reaches its whole tree.
  return ::kill(-pid_, signal) == 0 || ::kill(pid_, signal) == 0;
}

asio::awaitable<void> supervised_process::stop() {
  stop_requested_ = true;
  delay_.cancel();  // a pending restart will not happen
  if (stop_started_) {
    // Another stop() is at work (shut-down and an API call, say): wait for it to finish.
    co_await wait_final();
    co_return;
  }
  stop_started_ = true;
  if (!running_loop_) {
    if (state_ == state::pending) set_state(state::stopped);
    co_return;
  }
  set_state(state::stopping);
  if (check_pid_ != 0) ::kill(-check_pid_, SIGKILL);  // a readiness check has no grace
  // A start in flight: what it starts is stopped like the rest, once its pid is known.
  co_await wait_until([this] { return !spawning_; });
  const pid_t group = pid_;
  if (group != 0) {
    const auto deadline = clock::now() + settings_.timeout_stop;
    ::kill(-group, SIGTERM);
    // The leader's exit, or the deadline.
    std::error_code ec;
    exited_.expires_at(deadline);
    co_await exited_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    // Others of its group may outlive the leader: they get the rest of the grace period (the
    // group id stays theirs while any of them lives, so it cannot be reused meanwhile), then
    // SIGKILL like the leader would have.
    asio::steady_timer poll(executor_);
    while (::kill(-group, 0) == 0 && clock::now() < deadline) {
      poll.expires_after(std::chrono::milliseconds(5));
      co_await poll.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    ::kill(-group, SIGKILL);  // the grace period is over; nothing of the group survives it
  }
  // Until run() has returned: the exit is collected and the state settled.
  co_await wait_final();
}

bool supervised_process::rearm() {
  // Only what an intentional stop ended: a process that ended for good by policy stays ended.
  if (state_ != state::stopped || running_loop_ || !stop_started_ || final_status_) return false;
  stop_requested_ = false;
  stop_started_ = false;
  set_state(state::pending);
  return true;
}

asio::awaitable<void> supervised_process::wait_final() {
  co_await wait_until([this] {
    return !running_loop_ && (state_ == state::stopped || state_ == state::failed);
  });
}

namespace {
std::string signal_name(int signal) {
  const char* abbreviation = sigabbrev_np(signal);
  return abbreviation ? std::string("SIG") + abbreviation : std::to_string(signal);
}
}  // namespace

json supervised_process::status() const {
  json last_exit = nullptr;
  if (last_exit_) {
    last_exit = {
        {"code", last_exit_->signal ? json(nullptr) : json(last_exit_->code)},
        {"signal", last_exit_->signal ? json(signal_name(last_exit_->signal)) : json(nullptr)},
        {"status", last_exit_->shell_status()},
        {"at", format_rfc3339(*last_exit_at_)}};
  }
  json errors = json::array();
  for (const auto& [at, message] : errors_) {
    errors.push_back({{"at", format_rfc3339(at)}, {"message", message}});
  }
  return {
      {"command", settings_.command},
      {"pid", pid_ ? json(pid_) : json(nullptr)},
      {"state", name_of(state_)},
      {"restarts", restarts_},
      {"started_at", started_at_ ? json(format_rfc3339(*started_at_)) : json(nullptr)},
      {"last_exit", std::move(last_exit)},
      {"last_error", last_error_.empty() ? json(nullptr) : json(last_error_)},
      {"restart_in", next_delay_ ? json(format_duration(*next_delay_)) : json(nullptr)},
      {"gave_up", breaker_open_},
      {"uptime_s", pid_
                       ? json(std::chrono::duration<double>(clock::now() - started_steady_).count())
                       : json(nullptr)},
      {"errors", std::move(errors)},
      {"refused_transitions", refused_transitions_},
  };
}

void append_process_metrics(std::string& out, std::string_view family, std::string_view what,
                            const std::vector<labelled_process>& members) {
  if (members.empty()) return;
  // One family at a time (HELP and TYPE once, then a sample per member), as the text format
  // wants.
  auto family_head = [&](std::string_view suffix, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += family;
    out += suffix;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += family;
    out += suffix;
    out += ' ';
    out += type;
    out += '\n';
  };
  auto sample = [&](std::string_view suffix, const std::string& labels, std::string_view extra,
                    const std::string& value) {
    out += family;
    out += suffix;
    if (!labels.empty() || !extra.empty()) {
      out += '{';
      out += labels;
      if (!labels.empty() && !extra.empty()) out += ',';
      out += extra;
      out += '}';
    }
    out += ' ';
    out += value;
    out += '\n';
  };
  const std::string of = std::string(what);
  family_head("_restarts_total", "counter", "Restarts of " + of + " after it exited.");
  for (const auto& [labels, p] : members)
    sample("_restarts_total", labels, "", std::to_string(p->restarts()));
  family_head("_up", "gauge", "1 while " + of + " runs.");
  for (const auto& [labels, p] : members) sample("_up", labels, "", p->pid() ? "1" : "0");
  family_head("_uptime_seconds", "gauge", "How long the current " + of + " has run.");
  for (const auto& [labels, p] : members) {
    sample("_uptime_seconds", labels, "", std::to_string(p->uptime().count()));
  }
  family_head("_state", "gauge", "1 for the current state of " + of + ".");
  for (const auto& [labels, p] : members) {
    for (auto s : {supervised_process::state::pending, supervised_process::state::starting,
                   supervised_process::state::running, supervised_process::state::degraded,
                   supervised_process::state::restarting, supervised_process::state::stopping,
                   supervised_process::state::stopped, supervised_process::state::failed}) {
      sample("_state", labels, "state=\"" + std::string(supervised_process::name_of(s)) + "\"",
             s == p->current() ? "1" : "0");
    }
  }
  bool any_exit = false;
  for (const auto& [labels, p] : members) any_exit = any_exit || p->last_exit().has_value();
  if (any_exit) {
    family_head("_last_exit_status", "gauge", "The last exit's status (128+n: signal n).");
    for (const auto& [labels, p] : members) {
      if (p->last_exit()) {
        sample("_last_exit_status", labels, "", std::to_string(p->last_exit()->shell_status()));
      }
    }
  }
}

std::chrono::duration<double> supervised_process::uptime() const {
  if (!pid_) return std::chrono::duration<double>(0);
  return clock::now() - started_steady_;
}

}  // namespace sm::supervisor
