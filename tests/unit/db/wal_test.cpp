#define BOOST_TEST_MODULE db_wal
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "db/wal.hpp"

using namespace sm::db::wal;

namespace {

std::vector<std::byte> page_of(std::uint32_t size, unsigned seed) {
  std::mt19937 random(seed);
  std::vector<std::byte> page(size);
  for (auto& b : page) b = std::byte(random());
  return page;
}

struct crafted {
  header h;
  std::vector<std::byte> bytes;
  checksum last;
  crafted(std::uint32_t magic, std::uint32_t page_size, std::uint32_t salt1 = 7,
          std::uint32_t salt2 = 0xdeadbeef) {
    h.magic = magic;
    h.page_size = page_size;
    h.salt1 = salt1;
    h.salt2 = salt2;
    bytes = encode_header(h);
    last = h.sum;
  }
  void frame(std::uint32_t page, std::uint32_t commit, unsigned seed) {
    const auto data = page_of(h.page_size, seed);
    const auto f = encode_frame(h, page, commit, data, last);
    bytes.insert(bytes.end(), f.begin(), f.end());
  }
  std::span<const std::byte> frames() const { return std::span(bytes).subspan(header_size); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(header_round_trip_and_refusals) {
  for (std::uint32_t magic : {magic_little_endian, magic_big_endian}) {
    for (std::uint32_t size = 512; size <= 65536; size *= 2) {
      crafted w(magic, size);
      std::string why;
      const auto h = parse_header(w.bytes, &why);
      BOOST_TEST_REQUIRE(h.has_value(), why);
      BOOST_TEST(h->page_size == size);
      BOOST_TEST(h->salt1 == 7u);
      BOOST_TEST(h->salt2 == 0xdeadbeefu);
      BOOST_TEST((h->sum == w.h.sum));
    }
  }
  crafted w(magic_little_endian, 4096);
  std::string why;
  auto bad = w.bytes;
  bad[13] ^= std::byte(1);  // the checkpoint sequence: covered by the checksum
  BOOST_TEST(!parse_header(bad, &why));
  BOOST_TEST(why == "header checksum mismatch");
  bad = w.bytes;
  bad[3] = std::byte(0x84);
  BOOST_TEST(!parse_header(bad, &why));
  BOOST_TEST(why == "bad magic");
  BOOST_TEST(!parse_header(std::span(w.bytes).first(20), &why));
  for (std::uint32_t size : {0u, 256u, 1000u, 131072u}) {
    header h;
    h.page_size = size;
    BOOST_TEST(!parse_header(encode_header(h), &why), size);
    BOOST_TEST(why == "invalid page size");
  }
  header v;
  v.version = 3007001;
  BOOST_TEST(!parse_header(encode_header(v), &why));
}

BOOST_AUTO_TEST_CASE(only_whole_transactions_count) {
  for (std::uint32_t magic : {magic_little_endian, magic_big_endian}) {
    crafted w(magic, 1024);
    w.frame(1, 0, 1);
    w.frame(2, 2, 2);  // transaction 1: pages 1-2
    w.frame(3, 3, 3);  // transaction 2
    const std::uint64_t after_t2 = w.bytes.size();
    const checksum sum_t2 = w.last;
    w.frame(4, 0, 4);  // transaction 3, never committed
    w.frame(5, 0, 5);
    const scan_result r = scan(w.frames(), w.h, header_size, w.h.sum);
    BOOST_TEST(r.frames == 5u);
    BOOST_TEST(r.commits == 2u);
    BOOST_TEST(r.commit_end == after_t2);
    BOOST_TEST((r.commit_sum == sum_t2));
    BOOST_TEST(r.valid_end == w.bytes.size());
    BOOST_TEST(r.db_pages == 3u);
    BOOST_TEST(r.stopped == "end of data");
  }
}

BOOST_AUTO_TEST_CASE(a_flipped_byte_ends_the_chain) {
  crafted w(magic_little_endian, 512);
  w.frame(1, 1, 1);
  const std::uint64_t after_t1 = w.bytes.size();
  w.frame(2, 2, 2);
  w.frame(3, 3, 3);
  auto bytes = w.bytes;
  bytes[after_t1 + frame_header_size + 100] ^= std::byte(0x40);  // inside frame 2's page
  const scan_result r =
      scan(std::span<const std::byte>(bytes).subspan(header_size), w.h, header_size, w.h.sum);
  BOOST_TEST(r.frames == 1u);
  BOOST_TEST(r.commit_end == after_t1);
  BOOST_TEST(r.stopped == "checksum mismatch");
}

BOOST_AUTO_TEST_CASE(a_truncated_frame_is_not_read) {
  crafted w(magic_big_endian, 2048);
  w.frame(1, 1, 1);
  w.frame(2, 2, 2);
  for (std::size_t cut : {std::size_t(1), std::size_t(frame_header_size), std::size_t(2047)}) {
    const auto data = std::span<const std::byte>(w.bytes).subspan(header_size);
    const scan_result r = scan(data.first(data.size() - cut), w.h, header_size, w.h.sum);
    BOOST_TEST(r.frames == 1u);
    BOOST_TEST(r.stopped == "partial frame");
    BOOST_TEST(r.commit_end == header_size + w.h.frame_size());
  }
}

BOOST_AUTO_TEST_CASE(stale_frames_after_a_reset_are_not_ours) {
  // Generation A: four frames. Then SQLite restarts the log: a new header (salt-1 + 1, a new
  // salt-2, sequence + 1) and one new frame over A's first; A's frames 2-4 stay in the file.
  crafted a(magic_little_endian, 1024, 100, 0x1111);
  for (std::uint32_t i = 1; i <= 4; ++i) a.frame(i, i, i);
  crafted b(magic_little_endian, 1024, 101, 0x2222);
  b.h.checkpoint_seq = 1;
  b.bytes = encode_header(b.h);
  b.last = b.h.sum;
  b.frame(9, 9, 9);
  std::vector<std::byte> file = a.bytes;
  std::copy(b.bytes.begin(), b.bytes.end(), file.begin());
  const auto h = parse_header(file);
  BOOST_TEST_REQUIRE(h.has_value());
  BOOST_TEST(h->salt1 == 101u);
  const scan_result r =
      scan(std::span<const std::byte>(file).subspan(header_size), *h, header_size, h->sum);
  BOOST_TEST(r.frames == 1u);
  BOOST_TEST(r.stopped == "salt mismatch");
  BOOST_TEST(r.db_pages == 9u);
}

BOOST_AUTO_TEST_CASE(a_scan_resumes_mid_file) {
  crafted w(magic_little_endian, 4096);
  for (std::uint32_t i = 1; i <= 6; ++i) w.frame(i, i % 2 == 0 ? i : 0, i);
  const scan_result first = scan(w.frames().first(3 * w.h.frame_size()), w.h, header_size, w.h.sum);
  BOOST_TEST(first.commits == 1u);  // frame 2; frame 3 is not committed yet
  // Resume where the committed part ended, with its checksum: the rest is found, whole.
  const auto rest = std::span<const std::byte>(w.bytes).subspan(first.commit_end);
  const scan_result second = scan(rest, w.h, first.commit_end, first.commit_sum);
  BOOST_TEST(second.frames == 4u);
  BOOST_TEST(second.commits == 2u);
  BOOST_TEST(second.commit_end == w.bytes.size());
  // A wrong seed breaks the chain at once.
  const scan_result wrong = scan(rest, w.h, first.commit_end, w.h.sum);
  BOOST_TEST(wrong.frames == 0u);
  BOOST_TEST(wrong.stopped == "checksum mismatch");
}

// A WAL written by SQLite itself (auto-checkpoint off, the connection still open so the WAL is
// not checkpointed away): every transaction is found, whole, and the sizes agree.
BOOST_AUTO_TEST_CASE(reads_what_sqlite_writes) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "sm-wal-XXXXXX").string();
  const std::filesystem::path dir = ::mkdtemp(tmpl.data());
  const std::string db_path = (dir / "test.db").string();
  sqlite3* db = nullptr;
  BOOST_TEST_REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
  auto exec = [&](const std::string& sql) {
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    BOOST_TEST_REQUIRE(rc == SQLITE_OK, (error ? error : "") << " in " << sql);
  };
  exec("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;");
  exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  for (int i = 0; i < 20; ++i) {
    exec(
        "BEGIN; INSERT INTO t(v) VALUES (hex(randomblob(300))); INSERT INTO t(v) VALUES "
        "(hex(randomblob(2000))); COMMIT;");
  }
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA page_count", -1, &stmt, nullptr);
  sqlite3_step(stmt);
  const auto pages = static_cast<std::uint32_t>(sqlite3_column_int(stmt, 0));
  sqlite3_finalize(stmt);

  std::ifstream in(db_path + "-wal", std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto bytes = std::as_bytes(std::span(text.data(), text.size()));
  std::string why;
  const auto h = parse_header(bytes, &why);
  BOOST_TEST_REQUIRE(h.has_value(), why);
  const scan_result r = scan(bytes.subspan(header_size), *h, header_size, h->sum);
  BOOST_TEST(r.commits == 21u);  // CREATE TABLE and the 20 transactions
  BOOST_TEST(r.commit_end == text.size());
  BOOST_TEST(r.db_pages == pages);
  BOOST_TEST(r.stopped == "end of data");
  sqlite3_close(db);
  std::filesystem::remove_all(dir);
}
