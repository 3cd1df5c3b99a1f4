// The block store against a file:// store behind a wrapper that fails on demand: staging,
// uploads, the bounded cache, reads from each place, and what happens while the store is down
// or refuses writes (409) until told otherwise.
#define BOOST_TEST_MODULE fs_block_store
#include <boost/test/unit_test.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "fs/block_store.hpp"
#include "fs/slices.hpp"
#include "s3/object_store.hpp"
#include "support/rethrow.hpp"
#include "support/scratch_dir.hpp"
#include "uring/ring.hpp"

namespace fs = std::filesystem;
namespace s3 = sm::s3;
using sm::fs::block_ref;
using namespace std::chrono_literals;

namespace {

struct join_offload_worker {
  ~join_offload_worker() { sm::stop_offload_worker(); }
};
BOOST_TEST_GLOBAL_FIXTURE(join_offload_worker);

// A store that fails when told to: writes down (503, retryable), writes refused (409
// LeaseNotHeld, as the fenced store does without the lease), reads down (503). It counts calls.
class flaky_store : public s3::object_store {
 public:
  explicit flaky_store(std::unique_ptr<s3::object_store> inner) : inner_(std::move(inner)) {}

  using s3::object_store::get;
  using s3::object_store::get_file;
  using s3::object_store::list;
  using s3::object_store::put;
  using s3::object_store::put_file;

  bool puts_down = false, refuse_puts = false, gets_down = false;
  int put_file_calls = 0, get_file_calls = 0, get_calls = 0;
  int block_gets = 0, heads = 0;  // whole-object reads (get without a range or get_file); HEADs

  asio::awaitable<std::string> put(std::string key, std::string body,
                                   s3::put_options options) override {
    co_return co_await inner_->put(std::move(key), std::move(body), std::move(options));
  }
  asio::awaitable<std::string> put_file(std::string key, std::filesystem::path file,
                                        s3::put_options options) override {
    ++put_file_calls;
    if (refuse_puts) throw s3::error(409, "LeaseNotHeld", "the lease is not held", key);
    if (puts_down) throw s3::error(503, "ServiceUnavailable", "the store is down", key);
    co_return co_await inner_->put_file(std::move(key), std::move(file), std::move(options));
  }
  asio::awaitable<std::string> get(std::string key,
                                   std::optional<s3::byte_range> range) override {
    ++get_calls;
    if (!range) ++block_gets;
    if (gets_down) throw s3::error(503, "ServiceUnavailable", "the store is down", key);
    co_return co_await inner_->get(std::move(key), std::move(range));
  }
  asio::awaitable<s3::object_info> get_file(std::string key, std::filesystem::path to,
                                            std::optional<s3::byte_range> range) override {
    ++get_file_calls;
    ++block_gets;
    if (gets_down) throw s3::error(503, "ServiceUnavailable", "the store is down", key);
    co_return co_await inner_->get_file(std::move(key), std::move(to), std::move(range));
  }
  asio::awaitable<std::optional<s3::object_info>> head(std::string key) override {
    ++heads;
    co_return co_await inner_->head(std::move(key));
  }
  asio::awaitable<void> remove(std::string key) override {
    co_await inner_->remove(std::move(key));
  }
  asio::awaitable<void> remove_many(std::vector<std::string> keys) override {
    co_await inner_->remove_many(std::move(keys));
  }
  asio::awaitable<s3::list_page> list(std::string prefix, std::string delimiter,
                                      std::string continuation, unsigned max_keys) override {
    co_return co_await inner_->list(std::move(prefix), std::move(delimiter),
                                    std::move(continuation), max_keys);
  }
  asio::awaitable<std::string> copy(std::string from, std::string to) override {
    co_return co_await inner_->copy(std::move(from), std::move(to));
  }
  asio::awaitable<void> check() override { co_await inner_->check(); }

 private:
  std::unique_ptr<s3::object_store> inner_;
};

constexpr std::uint32_t block_length = 64 << 10;

std::string content_of(const block_ref& b) {
  std::string data(b.length, '\0');
  for (std::uint32_t i = 0; i < b.length; ++i) {
    data[i] = static_cast<char>((b.slice * 131 + b.index * 17 + i * 7 + i / 251) & 0xff);
  }
  return data;
}

block_ref block(std::uint64_t slice, std::uint32_t index = 0) {
  return block_ref{slice, index, block_length};
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::uint64_t disk_bytes(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) return 0;
  return std::uint64_t(st.st_blocks) * 512;
}

struct fixture {
  test_support::scratch_dir scratch{"sm-block-store"};
  asio::io_context io;
  flaky_store store;
  std::unique_ptr<sm::uring::ring> ring;
  std::vector<std::unique_ptr<sm::fs::block_store>> opened;

