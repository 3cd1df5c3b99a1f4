// The io_uring ring on the executor: reads and writes, a queue deeper than the ring, errors,
// cancellation of a request in the kernel and of one still queued, and destruction while a
// request is in flight (the awaiting coroutine is destroyed, never resumed, and the ring does
// not hang). A pipe stands for a request that stays in flight until the test lets it finish.
#define BOOST_TEST_MODULE uring_ring
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include "base/fd.hpp"
#include "uring/ring.hpp"

#include "support/io_uring.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
using sm::unique_fd;
using sm::uring::ring;

using test_support::require_io_uring;
BOOST_TEST_GLOBAL_FIXTURE(require_io_uring);

namespace {

struct pipe_fds {
  unique_fd read, write;
  pipe_fds() {
    int fds[2];
    BOOST_REQUIRE_EQUAL(::pipe2(fds, O_CLOEXEC), 0);
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
};

unique_fd open_file(const fs::path& path, int flags) {
  unique_fd fd(::open(path.c_str(), flags | O_CLOEXEC, 0644));
  BOOST_REQUIRE_MESSAGE(fd, "open " << path);
  return fd;
}

// The errno of a std::system_error in `failure`, or 0 when there is none (or another kind).
int error_of(const std::exception_ptr& failure) {
  if (!failure) return 0;
  try {
    std::rethrow_exception(failure);
  } catch (const std::system_error& e) {
    BOOST_TEST_MESSAGE("failure: " << e.what());
    return e.code().value();
  } catch (...) {
  }
  return -1;
}

// Runs `io` until `done` holds, one handler at a time; false if it ran out of work first.
template <typename Done>
bool run_until(asio::io_context& io, Done done) {
  io.restart();
  while (!done()) {
    if (io.run_one() == 0) return false;
  }
  return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(reads_and_writes_at_offsets) {
  test_support::scratch_dir scratch("sm-uring-ring");
  asio::io_context io;
  ring r(io.get_executor());
  const unique_fd fd = open_file(scratch.dir / "file", O_RDWR | O_CREAT);

  std::exception_ptr failure;
  std::string read_back(16, '\0');
  std::size_t written = 0, read = 0, at_end = 0;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        written = co_await r.write(fd.get(), "hello", 5, 10);
        read = co_await r.read(fd.get(), read_back.data(), read_back.size(), 8);
        at_end = co_await r.read(fd.get(), read_back.data(), read_back.size(), 15);
      },
      [&](std::exception_ptr e) { failure = e; });
  io.run();
  BOOST_REQUIRE(!failure);
  BOOST_TEST(written == 5u);
  BOOST_TEST(read == 7u);  // short: the file is 15 bytes long
  BOOST_TEST(read_back.substr(0, 7) == std::string("\0\0hello", 7));
  BOOST_TEST(at_end == 0u);
  BOOST_TEST(r.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(more_requests_than_the_queue_depth_wait_their_turn) {
  test_support::scratch_dir scratch("sm-uring-ring");
  const std::string content = test_support::random_bytes(64 * 1000, 5);
  test_support::write_file(scratch.dir / "file", content);
  const unique_fd fd = open_file(scratch.dir / "file", O_RDONLY);
  asio::io_context io;
  ring r(io.get_executor(), 2);

  // 64 reads of 1000 bytes at once through a ring that takes 2 at a time.
  std::vector<std::string> pieces(64, std::string(1000, '\0'));
  std::size_t completed = 0, most_in_flight = 0;
  std::exception_ptr failure;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          const std::size_t n = co_await r.read(fd.get(), pieces[i].data(), 1000, i * 1000);
          BOOST_TEST(n == 1000u);
          most_in_flight = std::max(most_in_flight, r.in_flight());
          ++completed;
        },
        [&](std::exception_ptr e) {
          if (e) failure = e;
        });
  }
  io.run();
  BOOST_REQUIRE(!failure);
  BOOST_TEST(completed == pieces.size());
  BOOST_TEST(most_in_flight <= 2u);
  std::string joined;
  for (const std::string& piece : pieces) joined += piece;
  BOOST_TEST((joined == content));
  BOOST_TEST(r.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(errors_carry_the_step_and_errno) {
  test_support::scratch_dir scratch("sm-uring-ring");
  test_support::write_file(scratch.dir / "file", "data");
  const unique_fd read_only = open_file(scratch.dir / "file", O_RDONLY);
  const unique_fd write_only = open_file(scratch.dir / "file", O_WRONLY);
  asio::io_context io;
  ring r(io.get_executor());

  char buffer[4];
  std::exception_ptr write_failure, read_failure;
  asio::co_spawn(io, r.write(read_only.get(), "x", 1, 0),
                 [&](std::exception_ptr e, std::size_t) { write_failure = e; });
  asio::co_spawn(io, r.read(write_only.get(), buffer, sizeof buffer, 0),
                 [&](std::exception_ptr e, std::size_t) { read_failure = e; });
  io.run();
  BOOST_TEST(error_of(write_failure) == EBADF);
  BOOST_TEST(error_of(read_failure) == EBADF);
  try {
    std::rethrow_exception(write_failure);
  } catch (const std::system_error& e) {
    BOOST_TEST(std::string(e.what()).find("io_uring write") != std::string::npos);
  }
  BOOST_TEST(r.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(cancelling_a_request_in_the_kernel_ends_it) {
  pipe_fds pipe;
  asio::io_context io;
  ring r(io.get_executor());

  // Nothing is ever written: only the cancellation can end this read.
  char buffer[16];
  asio::cancellation_signal cancel;
  bool ended = false;
  std::exception_ptr failure;
  asio::co_spawn(
      io, r.read(pipe.read.get(), buffer, sizeof buffer, 0),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, std::size_t) {
        ended = true;
        failure = e;
      }));
  BOOST_REQUIRE(run_until(io, [&] { return r.in_flight() == 1; }));
  cancel.emit(asio::cancellation_type::terminal);
  BOOST_REQUIRE(run_until(io, [&] { return ended; }));
  // ECANCELED when the kernel had it waiting; EINTR when a worker was interrupted in read(2).
  const int error = error_of(failure);
  BOOST_TEST((error == ECANCELED || error == EINTR), "errno " << error);
  BOOST_TEST(r.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(cancelling_a_queued_request_leaves_the_one_in_the_kernel) {
  pipe_fds pipe;
  asio::io_context io;
  ring r(io.get_executor(), 1);

  char first_buffer[16], second_buffer[16];
  std::optional<std::size_t> first;
  bool second_ended = false;
  std::exception_ptr first_failure, second_failure;
  asio::co_spawn(io, r.read(pipe.read.get(), first_buffer, sizeof first_buffer, 0),
                 [&](std::exception_ptr e, std::size_t n) {
                   first_failure = e;
                   if (!e) first = n;
                 });
  asio::cancellation_signal cancel;
  asio::co_spawn(
      io, r.read(pipe.read.get(), second_buffer, sizeof second_buffer, 0),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e, std::size_t) {
        second_ended = true;
        second_failure = e;
      }));
  // Both started: the first in the kernel, the second queued behind it (depth 1).
  BOOST_REQUIRE(run_until(io, [&] { return r.in_flight() == 1; }));
  io.poll();
  cancel.emit(asio::cancellation_type::terminal);
  BOOST_REQUIRE(run_until(io, [&] { return second_ended; }));
  BOOST_TEST(error_of(second_failure) == ECANCELED);
  BOOST_TEST(!first.has_value());
  BOOST_TEST(r.in_flight() == 1u);

  BOOST_REQUIRE_EQUAL(::write(pipe.write.get(), "ping", 4), 4);
  BOOST_REQUIRE(run_until(io, [&] { return first.has_value() || first_failure; }));
  BOOST_REQUIRE(!first_failure);
  BOOST_TEST(*first == 4u);
  BOOST_TEST(std::string(first_buffer, 4) == "ping");
  BOOST_TEST(r.in_flight() == 0u);
}

BOOST_AUTO_TEST_CASE(destroying_the_ring_destroys_its_waiting_coroutines_unresumed) {
  pipe_fds pipe;
  asio::io_context io;
  auto r = std::make_unique<ring>(io.get_executor());

  // Marks the coroutine's frame being destroyed.
  struct on_destroy {
    bool& destroyed;
    ~on_destroy() { destroyed = true; }
  };
  bool resumed = false, destroyed = false, handler_called = false;
  auto buffer = std::make_unique<char[]>(16);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        on_destroy guard{destroyed};
        co_await r->read(pipe.read.get(), buffer.get(), 16, 0);
        resumed = true;
      },
      [&](std::exception_ptr) { handler_called = true; });
  BOOST_REQUIRE(run_until(io, [&] { return r->in_flight() == 1; }));

  // The read can only end by cancellation: the destructor must ask for it, and wait for it.
  r.reset();
  io.restart();
  io.run();  // returns: nothing is left waiting
  BOOST_TEST(!resumed);
  BOOST_TEST(!handler_called);
  BOOST_TEST(destroyed);
}

BOOST_AUTO_TEST_CASE(a_ring_the_kernel_refuses_throws_system_error) {
  asio::io_context io;
  // Far beyond the kernel's limit on entries (32768): EINVAL, as callers would see ENOSYS or
  // EPERM where io_uring is missing or forbidden.
  BOOST_CHECK_THROW(ring(io.get_executor(), 1u << 24), std::system_error);
}
