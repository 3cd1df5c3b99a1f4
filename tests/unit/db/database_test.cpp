#define BOOST_TEST_MODULE db_database
#include <boost/test/unit_test.hpp>

#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "db/database.hpp"

namespace fs = std::filesystem;

namespace {

struct scratch {
  fs::path dir;
  scratch() {
    std::string tmpl = (fs::temp_directory_path() / "sm-db-XXXXXX").string();
    dir = ::mkdtemp(tmpl.data());
  }
  ~scratch() {
    std::error_code ec;
    fs::permissions(dir, fs::perms::owner_all, ec);
    fs::remove_all(dir, ec);
  }
};

// What another process (here: another connection) sees.
std::string ask(const fs::path& file, const char* sql) {
  sqlite3* db = nullptr;
  sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  sqlite3_stmt* stmt = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

std::string contents(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

BOOST_AUTO_TEST_CASE(creates_a_wal_database_with_its_table) {
  scratch tmp;
  const fs::path file = tmp.dir / "data" / "database.sqlite";  // data/ does not exist yet
  const sm::db::init_result r = sm::db::initialise(file);
  BOOST_TEST(r.created);
  BOOST_TEST(r.schema_version == sm::db::schema_version);
  BOOST_TEST(r.page_size >= 512);
  BOOST_TEST(ask(file, "PRAGMA journal_mode") == "wal");
  BOOST_TEST(ask(file, "SELECT value FROM state_manager_meta WHERE key='schema_version'") == "1");
}

BOOST_AUTO_TEST_CASE(an_existing_database_keeps_its_tables) {
  scratch tmp;
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
  BOOST_TEST(ask(file, "SELECT id FROM orders") == "42");
  BOOST_TEST(ask(file, "SELECT count(*) FROM state_manager_meta") == "1");
}

BOOST_AUTO_TEST_CASE(a_file_that_is_not_a_database_is_refused_and_left_alone) {
  scratch tmp;
  const fs::path file = tmp.dir / "database.sqlite";
  std::ofstream(file) << "these are someone's notes, not a database\n" << std::string(5000, 'x');
  const std::string before = contents(file);
  try {
    sm::db::initialise(file);
    BOOST_FAIL("a text file was accepted as a database");
  } catch (const sm::db::error& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find(file.string()) != std::string::npos, what);
    BOOST_TEST(what.find("not a database") != std::string::npos, what);
  }
  BOOST_TEST((contents(file) == before));
  BOOST_TEST(!fs::exists(tmp.dir / "database.sqlite-wal"));
}

BOOST_AUTO_TEST_CASE(a_directory_it_cannot_write_is_a_clear_error) {
  if (::geteuid() == 0) {
    // root writes anywhere: a file in place of the directory makes the same point.
    scratch tmp;
    std::ofstream(tmp.dir / "data") << "a file where the directory should be";
    try {
      sm::db::initialise(tmp.dir / "data" / "database.sqlite");
      BOOST_FAIL("no error");
    } catch (const sm::db::error& e) {
      BOOST_TEST(std::string(e.what()).find("data/database.sqlite") != std::string::npos, e.what());
    }
    return;
  }
  scratch tmp;
  fs::permissions(tmp.dir, fs::perms::owner_read | fs::perms::owner_exec);
  BOOST_CHECK_THROW(sm::db::initialise(tmp.dir / "database.sqlite"), sm::db::error);
}
