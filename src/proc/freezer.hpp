// The cgroup freezer as mechanism: a cgroup of our own, `state-manager-<pid>`, created next to
// the one state-manager runs in, into which our descendants are moved so that they can be
// paused and resumed as one (checkpoint_mode "freeze"), or stopped as one (checkpoint_mode
// "stop": a daemon that left its process group with setsid is still a member). cgroup v2
// (`cgroup.freeze`) is preferred; the v1 freezer hierarchy is used where v2 is not mounted or
// not writable.
//
// Everything here is a few reads and writes of cgroupfs and /proc files: quick, but synchronous.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <asio/awaitable.hpp>

#include "base/duration.hpp"

namespace sm::proc {

class freezer {
 public:
  enum class version { v2, v1 };

  // Makes (or takes over, after a restart) our group. Throws std::system_error saying why when
  // no freezer is usable here: none mounted, read-only cgroupfs, not permitted.
  static freezer open();
  // The same in a given hierarchy; `parent` is the directory our group is made in (tests).
  static freezer open_at(version v, const std::filesystem::path& parent);
  // The directory of the cgroup this process is in, in the hierarchy of `v`; nullopt, with the
  // reason in `why`, when that hierarchy is not mounted here.
  static std::optional<std::filesystem::path> own_cgroup_dir(version v, std::string& why);

  freezer(freezer&&) noexcept = default;
  freezer& operator=(freezer&&) noexcept = default;
  freezer(const freezer&) = delete;
  freezer& operator=(const freezer&) = delete;
  // Thaws the group and removes it when empty (a member still alive keeps it; it is never moved
  // back, so as not to race its forks).
  ~freezer();

  version kind() const { return version_; }
  const std::filesystem::path& path() const { return path_; }

  // Moves every descendant of this process that is not inside yet into the group, until a scan
  // of /proc finds none left outside: what a moved process forks afterwards is born inside.
  // Returns how many were moved. A process that exits meanwhile is skipped.
  std::size_t adopt_descendants();

  // Asks the kernel to freeze (true) or thaw (false) the group; see frozen() for when it took.
  void request(bool freeze);
  // Whether every member is frozen now (v2: cgroup.events "frozen 1"; v1: freezer.state FROZEN).
  bool frozen() const;
  // The members' PIDs (cgroup.procs).
  std::vector<pid_t> members() const;
  // The members that have not exited (a zombie may still be listed until it is reaped).
  std::vector<pid_t> live_members() const;
  // Sends `signal` to every live member; returns how many it reached.
  std::size_t signal_members(int signal) const;

 private:
  freezer(version v, std::filesystem::path path) : version_(v), path_(std::move(path)) {}

  version version_ = version::v2;
  std::filesystem::path path_;  // empty once moved from
};

// The freeze as one step: adopts our descendants, freezes the group and waits on the executor
// (polling, 1 ms growing to 50 ms) until it is frozen, then adopts once more, for a process
// whose parent exited before it was moved. False (the group thawed again) when it did not
// freeze within `timeout`: a process in uninterruptible sleep, for instance.
asio::awaitable<bool> freeze(freezer& group, duration timeout);

// "stop" for the whole group: what is still in it (once COMMAND's and the components' own
// stops are done: daemons that left their process group) gets SIGTERM, and whatever is left
// after `timeout` SIGKILL. Waits on the executor (polling, 1 ms growing to 50 ms) until no member
// lives, for at most `timeout` after the SIGKILL too (a process in uninterruptible sleep dies
// only when it wakes). Returns how many got the SIGTERM; a thawed group is assumed.
asio::awaitable<std::size_t> stop_members(freezer& group, duration timeout);

// Removes the `state-manager-<pid>` groups left by processes that are gone (a kill -9), thawing
// their members first so that nothing stays paused forever. Never throws; returns how many.
std::size_t remove_stale_freezers();

}  // namespace sm::proc
