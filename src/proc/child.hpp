// Child processes as mechanism: start one, await its exit on the executor, collect orphans.
// Policy (when to restart, how long to wait) lives in src/supervisor.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

#include "proc/signals.hpp"

namespace sm::proc {

// How a process ended: by exit(code) or by a signal.
struct exit_status {
  int code = 0;    // when signal == 0
  int signal = 0;  // the signal that killed it, or 0
  bool core_dumped = false;

  bool success() const { return signal == 0 && code == 0; }
  // The shell's convention (and tini's): the code, or 128 + the signal.
  int shell_status() const { return signal ? 128 + signal : code; }
};

struct spawn_request {
  std::vector<std::string> argv;                 // argv[0] is searched in PATH
  std::map<std::string, std::string> extra_env;  // added to (or replacing in) our environment
  std::vector<std::string> unset_env;            // removed from the child's environment
  // Give the child pipes for stdout and stderr (read them from child::output()) instead of
  // state-manager's own.
  bool capture_output = false;
};

// A started child, until its exit has been collected.
class child {
 public:
  child(pid_t pid, asio::posix::stream_descriptor pidfd) : pid_(pid), pidfd_(std::move(pidfd)) {}
  pid_t pid() const { return pid_; }

  // With capture_output: the read ends of the child's stdout (index 0) and stderr (index 1),
  // to be taken (moved out) by whoever forwards them.
  std::optional<asio::posix::stream_descriptor> output[2];

 private:
  friend class reaper;
  pid_t pid_;
  asio::posix::stream_descriptor pidfd_;
};

class reaper;

// Starts a child in its own process group (so that signals reach its whole tree), with every
// signal at its default disposition and none blocked, whatever state-manager itself does with
// them. stdin, stdout and stderr are state-manager's own. Throws std::system_error carrying the
// errno of the failed exec: ENOENT for a missing program, EACCES/ENOEXEC for one that cannot run.
//
// The start itself runs off the executor's thread (sm::offload_spawn) and is awaited:
// posix_spawn returns only once the child has exec'd, and an exec of a program on
// state-manager's own FUSE mount (or a PATH search through it) needs the executor to answer.
// The child comes back registered with `reaper`: its exit status is kept for reaper.wait(c),
// whenever that is called, and never counted as an orphan's.
asio::awaitable<child> spawn(reaper& reaper, spawn_request request);

// The exit status a shell reports for a program that could not be started: 127 when it was not
// found, 126 when it was found but could not be executed.
int exec_failure_status(int error);

// Collects every child's exit: one waitid(P_ALL) per exited child on SIGCHLD, whoever it is.
// Orphans (re-parented to us as PID 1 or subreaper) are simply counted; a supervised child's
// status is handed to its owner, who awaits it through the child's pidfd, so the one central
// reaper never steals it.
class reaper {
 public:
  explicit reaper(asio::any_io_executor executor);

  // Makes orphans of our descendants ours to reap when we are not PID 1 (PR_SET_CHILD_SUBREAPER).
  // Returns false if neither applies (the kernel refused).
  bool adopt_orphans();

  // Waits for SIGCHLD and reaps orphans until the executor stops. Run it with co_spawn.
  asio::awaitable<void> run();

  // Awaits `c`'s exit and collects its status. Never blocks the executor.
  asio::awaitable<exit_status> wait(child& c);

  // Ends run(). The flag matters as much as the cancel: a SIGCHLD completion already queued is
  // beyond cancel's reach, and run() must not wait again after it.
  void stop() {
    stopped_ = true;
    sigchld_.close();
  }

  // Reaps every exited child that is not awaited through wait(), without blocking. While a
  // start is in flight, later: when the last one in flight has ended (see below).
  void reap_orphans();

  std::size_t orphans_reaped() const { return orphans_reaped_; }

 private:
  signal_stream sigchld_;
  std::unordered_set<pid_t> awaited_;                   // children whose status is a wait()'s
  std::unordered_map<pid_t, exit_status> handed_over_;  // reaped here for a wait()
  std::size_t orphans_reaped_ = 0;
  bool stopped_ = false;

  // While a start is in flight (on another thread), the new child's pid is not known here yet:
  // a waitid(P_ALL) could collect its exit (a program that ends at once) before it is
  // registered, and count it as an orphan's. So reaping is put off until no start is in
  // flight; a supervised child's exit is still collected at once, by its owner's pidfd.
  friend asio::awaitable<child> spawn(reaper& reaper, spawn_request request);
  void start_began() { ++starts_in_flight_; }
  void start_ended(pid_t pid);  // pid: the child started, or 0 when the start failed
  unsigned starts_in_flight_ = 0;
  bool reap_put_off_ = false;
};

}  // namespace sm::proc
