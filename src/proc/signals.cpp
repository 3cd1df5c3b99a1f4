#include "proc/signals.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

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
  while (pending_.empty() && !closed_) {
    signalfd_siginfo records[16];
    const ssize_t n = ::read(fd_.native_handle(), records, sizeof records);
    if (n > 0) {
      for (ssize_t i = 0; i < n / ssize_t(sizeof records[0]); ++i) {
        pending_.push_back(int(records[i].ssi_signo));
      }
      break;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) co_return 0;
    std::error_code ec;
    co_await fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                            asio::redirect_error(asio::use_awaitable, ec));
    if (ec && ec != asio::error::operation_aborted) co_return 0;
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
