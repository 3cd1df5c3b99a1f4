#define BOOST_TEST_MODULE db_layout
#include <boost/test/unit_test.hpp>

#include <set>

#include "db/layout.hpp"

using namespace sm::db::layout;

namespace {
const std::string g = "0123456789abcdef0123456789abcdef";
const std::string other = "fedcba9876543210fedcba9876543210";
}  // namespace

BOOST_AUTO_TEST_CASE(generations) {
  std::set<std::string> seen;
  std::string previous;
  for (int i = 0; i < 100; ++i) {
    const std::string id = new_generation();
    BOOST_TEST(valid_generation(id), id);
    // Creation order is key order: a restore takes the last generation listed.
    BOOST_TEST(id.substr(0, 16) >= previous.substr(0, std::min<std::size_t>(16, previous.size())));
    previous = id;
    seen.insert(id);
  }
  BOOST_TEST(seen.size() == 100u);
  BOOST_TEST(!valid_generation("0123"));
  BOOST_TEST(!valid_generation("0123456789ABCDEF0123456789abcdef"));  // lower case only
  BOOST_TEST(!valid_generation("0123456789abcdef0123456789abcdeg"));
}

BOOST_AUTO_TEST_CASE(keys_round_trip_and_sort_numerically) {
  BOOST_TEST(meta_key(g) == "db/" + g + "/meta.json");
  const std::string snap = snapshot_key(g, 2, ".lz4");
  BOOST_TEST(snap == "db/" + g + "/snapshot/0000000000000002.db.lz4");
  const auto s = parse_snapshot_key(snap);
  BOOST_TEST_REQUIRE(s.has_value());
  BOOST_TEST(s->walidx == 2u);
  BOOST_TEST(s->generation == g);
  const std::string seg = segment_key(g, 3, 0x20, 0x1000, "");
  BOOST_TEST(seg == "db/" + g + "/wal/0000000000000003/0000000000000020-0000000000001000.wal");
  const auto w = parse_segment_key(seg);
  BOOST_TEST_REQUIRE(w.has_value());
  BOOST_TEST(w->walidx == 3u);
  BOOST_TEST(w->start == 0x20u);
  BOOST_TEST(w->end == 0x1000u);
  // Fixed-width hex: key order is numeric order.
  BOOST_TEST(segment_key(g, 0, 0x9, 0xa, "") < segment_key(g, 0, 0x10, 0x11, ""));
  // Not ours, or malformed.
  for (const std::string& bad :
       {std::string("db/") + g + "/wal/0000000000000003/0000000000000020-0000000000000010.wal",
        std::string("db/") + g + "/wal/3/20-1000.wal", std::string("db/xyz/snapshot/0.db"),
        std::string("config.json"), std::string("db/") + g + "/meta.json",
        std::string("db/") + g + "/snapshot/00000000000000zz.db"}) {
    BOOST_TEST(!parse_segment_key(bad).has_value(), bad);
    BOOST_TEST(!parse_snapshot_key(bad).has_value(), bad);
  }
}

BOOST_AUTO_TEST_CASE(a_whole_chain_is_replayed_in_order) {
  const std::vector<std::string> keys = {
      meta_key(g),
      snapshot_key(g, 0, ".lz4"),
      snapshot_key(g, 1, ".lz4"),  // the latest snapshot: index 1 on
      segment_key(g, 0, 0, 100, ""),
      segment_key(g, 0, 100, 300, ""),
      segment_key(g, 1, 0, 50, ""),
      segment_key(g, 1, 50, 80, ""),
      segment_key(g, 2, 0, 40, ""),
      segment_key(other, 1, 0, 999, ""),  // another generation
  };
  const restore_plan plan = plan_restore(g, keys);
  BOOST_TEST_REQUIRE(plan.snapshot.has_value());
  BOOST_TEST(plan.snapshot->walidx == 1u);
  BOOST_TEST(plan.gap.empty(), plan.gap);
  BOOST_TEST_REQUIRE(plan.segments.size() == 3u);
  BOOST_TEST(plan.segments[0].key == segment_key(g, 1, 0, 50, ""));
  BOOST_TEST(plan.segments[1].key == segment_key(g, 1, 50, 80, ""));
  BOOST_TEST(plan.segments[2].key == segment_key(g, 2, 0, 40, ""));
}

