// Restore's last step: a WAL index's committed frames written into a database file, as
// SQLite's own checkpoint would: only the last
// committed version of each page, then the file cut to the last commit's size. Frames after
// the last whole, verified transaction are not applied. Blocking file I/O: for offload().
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace sm::db {

struct replay_result {
  std::uint32_t commits = 0;        // transactions applied
  std::uint32_t pages_written = 0;  // distinct pages
  std::uint32_t db_pages = 0;       // the database's size after the last commit
  std::uint64_t wal_end = 0;        // the WAL offset after the last applied commit
  std::string stopped;              // why the scan stopped (see wal::scan_result)
};

// `wal` holds one WAL index's bytes from offset 0 (header included). Throws db::error (from
// database.hpp) when the header is invalid, the page sizes disagree, or the file cannot be
// written. `db` must exist (the snapshot) and not be open in SQLite meanwhile.
replay_result apply_wal(const std::filesystem::path& db, std::span<const std::byte> wal);

}  // namespace sm::db
