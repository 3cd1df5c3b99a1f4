#include "db/database.hpp"

#include <sqlite3.h>

#include <memory>
#include <system_error>

namespace sm::db {

namespace {

using connection = std::unique_ptr<sqlite3, decltype(&sqlite3_close)>;

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& what) {
  throw error("database " + file.string() + ": " + what);
}

void exec(sqlite3* db, const std::filesystem::path& file, const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    const std::string why = message ? message : sqlite3_errmsg(db);
    sqlite3_free(message);
    fail(file, why);
  }
}

// The first column of the first row of `sql`, as text ("" when there is no row).
std::string query_text(sqlite3* db, const std::filesystem::path& file, const char* sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) fail(file, sqlite3_errmsg(db));
  std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_finalize)> stmt(raw, sqlite3_finalize);
  const int rc = sqlite3_step(raw);
  if (rc == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(raw, 0);
    return text ? reinterpret_cast<const char*>(text) : "";
  }
  if (rc != SQLITE_DONE) fail(file, sqlite3_errmsg(db));
  return "";
}

int to_int(const std::string& text) {
  try {
    return text.empty() ? 0 : std::stoi(text);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

init_result initialise(const std::filesystem::path& file) {
  init_result result;
  std::error_code ec;
  result.created = !std::filesystem::exists(file, ec);
  if (file.has_parent_path()) {
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) fail(file, "cannot create its directory: " + ec.message());
  }
  sqlite3* raw = nullptr;
  const int opened =
      sqlite3_open_v2(file.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  connection db(raw, sqlite3_close);
  if (opened != SQLITE_OK) {
    fail(file, std::string("cannot open: ") + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(opened)));
  }
  // As the last connection, closing would checkpoint and delete the WAL: the replica's shadow
  // could then no longer continue its generation after a restart.
  sqlite3_db_config(raw, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_busy_timeout(raw, 5000);  // the application may hold a write lock for a moment
  // The first statement reads the header: a file that is not a database fails here, before
  // anything is written to it.
  const std::string mode = query_text(raw, file, "PRAGMA journal_mode=WAL");
  if (mode != "wal") fail(file, "cannot switch to WAL mode (journal_mode is \"" + mode + "\")");
  if (sqlite3_db_readonly(raw, "main") == 1) fail(file, "is read-only");
  exec(raw, file,
       "CREATE TABLE IF NOT EXISTS state_manager_meta ("
       "key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)");
  exec(raw, file,
       ("INSERT OR IGNORE INTO state_manager_meta(key, value) VALUES ('schema_version', '" +
        std::to_string(schema_version) + "')")
           .c_str());
  result.schema_version = to_int(
      query_text(raw, file, "SELECT value FROM state_manager_meta WHERE key = 'schema_version'"));
  result.page_size = to_int(query_text(raw, file, "PRAGMA page_size"));
  return result;
}

}  // namespace sm::db
