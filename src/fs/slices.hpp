// The filesystem's data model as pure functions (DESIGN 4, notes/juicefs.md section 1): a file is
// cut into chunks of 64 MiB; each write session makes a slice (a never reused 64-bit id) that
// covers one contiguous range of one chunk; a slice is stored as blocks of `block_size`, each an
// immutable object. A chunk's metadata is the list of its slice records, oldest first; reading it
// paints later records over earlier ones. No I/O here: the metadata stores the records, the block
// store holds the blocks.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sm::fs {

inline constexpr std::uint64_t chunk_size = 64ull << 20;

// Slice id 0 is a hole: the range it covers reads as zeros (truncate, punch hole).
inline constexpr std::uint64_t hole_slice = 0;

// One record of a chunk: bytes [pos, pos + len) of the chunk are bytes [off, off + len) of slice
// `id`, whose whole length is `size` (the blocks' names follow from id and size).
struct slice_record {
  std::uint32_t pos = 0;   // in the chunk
  std::uint64_t id = 0;    // hole_slice: zeros
  std::uint32_t size = 0;  // the slice's whole length (for a hole: len)
  std::uint32_t off = 0;   // where the window starts in the slice
  std::uint32_t len = 0;   // the window's length
  friend bool operator==(const slice_record&, const slice_record&) = default;
};

// 24 bytes a record, little-endian: the chunk's BLOB in the metadata.
std::string encode(std::span<const slice_record> records);
// Throws std::invalid_argument when the blob is not a whole number of valid records.
std::vector<slice_record> decode(std::string_view blob);

// A painted piece of a chunk: [pos, pos + len) reads bytes [off, off + len) of slice `id`
// (size `size`), or zeros when id is hole_slice. Uncovered ranges are holes too.
using segment = slice_record;

// The chunk as the records paint it, from byte 0 to `length` (the file's bytes in this chunk),
// covering it with no gaps or overlaps, in order; adjacent holes merged.
std::vector<segment> paint(std::span<const slice_record> records, std::uint32_t length);

// The painted records again as a minimal list (what compaction of the metadata alone keeps:
// every record still visible, trimmed to what shows). Holes past `length` are dropped.
std::vector<slice_record> visible(std::span<const slice_record> records, std::uint32_t length);

// Where a byte of a slice lives: block `index` of the slice, at `offset` in it.
struct block_ref {
  std::uint64_t slice = 0;
  std::uint32_t index = 0;
  std::uint32_t length = 0;  // the block's length: block_size, or less for the slice's last
  friend bool operator==(const block_ref&, const block_ref&) = default;
};
// The blocks of a slice of `size` bytes, in order.
std::vector<block_ref> blocks_of(std::uint64_t slice, std::uint32_t size, std::uint32_t block_size);
// "fs/blocks/<slice % 256, two hex digits>/<slice>_<index>_<length>", relative to the key prefix.
std::string block_key(const block_ref& block);
// The file name of a block in staging/ and cache/: "<slice>_<index>_<length>".
std::string block_file_name(const block_ref& block);
// The inverse, false when `name` is not one.
bool parse_block_file_name(std::string_view name, block_ref& out);

}  // namespace sm::fs
