#define BOOST_TEST_MODULE checkpoint_command
#include <boost/test/unit_test.hpp>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/checkpoint_command.hpp"
#include "support/cli.hpp"

using action = sm::cli::checkpoint_command_line::action;
using verb = sm::cli::checkpoint_verb;
using args = std::vector<std::string>;
using json = nlohmann::json;

namespace sm::cli {
std::ostream& operator<<(std::ostream& os, checkpoint_verb v) {
  return os << "verb(" << static_cast<int>(v) << ")";
}
}  // namespace sm::cli

namespace {

sm::cli::checkpoint_command_line parse(const args& a, std::map<std::string, std::string> env = {}) {
  return sm::cli::parse_checkpoint_command_line(a, test_support::env_of(std::move(env)));
}

void expect_error(const args& a, const std::string& what) {
  const sm::cli::checkpoint_command_line c = parse(a);
  BOOST_TEST(c.what == action::error);
  BOOST_TEST(c.error.find(what) != std::string::npos,
             "\"" << c.error << "\" lacks \"" << what << "\"");
}

}  // namespace

BOOST_AUTO_TEST_CASE(verbs_and_ids) {
  sm::cli::checkpoint_command_line c = parse({"create"});
  BOOST_TEST(c.what == action::run);
  BOOST_TEST(c.opts.verb == verb::create);
  BOOST_TEST(c.opts.id == "");
  BOOST_TEST(c.opts.url_text == "http://127.0.0.1:8080");
  BOOST_TEST(!c.opts.json);

  c = parse({"create", "test1"});
  BOOST_TEST(c.opts.id == "test1");
  c = parse({"restore", "v2"});
  BOOST_TEST(c.opts.verb == verb::restore);
  BOOST_TEST(c.opts.id == "v2");
  c = parse({"list"});
  BOOST_TEST(c.opts.verb == verb::list);
  c = parse({"delete", "v1"});
  BOOST_TEST(c.opts.verb == verb::remove);
  BOOST_TEST(c.opts.id == "v1");
}

BOOST_AUTO_TEST_CASE(options_anywhere_and_double_dash) {
  sm::cli::checkpoint_command_line c =
      parse({"--json", "restore", "--url", "http://10.0.0.2:9000", "x"});
  BOOST_TEST(c.what == action::run);
  BOOST_TEST(c.opts.json);
  BOOST_TEST(c.opts.id == "x");
  BOOST_TEST(c.opts.url.host == "10.0.0.2");
  BOOST_TEST(c.opts.url.port == "9000");

  c = parse({"delete", "--url=http://localhost:1", "--", "-odd"});
  BOOST_TEST(c.what == action::run);
  BOOST_TEST(c.opts.id == "-odd");
  BOOST_TEST(c.opts.url.host == "localhost");

  BOOST_TEST(parse({"list", "-h"}).what == action::help);
  BOOST_TEST(parse({"--help"}).what == action::help);
}

BOOST_AUTO_TEST_CASE(bad_usage) {
  expect_error({}, "expected create, restore, list or delete");
  expect_error({"frob"}, "unknown command \"frob\"");
  expect_error({"restore"}, "restore needs the checkpoint's ID");
  expect_error({"delete"}, "delete needs the checkpoint's ID");
  expect_error({"list", "x"}, "list takes no ID");
  expect_error({"create", "a", "b"}, "unexpected argument \"b\"");
  expect_error({"create", ""}, "must not be empty");
  expect_error({"list", "--nosuch"}, "unknown option --nosuch");
  expect_error({"list", "-x"}, "unknown option -x");
  expect_error({"list", "--url"}, "--url needs a value");
  expect_error({"list", "--json=yes"}, "--json takes no value");
  expect_error({"list", "--url", "https://host"}, "https is not supported");
  expect_error({"list", "--url", "ftp://host"}, "expected http://");
  expect_error({"list", "--token-file="}, "must not be empty");
}

BOOST_AUTO_TEST_CASE(environment) {
  sm::cli::checkpoint_command_line c =
      parse({"list"}, {{"STATE_MANAGER_URL", "http://[::1]:7000/sm/"}});
  BOOST_TEST(c.what == action::run);
  BOOST_TEST(c.opts.url.host == "::1");
  BOOST_TEST(c.opts.url.authority == "[::1]:7000");
  BOOST_TEST(c.opts.url.base_path == "/sm");

  // A flag replaces its variable entirely, even a broken one.
  c = parse({"list", "--url", "http://h:1"}, {{"STATE_MANAGER_URL", "nonsense"}});
  BOOST_TEST(c.what == action::run);
  BOOST_TEST(c.opts.url.host == "h");
  c = parse({"list"}, {{"STATE_MANAGER_URL", "nonsense"}});
  BOOST_TEST(c.what == action::error);
  BOOST_TEST(c.error.find("STATE_MANAGER_URL") != std::string::npos);

  // The token: a token file (flag, then variable) wins over STATE_MANAGER_TOKEN; empty is none.
  c = parse({"list"}, {{"STATE_MANAGER_TOKEN", "t"}});
  BOOST_TEST(c.opts.token.value_or("") == "t");
  BOOST_TEST(!c.opts.token_file);
  c = parse({"list"}, {{"STATE_MANAGER_TOKEN", ""}});
  BOOST_TEST(!c.opts.token);
  c = parse({"list"}, {{"STATE_MANAGER_TOKEN", "t"}, {"STATE_MANAGER_TOKEN_FILE", "/f"}});
  BOOST_TEST(!c.opts.token);
  BOOST_TEST(c.opts.token_file.value_or("") == "/f");
  c = parse({"list", "--token-file", "/g"}, {{"STATE_MANAGER_TOKEN_FILE", "/f"}});
  BOOST_TEST(c.opts.token_file.value_or("") == "/g");
}

