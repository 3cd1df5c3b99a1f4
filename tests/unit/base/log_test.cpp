#define BOOST_TEST_MODULE base_log
#include <fcntl.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <string>

#include "base/log.hpp"

using namespace sm;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_CASE(buffer_keeps_lines_up_to_its_bound_then_counts_drops) {
  log::line_buffer b(10);
  BOOST_TEST(b.push("abcd\n"));
  BOOST_TEST(b.push("efgh\n"));
  BOOST_TEST(!b.push("i\n"));  // 12 > 10
  BOOST_TEST(!b.push("j\n"));
  BOOST_TEST(b.bytes() == 10u);
  log::line_buffer::batch taken = b.take();
  BOOST_TEST(taken.lines.size() == 2u);
  BOOST_TEST(taken.lines.front() == "abcd\n");
  BOOST_TEST(taken.dropped == 2u);
  BOOST_TEST(b.empty());
  BOOST_TEST(b.push("i\n"));                  // room again once taken
  BOOST_TEST(!b.push(std::string(20, 'x')));  // longer than the whole bound
  taken = b.take();
  BOOST_TEST(taken.lines.size() == 1u);
  BOOST_TEST(taken.dropped == 1u);
}

BOOST_AUTO_TEST_CASE(formats_text_and_json) {
  log::configure(log::level::info, log::format::text);
  std::string line = log::format_line(log::level::warn, "hello", {{"k", "a b"}});
  BOOST_TEST(line.find(" warn  hello k=\"a b\"\n") != std::string::npos);
  log::configure(log::level::info, log::format::json);
  line = log::format_line(log::level::info, "hi", {{"n", "1"}});
  BOOST_TEST(line.find("\"level\":\"info\",\"msg\":\"hi\",\"n\":\"1\"}\n") != std::string::npos);
  log::configure(log::level::info, log::format::text);
}

// stderr a pipe: a line goes out at once while the pipe has room; once nobody reads it, write()
// still returns at once whatever the volume, lines beyond the bound are counted, and once the
// pipe is read the kept lines come out, then the count.
BOOST_AUTO_TEST_CASE(a_stalled_stderr_never_blocks_the_caller) {
  int pipe_fds[2];
  BOOST_REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
  const int saved_stderr = ::dup(STDERR_FILENO);
  BOOST_REQUIRE(::dup2(pipe_fds[1], STDERR_FILENO) == STDERR_FILENO);
  log::configure(log::level::info, log::format::text);
  BOOST_REQUIRE(::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK) == 0);

  // While stderr keeps up, a line is out before write() returns (stderr is looked at once, at
  // the first line: this one).
  log::info("at once");
  {
    char buffer[256];
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    BOOST_REQUIRE(n > 0);
    BOOST_TEST(std::string(buffer, static_cast<std::size_t>(n)).find("info  at once\n") !=
               std::string::npos);
  }
  // The pipe's own description stays blocking: the children share it.
  BOOST_TEST((::fcntl(pipe_fds[1], F_GETFL) & O_NONBLOCK) == 0);

  const auto start = std::chrono::steady_clock::now();
  const std::string filler(200, 'x');
  for (int i = 0; i < 20000; ++i) log::info("line", {{"n", std::to_string(i)}, {"f", filler}});
  const auto took = std::chrono::steady_clock::now() - start;
  BOOST_TEST(log::dropped_lines() > 0u);  // 20,000 lines of 250 bytes: 5 MB, beyond any bound
  BOOST_TEST(took < 5s);                  // bounded: blocking would never return
  BOOST_TEST(!log::flush(50ms));          // nothing can drain while nobody reads

  // Read it all: the writer drains, then reports what it dropped.
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (seen.find("log lines dropped") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    char buffer[65536];
    const ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n > 0) {
      seen.append(buffer, static_cast<std::size_t>(n));
      if (seen.size() > 8 * 1024 * 1024) seen.erase(0, seen.size() - 1024 * 1024);
    } else {
      ::usleep(1000);
    }
  }
  BOOST_TEST(seen.find("log lines dropped count=") != std::string::npos);
  // What the writer still holds drains while the reader goes on reading (it stopped at the
  // report, and a pipe holds only 64 KiB).
  bool flushed = false;
  while (!flushed && std::chrono::steady_clock::now() < deadline + 20s) {
    char buffer[65536];
    while (::read(pipe_fds[0], buffer, sizeof buffer) > 0) {
    }
    flushed = log::flush(10ms);
  }
  BOOST_TEST(flushed);

  ::dup2(saved_stderr, STDERR_FILENO);
  ::close(saved_stderr);
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}
