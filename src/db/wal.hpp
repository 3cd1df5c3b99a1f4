// SQLite's write-ahead log, read as data: the 32-byte header, the 24-byte frame headers, and
// the checksum chain that tells a frame written by the current WAL generation (valid: salts
// and cumulative checksum match) from stale bytes left behind by an earlier one. Pure
// functions over bytes, no SQLite, no I/O: the replicator reads the file, this says which of it
// is whole, committed and ours. Format: https://www.sqlite.org/fileformat2.html#walformat.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sm::db::wal {

inline constexpr std::uint32_t magic_little_endian = 0x377f0682;  // checksum words read LE
inline constexpr std::uint32_t magic_big_endian = 0x377f0683;     // checksum words read BE
inline constexpr std::uint32_t format_version = 3007000;
inline constexpr std::size_t header_size = 32;
inline constexpr std::size_t frame_header_size = 24;

struct checksum {
  std::uint32_t s0 = 0, s1 = 0;
  bool operator==(const checksum&) const = default;
};

// SQLite's WAL checksum: the input as 32-bit words (little- or big-endian), two at a time,
// s0 += a + s1; s1 += b + s0, continuing from `seed`. `data.size()` must be a multiple of 8.
checksum compute(std::span<const std::byte> data, bool big_endian_words, checksum seed);

struct header {
  std::uint32_t magic = magic_little_endian;
  std::uint32_t version = format_version;
  std::uint32_t page_size = 4096;
  std::uint32_t checkpoint_seq = 0;
  std::uint32_t salt1 = 0, salt2 = 0;
  checksum sum;  // over bytes 0-23
  bool big_endian_words() const { return magic == magic_big_endian; }
  std::size_t frame_size() const { return frame_header_size + page_size; }
};

// The header of a WAL file (its first 32 bytes): nullopt, with the reason in `why`, when the
// magic, version, page size (a power of two from 512 to 65536) or checksum is wrong.
std::optional<header> parse_header(std::span<const std::byte> bytes, std::string* why = nullptr);

struct frame_header {
  std::uint32_t page = 0;         // page number, from 1
  std::uint32_t commit_size = 0;  // non-zero on the last frame of a transaction: the database's
                                  // size in pages after it
  std::uint32_t salt1 = 0, salt2 = 0;
  checksum sum;  // cumulative, through this frame
  bool is_commit() const { return commit_size != 0; }
};
frame_header parse_frame_header(std::span<const std::byte> bytes);  // the frame's first 24 bytes

// Where a scan of frames stopped, and what it found valid.
struct scan_result {
  std::uint64_t valid_end = 0;   // file offset after the last valid frame
  std::uint64_t commit_end = 0;  // file offset after the last valid commit frame (or the start)
  checksum commit_sum;           // the running checksum at commit_end (the seed if none)
  std::uint32_t frames = 0;      // valid frames seen
  std::uint32_t commits = 0;     // of which commit frames
  std::uint32_t db_pages = 0;    // the database's size after the last commit (0 if none)
  std::string stopped;           // why it stopped: "end of data", "partial frame", "salt mismatch",
                                 // "checksum mismatch"
};

// Scans the frames in `data`, which holds the WAL's bytes from file offset `offset` (32 plus a
// whole number of frames), with the running checksum `seed`: the header's at offset 32, else
// the checksum of the frame just before `offset`. Stops at the first frame that is partial, has
// other salts or breaks the chain: bytes from there on are not part of this WAL generation.
// Only whole transactions count: commit_end is where a reader may cut.
scan_result scan(std::span<const std::byte> data, const header& h, std::uint64_t offset,
                 checksum seed);

// Building WALs (for tests and for restores that replay frames): a header with its checksum,
// and a frame chained to `previous` (the header's sum for the first frame). `page` must hold
// page_size bytes. Returns the bytes; `previous` becomes the new frame's checksum.
std::vector<std::byte> encode_header(header& h);  // fills in h.sum
std::vector<std::byte> encode_frame(const header& h, std::uint32_t page_number,
                                    std::uint32_t commit_size, std::span<const std::byte> page,
                                    checksum& previous);

}  // namespace sm::db::wal
