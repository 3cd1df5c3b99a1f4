// One io_uring whose reads and writes are awaited on the executor. Every request is submitted
// with IOSQE_ASYNC, so that the kernel runs it on its own worker threads (io-wq) instead of
// inline in io_uring_submit, where a buffered read or write stalled a 1 ms timer by up to 56 ms.
// The ring signals an eventfd for each completion; one wait on that
// eventfd is all the executor does while requests are in the kernel.
//
// The header names no liburing type (the ring is behind a pointer), so that the heavy Asio
// coroutine translation units that use it do not also parse liburing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

namespace sm::uring {

// Not thread-safe: create it, use it and destroy it on the executor's thread. Destroy it before
// the executor's execution context (it holds an Asio descriptor, like a socket does).
class ring {
 public:
  // Requests in the kernel at most: more wait in order for a free place. Modest, since each one
  // in flight holds its caller's buffer and may hold an io-wq worker thread.
  static constexpr unsigned default_queue_depth = 64;

  // Throws std::system_error when the kernel refuses a ring (ENOSYS without io_uring, EPERM
  // under a seccomp filter or kernel.io_uring_disabled, ENOMEM over RLIMIT_MEMLOCK), so that
  // the caller can fall back to plain reads and writes.
  explicit ring(asio::any_io_executor executor, unsigned queue_depth = default_queue_depth);

  // Asks the kernel to cancel the requests in flight and waits, blocking the thread, until
  // each has completed: no buffer of a request may be freed while the kernel can still read or
  // write it. The coroutines awaiting them are then destroyed, never resumed (resumed, they
  // could only use this ring, which is gone); so is a coroutine whose completion was already
  // posted but had not run yet.
  ~ring();

  ring(const ring&) = delete;
  ring& operator=(const ring&) = delete;

  // Reads up to `size` bytes of `fd` at `offset` into `buffer`, which must stay valid until
  // this completes. Returns the count, which may be short like pread's (0 at the end of a
  // file). Throws std::system_error ("io_uring read", errno from the kernel). Cancelling the
  // awaiting coroutine asks the kernel to stop the read: ECANCELED (EINTR from a worker
  // interrupted in a blocking read) when it could, the real result when it had run already.
  asio::awaitable<std::size_t> read(int fd, void* buffer, std::size_t size, std::uint64_t offset);

  // Writes up to `size` bytes of `data` to `fd` at `offset`; the same contract as read, with
  // "io_uring write". A short count is the caller's to continue.
  asio::awaitable<std::size_t> write(int fd, const void* data, std::size_t size,
                                     std::uint64_t offset);

  const asio::any_io_executor& get_executor() const;

  // Entries submitted to the kernel whose completion has not been collected yet: reads and
  // writes, and their cancellation requests.
  std::size_t in_flight() const;

 private:
  struct impl;
  // Shared only so that handlers can tell, through weak pointers, that the ring is gone.
  std::shared_ptr<impl> impl_;
};

}  // namespace sm::uring
