#include "proc/output.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

namespace sm::proc {

namespace {
constexpr std::size_t max_line = 64 * 1024;

// For outputs that never stall (files) or cannot be reopened (a pipe where /proc is missing).
void write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}
int reopen_nonblocking(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !(S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) return -1;
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  // O_NOCTTY: as PID 1 without a controlling terminal, opening a tty must not acquire one.
  return ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
}
bool is_socket(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}
}  // namespace

line_output::line_output(asio::any_io_executor executor, int fd) : executor_(executor), fd_(fd) {
  if (is_socket(fd)) {
    // Asio sets O_NONBLOCK on any descriptor it waits on, even for a mere wait, and the flag
    // belongs to the description the children share: the socket is watched through an epoll
    // instance of our own instead, readable while the socket is writable.
    const int watcher = ::epoll_create1(EPOLL_CLOEXEC);
    if (watcher < 0) return;
    epoll_event interest{};
    interest.events = EPOLLOUT;
    if (::epoll_ctl(watcher, EPOLL_CTL_ADD, fd, &interest) != 0) {
      ::close(watcher);
      return;
    }
    socket_.emplace(executor, watcher);
    return;
  }
  const int own = reopen_nonblocking(fd);
  if (own >= 0) reopened_.emplace(executor, own);
}

asio::awaitable<void> line_output::send_all(std::string_view data) {
  while (!data.empty() && !closed_) {
    const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      std::error_code ec;
      co_await socket_->async_wait(asio::posix::stream_descriptor::wait_read,
                                   asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;  // closed at shut-down
    } else {
      co_return;  // the reader is gone: the data is dropped
    }
  }
}

void line_output::close() {
  closed_ = true;
  std::error_code ignored;
  if (reopened_) reopened_->close(ignored);  // the pending write ends (operation_aborted)
  if (socket_) socket_->close(ignored);      // so does a pending wait

  for (asio::steady_timer* turn : waiting_) turn->cancel();
}

asio::awaitable<void> line_output::write(std::string data) {
  if (closed_) co_return;
  if (!nonblocking()) {
    write_all(fd_, data);
    co_return;
  }
  // One writer at a time, in arrival order: a partial write must be finished before another
  // begins, or lines would interleave.
  if (busy_) {
    asio::steady_timer turn(executor_, std::chrono::steady_clock::time_point::max());
    waiting_.push_back(&turn);
    std::error_code ec;
    while (busy_ && !closed_) {
      co_await turn.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    std::erase(waiting_, &turn);
    if (closed_) co_return;
  }
  busy_ = true;
  if (reopened_) {
    std::error_code ec;  // EPIPE: nobody reads our output any more; the data is dropped
    co_await asio::async_write(*reopened_, asio::buffer(data),
                               asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await send_all(data);
  }
  busy_ = false;
  if (!waiting_.empty()) waiting_.front()->cancel();
}

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

asio::awaitable<void> forward_lines(std::shared_ptr<asio::posix::stream_descriptor> from,
                                    std::shared_ptr<line_output> to, std::string prefix) {
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
    if (!out.empty()) co_await to->write(std::move(out));
  }
  if (!pending.empty()) co_await to->write(prefix + pending + "\n");
}

}  // namespace sm::proc
