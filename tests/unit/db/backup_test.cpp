#define BOOST_TEST_MODULE db_backup
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"
#include "support/reflink_dir.hpp"

#include <atomic>
#include <chrono>
#include <thread>

#include "db/backup.hpp"
#include "db/database.hpp"

namespace fs = std::filesystem;
using namespace test_support;

BOOST_AUTO_TEST_CASE(a_copy_made_while_another_connection_writes_is_whole_and_consistent) {
  scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  {
    sqlite3* app = nullptr;
    sqlite3_open(db.c_str(), &app);
    exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    exec(app, "BEGIN");
    for (int i = 0; i < 20000; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(200)))");
    exec(app, "COMMIT");
    sqlite3_close(app);
  }
  // A writer keeps committing during the copy: the copy is one moment, at least the 20,000.
  std::atomic<bool> stop = false;
  std::thread writer([&] {
    sqlite3* app = nullptr;
    sqlite3_open(db.c_str(), &app);
    sqlite3_busy_timeout(app, 5000);
    while (!stop) exec(app, "INSERT INTO t(v) VALUES ('during')");
    sqlite3_close(app);
  });
  const fs::path copy = tmp.dir / "copy.sqlite";
  const sm::db::backup_result r = sm::db::backup(db, copy);
  stop = true;
  writer.join();
  BOOST_TEST(query(copy, "PRAGMA integrity_check") == "ok");
  BOOST_TEST(std::stoi(query(copy, "SELECT count(*) FROM t")) >= 20000);
  BOOST_TEST(query(copy, "PRAGMA journal_mode") == "delete");  // a self-contained file
  BOOST_TEST(r.bytes == fs::file_size(copy));
  BOOST_TEST(r.pages * 4096u == r.bytes);
  BOOST_TEST(r.sha256.size() == 64u);
  BOOST_TEST(r.sha256 == sm::db::sha256_file(copy));
  // The source is untouched: still WAL, and its WAL was not checkpointed away by our close.
  BOOST_TEST(query(db, "PRAGMA journal_mode") == "wal");
}

