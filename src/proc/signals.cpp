#include "proc/signals.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include <asio/buffer.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace sm::proc {

namespace {
int open_signalfd(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) {
    throw std::system_error(errno, std::generic_category(), "block signals");
  }
  const int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
  return fd;
}
}  // namespace

signal_stream::signal_stream(asio::any_io_executor executor, std::initializer_list<int> signals)
    : fd_(executor, open_signalfd(signals)) {}

asio::awaitable<int> signal_stream::next() {
  // async_read_some, not a readiness wait and our own read: the reactor reads as soon as
  // epoll reports the fd, and re-arming costs no epoll_ctl (a wait re-registers every time).
  // That keeps the path from a signal to its forwarding, and back to epoll_wait, at the
  // syscalls tini makes.
  static_assert(sizeof(signalfd_siginfo) == 128);
  while (pending_.empty() && !closed_) {
    std::error_code ec;
    const std::size_t n = co_await fd_.async_read_some(
        asio::buffer(records_), asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::interrupted || ec == asio::error::would_block) continue;
    if (ec) co_return 0;  // closed (operation_aborted) or a broken fd
    for (std::size_t at = 0; at + sizeof(signalfd_siginfo) <= n; at += sizeof(signalfd_siginfo)) {
      signalfd_siginfo record;
      std::memcpy(&record, records_.data() + at, sizeof record);
      pending_.push_back(int(record.ssi_signo));
    }
  }
  if (closed_ || pending_.empty()) co_return 0;
  const int signal = pending_.front();
  pending_.pop_front();
  co_return signal;
}

void signal_stream::close() {
  closed_ = true;
  std::error_code ignored;
  fd_.cancel(ignored);
}

}  // namespace sm::proc
