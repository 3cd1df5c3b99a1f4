// zstd for what the replica stores: snapshots (`.db.zst`) and WAL segments (`.wal.zst`). A
// database page compresses 2-10x; the store's bytes, and a restore's download, shrink with it.
// Blocking (CPU and file I/O): for offload().
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace sm::db {

// The extension compressed objects carry.
inline constexpr std::string_view compressed_ext = ".zst";

std::string compress(std::string_view data);
// Throws db::error when `data` is not a whole zstd frame sequence (corrupt, truncated).
std::string decompress(std::string_view data);

// Streamed, in bounded memory: `from` into `to` (created or truncated, fsynced).
void compress_file(const std::filesystem::path& from, const std::filesystem::path& to);
void decompress_file(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace sm::db
