// A consistent copy of the environment's database while applications keep writing to it:
// SQLite's online backup API, in one read transaction (in WAL mode that blocks no writer, and
// a copy made in several steps would start over each time another connection writes). Used by
// checkpoints. Never a plain file copy: a descriptor of the database file that this process
// opens and closes drops every POSIX lock the process holds on it (the replicator's pin
// included). Blocking: for offload().
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace sm::db {

struct backup_result {
  std::uint64_t bytes = 0;  // the copy's size
  std::uint32_t pages = 0;
  std::string sha256;  // of the copy, lower-case hex
};

// Writes `to` (replaced if it exists; fsynced) as a rollback-journal database with the same
// content as `db` at one moment. Throws db::error naming the step.
backup_result backup(const std::filesystem::path& db, const std::filesystem::path& to);

// The same result by reflink, in time independent of the database's size, where the file
// system can share extents (xfs, btrfs): with other writers held off by a write transaction,
// the database file and its WAL are cloned (the database through the descriptor SQLite itself
// holds, so that no lock of ours is dropped), then the clone's WAL is checkpointed into it and
// removed. nullopt, leaving nothing at `to`, where reflinks are not possible (different file
// systems, ext4), or where the write lock could not be had within clone_lock_patience (a writer
// that holds it all along): backup() then. Throws db::error for anything else.
inline constexpr std::chrono::milliseconds clone_lock_patience{1000};
std::optional<backup_result> clone(const std::filesystem::path& db,
                                   const std::filesystem::path& to);

// SHA-256 of a file, lower-case hex: what a restore checks the copy against. Throws db::error.
std::string sha256_file(const std::filesystem::path& file);

}  // namespace sm::db
