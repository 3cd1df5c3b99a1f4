#define BOOST_TEST_MODULE db_restore
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "async/offload.hpp"
#include "db/database.hpp"
#include "db/layout.hpp"
#include "db/replicator.hpp"
#include "db/restore.hpp"
#include "s3/object_store.hpp"

namespace fs = std::filesystem;
using namespace test_support;
using wall_clock = std::chrono::system_clock;

namespace {

const char* fingerprint = "SELECT count(*) || ':' || total(length(v)) || ':' || total(id) FROM t";

// Runs `restore` expecting it to throw db::error; returns the message ("" if it did not throw).
asio::awaitable<std::string> restore_failure(sm::s3::object_store& store,
                                             sm::db::restore_request request) {
  try {
    co_await sm::db::restore(store, request);
  } catch (const sm::db::error& e) {
    co_return e.what();
  }
  co_return std::string();
}

sm::db::restore_request restore_to(fs::path to) {
  sm::db::restore_request request;
  request.to = std::move(to);
  return request;
}

// A store under <dir>/objects, with a key prefix, as the environment's would be; objects are
// files under root().
struct store_dir {
  sm::s3::store_config config;
  fs::path dir;
  explicit store_dir(const fs::path& scratch) : dir(scratch / "objects") {
    config.endpoint = "file://" + dir.string();
    config.bucket = "bkt";
    config.key_prefix = "env/";
  }
  fs::path object_file(const std::string& key) const { return dir / "bkt" / "env" / key; }
};

// Every key under db/, in key order.
asio::awaitable<std::vector<std::string>> list_keys(sm::s3::object_store& store) {
  std::vector<std::string> keys;
  std::string token;
  do {
    const sm::s3::list_page page = co_await store.list("db/", "", token, 1000);
    for (const auto& o : page.objects) keys.push_back(o.key);
    token = page.next_token;
  } while (!token.empty());
  co_return keys;
}

// The application's database, written from a connection of its own as another process would.
struct application {
  fs::path file;
  sqlite3* db = nullptr;
  explicit application(fs::path path) : file(std::move(path)) {
    sm::db::initialise(file);
    sqlite3_open(file.c_str(), &db);
    exec(db, "PRAGMA wal_autocheckpoint=0");
    sqlite3_busy_timeout(db, 5000);  // the replicator's checkpoint takes the write lock briefly
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
  }
  ~application() { sqlite3_close(db); }
  // `rows` rows tagged `tag`, in one transaction.
  void insert(int rows, const std::string& tag) {
    exec(db, "INSERT INTO t(v) SELECT '" + tag +
                 "' || hex(randomblob(300)) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                 "SELECT i + 1 FROM n WHERE i < " +
                 std::to_string(rows) + ") SELECT i FROM n)");
  }
};

std::string count_tagged(const fs::path& file, const std::string& tag) {
  return query(file, "SELECT count(*) FROM t WHERE v LIKE '" + tag + "%'");
}

// Sets the Last-Modified of the file store's object `key` (its file's mtime).
void set_last_modified(const store_dir& s, const std::string& key, wall_clock::time_point t) {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  const timespec times[2] = {{0, UTIME_OMIT}, {ns / 1000000000, ns % 1000000000}};
  BOOST_TEST_REQUIRE(::utimensat(AT_FDCWD, s.object_file(key).c_str(), times, 0) == 0);
}

std::string last_segment(const std::vector<std::string>& keys) {
  std::string last;
  for (const auto& k : keys) {
    if (sm::db::layout::parse_segment_key(k)) last = std::max(last, k);
  }
  return last;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_replicated_database_is_restored_with_every_commit) {
  scratch_dir tmp;
  application app(tmp.dir / "live.sqlite");
  app.insert(20, "before");
  store_dir objects(tmp.dir);
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, app.file);
    co_await replicator.start();
    app.insert(30, "first");
    co_await replicator.sync();
    BOOST_TEST(co_await replicator.checkpoint());  // the next rows go to WAL index 1
    app.insert(30, "second");
    exec(app.db, "UPDATE t SET v = 'changed' WHERE id = 1");
    co_await replicator.sync();
    exec(app.db, "DELETE FROM t WHERE id = 2");
    co_await replicator.stop();

