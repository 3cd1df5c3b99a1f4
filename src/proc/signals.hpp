// Signals as a stream of numbers on the executor, through signalfd: the signals are blocked
// (children get them unblocked, see spawn), and each arrival is one readable event and one
// read, with no signal handler and no self-pipe in between.
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <initializer_list>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>

namespace sm::proc {

class signal_stream {
 public:
  // Blocks `signals` for the whole process (call before any thread starts) and opens the fd.
  signal_stream(asio::any_io_executor executor, std::initializer_list<int> signals);

  // The next signal, or 0 once close() was called.
  asio::awaitable<int> next();
  void close();

 private:
  asio::posix::stream_descriptor fd_;
  // Room for 16 signalfd_siginfo records (128 bytes each), read in one go.
  alignas(8) std::array<std::byte, 16 * 128> records_{};
  std::deque<int> pending_;  // read in a batch, handed out one by one
  bool closed_ = false;
};

}  // namespace sm::proc
