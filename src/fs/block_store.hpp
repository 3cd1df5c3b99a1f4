// Where the filesystem's blocks live (DESIGN 4): the object store (`fs/blocks/...`, written once,
// never overwritten), `staging/` (blocks written here and not yet in the store: durable locally,
// uploaded in the background, removed once up) and `cache/` (blocks read from, or uploaded to,
// the store, bounded by `cache_size` in bytes on disk, least recently used evicted first, its
// index rebuilt from the folder at start).
//
// Every file operation runs off the executor (io_uring reads and writes, offload() for open,
// fsync, rename, unlink, scans); every store request is a coroutine on it. Not thread-safe: use it
// on the executor's thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <nlohmann/json_fwd.hpp>

#include "fs/slices.hpp"

namespace sm::s3 {
class object_store;
}
namespace sm::uring {
class ring;
}

namespace sm::fs {

struct block_store_settings {
  std::filesystem::path staging_dir;  // data/filesystem/staging
  std::filesystem::path cache_dir;    // data/filesystem/cache
  std::uint64_t cache_size = 1ull << 30;    // bytes on disk (st_blocks), at most
  std::uint64_t staging_size = 8ull << 30;  // bytes staged and not yet up, at most
  unsigned upload_concurrency = 16;
  std::uint32_t block_size = 4u << 20;
  // A read of a block that is in neither staging nor the cache retries the store for this long
  // at most, then fails with EIO.
  std::chrono::milliseconds read_deadline{30000};
  // An upload that failed (retryably) is tried again after this, doubling up to the max, until
  // it succeeds or stop().
  std::chrono::milliseconds upload_backoff_first{1000};
  std::chrono::milliseconds upload_backoff_max{30000};
};

struct block_store_stats {
  std::uint64_t staging_bytes = 0, staging_blocks = 0;  // not yet in the store
  std::uint64_t cache_bytes = 0, cache_limit = 0, cache_hits = 0, cache_misses = 0;
  std::uint64_t uploads_in_flight = 0, uploaded_blocks = 0, uploaded_bytes = 0;
  std::uint64_t downloaded_blocks = 0, downloaded_bytes = 0;
  // Blocks being fetched, their cache files being written included.
  std::uint64_t fetches_in_flight = 0;
  std::string last_error;  // the last store or disk failure, empty when none since it cleared
};

class block_store {
 public:
  // `store` (the fenced store: nothing is written without the lease) and `ring` outlive this.
  block_store(asio::any_io_executor executor, s3::object_store& store, uring::ring& ring,
              block_store_settings settings);
  ~block_store();
  block_store(const block_store&) = delete;
  block_store& operator=(const block_store&) = delete;

  // Creates the folders, rebuilds the cache's index from cache/ (evicting down to its limit),
  // and queues every block found in staging/ for upload (an upload a crash cut short resumes).
  // Staged blocks whose slice `keep` says is no longer referenced are removed instead. Throws
  // std::system_error when a folder cannot be made or read.
  asio::awaitable<void> open(std::function<bool(std::uint64_t slice)> keep);

  // Writes a whole block (data.size() == block.length) to staging/ and queues its upload.
  // Returns once the file is written (not fsynced: see sync()). Waits while staged bytes are
  // over staging_size and uploads are making progress; fails with ENOSPC when they are not (the
  // store is down) or the disk is full; EIO for other disk errors. Never overwrites: a block
  // already staged or uploaded is left as it is.
  asio::awaitable<void> stage(block_ref block, std::span<const char> data);

  // Makes every block staged so far durable against a power cut: fsyncs the staged files not
  // synced yet and the staging folder. Throws std::system_error.
  asio::awaitable<void> sync();

  // Reads `out.size()` bytes at `offset` in `block` (offset + size <= block.length): from
  // staging, else the cache, else the store (the whole block is fetched into the cache, unless
  // it cannot be admitted, then only the range is fetched). Throws std::system_error(EIO) when
  // the store does not answer within read_deadline, ENOENT-as-EIO when the block is missing.
  asio::awaitable<void> read(block_ref block, std::uint64_t offset, std::span<char> out);

  // Starts fetching `block` into the cache in the background (readahead), if it is not local and
  // not being fetched; bounded (at most upload_concurrency fetches in flight). Never throws.
  void prefetch(block_ref block);

  // Waits until nothing is staged any more (every block is in the store), or `timeout` passed,
  // or stop() was called: true when all are up. Failed uploads, whatever the error, are tried
  // again meanwhile (backoff up to upload_backoff_max).
  asio::awaitable<bool> drain(std::chrono::milliseconds timeout);

  // Stops uploads and prefetches and waits for those in flight to end (what is staged stays
  // staged, for the next start). After stop() only stats() may be called.
  asio::awaitable<void> stop();

  block_store_stats stats() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace sm::fs