    const fs::path to = tmp.dir / "new" / "machine" / "database.sqlite";  // parents created
    const sm::db::restore_report report = co_await sm::db::restore(*store, restore_to(to));
    BOOST_TEST(report.found);
    BOOST_TEST(report.generation == replicator.generation());
    BOOST_TEST(report.stopped_early.empty(), report.stopped_early);
    BOOST_TEST(report.segments >= 3u);  // index 0's two, index 1's at least one
    BOOST_TEST(report.commits >= 4u);
    BOOST_TEST(report.bytes > 0u);
    BOOST_TEST(report.db_pages > 0u);
    BOOST_TEST(report.as_of.time_since_epoch().count() > 0);
    BOOST_TEST(query(to, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(query(to, fingerprint) == query(app.file, fingerprint));
    BOOST_TEST(query(to, "SELECT v FROM t WHERE id = 1") == "changed");
    BOOST_TEST(query(to, "SELECT count(*) FROM t WHERE id = 2") == "0");
    BOOST_TEST(query(to, "PRAGMA journal_mode") == "wal");
    BOOST_TEST(!fs::exists(to.string() + ".restoring"));
  });
}

BOOST_AUTO_TEST_CASE(a_stale_wal_and_shm_beside_the_target_are_removed_first) {
  scratch_dir tmp;
  application app(tmp.dir / "live.sqlite");
  app.insert(10, "replicated");
  store_dir objects(tmp.dir);

  // Another database's file, -wal and -shm where the restore goes, its last rows only in the
  // -wal: replayed onto the restored file, they would change or corrupt it.
  const fs::path to = tmp.dir / "target.sqlite";
  {
    application other(tmp.dir / "other.sqlite");
    other.insert(5, "stale");
    for (const char* suffix : {"", "-wal", "-shm"}) {
      fs::copy_file(other.file.string() + suffix, to.string() + suffix);
    }
  }
  BOOST_TEST_REQUIRE(fs::file_size(to.string() + "-wal") > 0u);

  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, app.file);
    co_await replicator.start();
    app.insert(10, "replicated");
    co_await replicator.stop();

    const sm::db::restore_report report = co_await sm::db::restore(*store, restore_to(to));
    BOOST_TEST(report.found);
    BOOST_TEST(!fs::exists(to.string() + "-wal"));
    BOOST_TEST(!fs::exists(to.string() + "-shm"));
    BOOST_TEST(query(to, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(query(to, fingerprint) == query(app.file, fingerprint));
    BOOST_TEST(count_tagged(to, "stale") == "0");
  });
}

// The last segment damaged in the store: the replay keeps every transaction before it, and
// says where and why it stopped.
void restore_with_damaged_last_segment(bool truncate) {
  scratch_dir tmp;
  application app(tmp.dir / "live.sqlite");
  store_dir objects(tmp.dir);
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, app.file);
    co_await replicator.start();
    app.insert(40, "early");
    co_await replicator.sync();
    app.insert(40, "late");  // one transaction, in a segment of its own
    co_await replicator.sync();
    co_await replicator.stop();

    const std::string damaged = last_segment(co_await list_keys(*store));
    BOOST_TEST_REQUIRE(!damaged.empty());
    const fs::path file = objects.object_file(damaged);
    std::string body = read_all(file);
    BOOST_TEST_REQUIRE(body.size() > 1024u);
    if (truncate) {
      body.resize(body.size() / 2);
    } else {
      for (std::size_t i = body.size() / 2; i < body.size() / 2 + 64; ++i) body[i] ^= 0x5a;
    }
    std::ofstream(file, std::ios::binary | std::ios::trunc) << body;

    const fs::path to = tmp.dir / "restored.sqlite";
    const sm::db::restore_report report = co_await sm::db::restore(*store, restore_to(to));
    BOOST_TEST(report.found);
    BOOST_TEST(!report.stopped_early.empty());
    BOOST_TEST(report.stopped_early.find("WAL index 0000000000000000") != std::string::npos,
               report.stopped_early);
    if (truncate) {
      BOOST_TEST(report.stopped_early.find(damaged) != std::string::npos, report.stopped_early);
    }
    BOOST_TEST(query(to, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(count_tagged(to, "early") == "40");
    BOOST_TEST(count_tagged(to, "late") == "0");
  });
}

