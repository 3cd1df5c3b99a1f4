// Restoring the environment's database from its replica in the object store: the chosen generation's latest snapshot (at or before
// the wanted time), then each WAL index's segments in order, replayed onto it, verified with
// PRAGMA integrity_check, and only then moved into place. Used at boot (new machine, lease
// taken over) and by `state-manager restore-db`.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <asio/awaitable.hpp>

#include "s3/object_store.hpp"

namespace sm::db {

struct restore_request {
  std::filesystem::path to;  // the database file to write (its -wal and -shm are removed)
  // Point in time: only what was in the store by then (objects' Last-Modified). nullopt: all.
  std::optional<std::chrono::system_clock::time_point> at;
  std::string generation;  // empty: the newest one that has a snapshot (by `at`)
};

struct restore_report {
  bool found = false;      // false: the store has no restorable generation (nothing written)
  std::string generation;  // restored from
  std::uint64_t snapshot_walidx = 0;
  std::uint32_t segments = 0;  // applied
  std::uint32_t commits = 0;   // transactions replayed from them
  std::uint64_t bytes = 0;     // downloaded
  std::uint32_t db_pages = 0;  // the restored database's size in pages
  // Why the replay ended before the last segment listed (a gap in the chain, a corrupt or
  // truncated segment): it stopped at the last verified transaction. Empty: everything used.
  std::string stopped_early;
  // The Last-Modified of the newest object wholly applied: the replica as it stood then.
  std::chrono::system_clock::time_point as_of{};
  std::chrono::milliseconds took{0};
};

// Throws db::error when the restored file fails integrity_check or cannot be written, or the
// replica is in a format this version cannot read (a compression it does not know), and
// s3::error when the store fails. A segment that is listed but gone when fetched is a gap,
// not a failure. `to` is untouched unless the restore succeeds (written
// beside it, fsynced, renamed). Runs on the executor; file and SQLite work go through
// offload().
asio::awaitable<restore_report> restore(s3::object_store& store, restore_request request);

}  // namespace sm::db