BOOST_AUTO_TEST_CASE(a_gap_ends_the_plan_and_says_where) {
  const restore_plan missing_segment =
      plan_restore(g, {snapshot_key(g, 0, ""), segment_key(g, 0, 0, 100, ""),
                       segment_key(g, 0, 200, 300, ""), segment_key(g, 1, 0, 10, "")});
  BOOST_TEST(missing_segment.segments.size() == 1u);
  BOOST_TEST(missing_segment.gap.find("offset 0000000000000064") != std::string::npos,
             missing_segment.gap);
  const restore_plan missing_index = plan_restore(
      g, {snapshot_key(g, 0, ""), segment_key(g, 0, 0, 100, ""), segment_key(g, 2, 0, 10, "")});
  BOOST_TEST(missing_index.segments.size() == 1u);
  BOOST_TEST(missing_index.gap.find("index 0000000000000001") != std::string::npos,
             missing_index.gap);
  const restore_plan no_snapshot = plan_restore(g, {segment_key(g, 0, 0, 100, "")});
  BOOST_TEST(!no_snapshot.snapshot.has_value());
  BOOST_TEST(no_snapshot.gap == "no snapshot");
}

BOOST_AUTO_TEST_CASE(a_longer_segment_from_the_same_start_wins) {
  // A crash between an upload and the local state file can leave [0,100) and [0,250).
  const restore_plan plan = plan_restore(
      g, {snapshot_key(g, 0, ""), segment_key(g, 0, 0, 100, ""), segment_key(g, 0, 0, 250, ""),
          segment_key(g, 0, 100, 250, ""), segment_key(g, 0, 250, 400, "")});
  BOOST_TEST(plan.gap.empty(), plan.gap);
  BOOST_TEST_REQUIRE(plan.segments.size() == 2u);
  BOOST_TEST(plan.segments[0].end == 250u);
  BOOST_TEST(plan.segments[1].end == 400u);
}

BOOST_AUTO_TEST_CASE(the_newest_point_is_the_newest_restorable_generations_end) {
  const std::string older = "0000000000000001aaaaaaaaaaaaaaaa";
  const std::string newer = "0000000000000002bbbbbbbbbbbbbbbb";
  const std::string unrestorable = "0000000000000003cccccccccccccccc";  // segments, no snapshot
  BOOST_TEST(!newest_point({}).has_value());
  BOOST_TEST(!newest_point({segment_key(older, 0, 0, 100, "")}).has_value());
  const std::vector<std::string> keys = {
      snapshot_key(older, 0, ""),
      segment_key(older, 3, 0, 900, ""),
      snapshot_key(newer, 0, ""),
      segment_key(newer, 0, 0, 4152, ""),
      segment_key(newer, 1, 0, 32, ""),
      segment_key(newer, 0, 4152, 8272, ""),
      snapshot_key(newer, 1, ""),
      segment_key(unrestorable, 0, 0, 100, ""),
      meta_key(newer),
  };
  const auto point = newest_point(keys);
  BOOST_TEST_REQUIRE(point.has_value());
  BOOST_TEST(point->generation == newer);
  BOOST_TEST(point->walidx == 1u);
  BOOST_TEST(point->end == 32u);
  // A snapshot alone (one labelled with the next WAL index right after our own checkpoint):
  // no further than the generation's start.
  const auto only = newest_point({snapshot_key(newer, 4, "")});
  BOOST_TEST_REQUIRE(only.has_value());
  BOOST_TEST(only->generation == newer);
  BOOST_TEST(only->walidx == 0u);
  BOOST_TEST(only->end == 0u);
}

BOOST_AUTO_TEST_CASE(a_local_replica_is_behind_a_newer_generation_or_a_further_position) {
  const std::string mine = "0000000000000002aaaaaaaaaaaaaaaa";
  const std::string before = "0000000000000001bbbbbbbbbbbbbbbb";
  const std::string after = "0000000000000003cccccccccccccccc";
  const replica_point local{mine, 2, 5000};
  // Another machine's generation, started after ours: behind.
  BOOST_TEST(!why_behind(local, {after, 0, 0}).empty());
  // The same generation, further along (someone wrote after us): behind.
  BOOST_TEST(!why_behind(local, {mine, 2, 5001}).empty());
  BOOST_TEST(!why_behind(local, {mine, 3, 0}).empty());
  // The same, or less (our own backlog not shipped yet): not behind.
  BOOST_TEST(why_behind(local, {mine, 2, 5000}).empty());
  BOOST_TEST(why_behind(local, {mine, 1, 9000}).empty());
  // An older generation in the store: ours is newer.
  BOOST_TEST(why_behind(local, {before, 9, 9000}).empty());
}