  fixture() : store(s3::make_store(io.get_executor(), store_config())) {
    ring = std::make_unique<sm::uring::ring>(io.get_executor());
  }
  ~fixture() {
    for (auto& b : opened) stop(*b);
    opened.clear();
    // Until nothing is left: after stop() no work may remain (else this never returns), and
    // an offload's worker must have let go of the executor before the io_context goes.
    io.restart();
    io.run();
    ring.reset();
  }

  s3::store_config store_config() {
    s3::store_config config;
    config.endpoint = "file://" + (scratch.dir / "objects").string();
    config.bucket = "bucket";
    config.key_prefix = "env/";
    return config;
  }
  fs::path object(const block_ref& b) const {
    return scratch.dir / "objects" / "bucket" / "env" / sm::fs::block_key(b);
  }
  fs::path staging() const { return scratch.dir / "staging"; }
  fs::path cache() const { return scratch.dir / "cache"; }

  sm::fs::block_store_settings settings() {
    sm::fs::block_store_settings s;
    s.staging_dir = staging();
    s.cache_dir = cache();
    s.cache_size = 16ull << 20;
    s.staging_size = 16ull << 20;
    s.upload_concurrency = 4;
    s.block_size = block_length;
    s.read_deadline = 20s;
    s.upload_backoff_first = 5ms;
    s.upload_backoff_max = 20ms;
    return s;
  }

  // Runs `step` until it returns (background work stays queued for the next run); returns the
  // errno of the std::system_error it threw, 0 when none. Other exceptions fail the test.
  int run(std::function<asio::awaitable<void>()> step) {
    bool done = false;
    int err = 0;
    std::exception_ptr other;
    asio::co_spawn(io, step(), [&](std::exception_ptr e) {
      done = true;
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::system_error& se) {
        err = se.code().value();
        if (err == 0) err = -1;
      } catch (...) {
        other = e;
      }
    });
    io.restart();
    while (!done) io.run_one();
    test_support::fail_on(other);
    return err;
  }

  sm::fs::block_store& open(sm::fs::block_store_settings s,
                            std::function<bool(std::uint64_t)> keep = {}) {
    opened.push_back(
        std::make_unique<sm::fs::block_store>(io.get_executor(), store, *ring, std::move(s)));
    auto& b = *opened.back();
    BOOST_REQUIRE(run([&]() -> asio::awaitable<void> { co_await b.open(keep); }) == 0);
    return b;
  }
  void stop(sm::fs::block_store& b) {
    run([&]() -> asio::awaitable<void> { co_await b.stop(); });
  }
  void close_all() {
    for (auto& b : opened) stop(*b);
    opened.clear();
  }

