#include "db/shipper.hpp"

#include <algorithm>

namespace sm::db {

namespace {

sync_step nothing(std::string why) {
  sync_step s;
  s.why = std::move(why);
  return s;
}

sync_step lost(std::string why) {
  sync_step s;
  s.what = sync_step::kind::new_generation;
  s.why = std::move(why);
  return s;
}

// Ships the committed part of `wal` from offset 0 (a new generation's or a new index's first
// segment).
sync_step from_start(std::span<const std::byte> wal, const wal::header& h, std::uint64_t walidx,
                     sync_step::kind what) {
  const wal::scan_result r = wal::scan(wal.subspan(wal::header_size), h, wal::header_size, h.sum);
  if (r.commits == 0 && what == sync_step::kind::segment) return nothing("no commit yet");
  sync_step s;
  s.what = what;
  s.start = 0;
  s.end = r.commit_end;
  std::copy_n(wal.begin(), wal::header_size, s.next.header.begin());
  s.next.walidx = walidx;
  s.next.durable_end = r.commit_end;
  s.next.sum = r.commit_sum;
  return s;
}

}  // namespace

sync_step next_sync(const std::optional<replica_position>& at, std::span<const std::byte> wal,
                    bool reset_expected) {
  return next_sync(at, wal.first(std::min<std::size_t>(wal.size(), wal::header_size)), wal, 0,
                   reset_expected);
}

sync_step next_sync(const std::optional<replica_position>& at, std::span<const std::byte> header,
                    std::span<const std::byte> tail, std::uint64_t tail_offset,
                    bool reset_expected) {
  std::string why;
  const auto h = wal::parse_header(header, &why);
  if (!h) {
    // No WAL (yet, or truncated away by a checkpoint): nothing to ship. A replica that was
    // following one has lost it only if frames were not all shipped; the caller's checkpoint
    // logic knows, so say why and ship nothing.
    return at ? lost("the WAL is gone or unreadable: " + why) : nothing("no WAL: " + why);
  }
  const bool same_header =
      at && std::equal(at->header.begin(), at->header.end(), header.begin(), header.end());
  if ((!at || !same_header) && tail_offset > 0) return lost(std::string(need_whole_wal));
  // Read from the start, the tail must begin with that same header (the file can be reset
  // between two reads of it): otherwise look again next time.
  if (tail_offset == 0 &&
      (tail.size() < wal::header_size || !std::equal(header.begin(), header.end(), tail.begin()))) {
    return nothing("the WAL changed while it was read");
  }
  if (!at) return from_start(tail, *h, 0, sync_step::kind::segment);

  if (!same_header) {
    const auto old = wal::parse_header(at->header);
    const bool next_index = old && reset_expected && h->salt1 == old->salt1 + 1 &&
                            h->checkpoint_seq == old->checkpoint_seq + 1 &&
                            h->page_size == old->page_size;
    if (!next_index) return lost("the WAL was reset by another checkpoint, or replaced");
    return from_start(tail, *h, at->walidx + 1, sync_step::kind::new_index);
  }
  const std::uint64_t size = tail_offset + tail.size();
  if (size < at->durable_end) return lost("the WAL is shorter than what was shipped");
  if (at->durable_end > wal::header_size) {
    // The frame that ends at durable_end must still be the one we shipped.
    const std::uint64_t frame = at->durable_end - h->frame_size();
    if (frame < tail_offset) return lost(std::string(need_whole_wal));
    const wal::frame_header f =
        wal::parse_frame_header(tail.subspan(frame - tail_offset, wal::frame_header_size));
    if (f.salt1 != h->salt1 || f.salt2 != h->salt2 || !(f.sum == at->sum)) {
      return lost("the WAL was overwritten where it was shipped");
    }
  }
  const std::uint64_t from = std::max<std::uint64_t>(at->durable_end, wal::header_size);
  if (from < tail_offset) return lost(std::string(need_whole_wal));
  const wal::checksum seed = at->durable_end > wal::header_size ? at->sum : h->sum;
  const wal::scan_result r = wal::scan(tail.subspan(from - tail_offset), *h, from, seed);
  if (r.commit_end <= from) return nothing("no new commit");
  sync_step s;
  s.what = sync_step::kind::segment;
  s.start = at->durable_end;  // 0 when nothing was shipped: the header goes with the frames
  s.end = r.commit_end;
  s.next = *at;
  s.next.durable_end = r.commit_end;
  s.next.sum = r.commit_sum;
  return s;
}

}  // namespace sm::db
