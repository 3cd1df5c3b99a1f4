#define BOOST_TEST_MODULE proc_output
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <memory>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include "proc/output.hpp"

namespace proc = sm::proc;

using sm::proc::take_lines;

BOOST_AUTO_TEST_CASE(whole_lines_are_prefixed_and_the_rest_waits) {
  std::string pending = "one\ntwo\nthr", out;
  take_lines(pending, "[a] ", 1024, out);
  BOOST_TEST(out == "[a] one\n[a] two\n");
  BOOST_TEST(pending == "thr");
  out.clear();
  pending += "ee\n";
  take_lines(pending, "[a] ", 1024, out);
  BOOST_TEST(out == "[a] three\n");
  BOOST_TEST(pending.empty());
}

BOOST_AUTO_TEST_CASE(empty_lines_and_bytes_pass_unchanged) {
  std::string pending("\n\x01\xff\r\n", 5), out;
  take_lines(pending, "> ", 1024, out);
  BOOST_TEST(out == std::string("> \n> \x01\xff\r\n", 9));
}

BOOST_AUTO_TEST_CASE(an_endless_line_is_cut_at_the_limit) {
  std::string pending(10, 'x'), out;
  take_lines(pending, "p:", 4, out);
  BOOST_TEST(out == "p:xxxx\np:xxxx\n");
  BOOST_TEST(pending == "xx");
}

// A socket that nobody reads (journald's stdout stream, say) must not block the executor: the
// send waits on the executor, and everything arrives once the reader reads again.
BOOST_AUTO_TEST_CASE(a_stalled_socket_never_blocks_the_executor) {
  int sv[2];
  BOOST_REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  // Before the fix a blocking send waited here; the timeout turns that hang into a failure.
  const timeval three_seconds{3, 0};
  ::setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &three_seconds, sizeof three_seconds);
  asio::io_context io;
  auto out = std::make_shared<proc::line_output>(io.get_executor(), sv[0]);
  BOOST_TEST(out->nonblocking());
  const std::string data(4 * 1024 * 1024, 'x');
  bool written = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await out->write(data);
        written = true;
      },
      asio::detached);
  const auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::duration timer_fired_after{};
  asio::steady_timer timer(io, std::chrono::milliseconds(10));
  timer.async_wait(
      [&](std::error_code) { timer_fired_after = std::chrono::steady_clock::now() - start; });
  io.run_for(std::chrono::milliseconds(200));
  BOOST_TEST(timer_fired_after > std::chrono::steady_clock::duration::zero());
  BOOST_TEST(timer_fired_after < std::chrono::seconds(1));
  BOOST_TEST(!written);
  // The flags of the shared description are untouched: children writing to it still block.
  BOOST_TEST((::fcntl(sv[0], F_GETFL) & O_NONBLOCK) == 0);

  std::size_t received = 0;
  ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!written && std::chrono::steady_clock::now() < deadline) {
    char buffer[65536];
    const ssize_t n = ::read(sv[1], buffer, sizeof buffer);
    if (n > 0) received += static_cast<std::size_t>(n);
    io.run_for(std::chrono::milliseconds(1));
  }
  for (;;) {
    char buffer[65536];
    const ssize_t n = ::read(sv[1], buffer, sizeof buffer);
    if (n <= 0) break;
    received += static_cast<std::size_t>(n);
  }
  BOOST_TEST(written);
  BOOST_TEST(received == data.size());
  out->close();
  ::close(sv[0]);
  ::close(sv[1]);
}