  int stage(sm::fs::block_store& b, const block_ref& r) {
    const std::string data = content_of(r);
    return run([&]() -> asio::awaitable<void> { co_await b.stage(r, data); });
  }
  bool drain(sm::fs::block_store& b, std::chrono::milliseconds timeout = 30s) {
    bool up = false;
    run([&]() -> asio::awaitable<void> { up = co_await b.drain(timeout); });
    return up;
  }
  // Reads the whole block; "" (and the errno in `err`) when it failed.
  std::string read(sm::fs::block_store& b, const block_ref& r, int* err = nullptr) {
    std::string out(r.length, '\0');
    const int e = run([&]() -> asio::awaitable<void> { co_await b.read(r, 0, out); });
    if (err) *err = e;
    BOOST_TEST_CONTEXT("read " << sm::fs::block_file_name(r)) {
      if (!err) BOOST_TEST(e == 0);
    }
    settle(b);
    return e == 0 ? out : std::string();
  }
  void put_object(const block_ref& r) {
    run([&]() -> asio::awaitable<void> { co_await store.put(sm::fs::block_key(r), content_of(r)); });
  }
  // Lets a fetch's cache file (written after the readers were served) land.
  void settle(sm::fs::block_store& b) {
    run_until([&] { return b.stats().fetches_in_flight == 0; });
  }
  // Lets background work run until `done` holds (bounded generously: a failure, not a timing
  // assumption, is what ends it early).
  void run_until(std::function<bool()> done) {
    const auto give_up = std::chrono::steady_clock::now() + 30s;
    while (!done() && std::chrono::steady_clock::now() < give_up) {
      run([&]() -> asio::awaitable<void> {
        asio::steady_timer t(io, 2ms);
        co_await t.async_wait(asio::use_awaitable);
      });
    }
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(a_staged_block_goes_up_and_into_the_cache, fixture) {
  auto& b = open(settings());
  const block_ref r = block(7, 2);
  BOOST_TEST(stage(b, r) == 0);
  BOOST_TEST(b.stats().staging_blocks == 1u);
  BOOST_TEST(b.stats().staging_bytes == block_length);
  BOOST_TEST(drain(b));
  BOOST_REQUIRE(fs::exists(object(r)));
  std::ifstream in(object(r), std::ios::binary);
  const std::string up((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  BOOST_TEST((up == content_of(r)));
  BOOST_TEST(names_in(staging()).empty());
  BOOST_TEST(names_in(cache()) == std::vector<std::string>{"7_2_65536"});
  const auto s = b.stats();
  BOOST_TEST(s.staging_blocks == 0u);
  BOOST_TEST(s.staging_bytes == 0u);
  BOOST_TEST(s.uploaded_blocks == 1u);
  BOOST_TEST(s.uploaded_bytes == block_length);
  BOOST_TEST(s.cache_bytes == disk_bytes(cache() / "7_2_65536"));
  BOOST_TEST(s.last_error == "");
  // Staged again: never overwritten, never uploaded again.
  BOOST_TEST(stage(b, r) == 0);
  BOOST_TEST(b.stats().staging_blocks == 0u);
  BOOST_TEST(store.put_file_calls == 1);
}

BOOST_FIXTURE_TEST_CASE(reads_come_from_staging_then_the_cache_then_the_store, fixture) {
  store.puts_down = true;  // keeps the block in staging
  auto s = settings();
  auto& b = open(s);
  const block_ref r = block(3);
  BOOST_TEST(stage(b, r) == 0);
  BOOST_TEST((read(b, r) == content_of(r)));
  std::string middle(1000, '\0');
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await b.read(r, 5000, middle); }) == 0);
  BOOST_TEST((middle == content_of(r).substr(5000, 1000)));
  BOOST_TEST(b.stats().cache_hits == 0u);
  BOOST_TEST(b.stats().cache_misses == 0u);
  BOOST_TEST(store.block_gets + store.get_calls == 0);

  store.puts_down = false;
  BOOST_TEST(drain(b));
  BOOST_TEST((read(b, r) == content_of(r)));
  BOOST_TEST(b.stats().cache_hits == 1u);
  BOOST_TEST(store.block_gets + store.get_calls == 0);
  close_all();

  // The cache emptied: the block comes from the store, whole, into the cache.
  fs::remove_all(cache());
  auto& again = open(s);
  BOOST_TEST((read(again, r) == content_of(r)));
  BOOST_TEST(again.stats().cache_misses == 1u);
  BOOST_TEST(again.stats().downloaded_blocks == 1u);
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST(names_in(cache()) == std::vector<std::string>{"3_0_65536"});
  BOOST_TEST((read(again, r) == content_of(r)));
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST(again.stats().cache_hits == 1u);
}

BOOST_FIXTURE_TEST_CASE(the_cache_keeps_to_its_size_evicting_the_least_recently_used, fixture) {
  const block_ref a = block(1), bb = block(2), c = block(3), d = block(4);
  for (const auto& r : {a, bb, c, d}) put_object(r);
  auto s = settings();
  // Room for three blocks on disk, not four.
  auto& probe = open(s);
  read(probe, a);
  const std::uint64_t one = disk_bytes(cache() / sm::fs::block_file_name(a));
  BOOST_REQUIRE(one >= block_length);
  close_all();
  fs::remove_all(cache());

  s.cache_size = 3 * one + one / 2;
  auto& b = open(s);
  read(b, a);
  read(b, bb);
  read(b, c);
  BOOST_TEST(names_in(cache()).size() == 3u);
  read(b, a);  // a is used again: bb is now the least recently used
  read(b, d);
  run_until([&] { return names_in(cache()).size() == 3u; });  // the unlink runs in the background
  BOOST_TEST(names_in(cache()) == (std::vector<std::string>{"1_0_65536", "3_0_65536", "4_0_65536"}));
  BOOST_TEST(b.stats().cache_bytes <= s.cache_size);
  BOOST_TEST(b.stats().cache_bytes == 3 * one);
  BOOST_TEST(b.stats().cache_limit == s.cache_size);
  // Still readable: bb from the store again.
  const int before = store.block_gets;
  BOOST_TEST((read(b, bb) == content_of(bb)));
  BOOST_TEST(store.block_gets == before + 1);
}

BOOST_FIXTURE_TEST_CASE(the_cache_is_rebuilt_at_open_and_evicted_to_its_limit, fixture) {
  const block_ref a = block(1), bb = block(2), c = block(3);
  for (const auto& r : {a, bb, c}) put_object(r);
  auto s = settings();
  auto& first = open(s);
  for (const auto& r : {a, bb, c}) read(first, r);
  close_all();
  const std::uint64_t one = disk_bytes(cache() / "1_0_65536");
  // Age them: c oldest, then a, then bb (the newest is the most recently used).
  const auto now = fs::file_time_type::clock::now();
  fs::last_write_time(cache() / "3_0_65536", now - 3h);
  fs::last_write_time(cache() / "1_0_65536", now - 2h);
  fs::last_write_time(cache() / "2_0_65536", now - 1h);
  // Leftovers of fetches and stages a crash cut short.
  { std::ofstream(cache() / "9_0_65536.part") << "x"; }
  { std::ofstream(cache() / ".9_0_65536.sm-tmp-abc.tmp") << "x"; }
  { std::ofstream(staging() / "9_0_65536.tmp") << "x"; }

  s.cache_size = 2 * one + one / 2;
  const int gets = store.block_gets;
  auto& b = open(s);
  BOOST_TEST(b.stats().cache_bytes == 2 * one);
  run_until([&] { return names_in(cache()).size() == 2u; });
  BOOST_TEST(names_in(cache()) == (std::vector<std::string>{"1_0_65536", "2_0_65536"}));
  BOOST_TEST(names_in(staging()).empty());
  BOOST_TEST((read(b, a) == content_of(a)));
  BOOST_TEST((read(b, bb) == content_of(bb)));
  BOOST_TEST(store.block_gets == gets);
  BOOST_TEST(b.stats().cache_hits == 2u);
}

BOOST_FIXTURE_TEST_CASE(staged_blocks_resume_at_open_unless_no_longer_referenced, fixture) {
  store.puts_down = true;
  auto s = settings();
  auto& first = open(s);
  const block_ref kept = block(10), dropped = block(11);
  BOOST_TEST(stage(first, kept) == 0);
  BOOST_TEST(stage(first, dropped) == 0);
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await first.sync(); }) == 0);
  close_all();  // a restart with both still staged
  BOOST_TEST(names_in(staging()).size() == 2u);
  BOOST_TEST(!fs::exists(object(kept)));

  store.puts_down = false;
  auto& b = open(s, [](std::uint64_t slice) { return slice != 11; });
  BOOST_TEST(b.stats().staging_blocks == 1u);
  BOOST_TEST(drain(b));
  BOOST_TEST(fs::exists(object(kept)));
  BOOST_TEST(!fs::exists(object(dropped)));
  BOOST_TEST(names_in(staging()).empty());
  BOOST_TEST((read(b, kept) == content_of(kept)));
}

