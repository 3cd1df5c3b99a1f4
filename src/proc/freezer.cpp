#include "proc/freezer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <optional>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <unordered_set>

#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "base/fd.hpp"

namespace sm::proc {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view group_prefix = "state-manager-";
// A fork bomb could keep adopt_descendants scanning forever; after this many rounds the freeze
// goes ahead and the adoption after it catches the rest.
constexpr int max_adopt_rounds = 20;

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

std::optional<std::string> read_small(const fs::path& path) {
  const unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return std::nullopt;
  std::string out;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::nullopt;
    }
    if (n == 0) return out;
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

// One write(2) of `value`, as cgroupfs wants it. Returns errno, 0 on success.
int write_control(const fs::path& path, std::string_view value) {
  const unique_fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return errno;
  for (;;) {
    if (::write(fd.get(), value.data(), value.size()) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

std::string group_name(pid_t pid) {
  return std::string(group_prefix) + std::to_string(pid);
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_octal(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int value = 0;
      bool octal = true;
      for (std::size_t k = 1; k <= 3; ++k) {
        if (s[i + k] < '0' || s[i + k] > '7') {
          octal = false;
          break;
        }
        value = value * 8 + (s[i + k] - '0');
      }
      if (octal) {
        out.push_back(static_cast<char>(value));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::vector<std::string> split(std::string_view s, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = s.find(separator, start);
    parts.emplace_back(s.substr(start, end == std::string_view::npos ? s.npos : end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

}  // namespace

std::optional<fs::path> freezer::own_cgroup_dir(version v, std::string& why) {
  const bool v2 = v == freezer::version::v2;
  // Our path in the hierarchy, from /proc/self/cgroup: "0::/a/b" (v2), "6:freezer:/a/b" (v1).
  std::optional<std::string> path;
  if (auto text = read_small("/proc/self/cgroup")) {
    std::istringstream lines(*text);
    for (std::string line; std::getline(lines, line);) {
      const std::size_t first = line.find(':'), second = line.find(':', first + 1);
      if (first == std::string::npos || second == std::string::npos) continue;
      const std::string controllers = line.substr(first + 1, second - first - 1);
      const auto names = split(controllers, ',');
      const bool match = v2 ? line.compare(0, first, "0") == 0 && controllers.empty()
                            : std::find(names.begin(), names.end(), "freezer") != names.end();
      if (match) path = line.substr(second + 1);
    }
  }
  if (!path) {
    why = v2 ? "no cgroup v2 line in /proc/self/cgroup" : "no freezer line in /proc/self/cgroup";
    return std::nullopt;
  }
  // The hierarchy's mount, from /proc/self/mountinfo:
  // "id parent dev root mountpoint options [optional...] - fstype source superoptions".
  if (auto text = read_small("/proc/self/mountinfo")) {
    std::istringstream lines(*text);
    for (std::string line; std::getline(lines, line);) {
      const std::size_t dash = line.find(" - ");
      if (dash == std::string::npos) continue;
      const auto before = split(line.substr(0, dash), ' ');
      const auto after = split(line.substr(dash + 3), ' ');
      if (before.size() < 5 || after.size() < 3) continue;
      if (v2 ? after[0] != "cgroup2" : after[0] != "cgroup") continue;
      if (!v2) {
        const auto options = split(after[2], ',');
        if (std::find(options.begin(), options.end(), "freezer") == options.end()) continue;
      }
      const std::string root = unescape_octal(before[3]);
      const fs::path mountpoint = unescape_octal(before[4]);
      // A mount of a sub-tree (root "/docker/x") shows only what lies under it.
      const fs::path relative = fs::path(*path).lexically_relative(root);
      if (relative.empty() || *relative.begin() == "..") continue;
      return (mountpoint / relative).lexically_normal();
    }
  }
  why = v2 ? "no cgroup2 file system mounted" : "no cgroup v1 freezer mounted";
  return std::nullopt;
}

namespace {

fs::path state_file(freezer::version v, const fs::path& group) {
  return group / (v == freezer::version::v2 ? "cgroup.freeze" : "freezer.state");
}

std::string_view state_value(freezer::version v, bool freeze) {
  if (v == freezer::version::v2) return freeze ? "1" : "0";
  return freeze ? "FROZEN" : "THAWED";
}

std::optional<pid_t> parse_pid(std::string_view text) {
  pid_t pid = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (error != std::errc() || end != text.data() + text.size() || pid <= 0) return std::nullopt;
  return pid;
}

// Every process's parent, from /proc/<pid>/stat ("pid (comm) S ppid ...": comm may hold
// anything, so the fields are counted from its closing parenthesis).
std::unordered_map<pid_t, std::vector<pid_t>> children_by_parent() {
  std::unordered_map<pid_t, std::vector<pid_t>> children;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) throw_errno(errno, "list /proc");
  while (const dirent* entry = ::readdir(proc)) {
    const auto pid = parse_pid(entry->d_name);
    if (!pid) continue;
    const auto stat = read_small("/proc/" + std::string(entry->d_name) + "/stat");
    if (!stat) continue;  // exited meanwhile
    const std::size_t close = stat->rfind(')');
    if (close == std::string::npos || close + 4 >= stat->size()) continue;
    std::istringstream fields(stat->substr(close + 2));
    std::string state;
    pid_t parent = 0;
    if (fields >> state >> parent) children[parent].push_back(*pid);
  }
  ::closedir(proc);
  return children;
}

std::vector<pid_t> descendants_of(pid_t root) {
  const auto children = children_by_parent();
  std::vector<pid_t> out;
  std::vector<pid_t> pending{root};
  while (!pending.empty()) {
    const pid_t parent = pending.back();
    pending.pop_back();
    const auto it = children.find(parent);
    if (it == children.end()) continue;
    for (const pid_t child : it->second) {
      out.push_back(child);
      pending.push_back(child);
    }
  }
  return out;
}

}  // namespace

freezer freezer::open() {
  std::string reasons;
  for (const version v : {version::v2, version::v1}) {
    std::string why;
    const char* name = v == version::v2 ? "cgroup v2" : "cgroup v1 freezer";
    if (auto dir = own_cgroup_dir(v, why)) {
      try {
        return open_at(v, *dir);
      } catch (const std::system_error& e) {
        why = e.what();
      }
    }
    reasons += (reasons.empty() ? "" : "; ") + std::string(name) + ": " + why;
  }
  throw std::system_error(ENOTSUP, std::generic_category(),
                          "no usable cgroup freezer (" + reasons + ")");
}

freezer freezer::open_at(version v, const fs::path& parent) {
  const fs::path path = parent / group_name(::getpid());
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    throw_errno(errno, "create cgroup " + path.string());
  }
  freezer group(v, path);
  // A group of ours from before a restart (PID 1 again) may have been left frozen.
  if (const int error = write_control(state_file(v, path), state_value(v, false))) {
    throw_errno(error, "write " + state_file(v, path).string());
  }
  return group;
}

freezer::~freezer() {
  if (path_.empty()) return;
  write_control(state_file(version_, path_), state_value(version_, false));
  ::rmdir(path_.c_str());
}

std::size_t freezer::adopt_descendants() {
  const fs::path procs = path_ / "cgroup.procs";
  std::size_t moved = 0;
  for (int round = 0; round < max_adopt_rounds; ++round) {
    const std::vector<pid_t> inside = members();
    const std::unordered_set<pid_t> member_set(inside.begin(), inside.end());
    std::size_t moved_now = 0;
    for (const pid_t pid : descendants_of(::getpid())) {
      if (member_set.contains(pid)) continue;
      const int error = write_control(procs, std::to_string(pid));
      if (error == ESRCH) continue;  // exited meanwhile
      if (error != 0)
        throw_errno(error, "move process " + std::to_string(pid) + " into " + procs.string());
      ++moved_now;
    }
    moved += moved_now;
    if (moved_now == 0) break;
  }
  return moved;
}

void freezer::request(bool freeze) {
  const fs::path file = state_file(version_, path_);
  if (const int error = write_control(file, state_value(version_, freeze))) {
    throw_errno(error, "write " + file.string());
  }
}

bool freezer::frozen() const {
  if (version_ == version::v2) {
    const auto events = read_small(path_ / "cgroup.events");
    return events && events->find("frozen 1") != std::string::npos;
  }
  const auto state = read_small(path_ / "freezer.state");
  return state && state->rfind("FROZEN", 0) == 0;
}

std::vector<pid_t> freezer::members() const {
  std::vector<pid_t> out;
  const auto text = read_small(path_ / "cgroup.procs");
  if (!text) throw_errno(errno, "read " + (path_ / "cgroup.procs").string());
  std::istringstream lines(*text);
  for (std::string line; std::getline(lines, line);) {
    if (auto pid = parse_pid(line)) out.push_back(*pid);
  }
  return out;
}

std::vector<pid_t> freezer::live_members() const {
  std::vector<pid_t> out = members();
  std::erase_if(out, [](pid_t pid) {
    const auto stat = read_small("/proc/" + std::to_string(pid) + "/stat");
    if (!stat) return true;  // gone meanwhile
    const std::size_t close = stat->rfind(')');
    return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] == 'Z';
  });
  return out;
}

std::size_t freezer::signal_members(int signal) const {
  std::size_t reached = 0;
  for (const pid_t pid : live_members()) {
    if (::kill(pid, signal) == 0) ++reached;
  }
  return reached;
}

namespace {
// Polls until no member lives or `deadline` passes; true if none lives.
asio::awaitable<bool> wait_empty(const freezer& group,
                                 std::chrono::steady_clock::time_point deadline) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  std::chrono::milliseconds pause{1};
  for (;;) {
    if (group.live_members().empty()) co_return true;
    if (std::chrono::steady_clock::now() >= deadline) co_return false;
    timer.expires_after(pause);
    co_await timer.async_wait(asio::use_awaitable);
    pause = std::min(pause * 2, std::chrono::milliseconds{50});
  }
}
}  // namespace

asio::awaitable<std::size_t> stop_members(freezer& group, duration timeout) {
  // A member forking meanwhile makes its child inside the group: the rounds of signals and the
  // wait on the whole group catch it.
  const std::size_t terminated = group.signal_members(SIGTERM);
  if (terminated == 0) co_return 0;
  if (co_await wait_empty(group, std::chrono::steady_clock::now() + timeout)) co_return terminated;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    group.signal_members(SIGKILL);
  } while (!co_await wait_empty(group, std::min(deadline, std::chrono::steady_clock::now() +
                                                              std::chrono::milliseconds(100))) &&
           std::chrono::steady_clock::now() < deadline);
  co_return terminated;
}

asio::awaitable<bool> freeze(freezer& group, duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  co_await offload([&] { group.adopt_descendants(); });
  group.request(true);
  asio::steady_timer timer(co_await asio::this_coro::executor);
  std::chrono::milliseconds pause{1};
  while (!group.frozen()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      group.request(false);
      co_return false;
    }
    timer.expires_after(pause);
    co_await timer.async_wait(asio::use_awaitable);
    pause = std::min(pause * 2, std::chrono::milliseconds{50});
  }
  // A process re-parented to us after the scan above (its parent exited before being moved)
  // is frozen as it joins the frozen group.
  co_await offload([&] { group.adopt_descendants(); });
  co_return true;
}

std::size_t remove_stale_freezers() {
  std::size_t removed = 0;
  for (const auto v : {freezer::version::v2, freezer::version::v1}) {
    std::string why;
    const auto dir = freezer::own_cgroup_dir(v, why);
    if (!dir) continue;
    DIR* listing = ::opendir(dir->c_str());
    if (listing == nullptr) continue;
    std::vector<std::string> names;
    while (const dirent* entry = ::readdir(listing)) {
      const std::string_view name = entry->d_name;
      if (name.substr(0, group_prefix.size()) == group_prefix) names.emplace_back(name);
    }
    ::closedir(listing);
    for (const std::string& name : names) {
      const auto pid = parse_pid(std::string_view(name).substr(group_prefix.size()));
      if (!pid) continue;
      const bool ours = *pid == ::getpid();
      if (!ours && !(::kill(*pid, 0) != 0 && errno == ESRCH)) continue;  // its owner lives
      const fs::path group = *dir / name;
      write_control(state_file(v, group), state_value(v, false));
      if (!ours && ::rmdir(group.c_str()) == 0) ++removed;
    }
  }
  return removed;
}

}  // namespace sm::proc
