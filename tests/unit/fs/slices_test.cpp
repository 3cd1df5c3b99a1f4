#define BOOST_TEST_MODULE fs_slices
#include <boost/test/unit_test.hpp>

#include <random>
#include <stdexcept>
#include <vector>

#include "fs/slices.hpp"

using namespace sm::fs;

namespace {

// What one byte of a chunk reads: a slice's byte or zero (id 0).
struct byte_source {
  std::uint64_t id = 0;
  std::uint64_t off = 0;
  friend bool operator==(const byte_source&, const byte_source&) = default;
};

// The model: paint byte by byte, later records over earlier ones.
std::vector<byte_source> paint_bytes(const std::vector<slice_record>& records,
                                     std::uint32_t length) {
  std::vector<byte_source> bytes(length);
  for (const slice_record& r : records) {
    for (std::uint32_t i = 0; i < r.len; ++i) {
      if (r.pos + i >= length) break;
      bytes[r.pos + i] = r.id == hole_slice ? byte_source{} : byte_source{r.id, r.off + i};
    }
  }
  return bytes;
}

std::vector<byte_source> bytes_of(const std::vector<segment>& segments, std::uint32_t length) {
  std::vector<byte_source> bytes(length, byte_source{~0ull, 0});
  for (const segment& s : segments) {
    for (std::uint32_t i = 0; i < s.len; ++i) {
      BOOST_REQUIRE(s.pos + i < length);
      bytes[s.pos + i] = s.id == hole_slice ? byte_source{} : byte_source{s.id, s.off + i};
    }
  }
  return bytes;
}

}  // namespace

BOOST_AUTO_TEST_CASE(encode_is_24_little_endian_bytes_a_record_and_decodes_back) {
  const std::vector<slice_record> records = {{1, 0x0102030405060708ull, 100, 2, 50},
                                             {200, hole_slice, 30, 0, 30}};
  const std::string blob = encode(records);
  BOOST_TEST(blob.size() == 48u);
  BOOST_TEST(blob[0] == '\x01');  // pos, low byte first
  BOOST_TEST(blob[4] == '\x08');  // id, low byte first
  BOOST_TEST(blob[11] == '\x01');
  BOOST_TEST((decode(blob) == records));
  BOOST_TEST(decode("").empty());
}

BOOST_AUTO_TEST_CASE(decode_refuses_partial_records_and_records_outside_chunk_or_slice) {
  const std::vector<slice_record> ok = {{0, 5, 10, 0, 10}};
  std::string blob = encode(ok);
  BOOST_CHECK_THROW(decode(blob.substr(0, 23)), std::invalid_argument);
  const std::vector<slice_record> past_chunk = {{static_cast<std::uint32_t>(chunk_size - 5), 5, 10,
                                                 0, 10}};
  BOOST_CHECK_THROW(decode(encode(past_chunk)), std::invalid_argument);
  const std::vector<slice_record> past_slice = {{0, 5, 10, 5, 10}};
  BOOST_CHECK_THROW(decode(encode(past_slice)), std::invalid_argument);
  const std::vector<slice_record> hole = {{0, hole_slice, 10, 0, 10}};
  BOOST_TEST(decode(encode(hole)).size() == 1u);
}

BOOST_AUTO_TEST_CASE(paint_of_nothing_is_one_hole_and_of_length_zero_is_empty) {
  const auto segments = paint({}, 100);
  BOOST_REQUIRE(segments.size() == 1u);
  BOOST_TEST((segments[0] == segment{0, hole_slice, 100, 0, 100}));
  BOOST_TEST(paint({}, 0).empty());
}

BOOST_AUTO_TEST_CASE(paint_puts_later_records_over_earlier_ones) {
  const std::vector<slice_record> records = {{0, 1, 100, 0, 100}, {50, 2, 20, 0, 20}};
  const auto s = paint(records, 100);
  BOOST_REQUIRE(s.size() == 3u);
  BOOST_TEST((s[0] == segment{0, 1, 100, 0, 50}));
  BOOST_TEST((s[1] == segment{50, 2, 20, 0, 20}));
  BOOST_TEST((s[2] == segment{70, 1, 100, 70, 30}));
}

BOOST_AUTO_TEST_CASE(paint_cuts_at_length_and_merges_adjacent_holes) {
  const std::vector<slice_record> records = {{10, 1, 100, 0, 100},
                                             {10, hole_slice, 20, 0, 20},
                                             {30, hole_slice, 10, 0, 10}};
  const auto s = paint(records, 60);
  BOOST_REQUIRE(s.size() == 2u);
  BOOST_TEST((s[0] == segment{0, hole_slice, 40, 0, 40}));
  BOOST_TEST((s[1] == segment{40, 1, 100, 30, 20}));
}