BOOST_FIXTURE_TEST_CASE(a_failing_store_fills_staging_then_recovers, fixture) {
  const block_ref cached = block(1), uncached = block(2);
  put_object(uncached);
  auto s = settings();
  s.staging_size = 2 * block_length;
  s.read_deadline = 200ms;
  auto& b = open(s);
  BOOST_TEST(stage(b, cached) == 0);
  BOOST_TEST(drain(b));

  store.puts_down = true;
  store.gets_down = true;
  BOOST_TEST(stage(b, block(3)) == 0);
  BOOST_TEST(stage(b, block(4)) == 0);
  BOOST_TEST(stage(b, block(5)) == ENOSPC);  // waits for an upload to fail, then gives up
  BOOST_TEST(b.stats().staging_blocks == 2u);
  BOOST_TEST(b.stats().last_error.find("the store is down") != std::string::npos);
  BOOST_TEST(!drain(b, 50ms));
  // What is local still reads; what is not fails once the deadline passed.
  BOOST_TEST((read(b, cached) == content_of(cached)));
  BOOST_TEST((read(b, block(3)) == content_of(block(3))));
  int err = 0;
  read(b, uncached, &err);
  BOOST_TEST(err == EIO);
  BOOST_TEST(store.block_gets >= 1);

  store.puts_down = false;
  store.gets_down = false;
  BOOST_TEST(drain(b));
  BOOST_TEST(fs::exists(object(block(3))));
  BOOST_TEST(fs::exists(object(block(4))));
  BOOST_TEST(b.stats().last_error == "");
  BOOST_TEST(stage(b, block(5)) == 0);
  BOOST_TEST((read(b, uncached) == content_of(uncached)));
  BOOST_TEST(drain(b));
}