BOOST_AUTO_TEST_CASE(the_digest_is_sha256) {
  scratch_dir tmp;
  { std::ofstream(tmp.dir / "abc") << "abc"; }
  BOOST_TEST(sm::db::sha256_file(tmp.dir / "abc") ==
             "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

BOOST_AUTO_TEST_CASE(a_missing_or_foreign_source_is_an_error) {
  scratch_dir tmp;
  BOOST_CHECK_THROW(sm::db::backup(tmp.dir / "nosuch" / "x.sqlite", tmp.dir / "copy"),
                    sm::db::error);
  { std::ofstream(tmp.dir / "text") << std::string(4096, 'x'); }
  BOOST_CHECK_THROW(sm::db::backup(tmp.dir / "text", tmp.dir / "copy"), sm::db::error);
  BOOST_CHECK_THROW(sm::db::sha256_file(tmp.dir / "nosuch"), sm::db::error);
}

namespace {

// 20,000 rows, and WAL frames not yet in the database file; then a writer that keeps
// committing (a row in t and the count in c, together) until `stop`.
void fill(const fs::path& db) {
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  sqlite3_db_config(app, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);  // the WAL stays
  exec(app, "PRAGMA wal_autocheckpoint=0");
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE c(n INTEGER)");
  exec(app, "INSERT INTO c VALUES (0)");
  exec(app, "BEGIN");
  for (int i = 0; i < 20000; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(200)))");
  exec(app, "UPDATE c SET n = 20000; COMMIT");
  sqlite3_close(app);
}

struct writer {
  std::atomic<bool> stop = false;
  std::thread thread;
  explicit writer(const fs::path& db) {
    thread = std::thread([this, db] {
      sqlite3* app = nullptr;
      sqlite3_open(db.c_str(), &app);
      sqlite3_busy_timeout(app, 5000);
      sqlite3_db_config(app, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
      exec(app, "PRAGMA wal_autocheckpoint=0");
      while (!stop) {
        exec(app, "BEGIN IMMEDIATE; INSERT INTO t(v) VALUES ('during'); UPDATE c SET n = n + 1");
        exec(app, "COMMIT");
        // An application's pace: one that never lets go of the lock is the next test's.
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      sqlite3_close(app);
    });
  }
  ~writer() {
    stop = true;
    thread.join();
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(a_clone_on_a_reflink_file_system_is_one_consistent_moment) {
  reflink_dir xfs;
  if (xfs.dir.empty()) {
    BOOST_TEST_MESSAGE("skipped: no reflink file system (" << xfs.why_not << ")");
    return;
  }
  const fs::path db = xfs.dir / "database.sqlite", copy = xfs.dir / "copy.sqlite";
  fill(db);
  BOOST_TEST(fs::file_size(db.string() + "-wal") > 1'000'000u);  // the rows are in the WAL
  std::optional<sm::db::backup_result> r;
  {
    writer during(db);
    r = sm::db::clone(db, copy);
  }
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(query(copy, "PRAGMA integrity_check") == "ok");
  // Every row with its count: no transaction half in, none torn between the two files.
  const int rows = std::stoi(query(copy, "SELECT count(*) FROM t"));
  BOOST_TEST(rows >= 20000);
  BOOST_TEST(query(copy, "SELECT n FROM c") == std::to_string(rows));
  BOOST_TEST(query(copy, "PRAGMA journal_mode") == "delete");
  BOOST_TEST(!fs::exists(copy.string() + "-wal"));
  BOOST_TEST(!fs::exists(copy.string() + "-shm"));
  BOOST_TEST(r->bytes == fs::file_size(copy));
  BOOST_TEST(r->pages * 4096u == r->bytes);
  BOOST_TEST(r->sha256 == sm::db::sha256_file(copy));
  // The source: still in WAL mode, its WAL not checkpointed away, its rows all there.
  BOOST_TEST(query(db, "PRAGMA journal_mode") == "wal");
  BOOST_TEST(std::stoi(query(db, "SELECT count(*) FROM t")) >= rows);
}

BOOST_AUTO_TEST_CASE(a_clone_where_reflinks_are_impossible_leaves_nothing) {
  scratch_dir tmp;  // ext4 or tmpfs here; on a reflink /tmp the clone is simply made
  const fs::path db = tmp.dir / "database.sqlite", copy = tmp.dir / "copy.sqlite";
  fill(db);
  const std::optional<sm::db::backup_result> r = sm::db::clone(db, copy);
  if (!r) {
    BOOST_TEST(!fs::exists(copy));
    BOOST_TEST(!fs::exists(copy.string() + "-wal"));
  } else {
    BOOST_TEST(query(copy, "SELECT n FROM c") == "20000");
  }
  // The writer lock was let go: another connection can write at once.
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  BOOST_TEST(sqlite3_exec(app, "INSERT INTO t(v) VALUES ('after')", nullptr, nullptr, nullptr) ==
             SQLITE_OK);
  sqlite3_close(app);
}

BOOST_AUTO_TEST_CASE(a_writer_that_keeps_the_lock_leaves_the_copy_to_the_backup_api) {
  reflink_dir xfs;
  if (xfs.dir.empty()) {
    BOOST_TEST_MESSAGE("skipped: no reflink file system (" << xfs.why_not << ")");
    return;
  }
  const fs::path db = xfs.dir / "database.sqlite", copy = xfs.dir / "copy.sqlite";
  fill(db);
  sqlite3* holder = nullptr;
  sqlite3_open(db.c_str(), &holder);
  exec(holder, "BEGIN IMMEDIATE; INSERT INTO t(v) VALUES ('uncommitted')");
  const auto started = std::chrono::steady_clock::now();
  BOOST_TEST(!sm::db::clone(db, copy).has_value());
  BOOST_TEST(!fs::exists(copy));
  BOOST_TEST((std::chrono::steady_clock::now() - started >= sm::db::clone_lock_patience));
  // The backup API copies what is committed, lock or no lock.
  sm::db::backup(db, copy);
  BOOST_TEST(query(copy, "SELECT n FROM c") == "20000");
  BOOST_TEST(query(copy, "SELECT count(*) FROM t") == "20000");
  exec(holder, "ROLLBACK");
  sqlite3_close(holder);
}
