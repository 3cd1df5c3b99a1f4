// Where the database's replica lives in the object store, and how a restore finds its way
// through it. Under <key_prefix>:
//   db/<generation>/meta.json
//   db/<generation>/snapshot/<walidx>.db<ext>
//   db/<generation>/wal/<walidx>/<start>-<end>.wal<ext>
// Generations are 32 hex digits; walidx, start and end are 16 hex digits (fixed width, lower
// case: key order is numeric order). A WAL index counts the log's resets within a generation;
// start and end are byte offsets in that index's WAL (the first segment starts at 0 and holds
// the header), so contiguity can be checked from a listing alone. Keys are never overwritten.
// Pure: no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sm::db::layout {

// 32 hex digits: the creation time in microseconds, then 64 random bits. Generations sort by
// creation time (the newest is the last listed).
std::string new_generation();
bool valid_generation(std::string_view text);

std::string generation_prefix(std::string_view generation);  // "db/<g>/"
std::string meta_key(std::string_view generation);
std::string snapshot_key(std::string_view generation, std::uint64_t walidx, std::string_view ext);
std::string segment_key(std::string_view generation, std::uint64_t walidx, std::uint64_t start,
                        std::uint64_t end, std::string_view ext);

struct snapshot_ref {
  std::string generation;
  std::uint64_t walidx = 0;
  std::string key;
};
struct segment_ref {
  std::string generation;
  std::uint64_t walidx = 0, start = 0, end = 0;
  std::string key;
};
// Keys as listed (relative to key_prefix); anything else is nullopt.
std::optional<snapshot_ref> parse_snapshot_key(std::string_view key);
std::optional<segment_ref> parse_segment_key(std::string_view key);

// What a restore of one generation replays: its latest snapshot, then, for each WAL index from
// the snapshot's on, the segments that continue each other from offset 0. Where the chain
// breaks (a missing segment or index), the plan ends and `gap` says where: never skipped.
struct restore_plan {
  std::optional<snapshot_ref> snapshot;  // none: the generation cannot be restored
  std::vector<segment_ref> segments;     // in replay order
  std::string gap;                       // empty: every listed segment is used
};
restore_plan plan_restore(std::string_view generation, const std::vector<std::string>& keys);

// How far a replica reaches: its generation, and where its WAL ends (a WAL index and a byte
// offset in it; later is larger by (walidx, end)).
struct replica_point {
  std::string generation;
  std::uint64_t walidx = 0, end = 0;
};
// The store's newest generation that a restore can use (it has a snapshot), and the end of its
// last segment ((0, 0) when it has none yet); nullopt when there is none. A machine's own
// segments are in its local shadow before they go up, so for the generation it is on, the
// store never reaches further than its shadow unless someone else wrote there.
std::optional<replica_point> newest_point(const std::vector<std::string>& keys);
// Why a local database whose replica stands at `local` is older than the store's `newest`, or
// empty when it is not: the store is on a generation started after the local one (another
// machine's, which the local replica never saw), or on the same one and further along. A local
// generation newer than the store's is the local machine's own, not yet (or never) shipped.
std::string why_behind(const replica_point& local, const replica_point& newest);

}  // namespace sm::db::layout