// A refusal (409 LeaseNotHeld while a renewal is late) is not for good: the blocks stay staged,
// drain() says they are not up, and the uploads go through once the store takes them again.
BOOST_FIXTURE_TEST_CASE(a_refused_write_is_tried_again_until_the_store_takes_it, fixture) {
  store.refuse_puts = true;
  auto& b = open(settings());
  BOOST_TEST(stage(b, block(1)) == 0);
  BOOST_TEST(stage(b, block(2)) == 0);
  BOOST_TEST(!drain(b, 200ms));
  BOOST_TEST(b.stats().last_error.find("LeaseNotHeld") != std::string::npos);
  BOOST_TEST(b.stats().staging_blocks == 2u);
  run_until([&] { return store.put_file_calls > 4; });  // tried again, not given up
  BOOST_TEST((read(b, block(1)) == content_of(block(1))));
  store.refuse_puts = false;
  BOOST_TEST(drain(b));
  BOOST_TEST(b.stats().staging_blocks == 0u);
  BOOST_TEST(names_in(staging()).empty());
}

BOOST_FIXTURE_TEST_CASE(prefetch_fills_the_cache, fixture) {
  const block_ref r = block(5);
  put_object(r);
  auto& b = open(settings());
  b.prefetch(r);
  b.prefetch(r);  // already being fetched: nothing more
  run_until([&] { return b.stats().downloaded_blocks == 1u; });
  settle(b);
  BOOST_TEST(names_in(cache()) == std::vector<std::string>{"5_0_65536"});
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST((read(b, r) == content_of(r)));
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST(b.stats().cache_hits == 1u);
  b.prefetch(r);  // local: nothing
  b.prefetch(block(99));  // missing: never throws
  run_until([&] { return b.stats().last_error != ""; });
  BOOST_TEST(b.stats().last_error.find("99_0_65536") != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(concurrent_reads_of_a_missing_block_fetch_it_once, fixture) {
  const block_ref r = block(6);
  put_object(r);
  auto& b = open(settings());
  std::string one(r.length, '\0'), two(100, '\0'), three(r.length, '\0');
  run([&]() -> asio::awaitable<void> {
    int done = 0;
    auto reader = [&](std::uint64_t at, std::span<char> out) -> asio::awaitable<void> {
      co_await b.read(r, at, out);
      ++done;
    };
    asio::co_spawn(io, reader(0, one), test_support::fail_on);
    asio::co_spawn(io, reader(300, two), test_support::fail_on);
    asio::co_spawn(io, reader(0, three), test_support::fail_on);
    while (done < 3) {
      asio::steady_timer t(io, 1ms);
      co_await t.async_wait(asio::use_awaitable);
    }
  });
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST((one == content_of(r)));
  BOOST_TEST((three == content_of(r)));
  BOOST_TEST((two == content_of(r).substr(300, 100)));
  BOOST_TEST(b.stats().cache_misses == 3u);
  BOOST_TEST(b.stats().downloaded_blocks == 1u);
}

BOOST_FIXTURE_TEST_CASE(a_fetch_is_one_get_without_a_head_and_its_cache_file_follows, fixture) {
  const block_ref r = block(12);
  put_object(r);
  auto& b = open(settings());
  const int heads = store.heads;
  BOOST_TEST((read(b, r) == content_of(r)));
  BOOST_TEST(store.heads == heads);  // the block's length is in its name
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST(store.get_file_calls == 0);
  BOOST_TEST(names_in(cache()) == std::vector<std::string>{"12_0_65536"});
  BOOST_TEST(fs::file_size(cache() / "12_0_65536") == block_length);
  BOOST_TEST(b.stats().fetches_in_flight == 0u);
}

BOOST_FIXTURE_TEST_CASE(a_fetched_block_is_served_from_memory_when_its_cache_file_fails, fixture) {
  const block_ref r = block(13);
  put_object(r);
  auto& b = open(settings());
  fs::remove_all(cache());  // the cache file cannot be written
  std::string part(1000, '\0');
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await b.read(r, 4242, part); }) == 0);
  BOOST_TEST((part == content_of(r).substr(4242, 1000)));
  settle(b);
  BOOST_TEST(b.stats().last_error.find("13_0_65536") != std::string::npos);
  BOOST_TEST(b.stats().cache_bytes == 0u);
  // Not cached: read from the store again, and whole.
  fs::create_directories(cache());
  BOOST_TEST((read(b, r) == content_of(r)));
  BOOST_TEST(store.block_gets == 2);
  BOOST_TEST(names_in(cache()) == std::vector<std::string>{"13_0_65536"});
}

