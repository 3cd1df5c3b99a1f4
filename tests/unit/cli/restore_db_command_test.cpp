#define BOOST_TEST_MODULE restore_db_command
#include <boost/test/unit_test.hpp>

#include "support/db_helpers.hpp"

#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "async/offload.hpp"
#include "base/clock.hpp"
#include "cli/restore_db_command.hpp"
#include "db/database.hpp"
#include "db/replicator.hpp"
#include "s3/object_store.hpp"
#include "support/cli.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using action = sm::cli::restore_db_command_line::action;
using args = std::vector<std::string>;

using test_support::env_of;

namespace {

sm::cli::restore_db_command_line parse(const args& a, std::map<std::string, std::string> env = {}) {
  return sm::cli::parse_restore_db_command_line(a, env_of(std::move(env)));
}

void expect_error(const args& a, const std::string& what) {
  const sm::cli::restore_db_command_line c = parse(a);
  BOOST_TEST(c.what == action::error);
  BOOST_TEST(c.error.find(what) != std::string::npos, "\"" << c.error << "\" lacks " << what);
}

// 2026-11-22T13:00:00Z, from its parts (not through the parser under test).
sm::wall_time utc(int hour, int minute, int second) {
  return sm::wall_time(std::chrono::sys_days(std::chrono::year(2026) / 11 / 22)) +
         std::chrono::hours(hour) + std::chrono::minutes(minute) + std::chrono::seconds(second);
}

// What run_restore_db_command printed on stdout, and its exit status.
struct outcome {
  int status;
  std::string out;
};
outcome run_cli(const args& a, std::map<std::string, std::string> env = {}) {
  std::ostringstream captured;
  std::streambuf* previous = std::cout.rdbuf(captured.rdbuf());
  const int status = sm::cli::run_restore_db_command(a, env_of(std::move(env)));
  std::cout.rdbuf(previous);
  return {status, captured.str()};
}

// Runs `sql` on `file` from a connection of its own.
void change(const fs::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  sqlite3_open(file.c_str(), &db);
  test_support::exec(db, sql);
  sqlite3_close(db);
}

}  // namespace

BOOST_AUTO_TEST_CASE(flags_and_defaults) {
  const sm::cli::restore_db_command_line c =
      parse({"--to", "out.sqlite", "--at=2026-11-22T13:00:00Z", "--generation",
             std::string(32, 'a'), "--config", "c.json", "--force"});
  BOOST_TEST_REQUIRE(c.what == action::run, c.error);
  BOOST_TEST(c.opts.to == "out.sqlite");
  BOOST_TEST((c.opts.at == utc(13, 0, 0)));
  BOOST_TEST(c.opts.generation == std::string(32, 'a'));
  BOOST_TEST((c.opts.config_file == fs::path("c.json")));
  BOOST_TEST(c.opts.force);

  const sm::cli::restore_db_command_line d = parse({"--to", "x"});
  BOOST_TEST_REQUIRE(d.what == action::run, d.error);
  BOOST_TEST(!d.opts.at.has_value());
  BOOST_TEST(!d.opts.force);
  BOOST_TEST(d.opts.tmp_dir == "tmp");
  BOOST_TEST(!d.opts.config_file.has_value());

  // --tmp-dir from the environment, as the server reads it; the flag wins.
  BOOST_TEST(parse({"--to", "x"}, {{"STATE_MANAGER_TMP_DIR", "/srv/tmp"}}).opts.tmp_dir ==
             "/srv/tmp");
  BOOST_TEST(parse({"--to", "x", "--tmp-dir", "t"}, {{"STATE_MANAGER_TMP_DIR", "/srv/tmp"}})
                 .opts.tmp_dir == "t");
}

