// File data moved by io_uring reads and writes: the checkpoint copy's third method, after
// FICLONE and copy_file_range, for filesystem pairs that do neither.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "uring/ring.hpp"

namespace sm::uring {

// A copy keeps at most copy_buffers_in_flight buffers of copy_buffer_size in flight, each being
// read or written. Four: reads of the next buffers overlap writes of the previous ones, and a
// device sees a few requests at once rather than one; few enough that a copy holds 4 MiB and
// at most 4 io-wq workers, and leaves most of a ring's queue depth to other users. A 1 MiB
// request is large enough that per-request costs (a completion, an executor wake-up) vanish.
inline constexpr std::size_t copy_buffer_size = 1024 * 1024;
inline constexpr std::size_t copy_buffers_in_flight = 4;

// Copies [offset, offset + length) of `source` to the same offsets of `target` through `ring`
// (await it on the ring's executor), reads then writes, at most copy_buffers_in_flight
// buffers at a time. Returns the bytes copied: `length`, or fewer when the source ended first
// (a read found its end). Short reads and short writes are continued. Holes are not kept: a
// hole in the range is read as zeros and written as data (copy only data extents, as
// copy_tree does). A source changing meanwhile is copied as some mix of before and after, as
// by cp.
// Throws std::system_error ("io_uring read" or "io_uring write" with the kernel's errno) after
// every request of the copy has completed, so no buffer is freed under the kernel; cancelling
// the awaiting coroutine stops it the same way, with ECANCELED or asio's operation_aborted.
asio::awaitable<std::uint64_t> copy_range(ring& ring, int source, int target, std::uint64_t offset,
                                          std::uint64_t length);

// What checkpoint::copy_options::move_data expects: copies [offset, offset + length) of source
// to target and returns the bytes copied (fewer when the source ended).
using data_mover = std::function<std::uint64_t(int source, int target, std::uint64_t offset,
                                               std::uint64_t length)>;

// A data_mover for copy_tree, which runs on a worker thread (offload): each call runs
// copy_range on `executor`, where `ring` lives, and blocks its own thread until that is done,
// returning its count or rethrowing its exception. The function holds `ring` while it lives.
// Call it only from another thread than the executor's: on the executor's own thread it would
// wait for work that only that thread can run, forever (detected, and a std::logic_error, when
// the executor is an io_context's). If the execution context is destroyed before a copy ran,
// the call throws std::future_error (broken_promise) rather than wait forever.
// Release the function (the ring's last owner, perhaps) when no call is running. Where the
// kernel refuses a ring (its constructor throws), leave move_data empty instead: copy_tree's
// own pread/pwrite does the same job on its thread.
data_mover executor_data_mover(asio::any_io_executor executor, std::shared_ptr<ring> ring);

}  // namespace sm::uring
