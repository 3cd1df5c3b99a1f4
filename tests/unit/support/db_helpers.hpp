// Shared by the database unit tests: whole-file reads, and SQLite
// statements run the way another process would (its own connection).
#pragma once

#include <sqlite3.h>
#include <stdlib.h>

#include <cstddef>
#include <exception>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <boost/test/unit_test.hpp>

#include "async/offload.hpp"

#include "support/scratch_dir.hpp"
#include "support/rethrow.hpp"

namespace test_support {

// Runs `body(io)`, a coroutine, on a fresh io_context until it ends; its exception fails the
// test with the message.
template <typename Body>
void run(Body body) {
  asio::io_context io;
  std::exception_ptr failure;
  asio::co_spawn(io, body(io), [&](std::exception_ptr e) { failure = e; });
  io.run();
  sm::stop_offload_worker();
  test_support::fail_on(failure);
}

inline std::string read_all(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::span<const std::byte> bytes_of(const std::string& text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// Runs `sql` on `db`; the test stops if it fails.
inline void exec(sqlite3* db, const std::string& sql) {
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  BOOST_TEST_REQUIRE(rc == SQLITE_OK, (error ? error : "") << " in " << sql);
}

// The first column of the first row of `sql`, on a connection of its own ("" if none).
inline std::string query(const std::filesystem::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(file.c_str(), &db);
  sqlite3_stmt* stmt = nullptr;
  std::string out;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
      sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_text(stmt, 0)) {
    out = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return out;
}

}  // namespace test_support