BOOST_AUTO_TEST_CASE(a_truncated_last_segment_ends_the_replay_at_the_commit_before_it) {
  restore_with_damaged_last_segment(true);
}

BOOST_AUTO_TEST_CASE(a_corrupted_last_segment_ends_the_replay_at_the_commit_before_it) {
  restore_with_damaged_last_segment(false);
}

BOOST_AUTO_TEST_CASE(a_point_in_time_restore_uses_only_what_the_store_held_then) {
  scratch_dir tmp;
  application app(tmp.dir / "live.sqlite");
  store_dir objects(tmp.dir);
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    sm::db::replicator replicator(io.get_executor(), *store, app.file);
    co_await replicator.start();
    app.insert(25, "morning");
    co_await replicator.sync();
    const std::vector<std::string> by_morning = co_await list_keys(*store);
    app.insert(25, "evening");
    co_await replicator.sync();
    BOOST_TEST(co_await replicator.checkpoint());
    app.insert(25, "night");
    co_await replicator.stop();

    // The store's clock, made explicit: what was there after the first sync arrived three
    // hours ago, the rest an hour ago. No test timing is involved.
    const auto now = wall_clock::now();
    const std::set<std::string> early(by_morning.begin(), by_morning.end());
    for (const std::string& key : co_await list_keys(*store)) {
      set_last_modified(
          objects, key,
          early.count(key) ? now - std::chrono::hours(3) : now - std::chrono::hours(1));
    }

    sm::db::restore_request request = restore_to(tmp.dir / "at-noon.sqlite");
    request.at = now - std::chrono::hours(2);
    sm::db::restore_report report = co_await sm::db::restore(*store, request);
    BOOST_TEST(report.found);
    BOOST_TEST(report.stopped_early.empty(), report.stopped_early);
    // Within the file system's timestamp resolution.
    BOOST_TEST(std::chrono::abs(report.as_of - (now - std::chrono::hours(3))) <
               std::chrono::seconds(1));
    BOOST_TEST(query(request.to, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(count_tagged(request.to, "morning") == "25");
    BOOST_TEST(count_tagged(request.to, "evening") == "0");
    BOOST_TEST(count_tagged(request.to, "night") == "0");

    // Now: everything.
    request = restore_to(tmp.dir / "now.sqlite");
    report = co_await sm::db::restore(*store, request);
    BOOST_TEST(count_tagged(request.to, "night") == "25");
    BOOST_TEST(query(request.to, fingerprint) == query(app.file, fingerprint));

    // Before the first object: nothing to restore.
    request = restore_to(tmp.dir / "dawn.sqlite");
    request.at = now - std::chrono::hours(4);
    report = co_await sm::db::restore(*store, request);
    BOOST_TEST(!report.found);
    BOOST_TEST(!fs::exists(request.to));
  });
}

BOOST_AUTO_TEST_CASE(an_empty_store_finds_nothing_and_leaves_the_target_alone) {
  scratch_dir tmp;
  store_dir objects(tmp.dir);
  const fs::path to = tmp.dir / "database.sqlite";
  std::ofstream(to) << "precious";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    const sm::db::restore_report report = co_await sm::db::restore(*store, restore_to(to));
    BOOST_TEST(!report.found);
    BOOST_TEST(report.generation.empty());
    BOOST_TEST(read_all(to) == "precious");
    BOOST_TEST(!fs::exists(to.string() + ".restoring"));
  });
}