BOOST_AUTO_TEST_CASE(paint_matches_a_byte_by_byte_model_on_random_records) {
  std::mt19937 random(7);
  for (int round = 0; round < 2000; ++round) {
    const std::uint32_t length = 1 + random() % 64;
    std::vector<slice_record> records;
    const int n = random() % 8;
    for (int i = 0; i < n; ++i) {
      slice_record r;
      r.pos = random() % 80;
      r.len = random() % 40;
      if (random() % 4 == 0) {
        r.id = hole_slice;
        r.size = r.len;
      } else {
        r.id = 1 + random() % 5;
        r.off = random() % 10;
        r.size = r.off + r.len + random() % 5;
      }
      records.push_back(r);
    }
    const auto segments = paint(records, length);
    // Ordered, gapless, non-overlapping, covering [0, length), no two holes side by side.
    std::uint32_t at = 0;
    for (std::size_t i = 0; i < segments.size(); ++i) {
      BOOST_REQUIRE(segments[i].pos == at);
      BOOST_REQUIRE(segments[i].len > 0u);
      if (i > 0) BOOST_REQUIRE(!(segments[i].id == hole_slice && segments[i - 1].id == hole_slice));
      if (segments[i].id != hole_slice) {
        BOOST_REQUIRE(std::uint64_t(segments[i].off) + segments[i].len <= segments[i].size);
      }
      at += segments[i].len;
    }
    BOOST_REQUIRE(at == length);
    BOOST_REQUIRE((bytes_of(segments, length) == paint_bytes(records, length)));
    // visible() keeps what shows: painting it again reads the same bytes.
    const auto kept = visible(records, length);
    for (const slice_record& r : kept) BOOST_REQUIRE(r.id != hole_slice);
    BOOST_REQUIRE((paint_bytes(kept, length) == paint_bytes(records, length)));
  }
}

BOOST_AUTO_TEST_CASE(visible_trims_records_to_what_shows) {
  const std::vector<slice_record> records = {
      {0, 1, 100, 0, 100}, {0, 2, 40, 0, 40}, {90, hole_slice, 50, 0, 50}};
  const auto kept = visible(records, 120);
  BOOST_REQUIRE(kept.size() == 2u);
  BOOST_TEST((kept[0] == slice_record{0, 2, 40, 0, 40}));
  BOOST_TEST((kept[1] == slice_record{40, 1, 100, 40, 50}));
}

BOOST_AUTO_TEST_CASE(blocks_of_cuts_a_slice_into_blocks_the_last_shorter) {
  const auto blocks = blocks_of(9, 10u << 20, 4u << 20);
  BOOST_REQUIRE(blocks.size() == 3u);
  BOOST_TEST((blocks[0] == block_ref{9, 0, 4u << 20}));
  BOOST_TEST((blocks[1] == block_ref{9, 1, 4u << 20}));
  BOOST_TEST((blocks[2] == block_ref{9, 2, 2u << 20}));
  BOOST_TEST(blocks_of(9, 8u << 20, 4u << 20).size() == 2u);
  BOOST_TEST(blocks_of(9, 1, 4u << 20).size() == 1u);
  BOOST_TEST(blocks_of(9, 0, 4u << 20).empty());
  BOOST_TEST(blocks_of(9, 64u << 20, 4u << 20).size() == 16u);
}

BOOST_AUTO_TEST_CASE(block_keys_and_file_names) {
  const block_ref b{258, 3, 4096};
  BOOST_TEST(block_file_name(b) == "258_3_4096");
  BOOST_TEST(block_key(b) == "fs/blocks/02/258_3_4096");
  BOOST_TEST(block_key(block_ref{0xffffffffffffffffull, 0, 1}) ==
             "fs/blocks/ff/18446744073709551615_0_1");
  block_ref parsed;
  BOOST_TEST(parse_block_file_name("258_3_4096", parsed));
  BOOST_TEST((parsed == b));
  BOOST_TEST(parse_block_file_name("18446744073709551615_4294967295_4294967295", parsed));
  BOOST_TEST(parsed.slice == 0xffffffffffffffffull);
  BOOST_TEST(parsed.index == 0xffffffffu);
}

BOOST_AUTO_TEST_CASE(parse_block_file_name_refuses_what_is_not_one) {
  block_ref parsed{1, 2, 3};
  for (const char* bad : {"", "1", "1_2", "1_2_3_4", "_1_2", "1__2", "1_2_", "a_1_2", "1_2_3.tmp",
                          "1_2_0", "1_4294967296_1", "1_1_4294967296", "18446744073709551616_0_1",
                          "1_2_3 ", "-1_2_3"}) {
    BOOST_TEST(!parse_block_file_name(bad, parsed), bad);
  }
  BOOST_TEST((parsed == block_ref{1, 2, 3}));  // untouched on failure
}