BOOST_AUTO_TEST_CASE(sizes) {
  BOOST_TEST(sm::cli::format_size(0) == "0 B");
  BOOST_TEST(sm::cli::format_size(1023) == "1023 B");
  BOOST_TEST(sm::cli::format_size(1024) == "1 KiB");
  BOOST_TEST(sm::cli::format_size(1536) == "1.5 KiB");
  BOOST_TEST(sm::cli::format_size(16384) == "16 KiB");
  BOOST_TEST(sm::cli::format_size(12'897'485) == "12.3 MiB");
  BOOST_TEST(sm::cli::format_size(1024 * 1024 - 1) == "1 MiB");  // not "1024 KiB"
  BOOST_TEST(sm::cli::format_size(3ull << 30) == "3 GiB");
}

BOOST_AUTO_TEST_CASE(summaries) {
  const json created = json::parse(R"({"id": "test1", "upload": {}, "manifest": {
      "id": "test1", "mount": {"files": 3, "dirs": 1, "symlinks": 0, "bytes": 12897485},
      "database": {"bytes": 16384, "pages": 4,
                   "sha256": "7507df69aa0b8c1e3d2f4a5b6c7d8e9f00112233445566778899aabbccddeeff"},
      "steps_ms": {"quiesce": 5, "snapshot": 8, "resume": 2, "total": 15}}})");
  BOOST_TEST(sm::cli::describe_answer(verb::create, created) ==
             "checkpoint test1: 3 files, 12.3 MiB, database 16 KiB (sha256 7507df69…), 15 ms");

  // No database, one file, no total (summed), and an answer missing everything.
  const json small = json::parse(R"({"id": "v1", "manifest": {"database": null,
      "mount": {"files": 1, "bytes": 10}, "steps_ms": {"quiesce": 1, "snapshot": 2}}})");
  BOOST_TEST(sm::cli::describe_answer(verb::create, small) ==
             "checkpoint v1: 1 file, 10 B, no database, 3 ms");
  BOOST_TEST(sm::cli::describe_answer(verb::create, json::array()) ==
             "checkpoint ?: ? files, ?, database ?, ?");

  BOOST_TEST(sm::cli::describe_answer(verb::restore, json{{"id", "test1"}, {"took_ms", 120}}) ==
             "restored test1 in 120 ms");
  BOOST_TEST(sm::cli::describe_answer(
                 verb::remove, json{{"deleted", "t"}, {"local", true}, {"remote_objects", 0}}) ==
             "deleted t");
  BOOST_TEST(sm::cli::describe_answer(
                 verb::remove, json{{"deleted", "t"}, {"local", true}, {"remote_objects", 5}}) ==
             "deleted t (and its 5 objects in the store)");

  BOOST_TEST(
      sm::cli::describe_answer(verb::list, json{{"count", 0}, {"checkpoints", json::array()}}) ==
      "no checkpoints");
  const json list = json::parse(R"({"count": 3, "checkpoints": [
      {"id": "test1", "created_at": "2026-11-22T20:09:13.592Z", "database": {"bytes": 12288},
       "mount": {"files": 1, "bytes": 5000000}, "location": "local",
       "upload": {"state": "done", "bytes": 5012288}},
      {"id": "v2", "created_at": "2026-11-22T20:09:50.000Z", "database": null,
       "mount": {"files": 3, "bytes": 3000}, "location": "local",
       "upload": {"state": "uploading", "bytes": 0}},
      {"id": "a-longer-id", "created_at": "2026-11-22T20:10:00.000Z", "database": null,
       "mount": {"files": 12, "bytes": 100}, "location": "store", "upload": null}]})");
  BOOST_TEST(sm::cli::describe_answer(verb::list, list) ==
             "ID           CREATED                   WHERE        FILES     SIZE  DATABASE\n"
             "test1        2026-11-22T20:09:13.592Z  local+store      1  4.8 MiB    12 KiB\n"
             "v2           2026-11-22T20:09:50.000Z  local            3  2.9 KiB         -\n"
             "a-longer-id  2026-11-22T20:10:00.000Z  store           12    100 B         -");
  // A store that could not be listed is said, under what is here.
  BOOST_TEST(sm::cli::describe_answer(verb::list, json{{"count", 0},
                                                       {"checkpoints", json::array()},
                                                       {"store_error", "connection refused"}}) ==
             "no checkpoints\n(the object store could not be listed: connection refused)");
}
