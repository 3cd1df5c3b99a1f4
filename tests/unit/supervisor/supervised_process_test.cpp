#define BOOST_TEST_MODULE supervisor_supervised_process
#include <signal.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <exception>
#include <fstream>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "proc/child.hpp"
#include "supervisor/supervised_process.hpp"

#include "support/held_exec_fuse.hpp"
#include "support/rethrow.hpp"
#include "support/scratch_dir.hpp"

namespace sm::supervisor {
inline std::ostream& operator<<(std::ostream& os, state s) {
  return os << name_of(s);
}
}  // namespace sm::supervisor

namespace proc = sm::proc;
using sm::supervisor::process_settings;
using sm::supervisor::supervised_process;
using state = sm::supervisor::state;
using namespace std::chrono_literals;

namespace {

asio::awaitable<void> pause(std::chrono::milliseconds how_long) {
  asio::steady_timer timer(co_await asio::this_coro::executor, how_long);
  co_await timer.async_wait(asio::use_awaitable);
}

asio::awaitable<void> until(std::function<bool()> done) {
  while (!done()) co_await pause(1ms);
}

}  // namespace

// A stop() that comes while the process's start is in flight (its exec held, here on a FUSE
// mount; on state-manager's own mount until the executor answers) waits for the start to end and
// then stops what it started, as it stops any process: SIGTERM to its group, collected, stopped.
BOOST_AUTO_TEST_CASE(a_stop_during_a_start_stops_what_was_started) {
  test_support::held_exec_fuse fs("#!/bin/sh\nexec sleep 1000\n");
  if (!fs.why_not.empty()) {
    BOOST_TEST_MESSAGE("skipped: " << fs.why_not);
    return;
  }
  asio::io_context io;
  proc::reaper reaper(io.get_executor());
  asio::co_spawn(io, reaper.run(), asio::detached);
  process_settings settings;
  settings.command = {fs.program()};
  settings.restart_delay = 0ms;
  settings.timeout_stop = 60s;
  supervised_process process(io.get_executor(), reaper, settings);
  bool ran = false, stopped = false, tested = false;
  std::exception_ptr failure;
  asio::co_spawn(io, process.run(), [&](std::exception_ptr) { ran = true; });
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await until([&] { return fs.open_requested(); });
        BOOST_TEST(process.current() == state::starting);
        asio::co_spawn(
            io, [&]() -> asio::awaitable<void> { co_await process.stop(); },
            [&](std::exception_ptr) { stopped = true; });
        for (int i = 0; i < 20; ++i) co_await pause(1ms);
        BOOST_TEST(!fs.held_too_long());  // the executor ran on meanwhile
        BOOST_TEST(process.current() == state::stopping);
        BOOST_TEST(!stopped);  // it waits for the start
        fs.release();
        co_await until([&] { return stopped; });
        BOOST_TEST(process.current() == state::stopped);
        BOOST_TEST_REQUIRE(process.last_exit().has_value());
        BOOST_TEST(process.last_exit()->signal == SIGTERM);
        BOOST_TEST(process.status()["refused_transitions"].get<unsigned>() == 0u);
        BOOST_TEST(process.restarts() == 0u);
        tested = true;
      },
      [&](std::exception_ptr e) {
        failure = e;
        reaper.stop();
      });
  io.run_for(60s);
  if (const pid_t left = process.pid()) ::kill(-left, SIGKILL);  // a failed run's leftover
  sm::stop_offload_worker();
  test_support::fail_on(failure);
  BOOST_TEST(tested);
  BOOST_TEST(ran);
}

// A readiness check whose start is in flight when stop() comes is killed as soon as it has
// started (stop() kills only the checks it knows of), not left running until ready_timeout.
BOOST_AUTO_TEST_CASE(a_check_started_during_a_stop_is_killed_at_once) {
  test_support::scratch_dir scratch;
  const std::string pid_file = (scratch.dir / "check.pid").string();
  test_support::held_exec_fuse fs("#!/bin/sh\necho $$ >" + pid_file + "\nexec sleep 1000\n");
  if (!fs.why_not.empty()) {
    BOOST_TEST_MESSAGE("skipped: " << fs.why_not);
    return;
  }
  asio::io_context io;
  proc::reaper reaper(io.get_executor());
  asio::co_spawn(io, reaper.run(), asio::detached);
  process_settings settings;
  settings.command = {"sleep", "1000"};
  settings.ready_command = {fs.program()};
  settings.ready_timeout = 600s;  // far beyond the test's limit
  settings.timeout_stop = 60s;
  supervised_process process(io.get_executor(), reaper, settings);
  bool stopped = false;
  std::exception_ptr failure;
  asio::co_spawn(io, process.run(), asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await until([&] { return fs.open_requested(); });
        asio::co_spawn(
            io, [&]() -> asio::awaitable<void> { co_await process.stop(); },
            [&](std::exception_ptr) { stopped = true; });
        co_await until([&] { return process.current() == state::stopping; });
        fs.release();
        co_await until([&] { return stopped; });
        BOOST_TEST(process.current() == state::stopped);
      },
      [&](std::exception_ptr e) {
        failure = e;
        reaper.stop();
      });
  // Ends once nothing is left to do: the check collected, its deadline timer cancelled.
  io.run_for(30s);
  BOOST_TEST(io.stopped(), "the check was left running");
  if (!io.stopped()) {
    pid_t check = 0;
    std::ifstream(pid_file) >> check;
    if (check > 0) ::kill(-check, SIGKILL);
  }
  sm::stop_offload_worker();
  test_support::fail_on(failure);
  BOOST_TEST(!fs.held_too_long());
}
