#define BOOST_TEST_MODULE db_replicator
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <sqlite3.h>
#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "db/database.hpp"
#include "db/layout.hpp"
#include "db/replicator.hpp"
#include "db/restore.hpp"
#include "s3/object_store.hpp"

namespace fs = std::filesystem;
using namespace test_support;

namespace {

const char* fingerprint = "SELECT count(*) || ':' || total(length(v)) FROM t";

// Restores `generation` from the store into `to`, as a fresh machine would (db::restore: the
// snapshot, then every WAL index after it), and checks that nothing was left out.
asio::awaitable<void> restore(sm::s3::object_store& store, const std::string& generation,
                              fs::path to) {
  sm::db::restore_request request;
  request.to = to;
  request.generation = generation;
  const sm::db::restore_report report = co_await sm::db::restore(store, request);
  BOOST_TEST_REQUIRE(report.found);
  BOOST_TEST(report.stopped_early.empty(), report.stopped_early);
}

}  // namespace

BOOST_AUTO_TEST_CASE(what_the_application_commits_can_be_restored_elsewhere) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "data" / "database.sqlite";
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  exec(app, "INSERT INTO t(v) VALUES ('before replication')");

  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  config.key_prefix = "env/";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();
    BOOST_TEST(replicator.generations_started() == 1u);

    for (int i = 0; i < 10; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(500)))");
    const std::uint64_t shipped = co_await replicator.sync();
    BOOST_TEST(shipped > 0u);
    BOOST_TEST(co_await replicator.sync() == 0u);  // nothing new

    // Another process tries to checkpoint the WAL away: the pin keeps it from resetting the
    // log, so the replica's chain goes on in the same generation.
    sqlite3* other = nullptr;
    sqlite3_open(db.c_str(), &other);
    exec(other, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(other);
    for (int i = 0; i < 5; ++i) exec(app, "UPDATE t SET v = v || 'y' WHERE id % 3 = 0");
    co_await replicator.sync();
    BOOST_TEST(replicator.generations_started() == 1u);

    exec(app, "DELETE FROM t WHERE id = 2");
    co_await replicator.stop();  // the final sync ships the last commit

    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(query(elsewhere, fingerprint) == query(db, fingerprint));
    BOOST_TEST(query(elsewhere, "SELECT count(*) FROM t WHERE id = 2") == "0");
  });
  sqlite3_close(app);
}

BOOST_AUTO_TEST_CASE(our_checkpoint_restarts_the_log_in_the_same_generation) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  exec(app, "PRAGMA wal_autocheckpoint=0");
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();
    for (int round = 0; round < 3; ++round) {
      for (int i = 0; i < 20; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(900)))");
      const auto before = fs::file_size(db.string() + "-wal");
      const bool ran = co_await replicator.checkpoint();
      BOOST_TEST(ran);
      BOOST_TEST_REQUIRE(replicator.position().has_value());
      BOOST_TEST(replicator.position()->walidx == std::uint64_t(round + 1));
      // The log restarted: new frames go from its start again, the file does not grow on.
      for (int i = 0; i < 3; ++i) exec(app, "INSERT INTO t(v) VALUES ('after')");
      co_await replicator.sync();
      BOOST_TEST(replicator.position()->durable_end < before);
    }
    BOOST_TEST(replicator.generations_started() == 1u);
    exec(app, "UPDATE t SET v = 'last' WHERE id = 1");
    co_await replicator.stop();
    // Restored elsewhere through every WAL index: the live database.
    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(query(elsewhere, fingerprint) == query(db, fingerprint));
    BOOST_TEST(query(elsewhere, "SELECT v FROM t WHERE id = 1") == "last");
  });
  sqlite3_close(app);
}

BOOST_AUTO_TEST_CASE(the_run_loop_ships_and_checkpoints_on_its_own) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  exec(app, "PRAGMA wal_autocheckpoint=0");
  // The replicator takes the write lock for a moment at each checkpoint, like any other
  // writer: an application sharing its database waits for locks (as sqlite3's .timeout does).
  sqlite3_busy_timeout(app, 5000);
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();
    sm::db::replicator::schedule every;
    every.interval = std::chrono::milliseconds(50);
    every.checkpoint_pages = 40;
    asio::co_spawn(io, replicator.run(every), asio::detached);
    // Writes in batches; the loop keeps up and checkpoints past 40 pages. Polled with a
    // generous deadline: a slow machine is slower, not red.
    asio::steady_timer pause(io);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (int batch = 0; batch < 6; ++batch) {
      for (int i = 0; i < 15; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(1200)))");
      const auto written = std::chrono::system_clock::now();
      // Until a sync that began after these writes found nothing left to ship.
      do {
        pause.expires_after(std::chrono::milliseconds(20));
        std::error_code ec;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      } while ((replicator.last_sync_at() <= written || replicator.backlog_bytes() != 0) &&
               std::chrono::steady_clock::now() < deadline);
      BOOST_TEST(replicator.backlog_bytes() == 0u);
    }
    BOOST_TEST(replicator.last_error().empty(), replicator.last_error());
    BOOST_TEST_REQUIRE(replicator.position().has_value());
    BOOST_TEST(replicator.position()->walidx >= 1u);  // it checkpointed by itself
    BOOST_TEST(replicator.generations_started() == 1u);
    co_await replicator.stop();
    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(query(elsewhere, "SELECT count(*) FROM t") == "90");
  });
  sqlite3_close(app);
}