BOOST_AUTO_TEST_CASE(a_named_generation_is_restored_instead_of_the_newest) {
  scratch_dir tmp;
  application first(tmp.dir / "first.sqlite");
  application second(tmp.dir / "second.sqlite");
  store_dir objects(tmp.dir);
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    // Two databases replicated into one store, one after the other: two generations.
    std::string older, newer;
    {
      sm::db::replicator replicator(io.get_executor(), *store, first.file);
      co_await replicator.start();
      first.insert(7, "first");
      co_await replicator.stop();
      older = replicator.generation();
    }
    {
      sm::db::replicator replicator(io.get_executor(), *store, second.file);
      co_await replicator.start();
      second.insert(9, "second");
      co_await replicator.stop();
      newer = replicator.generation();
    }
    BOOST_TEST_REQUIRE(older < newer);

    sm::db::restore_request request = restore_to(tmp.dir / "newest.sqlite");
    sm::db::restore_report report = co_await sm::db::restore(*store, request);
    BOOST_TEST(report.generation == newer);
    BOOST_TEST(count_tagged(request.to, "second") == "9");

    request = restore_to(tmp.dir / "older.sqlite");
    request.generation = older;
    report = co_await sm::db::restore(*store, request);
    BOOST_TEST(report.found);
    BOOST_TEST(report.generation == older);
    BOOST_TEST(count_tagged(request.to, "first") == "7");
    BOOST_TEST(count_tagged(request.to, "second") == "0");

    // A generation the store does not have: nothing found. Not a generation at all: an error.
    request = restore_to(tmp.dir / "missing.sqlite");
    request.generation = std::string(32, '0');
    report = co_await sm::db::restore(*store, request);
    BOOST_TEST(!report.found);
    BOOST_TEST(!fs::exists(request.to));
    request.generation = "yesterday";
    const std::string why = co_await restore_failure(*store, request);
    BOOST_TEST(why.find("not a generation") != std::string::npos, why);
  });
}

BOOST_AUTO_TEST_CASE(a_compression_this_version_cannot_read_is_refused) {
  scratch_dir tmp;
  store_dir objects(tmp.dir);
  const fs::path to = tmp.dir / "database.sqlite";
  std::ofstream(to) << "precious";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    const std::string generation = sm::db::layout::new_generation();
    co_await store->put(sm::db::layout::snapshot_key(generation, 0, ".lz4"), "compressed");
    const std::string why = co_await restore_failure(*store, restore_to(to));
    BOOST_TEST(why.find(".lz4") != std::string::npos, why);
    BOOST_TEST(read_all(to) == "precious");
  });
}

BOOST_AUTO_TEST_CASE(an_uncompressed_replica_is_restored_too) {
  scratch_dir tmp;
  store_dir objects(tmp.dir);
  const fs::path source = tmp.dir / "source.sqlite";
  {
    application app(source);
    app.insert(50, "raw");
    exec(app.db, "PRAGMA wal_checkpoint(TRUNCATE)");
  }
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    const std::string generation = sm::db::layout::new_generation();
    co_await store->put(sm::db::layout::snapshot_key(generation, 0, ""), read_all(source));
    const fs::path to = tmp.dir / "restored.sqlite";
    const sm::db::restore_report report = co_await sm::db::restore(*store, restore_to(to));
    BOOST_TEST(report.found);
    BOOST_TEST(report.segments == 0u);
    BOOST_TEST(query(to, "PRAGMA integrity_check") == "ok");
    BOOST_TEST(count_tagged(to, "raw") == "50");
  });
}

BOOST_AUTO_TEST_CASE(a_result_that_fails_integrity_check_is_not_moved_into_place) {
  scratch_dir tmp;
  store_dir objects(tmp.dir);
  // A snapshot whose b-tree pages are damaged: the header is fine, the tree is not.
  const fs::path broken = tmp.dir / "broken.sqlite";
  {
    application app(broken);
    app.insert(200, "row");
    exec(app.db, "PRAGMA wal_checkpoint(TRUNCATE)");
  }
  std::string bytes = read_all(broken);
  BOOST_TEST_REQUIRE(bytes.size() > 8 * 4096u);
  for (std::size_t i = 3 * 4096; i < 6 * 4096; ++i) bytes[i] = char(0x7f);
  const fs::path to = tmp.dir / "database.sqlite";
  std::ofstream(to) << "precious";
  run([&](asio::io_context& io) -> asio::awaitable<void> {
    auto store = sm::s3::make_store(io.get_executor(), objects.config);
    co_await store->check();
    const std::string generation = sm::db::layout::new_generation();
    co_await store->put(sm::db::layout::snapshot_key(generation, 0, ""), bytes);
    const std::string why = co_await restore_failure(*store, restore_to(to));
    BOOST_TEST(why.find("integrity_check") != std::string::npos, why);
    BOOST_TEST(why.find(to.string()) != std::string::npos, why);
    BOOST_TEST(read_all(to) == "precious");
    BOOST_TEST(!fs::exists(to.string() + ".restoring"));
    BOOST_TEST(!fs::exists(to.string() + ".restoring-wal"));
  });
}
