#define BOOST_TEST_MODULE proc_spawn
#include <signal.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <chrono>
#include <exception>
#include <fstream>
#include <optional>
#include <string>
#include <system_error>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/buffers_iterator.hpp>
#include <asio/read.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "proc/child.hpp"

#include "support/held_exec_fuse.hpp"
#include "support/rethrow.hpp"

namespace proc = sm::proc;
using namespace std::chrono_literals;

namespace {

// g++ 12 miscompiles braced initializers in coroutines: requests are made here.
template <class... Args>
proc::spawn_request command(const Args&... args) {
  proc::spawn_request request;
  request.argv = {std::string(args)...};
  return request;
}

proc::spawn_request environment_report() {
  proc::spawn_request request{
      {"/bin/sh", "-c",
       "echo \"${SM_SPAWN_TEST_SECRET:-unset} $SM_SPAWN_TEST_ADDED\"; "
       "blk=$(sed -n 's/^SigBlk:\\t//p' /proc/$$/status); "
       "ign=$(sed -n 's/^SigIgn:\\t//p' /proc/$$/status); "
       // Signals 32 and 33 are glibc's own, left ignored by posix_spawn: the standard ones count.
       "echo blocked=$((0x$blk)) ignored=$((0x$ign & 0x7fffffff)); "
       "test \"$(ps -o pgid= -p $$ | tr -d ' ')\" = $$ && echo own-group; exit 3"},
      {{"SM_SPAWN_TEST_ADDED", "added"}},
      {"SM_SPAWN_TEST_SECRET"},
      true};
  return request;
}

asio::awaitable<void> pause(std::chrono::milliseconds how_long) {
  asio::steady_timer timer(co_await asio::this_coro::executor, how_long);
  co_await timer.async_wait(asio::use_awaitable);
}

// Runs `body` (a coroutine) with a reaper collecting SIGCHLD beside it, as state-manager does,
// for at most `limit`; the body's exception fails the test.
template <class Body>
void run_with_reaper(Body body, std::chrono::seconds limit = 60s) {
  asio::io_context io;
  proc::reaper reaper(io.get_executor());
  asio::co_spawn(io, reaper.run(), asio::detached);
  std::exception_ptr failure;
  bool done = false;
  asio::co_spawn(io, body(reaper), [&](std::exception_ptr e) {
    failure = e;
    done = true;
    reaper.stop();
  });
  io.run_for(limit);
  sm::stop_offload_worker();
  BOOST_TEST(done, "the test's coroutine did not finish within " << limit.count() << " s");
  test_support::fail_on(failure);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_missing_program_is_enoent_and_a_shell_would_say_127) {
  test_support::scratch_dir scratch;
  const std::string not_executable = (scratch.dir / "data").string();
  { std::ofstream(not_executable) << "data\n"; }
  run_with_reaper([&](proc::reaper& reaper) -> asio::awaitable<void> {
    std::optional<std::error_code> error;
    try {
      proc::child c = co_await proc::spawn(reaper, command("/nonexistent/sm-no-such-program"));
    } catch (const std::system_error& e) {
      error = e.code();
    }
    BOOST_TEST_REQUIRE(error.has_value());
    BOOST_TEST(error->value() == ENOENT);
    BOOST_TEST(proc::exec_failure_status(error->value()) == 127);
    error.reset();
    try {
      proc::child c = co_await proc::spawn(reaper, command("sm-no-such-program-in-path"));
    } catch (const std::system_error& e) {
      error = e.code();
    }
    BOOST_TEST_REQUIRE(error.has_value());
    BOOST_TEST(error->value() == ENOENT);
    error.reset();
    try {
      proc::child c = co_await proc::spawn(reaper, command(not_executable));
    } catch (const std::system_error& e) {
      error = e.code();
    }
    BOOST_TEST_REQUIRE(error.has_value());
    BOOST_TEST(error->value() == EACCES);
    BOOST_TEST(proc::exec_failure_status(error->value()) == 126);
  });
}

// The child's environment is ours with the request's changes, and its signals are at their
// defaults (SIGPIPE is ignored here, like state-manager does), in a process group of its own.
BOOST_AUTO_TEST_CASE(environment_output_signals_and_group) {
  ::setenv("SM_SPAWN_TEST_SECRET", "hidden", 1);
  ::signal(SIGPIPE, SIG_IGN);
  run_with_reaper([](proc::reaper& reaper) -> asio::awaitable<void> {
    proc::child c = co_await proc::spawn(reaper, environment_report());
    BOOST_TEST_REQUIRE(c.output[0].has_value());
    asio::streambuf out;
    std::error_code ec;
    co_await asio::async_read(*c.output[0], out, asio::redirect_error(asio::use_awaitable, ec));
    const proc::exit_status status = co_await reaper.wait(c);
    BOOST_TEST(status.code == 3);
    const std::string text(asio::buffers_begin(out.data()), asio::buffers_end(out.data()));
    BOOST_TEST(text ==
               "unset added\nblocked=0 ignored=0\nown-group\n");
  });
  ::unsetenv("SM_SPAWN_TEST_SECRET");
}

// A child that exits at once must never be counted as an orphan by the central reaper (its
// status is its owner's): many starts, each awaited, all with their own exit code.
BOOST_AUTO_TEST_CASE(statuses_of_quick_children_are_never_stolen) {
  run_with_reaper([](proc::reaper& reaper) -> asio::awaitable<void> {
    for (int i = 0; i < 300; ++i) {
      proc::child c = co_await proc::spawn(reaper, command("/bin/sh", "-c", "exit 5"));
      const proc::exit_status status = co_await reaper.wait(c);
      BOOST_TEST_REQUIRE(status.code == 5);
    }
    BOOST_TEST(reaper.orphans_reaped() == 0u);
  });
}

// The exec of a program on a FUSE mount needs the mount's server: state-manager's executor for
// its own mount. While such an exec is held, the executor must go on running (here a timer
// fires again and again) and the start completes once the open is answered.
BOOST_AUTO_TEST_CASE(the_executor_runs_on_while_an_exec_is_held) {
  test_support::held_exec_fuse fs("#!/bin/sh\nexit 7\n");
  if (!fs.why_not.empty()) {
    BOOST_TEST_MESSAGE("skipped: " << fs.why_not);
    return;
  }
  run_with_reaper([&](proc::reaper& reaper) -> asio::awaitable<void> {
    auto executor = co_await asio::this_coro::executor;
    std::optional<proc::exit_status> status;
    asio::co_spawn(
        executor,
        [&]() -> asio::awaitable<void> {
          proc::child c = co_await proc::spawn(reaper, command(fs.program()));
          status = co_await reaper.wait(c);
        },
        [](std::exception_ptr e) { test_support::fail_on(e); });
    while (!fs.open_requested()) co_await pause(1ms);
    // The exec is held in the kernel now; the executor ticks on.
    int ticks = 0;
    for (; ticks < 20 && !fs.held_too_long(); ++ticks) co_await pause(1ms);
    BOOST_TEST(!fs.held_too_long());
    BOOST_TEST(!status.has_value());  // still held
    fs.release();
    while (!status) co_await pause(1ms);
    BOOST_TEST(status->code == 7);
  });
}
