// Forwarding of a child's captured output to ours, a line at a time, with a prefix naming it.
#pragma once

#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

namespace sm::proc {

// One of our own outputs (stdout or stderr), written without blocking the executor, one
// write at a time so that lines from several children never interleave mid-line.
// A pipe, FIFO or terminal is reopened (/proc/self/fd/N) as a description of our own with
// O_NONBLOCK: setting that flag on the inherited description would make the children that
// share it see EAGAIN. A socket (journald's stdout, say) cannot be reopened but needs no flag:
// each send(2) says MSG_DONTWAIT, and an epoll instance of our own says when it is writable. A
// regular file does not stall and is written as before, blocking; so is a pipe when /proc is
// missing.
class line_output {
 public:
  line_output(asio::any_io_executor executor, int fd);
  // Writes all of `data` (or drops it if the reader is gone); concurrent calls queue up.
  asio::awaitable<void> write(std::string data);
  bool nonblocking() const { return reopened_.has_value() || socket_.has_value(); }
  // At shut-down: a write stalled on a reader that stopped reading is abandoned, and later
  // writes are dropped.
  void close();

 private:
  asio::any_io_executor executor_;
  int fd_;
  std::optional<asio::posix::stream_descriptor> reopened_;  // a pipe's or tty's, O_NONBLOCK
  // For a socket: an epoll instance watching fd_ for EPOLLOUT, awaited readable; the sends go
  // to fd_ with MSG_DONTWAIT.
  std::optional<asio::posix::stream_descriptor> socket_;
  asio::awaitable<void> send_all(std::string_view data);
  bool busy_ = false;
  bool closed_ = false;
  std::deque<asio::steady_timer*> waiting_;
};

// Reads `from` until EOF and writes each line to `to` as "<prefix><line>\n". A last line
// without its newline gets one; a line longer than 64 KiB is cut there (each piece prefixed),
// so one endless line cannot grow our memory. Whole lines go out in one write(2) each, so lines
// from several children never interleave mid-line.
// `from` is shared so that its owner can close it to end the forwarding early (a grandchild
// may hold the pipe open long after the child is gone).
// While a write waits for a slow reader of our output, nothing more is read from `from`: the
// child blocks on its full pipe, not us.
asio::awaitable<void> forward_lines(std::shared_ptr<asio::posix::stream_descriptor> from,
                                    std::shared_ptr<line_output> to, std::string prefix);

// Splits `pending` into prefixed lines appended to `out`, leaving an unfinished line in
// `pending` (unless it exceeds `max_line`). Pure; forward_lines' core.
void take_lines(std::string& pending, std::string_view prefix, std::size_t max_line,
                std::string& out);

}  // namespace sm::proc
