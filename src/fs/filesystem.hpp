// The filesystem's operations: what each FUSE request does, on the executor, over the metadata
// (fs/metadata.hpp) and the block store (fs/block_store.hpp). Requests that only read metadata
// are answered at once; those that change it are answered after the commit they share with the
// others of the same turn (group commit); reads and writes are coroutines that reply when their
// blocks are read or buffered.
//
// Writes: each open file's data goes into per-chunk slices buffered in memory (a bounded pool: a
// WRITE waits for room, which is the kernel's back-pressure); a full block is staged at once (in
// the background), the rest when the slice is finished: at flush (every close), fsync, before a
// read, truncate or copy of the same file, when the file was idle for a second, or when a write
// does not continue the slice. A finished slice is one record appended to its chunk.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

struct fuse_lowlevel_ops;

namespace sm::fs {

class metadata;
class block_store;

struct filesystem_settings {
  std::uint64_t capacity = 1ull << 40;  // what statfs (df) shows as the size
  std::uint64_t write_buffer = 256ull << 20;  // bytes buffered in memory for writes, at most
  // The kernel's caches of names and attributes: long, since every change goes through this
  // mount (an explicit invalidation covers the rest).
  double entry_timeout = 60.0, attr_timeout = 60.0;
  // Told of every failure that is not an answer POSIX expects (an I/O error, a full disk, a
  // store that does not answer): "<operation> inode <n>: <errno text>".
  std::function<void(const std::string&)> report_error;
};

struct filesystem_stats {
  std::uint64_t requests = 0, errors = 0;
  std::uint64_t buffered_bytes = 0;  // written, not yet staged
  std::uint64_t open_files = 0, known_inodes = 0;
  std::uint64_t commits = 0;
  std::uint64_t fast_writes = 0;  // writes done at once, without a coroutine
  std::string last_error;  // "<operation> <inode or name>: <errno text>"
};

class filesystem {
 public:
  // `meta` and `blocks` outlive this.
  filesystem(asio::any_io_executor executor, metadata& meta, block_store& blocks,
             filesystem_settings settings);
  ~filesystem();
  filesystem(const filesystem&) = delete;
  filesystem& operator=(const filesystem&) = delete;

  // The operations table; the session's userdata must be this filesystem.
  static const fuse_lowlevel_ops& operations();

  // Until the kernel's INIT has been answered (true), or `timeout` passed (false).
  asio::awaitable<bool> wait_initialized(std::chrono::milliseconds timeout);

  // Finishes every buffered slice (staged, appended) and commits: what shut-down, release and a
  // checkpoint's quiesce need before they go on. Throws std::system_error on failure.
  asio::awaitable<void> flush_all();
  // Until no request or background work is under way (true), or `timeout` passed (false): the
  // session and the metadata and blocks they use may then go.
  asio::awaitable<bool> wait_idle(std::chrono::milliseconds timeout);
  // Stops the idle flusher and refuses new writes (EROFS); called before unmounting.
  void close();

  filesystem_stats stats() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace sm::fs
