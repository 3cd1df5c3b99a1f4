#define BOOST_TEST_MODULE db_database
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "db/database.hpp"

namespace fs = std::filesystem;
using namespace test_support;

namespace {

// What another process (here: another connection) sees.

}  // namespace

BOOST_AUTO_TEST_CASE(creates_a_wal_database_with_its_table) {
  test_support::scratch_dir tmp;
  const fs::path file = tmp.dir / "data" / "database.sqlite";  // data/ does not exist yet
  const sm::db::init_result r = sm::db::initialise(file);
  BOOST_TEST(r.created);
  BOOST_TEST(r.schema_version == sm::db::schema_version);
  BOOST_TEST(r.page_size >= 512);
  BOOST_TEST(query(file, "PRAGMA journal_mode") == "wal");
  BOOST_TEST(query(file, "SELECT value FROM state_manager_meta WHERE key='schema_version'") == "1");
}

BOOST_AUTO_TEST_CASE(an_existing_database_keeps_its_tables) {
  test_support::scratch_dir tmp;
  const fs::path file = tmp.dir / "app.sqlite";
  {
    sqlite3* db = nullptr;
    sqlite3_open(file.c_str(), &db);
    sqlite3_exec(db, "CREATE TABLE orders(id INTEGER PRIMARY KEY); INSERT INTO orders VALUES (42)",
                 nullptr, nullptr, nullptr);
    sqlite3_close(db);
  }
  const sm::db::init_result first = sm::db::initialise(file);
  BOOST_TEST(!first.created);
  const sm::db::init_result again = sm::db::initialise(file);  // idempotent
  BOOST_TEST(again.schema_version == 1);
  BOOST_TEST(query(file, "SELECT id FROM orders") == "42");
  BOOST_TEST(query(file, "SELECT count(*) FROM state_manager_meta") == "1");
}

BOOST_AUTO_TEST_CASE(a_file_that_is_not_a_database_is_refused_and_left_alone) {
  test_support::scratch_dir tmp;
  const fs::path file = tmp.dir / "database.sqlite";
  std::ofstream(file) << "these are someone's notes, not a database\n" << std::string(5000, 'x');
  const std::string before = read_all(file);
  try {
    sm::db::initialise(file);
    BOOST_FAIL("a text file was accepted as a database");
  } catch (const sm::db::error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find(file.string()) != std::string::npos, what);
    BOOST_TEST(what.find("not a database") != std::string::npos, what);
  }
  BOOST_TEST((read_all(file) == before));
  BOOST_TEST(!fs::exists(tmp.dir / "database.sqlite-wal"));
}

BOOST_AUTO_TEST_CASE(a_directory_it_cannot_write_is_a_clear_error) {
  if (::geteuid() == 0) {
    // root writes anywhere: a file in place of the directory makes the same point.
    test_support::scratch_dir tmp;
    std::ofstream(tmp.dir / "data") << "a file where the directory should be";
    try {
      sm::db::initialise(tmp.dir / "data" / "database.sqlite");
      BOOST_FAIL("no error");
    } catch (const sm::db::error& e) {
      BOOST_TEST(std::string(e.what()).find("data/database.sqlite") != std::string::npos, e.what());
    }
    return;
  }
  test_support::scratch_dir tmp;
  fs::permissions(tmp.dir, fs::perms::owner_read | fs::perms::owner_exec);
  BOOST_CHECK_THROW(sm::db::initialise(tmp.dir / "database.sqlite"), sm::db::error);
}
