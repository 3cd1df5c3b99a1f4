#include "uring/copy.hpp"

#include <algorithm>
#include <cerrno>
#include <exception>
#include <future>
#include <limits>
#include <stdexcept>
#include <system_error>
#include <utility>

#include <asio/co_spawn.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

namespace sm::uring {

namespace {

// What the lanes of one copy share. They all run on the executor's one thread: no locks.
struct copy_job {
  ring& io;
  int source, target;
  std::uint64_t next;          // the first offset that no lane has claimed yet
  std::uint64_t end;           // the range's end, lowered to where the source was found to end
  std::size_t buffer_size;     // a lane's buffer: copy_buffer_size, or less for a short range
  std::exception_ptr failure;  // the first lane's; the others stop at their next claim
};

// A lane claims the next buffer's worth of the range, reads it whole, writes it whole, and
// claims again until nothing is left; lanes run side by side, one request in flight each. A
// lane catches its own failure into the job, so that the join below waits for every lane to
// finish its request (the buffers are freed only then) and the first failure is the one
// reported, not a sibling's cancellation.
asio::awaitable<void> copy_lane(copy_job& job) {
  std::unique_ptr<char[]> buffer;  // allocated on the first claim: a lane may find none left
  try {
    while (!job.failure && job.next < job.end) {
      const std::uint64_t at = job.next;
      const auto size =
          static_cast<std::size_t>(std::min<std::uint64_t>(job.buffer_size, job.end - at));
      job.next += size;
      if (!buffer) buffer = std::make_unique_for_overwrite<char[]>(job.buffer_size);
      std::size_t filled = 0;
      while (filled < size) {
        const std::size_t n =
            co_await job.io.read(job.source, buffer.get() + filled, size - filled, at + filled);
        if (n == 0) {  // the source ends here
          job.end = std::min(job.end, at + filled);
          break;
        }
        filled += n;
      }
      if (job.failure) break;
      // Another lane may have found the end before this part: nothing past it is written.
      filled = static_cast<std::size_t>(
          std::min<std::uint64_t>(filled, job.end > at ? job.end - at : 0));
      for (std::size_t written = 0; written < filled;) {
        const std::size_t n = co_await job.io.write(job.target, buffer.get() + written,
                                                    filled - written, at + written);
        if (n == 0) throw std::system_error(EIO, std::generic_category(), "io_uring write");
        written += n;
      }
    }
  } catch (...) {
    if (!job.failure) job.failure = std::current_exception();
  }
}

// Runs `lanes` lanes and returns when every one has returned.
asio::awaitable<void> run_lanes(copy_job& job, std::size_t lanes) {
  using namespace asio::experimental::awaitable_operators;
  if (lanes <= 1) {
    co_await copy_lane(job);
  } else {
    co_await (copy_lane(job) && run_lanes(job, lanes - 1));
  }
}

// Whether the caller is running `executor`'s io_context (as an io_context's executor, plain or
// tracking work, which is what executors of this project are); false for any other executor.
bool running_in_this_thread(const asio::any_io_executor& executor) {
  using plain = asio::io_context::executor_type;
  using tracking =
      decltype(asio::prefer(std::declval<plain>(), asio::execution::outstanding_work.tracked));
  if (const auto* io = executor.target<plain>()) return io->running_in_this_thread();
  if (const auto* io = executor.target<tracking>()) return io->running_in_this_thread();
  return false;
}

}  // namespace

asio::awaitable<std::uint64_t> copy_range(ring& ring, int source, int target, std::uint64_t offset,
                                          std::uint64_t length) {
  if (length == 0) co_return 0;
  length = std::min(length, std::numeric_limits<std::uint64_t>::max() - offset);
  const auto buffer_size =
      static_cast<std::size_t>(std::min<std::uint64_t>(copy_buffer_size, length));
  const std::uint64_t buffers = length / copy_buffer_size + (length % copy_buffer_size != 0);
  const auto lanes =
      static_cast<std::size_t>(std::min<std::uint64_t>(copy_buffers_in_flight, buffers));
  copy_job job{ring, source, target, offset, offset + length, buffer_size, nullptr};
  co_await run_lanes(job, lanes);
  if (job.failure) std::rethrow_exception(job.failure);
  co_return job.end - offset;
}

data_mover executor_data_mover(asio::any_io_executor executor, std::shared_ptr<ring> ring) {
  return [executor = std::move(executor), ring = std::move(ring)](
             int source, int target, std::uint64_t offset, std::uint64_t length) {
    if (running_in_this_thread(executor)) {
      throw std::logic_error("executor_data_mover called on its executor's thread");
    }
    std::promise<std::uint64_t> done;
    std::future<std::uint64_t> copied = done.get_future();
    // The handler holds the ring too: it outlives the coroutine that uses it.
    asio::co_spawn(
        executor, copy_range(*ring, source, target, offset, length),
        [done = std::move(done), keep = ring](std::exception_ptr failure, std::uint64_t n) mutable {
          if (failure) {
            done.set_exception(failure);
          } else {
            done.set_value(n);
          }
        });
    return copied.get();
  };
}

}  // namespace sm::uring
