// The replicator's sync decision, pure: given where the
// replica stands (the WAL header it follows, the durable end of what is in the store and the
// checksum there) and the WAL file's current bytes, what happens next: nothing new, a segment
// to ship (commit-aligned, continuing exactly where the replica ends), the next WAL index
// after our own checkpoint reset the log, or a new generation because continuity was lost
// (another process checkpointed and reset the WAL, the file was replaced or overwritten).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "db/wal.hpp"

namespace sm::db {

struct replica_position {
  std::array<std::byte, wal::header_size> header{};  // the WAL header being followed
  std::uint64_t walidx = 0;
  std::uint64_t durable_end = 0;  // WAL offset up to which the store has it (0: nothing yet)
  wal::checksum sum;              // the running checksum at durable_end
};

struct sync_step {
  enum class kind { nothing, segment, new_index, new_generation } what = kind::nothing;
  std::uint64_t start = 0, end = 0;  // segment / new_index: the WAL bytes [start, end) to ship
  replica_position next;             // where the replica stands once they are in the store
  std::string why;                   // nothing / new_generation: the reason
};

// `at`: nullopt for a new generation (ship the WAL from offset 0). `reset_expected`: our own
// checkpoint just ran, so a header with salt-1 + 1 and checkpoint sequence + 1 is the next WAL
// index, not a loss of continuity.
sync_step next_sync(const std::optional<replica_position>& at, std::span<const std::byte> wal,
                    bool reset_expected);

// The same, over a window of the WAL: its header (the first 32 bytes, or fewer) and the bytes
// from `tail_offset` on (`tail`), which must start at or before the frame ending at the
// replica's durable end when `tail_offset` > 0. A header other than the one followed needs the
// whole log (tail_offset 0): then the answer is new_generation, with why "read from the start".
sync_step next_sync(const std::optional<replica_position>& at, std::span<const std::byte> header,
                    std::span<const std::byte> tail, std::uint64_t tail_offset,
                    bool reset_expected);

// What next_sync says when a window did not start early enough.
inline constexpr std::string_view need_whole_wal = "read from the start";

}  // namespace sm::db
