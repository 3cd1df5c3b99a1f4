// Continuous replication of the environment's database to the object store, on the executor
// (issue 5, in progress: not wired into the database component yet). What exists: a new
// generation (meta.json, a snapshot of the database file, the WAL so far) and syncs that ship
// each new commit-aligned WAL segment, starting a new generation when continuity is lost.
// The pin, a read transaction held on our own connection, keeps SQLite from resetting the WAL
// past what was shipped. Still to come: our own checkpoints (until then the WAL grows while
// replicating), compression, the local state file, retention.
// SQLite and file reads run through offload(); uploads are coroutines of the store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>

#include "db/shipper.hpp"
#include "s3/object_store.hpp"

struct sqlite3;

namespace sm::db {

class replicator {
 public:
  // `store` must outlive the replicator.
  replicator(asio::any_io_executor executor, s3::object_store& store, std::filesystem::path db);
  ~replicator();
  replicator(const replicator&) = delete;
  replicator& operator=(const replicator&) = delete;

  // Pins the WAL and starts a new generation.
  asio::awaitable<void> start();
  // Ships what was committed since the last sync (or a new generation when continuity was
  // lost). Returns the bytes shipped.
  asio::awaitable<std::uint64_t> sync();
  // Our own checkpoint (../shared/notes/litestream.md 6.5), so that the WAL does not grow
  // without bound while pinned: everything committed is shipped first; then, behind a
  // barrier (a write transaction) that keeps every writer out, the pin lets go, a PASSIVE
  // checkpoint backfills the WAL, and a small write on the barrier's connection makes SQLite
  // restart the log; the pin is taken again. The next sync ships the new WAL index. False when
  // it could not run now (a writer was busy, or commits arrived meanwhile): try again later.
  asio::awaitable<bool> checkpoint();
  // A final sync, then the pin goes.
  asio::awaitable<void> stop();

  const std::string& generation() const { return generation_; }
  std::uint32_t generations_started() const { return generations_; }
  const std::optional<replica_position>& position() const { return at_; }

 private:
  asio::awaitable<void> new_generation(std::string why);
  asio::awaitable<std::string> read_wal();

  asio::any_io_executor executor_;
  s3::object_store& store_;
  std::filesystem::path db_;
  sqlite3* pin_ = nullptr;
  sqlite3* barrier_ = nullptr;
  bool reset_expected_ = false;  // our checkpoint restarted the log: the next header is ours
  std::string generation_;
  std::uint32_t generations_ = 0;
  std::optional<replica_position> at_;
};

}  // namespace sm::db
