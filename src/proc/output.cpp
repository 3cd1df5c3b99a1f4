#include "proc/output.hpp"

#include <unistd.h>

#include <cerrno>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace sm::proc {

namespace {
constexpr std::size_t max_line = 64 * 1024;

// Our stdout and stderr stay blocking (children share them), so this write can wait for a
// slow reader of our output, as any logging does; lines are written whole.
void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}
}  // namespace

void take_lines(std::string& pending, std::string_view prefix, std::size_t limit,
                std::string& out) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t newline = pending.find('\n', start);
    if (newline == std::string::npos) break;
    out += prefix;
    out.append(pending, start, newline - start + 1);
    start = newline + 1;
  }
  pending.erase(0, start);
  while (pending.size() > limit) {
    out += prefix;
    out.append(pending, 0, limit);
    out += '\n';
    pending.erase(0, limit);
  }
}

asio::awaitable<void> forward_lines(std::shared_ptr<asio::posix::stream_descriptor> from, int to_fd,
                                    std::string prefix) {
  std::string pending, out;
  char buffer[16384];
  for (;;) {
    std::error_code ec;
    const std::size_t n = co_await from->async_read_some(
        asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) break;  // EOF: every writer (the child, its children) closed it
    pending.append(buffer, n);
    out.clear();
    take_lines(pending, prefix, max_line, out);
    write_all(to_fd, out);
  }
  if (!pending.empty()) write_all(to_fd, prefix + pending + "\n");
}

}  // namespace sm::proc
