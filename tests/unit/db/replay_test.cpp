#define BOOST_TEST_MODULE db_replay
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <sqlite3.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "db/database.hpp"
#include "db/replay.hpp"
#include "db/wal.hpp"

namespace fs = std::filesystem;
using namespace test_support;

namespace {

const char* fingerprint = "SELECT count(*) || ':' || total(length(v)) || ':' || total(id) FROM t";

// A live database whose file holds the state of the snapshot, and whose WAL (not checkpointed:
// the connection stays open) holds everything after it.
struct live {
  fs::path file;
  sqlite3* db = nullptr;
  explicit live(const fs::path& dir) : file(dir / "live.db") {
    sqlite3_open(file.c_str(), &db);
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;");
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    exec(db,
         "INSERT INTO t(v) SELECT hex(randomblob(100)) FROM (WITH RECURSIVE n(i) AS (SELECT 1 "
         "UNION ALL SELECT i + 1 FROM n WHERE i < 50) SELECT i FROM n)");
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
  }
  ~live() { sqlite3_close(db); }
  fs::path snapshot(const fs::path& to) const {
    fs::copy_file(file, to, fs::copy_options::overwrite_existing);
    return to;
  }
  std::string wal() const { return read_all(file.string() + "-wal"); }
};

}  // namespace

BOOST_AUTO_TEST_CASE(replaying_the_wal_onto_the_snapshot_gives_the_live_database) {
  test_support::scratch_dir tmp;
  live source(tmp.dir);
  const fs::path restored = source.snapshot(tmp.dir / "restored.db");
  for (int i = 0; i < 30; ++i) {
    exec(source.db,
         "BEGIN; INSERT INTO t(v) VALUES (hex(randomblob(1500))); UPDATE t SET v = "
         "v || 'x' WHERE id % 7 = " +
             std::to_string(i % 7) + "; DELETE FROM t WHERE id = " + std::to_string(i * 3 + 1) +
             "; COMMIT;");
  }
  exec(source.db, "CREATE INDEX tv ON t(v)");
  const std::string expected = query(source.file, fingerprint);
  const std::string wal = source.wal();

  const sm::db::replay_result r = sm::db::apply_wal(restored, bytes_of(wal));
  BOOST_TEST(r.commits == 31u);
  BOOST_TEST(r.wal_end == wal.size());
  BOOST_TEST(r.pages_written > 0u);
  BOOST_TEST(fs::file_size(restored) == std::uintmax_t(r.db_pages) * 4096u);
  BOOST_TEST(query(restored, "PRAGMA integrity_check") == "ok");
  BOOST_TEST(query(restored, fingerprint) == expected);
  BOOST_TEST(query(restored, "SELECT count(*) FROM sqlite_master WHERE name = 'tv'") == "1");
}

BOOST_AUTO_TEST_CASE(a_cut_wal_restores_a_consistent_earlier_state) {
  test_support::scratch_dir tmp;
  live source(tmp.dir);
  const fs::path base = source.snapshot(tmp.dir / "base.db");
  std::vector<std::string> states;  // the fingerprint after each transaction
  for (int i = 0; i < 12; ++i) {
    exec(source.db,
         "INSERT INTO t(v) SELECT hex(randomblob(900)) FROM (WITH RECURSIVE n(i) AS (SELECT 1 "
         "UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT i FROM n)");
    states.push_back(query(source.file, fingerprint));
  }
  const std::string wal = source.wal();
  // Cut anywhere: mid-frame, mid-transaction; what is restored is exactly some committed state.
  for (std::size_t cut : {wal.size() / 3, wal.size() / 2 + 17, wal.size() - 1}) {
    const fs::path restored = tmp.dir / ("cut-" + std::to_string(cut) + ".db");
    fs::copy_file(base, restored);
    const sm::db::replay_result r = sm::db::apply_wal(restored, bytes_of(wal).first(cut));
    BOOST_TEST(r.commits < 12u);
    BOOST_TEST(r.wal_end <= cut);
    BOOST_TEST(query(restored, "PRAGMA integrity_check") == "ok");
    if (r.commits > 0) BOOST_TEST(query(restored, fingerprint) == states[r.commits - 1]);
  }
}

BOOST_AUTO_TEST_CASE(a_database_that_shrank_is_cut_to_its_size) {
  test_support::scratch_dir tmp;
  live source(tmp.dir);
  exec(source.db,
       "INSERT INTO t(v) SELECT hex(randomblob(3000)) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION "
       "ALL SELECT i + 1 FROM n WHERE i < 200) SELECT i FROM n)");
  exec(source.db, "PRAGMA wal_checkpoint(TRUNCATE)");
  const fs::path restored = source.snapshot(tmp.dir / "big.db");
  const auto before = fs::file_size(restored);
  exec(source.db, "DELETE FROM t WHERE id > 10");
  exec(source.db, "VACUUM");
  const sm::db::replay_result r = sm::db::apply_wal(restored, bytes_of(source.wal()));
  BOOST_TEST(fs::file_size(restored) < before);
  BOOST_TEST(fs::file_size(restored) == std::uintmax_t(r.db_pages) * 4096u);
  BOOST_TEST(query(restored, "PRAGMA integrity_check") == "ok");
  BOOST_TEST(query(restored, "SELECT count(*) FROM t") == "10");
}

BOOST_AUTO_TEST_CASE(refusals) {
  test_support::scratch_dir tmp;
  live source(tmp.dir);
  const fs::path restored = source.snapshot(tmp.dir / "r.db");
  exec(source.db, "INSERT INTO t(v) VALUES ('x')");
  std::string wal = source.wal();
  wal[5] ^= 1;  // the WAL header's version
  BOOST_CHECK_THROW(sm::db::apply_wal(restored, bytes_of(wal)), sm::db::error);
  std::ofstream(tmp.dir / "notes.txt") << std::string(4096, 'n');
  BOOST_CHECK_THROW(sm::db::apply_wal(tmp.dir / "notes.txt", bytes_of(source.wal())),
                    sm::db::error);
}