BOOST_AUTO_TEST_CASE(a_shadow_that_cannot_be_written_is_an_error_and_loses_nothing) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  sqlite3_busy_timeout(app, 5000);
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();
    co_await replicator.sync();
    // The shadow's segment directory becomes a plain file: every write into it fails, as on
    // a full disk (which root's tests cannot make without mounting one).
    const fs::path segments = db.string() + "-litestream/db";
    fs::remove_all(segments);
    { std::ofstream(segments) << "in the way"; }
    sm::db::replicator::schedule every;
    every.interval = std::chrono::milliseconds(20);
    every.checkpoint_pages = 10;  // it would checkpoint if it could: it must not now
    asio::co_spawn(io, replicator.run(every), asio::detached);
    for (int i = 0; i < 40; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(1000)))");
    asio::steady_timer pause(io);
    auto wait_for = [&](auto done) -> asio::awaitable<bool> {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (!done() && std::chrono::steady_clock::now() < deadline) {
        pause.expires_after(std::chrono::milliseconds(20));
        std::error_code ec;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      co_return done();
    };
    BOOST_TEST(co_await wait_for([&] { return !replicator.last_error().empty(); }));
    BOOST_TEST(replicator.last_error().find("shadowing") != std::string::npos,
               replicator.last_error());
    BOOST_TEST(replicator.backlog_bytes() > 0u);
    // Room again: replication resumes and ships everything.
    fs::remove(segments);
    BOOST_TEST(co_await wait_for(
        [&] { return replicator.last_error().empty() && replicator.backlog_bytes() == 0; }));
    co_await replicator.stop();
    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "SELECT count(*) FROM t") == "40");
    BOOST_TEST(replicator.generations_started() == 1u);  // continuity was never lost
  });
  sqlite3_close(app);
}

BOOST_AUTO_TEST_CASE(a_write_burst_keeps_the_wal_bounded_and_a_huge_transaction_ships_whole) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  constexpr int burst = 20000;
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();
    sm::db::replicator::schedule every;
    every.interval = std::chrono::milliseconds(20);
    every.checkpoint_pages = 100;
    asio::co_spawn(io, replicator.run(every), asio::detached);
    // The application, on a thread of its own: as fast as it can, then one transaction larger
    // than the replicator's read window (16 MiB).
    std::atomic<bool> done = false;
    // Set on the executor once one of our checkpoints restarted the WAL. The writer waits for it
    // after the burst: on a loaded machine the burst can end before the executor's first turn.
    std::atomic<bool> checkpointed = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::thread writer([&] {
      sqlite3* app = nullptr;
      sqlite3_open(db.c_str(), &app);
      sqlite3_busy_timeout(app, 5000);
      exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
      for (int i = 0; i < burst; ++i) exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(100)))");
      while (!checkpointed && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      exec(app, "INSERT INTO t(v) VALUES (hex(randomblob(10000000)))");  // 20 MB of text
      sqlite3_close(app);
      done = true;
    });
    asio::steady_timer pause(io);
    std::uintmax_t largest = 0;
    while (!done && std::chrono::steady_clock::now() < deadline) {
      pause.expires_after(std::chrono::milliseconds(10));
      std::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (replicator.position() && replicator.position()->walidx >= 1) checkpointed = true;
      if (query(db, "SELECT count(*) FROM t") == std::to_string(burst)) {
        // Until the huge one: the burst's own WAL, which our checkpoints keep small.
        largest = std::max(largest, fs::file_size(db.string() + "-wal", ec));
      }
    }
    writer.join();
    BOOST_TEST(done.load());
    // The whole burst is about 85 MB of WAL. Our checkpoints run in between (the WAL file
    // keeps the largest size its log reached).
    BOOST_TEST_MESSAGE("largest WAL during the burst: " << largest);
    BOOST_TEST(replicator.position()->walidx >= 1u);
    co_await replicator.stop();
    BOOST_TEST(replicator.last_error().empty(), replicator.last_error());
    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "SELECT count(*) FROM t") == std::to_string(burst + 1));
    BOOST_TEST(query(elsewhere, "SELECT max(length(v)) FROM t") == "20000000");
  });
}

