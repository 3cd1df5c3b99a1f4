// The fence in front of the store: reads always go through; writes only while the lease allows,
// and a refused write never reaches the store.
#define BOOST_TEST_MODULE fenced_store
#include <boost/test/unit_test.hpp>

#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "lease/fenced_store.hpp"
#include "s3/object_store.hpp"
#include "support/scratch_dir.hpp"

namespace fs = std::filesystem;
namespace s3 = sm::s3;

namespace {

struct fixture {
  test_support::scratch_dir scratch{"sm-fenced-store"};
  asio::io_context io;
  std::string refused;  // why writes are refused; empty: allowed
  std::unique_ptr<sm::lease::fenced_store> store;

  fixture() {
    s3::store_config config;
    config.endpoint = "file://" + (scratch.dir / "objects").string();
    config.bucket = "env-bucket";
    config.key_prefix = "envs/1/";
    store = std::make_unique<sm::lease::fenced_store>(s3::make_store(io.get_executor(), config),
                                                      [this] { return refused; });
  }

  fs::path object(const std::string& key) const {
    return scratch.dir / "objects" / "env-bucket" / "envs" / "1" / key;
  }

  // Runs `step` to completion; returns the s3::error code it threw ("" when none).
  std::string run(std::function<asio::awaitable<void>()> step) {
    std::string code;
    std::exception_ptr other;
    asio::co_spawn(io, step(), [&](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const s3::error& err) {
        code = err.code();
        BOOST_TEST(err.status() == 409);
        BOOST_TEST(!err.retryable());
      } catch (...) {
        other = std::current_exception();
      }
    });
    io.restart();
    io.run();
    if (other) std::rethrow_exception(other);
    return code;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(writes_go_through_while_allowed_and_never_once_refused, fixture) {
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->put("a", "one"); }) == "");
  BOOST_TEST(fs::exists(object("a")));

  refused = "the lease is not held";
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->put("b", "two"); }) ==
             "LeaseNotHeld");
  BOOST_TEST(!fs::exists(object("b")));
  const fs::path file = scratch.dir / "local";
  { std::ofstream(file) << "three"; }
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->put_file("c", file); }) ==
             "LeaseNotHeld");
  BOOST_TEST(!fs::exists(object("c")));
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->copy("a", "d"); }) ==
             "LeaseNotHeld");
  BOOST_TEST(!fs::exists(object("d")));
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->remove("a"); }) ==
             "LeaseNotHeld");
  const std::vector<std::string> keys(1, "a");
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->remove_many(keys); }) ==
             "LeaseNotHeld");
  BOOST_TEST(fs::exists(object("a")));

  // Reads are not writes: the next owner's state may be read, never changed.
  std::string body;
  BOOST_TEST(run([&]() -> asio::awaitable<void> { body = co_await store->get("a"); }) == "");
  BOOST_TEST(body == "one");
  std::size_t listed = 0;
  BOOST_TEST(run([&]() -> asio::awaitable<void> {
               listed = (co_await store->list("")).objects.size();
             }) == "");
  BOOST_TEST(listed == 1u);

  refused.clear();
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await store->remove("a"); }) == "");
  BOOST_TEST(!fs::exists(object("a")));
}