BOOST_AUTO_TEST_CASE(bad_command_lines) {
  expect_error({}, "--to");
  expect_error({"--at", "2026-11-22T13:00:00Z"}, "--to");
  expect_error({"--to"}, "--to");
  expect_error({"--to", ""}, "--to");
  expect_error({"--to", "x", "--at", "noon"}, "--at");
  expect_error({"--to", "x", "--generation", "abc"}, "--generation");
  expect_error({"--to", "x", "--force=yes"}, "--force");
  expect_error({"--to", "x", "--listen", ":80"}, "--listen");
  expect_error({"--to", "x", "extra"}, "extra");
  BOOST_TEST(parse({"--to", "x", "--help"}).what == action::help);
  BOOST_TEST(parse({"-h"}).what == action::help);
  BOOST_TEST(sm::cli::run_restore_db_command({}, env_of({})) == 2);
  BOOST_TEST(run_cli({"--help"}).status == 0);
  BOOST_TEST(run_cli({"--help"}).out.find("--at TIME") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(restores_from_the_store_the_applied_configuration_names) {
  test_support::scratch_dir tmp;
  const fs::path tmp_dir = tmp.dir / "tmp";
  fs::create_directories(tmp_dir);
  const fs::path to = tmp.dir / "restored.sqlite";

  // No configuration applied yet: exit 1, nothing written.
  BOOST_TEST(run_cli({"--to", to.string(), "--tmp-dir", tmp_dir.string()}).status == 1);
  BOOST_TEST(!fs::exists(to));

  // The configuration as POST /config saved it, with its secret from the environment.
  std::ofstream(tmp_dir / "config.json")
      << R"({"storage": {"bucket": "bkt", "endpoint": "file://)" << (tmp.dir / "objects").string()
      << R"(", "key_prefix": "env/", "access_key": {"$env": "KEY"}}, "stacks": []})";
  const std::map<std::string, std::string> env = {{"KEY", "k"}};
  // An empty store: nothing to restore is a failure too.
  BOOST_TEST(run_cli({"--to", to.string(), "--tmp-dir", tmp_dir.string()}, env).status == 1);
  BOOST_TEST(!fs::exists(to));

  const fs::path live = tmp.dir / "live.sqlite";
  sm::db::initialise(live);
  sqlite3* app = nullptr;
  sqlite3_open(live.c_str(), &app);
  test_support::exec(app, "CREATE TABLE t(v TEXT)");
  {
    sm::s3::store_config config;
    config.endpoint = "file://" + (tmp.dir / "objects").string();
    config.bucket = "bkt";
    config.key_prefix = "env/";
    asio::io_context io;
    std::exception_ptr failure;
    auto store = sm::s3::make_store(io.get_executor(), config);
    sm::db::replicator replicator(io.get_executor(), *store, live);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await store->check();
          co_await replicator.start();
          test_support::exec(app, "INSERT INTO t VALUES ('one'), ('two')");
          co_await replicator.stop();
        },
        [&](std::exception_ptr e) { failure = e; });
    io.run();
    sm::stop_offload_worker();
    BOOST_TEST_REQUIRE(!failure);
  }
  sqlite3_close(app);

  const outcome restored = run_cli({"--to", to.string(), "--tmp-dir", tmp_dir.string()}, env);
  BOOST_TEST(restored.status == 0);
  BOOST_TEST(restored.out.find("restored " + to.string()) != std::string::npos, restored.out);
  BOOST_TEST(restored.out.find("warning") == std::string::npos, restored.out);
  BOOST_TEST(test_support::query(to, "SELECT group_concat(v) FROM t") == "one,two");

  // An existing FILE is refused without --force, and left as it is.
  change(to, "DELETE FROM t");
  BOOST_TEST(run_cli({"--to", to.string(), "--tmp-dir", tmp_dir.string()}, env).status == 1);
  BOOST_TEST(test_support::query(to, "SELECT count(*) FROM t") == "0");
  BOOST_TEST(run_cli({"--to", to.string(), "--tmp-dir", tmp_dir.string(), "--force"}, env).status ==
             0);
  BOOST_TEST(test_support::query(to, "SELECT count(*) FROM t") == "2");

  // --at before the replica existed: nothing to restore.
  const fs::path early = tmp.dir / "early.sqlite";
  BOOST_TEST(run_cli({"--to", early.string(), "--tmp-dir", tmp_dir.string(), "--at",
                      "2001-01-01T00:00:00Z"},
                     env)
                 .status == 1);
  BOOST_TEST(!fs::exists(early));
}
