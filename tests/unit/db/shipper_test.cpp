#define BOOST_TEST_MODULE db_shipper
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "db/replay.hpp"
#include "db/shipper.hpp"

namespace fs = std::filesystem;
using namespace test_support;
using sm::db::next_sync;
using sm::db::sync_step;
using kind = sync_step::kind;

namespace {

const char* fingerprint = "SELECT count(*) || ':' || total(length(v)) FROM t";

struct app {
  fs::path file;
  sqlite3* db = nullptr;
  explicit app(const fs::path& dir) : file(dir / "app.db") {
    sqlite3_open(file.c_str(), &db);
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");  // the database file is the snapshot now
  }
  ~app() { sqlite3_close(db); }
  void commit(int n) {
    for (int i = 0; i < n; ++i) exec(db, "INSERT INTO t(v) VALUES (hex(randomblob(700)))");
  }
  std::string wal() const { return read_all(file.string() + "-wal"); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(segments_continue_each_other_and_replay_to_the_live_state) {
  test_support::scratch_dir tmp;
  app a(tmp.dir);
  const fs::path snapshot = tmp.dir / "snapshot.db";
  fs::copy_file(a.file, snapshot);

  a.commit(3);
  std::string wal = a.wal();
  const sync_step first = next_sync(std::nullopt, bytes_of(wal), false);
  BOOST_TEST_REQUIRE((first.what == kind::segment));
  BOOST_TEST(first.start == 0u);  // the header goes with the first frames
  BOOST_TEST(first.end == wal.size());
  std::string shipped = wal.substr(0, first.end);

  BOOST_TEST((next_sync(first.next, bytes_of(wal), false).what == kind::nothing));

  a.commit(5);
  wal = a.wal();
  const sync_step second = next_sync(first.next, bytes_of(wal), false);
  BOOST_TEST_REQUIRE((second.what == kind::segment));
  BOOST_TEST(second.start == first.end);
  BOOST_TEST(second.end == wal.size());
  shipped += wal.substr(second.start, second.end - second.start);

  // What the store holds, replayed onto the snapshot, is the application's database.
  const sm::db::replay_result r = sm::db::apply_wal(snapshot, bytes_of(shipped));
  BOOST_TEST(r.commits == 8u);
  BOOST_TEST(query(snapshot, "PRAGMA integrity_check") == "ok");
  BOOST_TEST(query(snapshot, fingerprint) == query(a.file, fingerprint));
}

BOOST_AUTO_TEST_CASE(a_foreign_checkpoint_loses_continuity) {
  test_support::scratch_dir tmp;
  app a(tmp.dir);
  a.commit(2);
  const sync_step first = next_sync(std::nullopt, bytes_of(a.wal()), false);
  BOOST_TEST_REQUIRE((first.what == kind::segment));
  // Another process checkpoints with TRUNCATE (as an application may), then writes on.
  sqlite3* other = nullptr;
  sqlite3_open(a.file.c_str(), &other);
  exec(other, "PRAGMA wal_checkpoint(TRUNCATE)");
  sqlite3_close(other);
  const sync_step gone = next_sync(first.next, bytes_of(a.wal()), false);
  BOOST_TEST((gone.what == kind::new_generation), gone.why);
  a.commit(1);
  const sync_step reset = next_sync(first.next, bytes_of(a.wal()), false);
  BOOST_TEST((reset.what == kind::new_generation), reset.why);
}

BOOST_AUTO_TEST_CASE(our_own_checkpoint_starts_the_next_index) {
  test_support::scratch_dir tmp;
  app a(tmp.dir);
  a.commit(2);
  const std::string wal = a.wal();
  const sync_step first = next_sync(std::nullopt, bytes_of(wal), false);
  BOOST_TEST_REQUIRE((first.what == kind::segment));
  // A reset as SQLite does it after a complete backfill: salt-1 + 1, sequence + 1, a new
  // salt-2, frames written from offset 32 over the old ones.
  sm::db::wal::header h = *sm::db::wal::parse_header(bytes_of(wal));
  h.salt1 += 1;
  h.checkpoint_seq += 1;
  h.salt2 ^= 0x5a5a5a5a;
  auto file = sm::db::wal::encode_header(h);
  sm::db::wal::checksum sum = h.sum;
  const std::vector<std::byte> page(h.page_size, std::byte{7});
  const auto frame = sm::db::wal::encode_frame(h, 1, 1, page, sum);
  file.insert(file.end(), frame.begin(), frame.end());
  const std::vector<std::byte> tail(bytes_of(wal).begin() + file.size(), bytes_of(wal).end());
  file.insert(file.end(), tail.begin(), tail.end());  // the old frames' leftovers
  const sync_step next = next_sync(first.next, file, /*reset_expected=*/true);
  BOOST_TEST_REQUIRE((next.what == kind::new_index), next.why);
  BOOST_TEST(next.next.walidx == first.next.walidx + 1);
  BOOST_TEST(next.start == 0u);
  BOOST_TEST(next.end == sm::db::wal::header_size + h.frame_size());  // not the leftovers
  // Unexpected, the same reset is a loss of continuity.
  BOOST_TEST((next_sync(first.next, file, false).what == kind::new_generation));
}

BOOST_AUTO_TEST_CASE(an_overwritten_or_shorter_wal_is_noticed) {
  test_support::scratch_dir tmp;
  app a(tmp.dir);
  a.commit(3);
  std::string wal = a.wal();
  const sync_step first = next_sync(std::nullopt, bytes_of(wal), false);
  BOOST_TEST_REQUIRE((first.what == kind::segment));
  std::string changed = wal;
  changed[first.end - 3] ^= 1;               // inside the last shipped frame's page
  changed[first.end - 4096 - 24 + 16] ^= 1;  // the stored checksum of the last shipped frame
  BOOST_TEST((next_sync(first.next, bytes_of(changed), false).what == kind::new_generation));
  BOOST_TEST((next_sync(first.next, bytes_of(wal).first(first.end - 10), false).what ==
              kind::new_generation));
  BOOST_TEST((next_sync(std::nullopt, {}, false).what == kind::nothing));
}