BOOST_FIXTURE_TEST_CASE(a_missing_block_is_eio_at_once, fixture) {
  auto s = settings();
  s.read_deadline = 3600s;  // would hang the test if it were retried
  auto& b = open(s);
  int err = 0;
  read(b, block(42), &err);
  BOOST_TEST(err == EIO);
  BOOST_TEST(store.block_gets == 1);
  BOOST_TEST(b.stats().last_error.find(sm::fs::block_key(block(42))) != std::string::npos);
}

BOOST_FIXTURE_TEST_CASE(a_block_the_cache_cannot_admit_is_read_by_range, fixture) {
  const block_ref r = block(8);
  put_object(r);
  auto s = settings();
  s.cache_size = 4096;  // smaller than a block
  auto& b = open(s);
  std::string part(1000, '\0');
  BOOST_TEST(run([&]() -> asio::awaitable<void> { co_await b.read(r, 777, part); }) == 0);
  BOOST_TEST((part == content_of(r).substr(777, 1000)));
  BOOST_TEST(store.get_calls == 1);
  BOOST_TEST(store.block_gets == 0);
  BOOST_TEST(names_in(cache()).empty());
}

BOOST_FIXTURE_TEST_CASE(staging_waits_for_uploads_while_they_progress, fixture) {
  auto s = settings();
  s.staging_size = block_length;  // one block at a time
  auto& b = open(s);
  for (std::uint32_t i = 0; i < 6; ++i) BOOST_TEST(stage(b, block(20, i)) == 0);
  BOOST_TEST(b.stats().staging_bytes <= block_length);
  BOOST_TEST(drain(b));
  for (std::uint32_t i = 0; i < 6; ++i) BOOST_TEST(fs::exists(object(block(20, i))));
  BOOST_TEST(b.stats().uploaded_blocks == 6u);
}

BOOST_FIXTURE_TEST_CASE(stop_leaves_staged_blocks_staged_and_ends_retries, fixture) {
  store.puts_down = true;
  auto& b = open(settings());
  BOOST_TEST(stage(b, block(30)) == 0);
  run_until([&] { return store.put_file_calls >= 1; });
  stop(b);  // returns although the upload would retry for ever
  BOOST_TEST(names_in(staging()) == std::vector<std::string>{"30_0_65536"});
  BOOST_TEST(b.stats().staging_blocks == 1u);
  opened.clear();
}

BOOST_FIXTURE_TEST_CASE(a_full_disk_fails_stage_with_enospc_and_leaves_no_partial_file, fixture) {
  auto& b = open(settings());
  const block_ref r = block(50);
  // The temporary file is /dev/full: every write to it fails with ENOSPC.
  fs::create_symlink("/dev/full", staging() / "50_0_65536.tmp");
  BOOST_TEST(stage(b, r) == ENOSPC);
  BOOST_TEST(names_in(staging()).empty());
  BOOST_TEST(b.stats().staging_bytes == 0u);
  BOOST_TEST(b.stats().last_error.find("50_0_65536") != std::string::npos);
  // Room again: the same block stages and goes up.
  BOOST_TEST(stage(b, r) == 0);
  BOOST_TEST(drain(b));
  BOOST_TEST(fs::exists(object(r)));
  BOOST_TEST(b.stats().last_error == "");
}

BOOST_FIXTURE_TEST_CASE(an_uploaded_block_the_cache_cannot_admit_leaves_staging, fixture) {
  auto s = settings();
  s.cache_size = 4096;
  auto& b = open(s);
  const block_ref r = block(60);
  BOOST_TEST(stage(b, r) == 0);
  BOOST_TEST(drain(b));
  BOOST_TEST(fs::exists(object(r)));
  BOOST_TEST(names_in(staging()).empty());
  BOOST_TEST(names_in(cache()).empty());
  BOOST_TEST(b.stats().cache_bytes == 0u);
  BOOST_TEST((read(b, r) == content_of(r)));
  BOOST_TEST(store.get_calls == 1);
}
