#define BOOST_TEST_MODULE proc_freezer
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "async/offload.hpp"
#include "proc/freezer.hpp"

namespace fs = std::filesystem;
using sm::proc::freezer;
using namespace std::chrono_literals;

namespace {

// A child of ours running `script` under sh; killed (with its process group) and reaped on
// destruction.
struct shell_child {
  pid_t pid = -1;
  explicit shell_child(const char* script) {
    pid = ::fork();
    if (pid == 0) {
      ::setpgid(0, 0);
      ::execl("/bin/sh", "sh", "-c", script, static_cast<char*>(nullptr));
      ::_exit(127);
    }
    BOOST_REQUIRE(pid > 0);
  }
  ~shell_child() { stop(); }
  void stop() {
    if (pid <= 0) return;  // kill(-1) would signal every process we may signal
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
};

// CPU time used so far (utime + stime, in clock ticks), from /proc/<pid>/stat.
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

template <typename Predicate>
bool eventually(Predicate predicate, std::chrono::seconds limit = 20s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

bool contains(const std::vector<pid_t>& pids, pid_t pid) {
  return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

// The freezer of version `v`, or nullopt (with a message) where this machine has none usable:
// the tests then check nothing rather than fail on a machine without cgroup write access.
std::optional<freezer> try_open(freezer::version v) {
  std::string why;
  const auto dir = freezer::own_cgroup_dir(v, why);
  if (!dir) {
    BOOST_TEST_MESSAGE("skipped: " << why);
    return std::nullopt;
  }
  try {
    return freezer::open_at(v, *dir);
  } catch (const std::system_error& e) {
    BOOST_TEST_MESSAGE("skipped: " << e.what());
    return std::nullopt;
  }
}

// A busy loop, and a busy grandchild forked before the group exists: both must be frozen (no
// CPU time while frozen) and both must run again after the thaw.
void freezes_and_thaws_a_tree(freezer::version v) {
  shell_child busy("(while :; do :; done) & while :; do :; done");
  // The grandchild: the one child of `busy`.
  pid_t grandchild = -1;
  BOOST_REQUIRE(eventually([&] {
    for (const auto& entry : fs::directory_iterator("/proc")) {
      const std::string name = entry.path().filename().string();
      if (!std::all_of(name.begin(), name.end(), ::isdigit)) continue;
      std::ifstream in(entry.path() / "stat");
      std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const auto close = stat.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream fields(stat.substr(close + 2));
      std::string state;
      pid_t parent = 0;
      if (fields >> state >> parent && parent == busy.pid) {
        grandchild = std::stoi(name);
        return true;
      }
    }
    return false;
  }));

  auto group = try_open(v);
  if (!group) return;
  const fs::path path = group->path();
  BOOST_TEST(fs::exists(path));
  BOOST_TEST(group->adopt_descendants() >= 2u);
  BOOST_TEST(contains(group->members(), busy.pid));
  BOOST_TEST(contains(group->members(), grandchild));
  BOOST_TEST(group->adopt_descendants() == 0u);  // nothing left outside

  group->request(true);
  BOOST_REQUIRE(eventually([&] { return group->frozen(); }));
  const long before = cpu_ticks(busy.pid), before_grandchild = cpu_ticks(grandchild);
  std::this_thread::sleep_for(300ms);
  BOOST_TEST(cpu_ticks(busy.pid) == before);
  BOOST_TEST(cpu_ticks(grandchild) == before_grandchild);

  group->request(false);
  BOOST_TEST(!group->frozen());
  BOOST_TEST(eventually([&] { return cpu_ticks(busy.pid) > before + 2; }));
  BOOST_TEST(eventually([&] { return cpu_ticks(grandchild) > before_grandchild + 2; }));

  // Once its members are gone, the group goes with the freezer.
  busy.stop();
  BOOST_REQUIRE(eventually([&] { return group->members().empty(); }));
  group.reset();
  BOOST_TEST(!fs::exists(path));
}

}  // namespace

BOOST_AUTO_TEST_CASE(cgroup_v2_freezes_and_thaws_a_process_tree) {
  freezes_and_thaws_a_tree(freezer::version::v2);
}

BOOST_AUTO_TEST_CASE(cgroup_v1_freezes_and_thaws_a_process_tree) {
  freezes_and_thaws_a_tree(freezer::version::v1);
}

BOOST_AUTO_TEST_CASE(the_freeze_step_waits_on_the_executor_until_frozen) {
  auto group = try_open(freezer::version::v2);
  if (!group) group = try_open(freezer::version::v1);
  if (!group) return;
  shell_child busy("while :; do :; done");  // dies before the group goes, which can then go
  const fs::path path = group->path();
  asio::io_context io;
  bool frozen = false;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { frozen = co_await sm::proc::freeze(*group, 20s); },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  BOOST_TEST(frozen);
  BOOST_TEST(group->frozen());
  BOOST_TEST(contains(group->members(), busy.pid));
  group->request(false);
  sm::stop_offload_worker();
  busy.stop();
  group.reset();
  BOOST_TEST(!fs::exists(path));
}

// "stop" for the whole group: a member that left its process group (setsid) and ignores SIGTERM
// is still reached, and killed once the timeout has passed.
BOOST_AUTO_TEST_CASE(stop_members_reaches_a_daemon_that_ignores_sigterm) {
  auto group = try_open(freezer::version::v2);
  if (!group) group = try_open(freezer::version::v1);
  if (!group) return;
  shell_child parent("setsid sh -c 'trap \"\" TERM; while :; do sleep 0.01; done' & wait");
  BOOST_REQUIRE(eventually([&] {
    group->adopt_descendants();
    return group->live_members().size() >= 3u;  // the shell, the daemon, its sleep
  }));
  const fs::path path = group->path();
  asio::io_context io;
  std::size_t terminated = 0;
  const auto start = std::chrono::steady_clock::now();
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        terminated = co_await sm::proc::stop_members(*group, 300ms);
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  BOOST_TEST(terminated >= 3u);
  BOOST_TEST(group->live_members().empty());
  BOOST_TEST((std::chrono::steady_clock::now() - start >= 300ms));  // the daemon took the SIGKILL
  sm::stop_offload_worker();
  parent.stop();
  BOOST_REQUIRE(eventually([&] { return group->members().empty(); }));
  group.reset();
  BOOST_TEST(!fs::exists(path));
}

BOOST_AUTO_TEST_CASE(groups_of_dead_owners_are_removed_and_thawed) {
  std::string why;
  const auto dir = freezer::own_cgroup_dir(freezer::version::v2, why);
  if (!dir) return;
  // A PID nobody has: a child that exited and was reaped.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const fs::path stale = *dir / ("state-manager-" + std::to_string(dead));
  if (::mkdir(stale.c_str(), 0755) != 0) {
    BOOST_TEST_MESSAGE("skipped: cannot create " << stale);
    return;
  }
  // A live owner's group stays: our own parent's PID stands for one.
  const fs::path alive = *dir / ("state-manager-" + std::to_string(::getppid()));
  const bool made_alive = ::mkdir(alive.c_str(), 0755) == 0;
  BOOST_TEST(sm::proc::remove_stale_freezers() >= 1u);
  BOOST_TEST(!fs::exists(stale));
  if (made_alive) {
    BOOST_TEST(fs::exists(alive));
    ::rmdir(alive.c_str());
  }
}