BOOST_AUTO_TEST_CASE(retention_drops_what_no_restore_in_the_window_needs) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  sqlite3_busy_timeout(app, 5000);
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    // An older generation, left by an earlier run.
    std::string old_generation;
    {
      sm::db::replicator earlier(io.get_executor(), *store, db);
      co_await earlier.start();
      exec(app, "INSERT INTO t(v) VALUES ('old')");
      co_await earlier.stop();
      old_generation = earlier.generation();
    }
    exec(app, "PRAGMA wal_checkpoint(TRUNCATE)");  // nobody watching: the next run starts anew
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();
    BOOST_TEST(replicator.generation() != old_generation);
    for (int round = 0; round < 3; ++round) {
      exec(app, "INSERT INTO t(v) VALUES ('new')");
      co_await replicator.sync();
      BOOST_TEST(co_await replicator.snapshot());  // each in a WAL index of its own
    }
    auto keys = [&]() -> asio::awaitable<std::vector<std::string>> {
      std::vector<std::string> out;
      const sm::s3::list_page page = co_await store->list("db/", "", "", 1000);
      for (const auto& o : page.objects) out.push_back(o.key);
      co_return out;
    };
    // The old generation began two hours ago (as the store sees it). A restore to an hour ago
    // needs it: the current generation began later. A day's window keeps everything too.
    const auto two_hours_ago = fs::file_time_type::clock::now() - std::chrono::hours(2);
    for (const auto& entry :
         fs::recursive_directory_iterator(tmp.dir / "objects" / "bkt" / "db" / old_generation)) {
      fs::last_write_time(entry.path(), two_hours_ago);
    }
    const std::size_t before = (co_await keys()).size();
    BOOST_TEST(co_await replicator.enforce_retention(std::chrono::hours(1)) == 0u);
    BOOST_TEST(co_await replicator.enforce_retention(std::chrono::hours(24)) == 0u);
    // No window: the old generation goes, and so does every index before the newest snapshot.
    BOOST_TEST(co_await replicator.enforce_retention(std::chrono::milliseconds(0)) > 0u);
    const std::vector<std::string> after = co_await keys();
    BOOST_TEST(after.size() < before);
    for (const std::string& key : after) {
      BOOST_TEST(key.find(old_generation) == std::string::npos, key);
      if (auto s = sm::db::layout::parse_snapshot_key(key)) BOOST_TEST(s->walidx == 3u, key);
      if (auto g = sm::db::layout::parse_segment_key(key)) BOOST_TEST(g->walidx >= 3u, key);
    }
    co_await replicator.stop();
    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "SELECT count(*) FROM t") == "4");
  });
  sqlite3_close(app);
}

BOOST_AUTO_TEST_CASE(a_store_that_fails_at_start_is_retried_not_fatal) {
  test_support::scratch_dir tmp;
  const fs::path db = tmp.dir / "database.sqlite";
  sm::db::initialise(db);
  sqlite3* app = nullptr;
  sqlite3_open(db.c_str(), &app);
  sqlite3_busy_timeout(app, 5000);
  exec(app, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  exec(app, "INSERT INTO t(v) VALUES ('before')");
  sm::s3::store_config config;
  config.endpoint = "file://" + (tmp.dir / "objects").string();
  config.bucket = "bkt";
  // Every key under db/ fails to be written while a plain file stands where its folder goes.
  fs::create_directories(tmp.dir / "objects" / "bkt");
  const fs::path blocker = tmp.dir / "objects" / "bkt" / "db";
  { std::ofstream(blocker) << "in the way"; }
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), config);
    sm::db::replicator replicator(io.get_executor(), *store, db);
    co_await replicator.start();  // does not throw
    BOOST_TEST(!replicator.last_error().empty());
    BOOST_TEST(replicator.generation().empty());
    sm::db::replicator::schedule every;
    every.interval = std::chrono::milliseconds(20);
    asio::co_spawn(io, replicator.run(every), asio::detached);
    exec(app, "INSERT INTO t(v) VALUES ('while failing')");
    fs::remove(blocker);
    asio::steady_timer pause(io);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while ((replicator.generation().empty() || !replicator.last_error().empty() ||
            replicator.backlog_bytes() != 0) &&
           std::chrono::steady_clock::now() < deadline) {
      pause.expires_after(std::chrono::milliseconds(20));
      std::error_code ec;
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    BOOST_TEST(replicator.last_error().empty(), replicator.last_error());
    co_await replicator.stop();
    const fs::path elsewhere = tmp.dir / "restored.sqlite";
    co_await restore(*store, replicator.generation(), elsewhere);
    BOOST_TEST(query(elsewhere, "SELECT count(*) FROM t") == "2");
  });
  sqlite3_close(app);
}
