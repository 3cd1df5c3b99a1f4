#define BOOST_TEST_MODULE db_backup
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <atomic>
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
