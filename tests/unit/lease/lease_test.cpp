// The lease on an environment's prefix, against the file:// store: who may take it and when,
// renewal, fencing, release, the best-effort mode of a store without conditional writes, and
// races between two owners.
//
// Time to live is short here (hundreds of milliseconds), but no case needs the machine to be
// quick: waits poll with a generous deadline, and an assertion about what "now" must see is
// made only once the premise it rests on has been checked (a lease is live only if the time
// measured *after* the attempt is still before its expiry).
#define BOOST_TEST_MODULE lease
#include <boost/test/unit_test.hpp>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <nlohmann/json.hpp>

#include "async/offload.hpp"
#include "lease/lease.hpp"
#include "s3/object_store.hpp"
#include "support/rethrow.hpp"

namespace fs = std::filesystem;
namespace s3 = sm::s3;
using namespace std::chrono_literals;
using sm::lease::held_elsewhere;
using sm::lease::record;
using std::chrono::system_clock;

namespace {

// The offload worker (which runs the file store's blocking calls) is process-wide: joined
// after every case, so that no case leaves a thread behind.
struct join_offload_worker {
  ~join_offload_worker() { sm::stop_offload_worker(); }
};
BOOST_TEST_GLOBAL_FIXTURE(join_offload_worker);

// Long enough for any wait on a loaded machine; never reached when the lease works.
constexpr auto deadline = 20s;
// A lease that certainly outlives the case: "live" without any timing premise.
constexpr sm::duration long_ttl = 60s;

// A directory of the case's own, removed with whatever the case left in it, pass or fail.
struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "sm-lease-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw std::system_error(errno, std::generic_category(), "mkdtemp");
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

s3::store_config file_store_config(const fs::path& root, const std::string& key_prefix) {
  s3::store_config config;
  config.endpoint = "file://" + (root / "objects").string();
  config.bucket = "env-bucket";
  config.key_prefix = key_prefix;
  return config;
}

asio::awaitable<void> sleep_for(sm::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(d);
  std::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

// Polls `condition` every 10 ms until it holds; false once the deadline passed. (A template:
// the lambda becomes the parameter itself, no temporary std::function around the co_await.)
template <typename Condition>
asio::awaitable<bool> eventually(Condition condition) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > end) co_return false;
    co_await sleep_for(10ms);
  }
  co_return true;
}

// lease.json as the store has it now (nullopt: absent or not a record).
asio::awaitable<std::optional<record>> stored(s3::object_store& store) {
  const std::optional<s3::object_info> info = co_await store.head("lease.json");
  if (!info) co_return std::nullopt;
  const std::string text = co_await store.get("lease.json");
  co_return sm::lease::from_json(text);
}

// What one acquire() came to.
struct attempt {
  bool won = false;
  std::optional<record> holder;  // held_elsewhere: who holds it
  std::string error;             // anything else it threw
  system_clock::time_point ended;
};

asio::awaitable<attempt> try_acquire(sm::lease::lease& lease) {
  attempt result;
  try {
    co_await lease.acquire();
    result.won = true;
  } catch (const held_elsewhere& e) {
    result.holder = e.holder();
    result.error = e.what();
  } catch (const std::exception& e) {
    result.error = e.what();
  }
  result.ended = system_clock::now();
  co_return result;
}

record some_record(const std::string& owner, system_clock::time_point expires_at,
                   std::uint64_t counter) {
  record r;
  r.owner = owner;
  r.acquired_at = expires_at - 1s;
  r.expires_at = expires_at;
  r.counter = counter;
  return r;
}

// Another writer replaces lease.json (a takeover by a state-manager elsewhere), unconditionally.
asio::awaitable<void> overwrite(s3::object_store& store, const record& r) {
  const std::string text = sm::lease::to_json(r);
  co_await store.put("lease.json", text);
}

// A store in front of the file store, for what the file store never does by itself: refuse
// conditional writes (Swift's 501), be slow, fail, or lose the answer to a write that landed.
// Everything else passes through.
class test_store final : public s3::object_store {
 public:
  explicit test_store(s3::object_store& inner) : inner_(inner) {}

  bool refuse_conditional = false;  // conditional puts: 501 NotImplemented, as Swift answers
  sm::duration put_delay{0};        // every put waits this long before it reaches the store
  int fail_puts = 0;                // this many next puts: 503, nothing written
  int conflict_conditional = 0;     // this many next conditional puts: 409, nothing written
  int replay_conditional = 0;       // this many next conditional puts land, then are sent again
                                    // (a client's retry after the answer was lost): 412
  int puts_started = 0, puts_finished = 0;

  using s3::object_store::get;
  using s3::object_store::get_file;
  using s3::object_store::list;
  using s3::object_store::put;
  using s3::object_store::put_file;

  asio::awaitable<std::string> put(std::string key, std::string body,
                                   s3::put_options options) override {
    ++puts_started;
    struct count_finished {
      int& n;
      ~count_finished() { ++n; }
    } finished{puts_finished};
    const bool conditional = options.if_none_match || !options.if_match.empty();
    if (put_delay.count() > 0) {
      const sm::duration delay = put_delay;
      co_await sleep_for(delay);
    }
    if (fail_puts > 0) {
      --fail_puts;
      throw s3::error(503, "ServiceUnavailable", "test: the store is failing", key);
    }
    if (conditional && refuse_conditional) {
      throw s3::error(501, "NotImplemented", "test: conditional writes are not implemented", key);
    }
    if (conditional && conflict_conditional > 0) {
      --conflict_conditional;
      throw s3::error(409, "ConditionalRequestConflict", "test: a conflicting operation", key);
    }
    if (conditional && replay_conditional > 0) {
      --replay_conditional;
      co_await inner_.put(key, body, options);
      // The answer is lost; the client sends the same request again, which cannot hold now.
    }
    co_return co_await inner_.put(std::move(key), std::move(body), std::move(options));
  }
  asio::awaitable<std::string> put_file(std::string key, fs::path file,
                                        s3::put_options options) override {
    co_return co_await inner_.put_file(std::move(key), std::move(file), std::move(options));
  }
  asio::awaitable<std::string> get(std::string key, std::optional<s3::byte_range> range) override {
    co_return co_await inner_.get(std::move(key), range);
  }
  asio::awaitable<s3::object_info> get_file(std::string key, fs::path to,
                                            std::optional<s3::byte_range> range) override {
    co_return co_await inner_.get_file(std::move(key), std::move(to), range);
  }
  asio::awaitable<std::optional<s3::object_info>> head(std::string key) override {
    co_return co_await inner_.head(std::move(key));
  }
  asio::awaitable<void> remove(std::string key) override { co_await inner_.remove(std::move(key)); }
  asio::awaitable<void> remove_many(std::vector<std::string> keys) override {
    co_await inner_.remove_many(std::move(keys));
  }
  asio::awaitable<s3::list_page> list(std::string prefix, std::string delimiter,
                                      std::string continuation, unsigned max_keys) override {
    co_return co_await inner_.list(std::move(prefix), std::move(delimiter), std::move(continuation),
                                   max_keys);
  }
  asio::awaitable<std::string> copy(std::string from, std::string to) override {
    co_return co_await inner_.copy(std::move(from), std::move(to));
  }
  asio::awaitable<void> check() override { co_await inner_.check(); }

 private:
  s3::object_store& inner_;
};

// One case: its directory, its io_context, and the stores, which outlive every coroutine of
// the case (a renewal may still be on its way to the store when a lease is destroyed: the
// store must outlive that request, as the application's does).
struct scene {
  temp_dir tmp;
  asio::io_context io;
  std::vector<std::unique_ptr<s3::object_store>> stores;
  std::vector<std::unique_ptr<test_store>> wrappers;

  // A store object of its own (another machine's, say) over the same directory.
  s3::object_store& store(const std::string& key_prefix = "envs/1/") {
    stores.push_back(s3::make_store(io.get_executor(), file_store_config(tmp.path, key_prefix)));
    return *stores.back();
  }
  test_store& wrapped(s3::object_store& inner) {
    wrappers.push_back(std::make_unique<test_store>(inner));
    return *wrappers.back();
  }

  // Runs `body(executor)` until everything it started is done; an exception escaping it fails
  // the case with its message.
  template <typename Body>
  void run(Body body) {
    std::exception_ptr failure;
    bool finished = false;
    asio::co_spawn(io, body(io.get_executor()), [&](std::exception_ptr e) {
      failure = e;
      finished = true;
    });
    io.run();
    io.restart();
    sm::stop_offload_worker();
    test_support::fail_on(failure);
    BOOST_TEST(finished);
  }
};

// Counts the calls of a lease's `lost` callback.
struct lost_calls {
  int count = 0;
  std::string why;
  system_clock::time_point first_at{};
  std::function<void(std::string)> callback() {
    return [this](std::string reason) {
      if (count++ == 0) first_at = system_clock::now();
      why = std::move(reason);
    };
  }
};

std::string mode_of(const sm::lease::lease& lease) {
  return lease.status()["mode"].get<std::string>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// lease.json

BOOST_AUTO_TEST_CASE(record_round_trip) {
  record r;
  r.owner = "host-0123456789abcdef \"quoted\" caf\xc3\xa9";
  r.acquired_at = system_clock::time_point(std::chrono::milliseconds(1795000000123));
  r.expires_at = r.acquired_at + 30s;
  r.counter = 42;
  const std::string text = sm::lease::to_json(r);
  const std::optional<record> back = sm::lease::from_json(text);
  BOOST_TEST_REQUIRE(back.has_value());
  BOOST_TEST(back->owner == r.owner);
  BOOST_TEST((back->acquired_at == r.acquired_at));
  BOOST_TEST((back->expires_at == r.expires_at));
  BOOST_TEST(back->counter == 42u);
  // Readable by people and other tools too: RFC 3339 beside the milliseconds.
  const nlohmann::json j = nlohmann::json::parse(text);
  BOOST_TEST(j["expires_at"].get<std::string>() == "2026-11-18T11:07:10.123Z");
  BOOST_TEST(j["expires_at_ms"].get<std::int64_t>() == 1795000030123);
}

BOOST_AUTO_TEST_CASE(record_rejects_garbage) {
  const char* garbage[] = {
      "",
      "not json",
      "{\"owner\": \"a\", \"expires_at_ms\": 1",  // cut short
      "[]",
      "\"a string\"",
      "42",
      "null",
      "{}",
      "{\"owner\": \"a\"}",                  // no expiry
      "{\"expires_at_ms\": 1795000000000}",  // no owner
      "{\"owner\": 7, \"expires_at_ms\": 1795000000000}",
      "{\"owner\": \"a\", \"expires_at_ms\": \"1795000000000\"}",
      "{\"owner\": \"a\", \"expires_at_ms\": 1.5}",
      "{\"owner\": \"a\", \"expires_at\": \"2026-11-18T07:33:50Z\"}",  // the text form alone
  };
  for (const char* text : garbage) {
    BOOST_TEST_CONTEXT("text: " << text) {
      BOOST_TEST(!sm::lease::from_json(text).has_value());
    }
  }
  // The optional fields are optional; the required ones are enough.
  const auto minimal = sm::lease::from_json("{\"owner\": \"a\", \"expires_at_ms\": 5}");
  BOOST_TEST_REQUIRE(minimal.has_value());
  BOOST_TEST(minimal->owner == "a");
  BOOST_TEST(minimal->counter == 0u);
  BOOST_TEST(
      std::chrono::duration_cast<std::chrono::milliseconds>(minimal->expires_at.time_since_epoch())
          .count() == 5);
}

BOOST_AUTO_TEST_CASE(owner_id_is_kept) {
  temp_dir tmp;
  const std::string file = (tmp.path / "lease-owner").string();
  const std::string first = sm::lease::owner_id(file);
  BOOST_TEST(first.size() > 17u);
  BOOST_TEST(first[first.size() - 17] == '-');
  struct stat st {};
  BOOST_TEST_REQUIRE(::stat(file.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  // A restart in the same directory is the same owner; another directory is another owner.
  BOOST_TEST(sm::lease::owner_id(file) == first);
  BOOST_TEST(sm::lease::owner_id((tmp.path / "other-owner").string()) != first);
}

// ---------------------------------------------------------------------------------------------
// Who may take it.

BOOST_AUTO_TEST_CASE(first_owner_acquires) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    s3::object_store* store = &s.store("envs/1/");
    sm::lease::lease a(ex, *store, "owner-a", long_ttl);
    BOOST_TEST(!a.held());
    const auto before = system_clock::now();
    co_await a.acquire();
    BOOST_TEST(a.held());
    const nlohmann::json status = a.status();
    BOOST_TEST(status["held"].get<bool>());
    BOOST_TEST(status["mode"].get<std::string>() == "conditional");
    BOOST_TEST(status["owner"].get<std::string>() == "owner-a");
    BOOST_TEST(status["counter"].get<std::uint64_t>() == 1u);
    BOOST_TEST(status["expires_at"].is_string());
    BOOST_TEST(status["last_error"].is_null());
    BOOST_TEST(!status.contains("lost"));
    // In the store, under the key prefix: ours, for one time to live.
    BOOST_TEST(fs::exists(s.tmp.path / "objects/env-bucket/envs/1/lease.json"));
    const std::optional<record> there = co_await stored(*store);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
    BOOST_TEST(there->counter == 1u);
    BOOST_TEST((there->expires_at >= before + long_ttl - 1ms));
    BOOST_TEST((there->expires_at <= system_clock::now() + long_ttl));
  });
}

BOOST_AUTO_TEST_CASE(second_owner_is_refused_naming_the_holder) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    s3::object_store* store_a = &s.store("envs/1/");
    s3::object_store* store_b = &s.store("envs/1/");
    sm::lease::lease a(ex, *store_a, "owner-a", long_ttl);
    sm::lease::lease b(ex, *store_b, "owner-b", long_ttl);
    co_await a.acquire();
    const attempt tried = co_await try_acquire(b);
    BOOST_TEST(!tried.won);
    BOOST_TEST_REQUIRE(tried.holder.has_value());
    BOOST_TEST(tried.holder->owner == "owner-a");
    BOOST_TEST(tried.error.find("\"owner-a\"") != std::string::npos);
    BOOST_TEST(!b.held());
    BOOST_TEST(a.held());
    // Nothing was written: A's record is as A wrote it.
    const std::optional<record> there = co_await stored(*store_a);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
    BOOST_TEST(there->counter == 1u);
    // Another prefix is another environment: free.
    s3::object_store* other = &s.store("envs/2/");
    sm::lease::lease b2(ex, *other, "owner-b", long_ttl);
    co_await b2.acquire();
    BOOST_TEST(b2.held());
  });
}

BOOST_AUTO_TEST_CASE(same_owner_gets_its_lease_back_at_once) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    s3::object_store* store = &s.store("envs/1/");
    {
      sm::lease::lease first_run(ex, *store, "owner-a", long_ttl);
      co_await first_run.acquire();
      // Destroyed without release: the process died.
    }
    sm::lease::lease restarted(ex, *store, "owner-a", long_ttl);
    co_await restarted.acquire();  // no wait for the (60 s) time to live
    BOOST_TEST(restarted.held());
    BOOST_TEST(restarted.status()["counter"].get<std::uint64_t>() == 2u);
    const std::optional<record> there = co_await stored(*store);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
    BOOST_TEST(there->counter == 2u);
  });
}

BOOST_AUTO_TEST_CASE(garbage_in_lease_json_is_no_lease) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    s3::object_store* store = &s.store("envs/1/");
    co_await store->put("lease.json", "this is not a lease");
    sm::lease::lease a(ex, *store, "owner-a", long_ttl);
    co_await a.acquire();
    BOOST_TEST(a.held());
    const std::optional<record> there = co_await stored(*store);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
  });
}

BOOST_AUTO_TEST_CASE(takeover_only_after_expiry) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* store = &s.store("envs/1/");
    std::uint64_t a_counter = 0;
    {
      sm::lease::lease a(ex, *store, "owner-a", ttl);
      co_await a.acquire();
      a.keep([](std::string) {});
      // Renewed at least once, then A stops renewing (destroyed, no release: it died).
      const bool renewed =
          co_await eventually([&] { return a.status()["counter"].get<std::uint64_t>() >= 2; });
      BOOST_TEST_REQUIRE(renewed);
    }
    const std::optional<record> last = co_await stored(*store);
    BOOST_TEST_REQUIRE(last.has_value());
    BOOST_TEST(last->owner == "owner-a");
    a_counter = last->counter;

    sm::lease::lease b(ex, *store, "owner-b", ttl);
    int refusals = 0;
    attempt tried;
    const auto end = std::chrono::steady_clock::now() + deadline;
    for (;;) {
      tried = co_await try_acquire(b);
      if (tried.won || !tried.holder || std::chrono::steady_clock::now() > end) break;
      BOOST_TEST(tried.holder->owner == "owner-a");
      ++refusals;
      co_await sleep_for(20ms);
    }
    BOOST_TEST_REQUIRE(tried.won, "B never took the expired lease: " << tried.error);
    // Never before A's last expiry (the time measured after B's winning attempt is later than
    // the time B judged by, so this holds however slow the machine is).
    BOOST_TEST((tried.ended >= last->expires_at));
    BOOST_TEST_MESSAGE("refused " << refusals << " times before the takeover");
    const std::optional<record> there = co_await stored(*store);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-b");
    BOOST_TEST(there->counter > a_counter);
    BOOST_TEST(b.status()["counter"].get<std::uint64_t>() == there->counter);
  });
}

BOOST_AUTO_TEST_CASE(release_frees_it_at_once) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    s3::object_store* store_a = &s.store("envs/1/");
    s3::object_store* store_b = &s.store("envs/1/");
    sm::lease::lease a(ex, *store_a, "owner-a", long_ttl);
    sm::lease::lease b(ex, *store_b, "owner-b", long_ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    const attempt refused = co_await try_acquire(b);
    BOOST_TEST(!refused.won);

    co_await a.release();
    BOOST_TEST(!a.held());
    BOOST_TEST(!a.status()["held"].get<bool>());
    // Freed by an expired record that still names A.
    const std::optional<record> freed = co_await stored(*store_b);
    BOOST_TEST_REQUIRE(freed.has_value());
    BOOST_TEST(freed->owner == "owner-a");
    BOOST_TEST((freed->expires_at <= system_clock::now()));
    const attempt taken = co_await try_acquire(b);  // no wait for A's 60 s time to live
    BOOST_TEST(taken.won, taken.error);
    BOOST_TEST(b.previous_owner() == "owner-a");
    const std::optional<record> there = co_await stored(*store_b);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-b");
    BOOST_TEST(there->counter == 3u);  // A's acquisition, A's release, B's acquisition
    // A released it: that is no loss.
    co_await sleep_for(100ms);
    BOOST_TEST(lost.count == 0);
    BOOST_TEST(!a.status().contains("lost"));
    // Releasing again does nothing, and never frees B's lease.
    co_await a.release();
    const std::optional<record> still = co_await stored(*store_b);
    BOOST_TEST_REQUIRE(still.has_value());
    BOOST_TEST(still->owner == "owner-b");
    BOOST_TEST(still->counter == 3u);
  });
}

// ---------------------------------------------------------------------------------------------
// Renewal and fencing.

BOOST_AUTO_TEST_CASE(renewal_keeps_it_alive_past_its_ttl) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* store_a = &s.store("envs/1/");
    s3::object_store* store_b = &s.store("envs/1/");
    sm::lease::lease a(ex, *store_a, "owner-a", ttl);
    sm::lease::lease b(ex, *store_b, "owner-b", ttl);
    lost_calls lost;
    co_await a.acquire();
    const std::optional<record> first = co_await stored(*store_a);
    BOOST_TEST_REQUIRE(first.has_value());
    a.keep(lost.callback());

    // Renewed again and again: the record in the store comes to expire well past the first
    // time to live (four of them).
    std::optional<record> latest;
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      latest = co_await stored(*store_a);
      if (latest && latest->expires_at > first->expires_at + 4 * ttl) break;
      co_await sleep_for(50ms);
    }
    BOOST_TEST_REQUIRE(latest.has_value());
    BOOST_TEST((latest->expires_at > first->expires_at + 4 * ttl));
    BOOST_TEST(latest->owner == "owner-a");
    BOOST_TEST(latest->counter >= 4u);
    BOOST_TEST((latest->acquired_at == first->acquired_at));  // renewed, not re-acquired

    // Meanwhile nobody else gets it. Judged only where the premise holds: B's attempt ended
    // before the expiry of a record A wrote before it began.
    int judged = 0;
    bool stolen = false;
    for (int i = 0; i < 5 && !stolen; ++i) {
      const std::optional<record> before = co_await stored(*store_b);
      BOOST_TEST_REQUIRE(before.has_value());
      const attempt tried = co_await try_acquire(b);
      if (tried.ended < before->expires_at) {
        ++judged;
        BOOST_TEST(!tried.won);
        BOOST_TEST((tried.holder && tried.holder->owner == "owner-a"));
      }
      stolen = tried.won;
      co_await sleep_for(ttl / 3);
    }
    BOOST_WARN_MESSAGE(judged > 0, "the machine is too slow to judge B's attempts");
    if (!stolen) {
      BOOST_TEST(a.held());
      BOOST_TEST(lost.count == 0);
      BOOST_TEST(a.status()["last_error"].is_null());
    }
  });
}

BOOST_AUTO_TEST_CASE(fenced_when_another_writer_takes_it) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* store_a = &s.store("envs/1/");
    s3::object_store* intruder = &s.store("envs/1/");
    sm::lease::lease a(ex, *store_a, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    const bool renewed =
        co_await eventually([&] { return a.status()["counter"].get<std::uint64_t>() >= 2; });
    BOOST_TEST_REQUIRE(renewed);

    const record theirs = some_record("owner-x", system_clock::now() + 1h, 100);
    co_await overwrite(*intruder, theirs);
    const bool noticed = co_await eventually([&] { return lost.count > 0; });
    BOOST_TEST_REQUIRE(noticed);
    BOOST_TEST(!a.held());
    const nlohmann::json status = a.status();
    BOOST_TEST(!status["held"].get<bool>());
    BOOST_TEST_REQUIRE(status.contains("lost"));
    BOOST_TEST(status["lost"].get<std::string>().find("taken") != std::string::npos);
    BOOST_TEST(lost.why == status["lost"].get<std::string>());
    // Once: several renewal periods later, no second call and no more writes of ours.
    co_await sleep_for(3 * ttl);
    BOOST_TEST(lost.count == 1);
    const std::optional<record> there = co_await stored(*intruder);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-x");
    BOOST_TEST(there->counter == 100u);
    // Releasing a lost lease never frees the new owner's.
    co_await a.release();
    const std::optional<record> after = co_await stored(*intruder);
    BOOST_TEST_REQUIRE(after.has_value());
    BOOST_TEST(after->owner == "owner-x");
    BOOST_TEST((after->expires_at == there->expires_at));
  });
}

BOOST_AUTO_TEST_CASE(lost_once_it_expires_while_the_store_fails) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    sm::lease::lease a(ex, store, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    store.fail_puts = 1000000;
    const bool noticed = co_await eventually([&] { return lost.count > 0; });
    BOOST_TEST_REQUIRE(noticed);
    // Retried, and given up only once the lease had expired: not before.
    const std::optional<record> last = co_await stored(*files);
    BOOST_TEST_REQUIRE(last.has_value());
    BOOST_TEST((lost.first_at >= last->expires_at));
    BOOST_TEST(store.puts_started >= 2);
    BOOST_TEST(!a.held());
    BOOST_TEST(lost.why.find("expired") != std::string::npos);
    BOOST_TEST(a.status()["last_error"].is_string());
    co_await sleep_for(3 * ttl);
    BOOST_TEST(lost.count == 1);
  });
}

// The lease's store is a lane of its own: with the shared worker held by bulk work (a large
// file's copy into the file store, here a call that blocks until the case ends), renewals
// still complete. On the shared worker they would wait behind it, and the lease would expire.
BOOST_AUTO_TEST_CASE(renewals_complete_while_the_bulk_lane_is_busy) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 1500ms;
    std::unique_ptr<s3::object_store> own =
        sm::lease::make_store(ex, file_store_config(s.tmp.path, "envs/1/"), ttl);
    s3::object_store& bulk = s.store("envs/1/");
    sm::lease::lease a(ex, *own, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());

    // The shared worker is taken: by a call that returns only once the case lets it go.
    std::promise<void> let_go;
    std::shared_future<void> go = let_go.get_future().share();
    std::atomic<bool> busy{false};
    struct release_on_exit {
      std::promise<void>& p;
      ~release_on_exit() {
        try {
          p.set_value();
        } catch (const std::future_error&) {
        }
      }
    } guard{let_go};
    bool bulk_done = false;
    asio::co_spawn(
        ex,
        [&]() -> asio::awaitable<void> {
          co_await sm::offload([&] {
            busy = true;
            go.wait();
          });
          // And a bulk request queued behind it, as an upload's next object would be.
          co_await bulk.put("checkpoints/v1/files/big", std::string(1024, 'x'));
          bulk_done = true;
        },
        asio::detached);
    const bool taken = co_await eventually([&] { return busy.load(); });
    BOOST_TEST_REQUIRE(taken);

    const std::uint64_t before = a.status()["counter"].get<std::uint64_t>();
    const bool renewed = co_await eventually(
        [&] { return a.status()["counter"].get<std::uint64_t>() >= before + 3 || lost.count > 0; });
    BOOST_TEST(renewed);
    BOOST_TEST(lost.count == 0);
    BOOST_TEST(a.held());
    BOOST_TEST(!bulk_done);  // the bulk lane was busy all along
    let_go.set_value();
    const bool drained = co_await eventually([&] { return bulk_done; });
    BOOST_TEST(drained);
    co_await a.release();
  });
}

// The writers stop at the expiry minus the safety margin, ahead of the loss: `near` is called
// once, with the lease still held but no longer writable, before `lost`.
BOOST_AUTO_TEST_CASE(writers_are_told_to_stop_at_the_margin_before_the_loss) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 1500ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    sm::lease::lease a(ex, store, "owner-a", ttl);
    BOOST_TEST((a.safety_margin() == ttl / 3));  // 2 s is more than a third of 1.5 s
    lost_calls lost;
    int near = 0;
    bool held_when_near = false, writable_when_near = true;
    system_clock::time_point near_at{};
    int lost_before_near = -1;
    a.on_expiry_near([&] {
      if (near++ == 0) {
        near_at = system_clock::now();
        held_when_near = a.held();
        writable_when_near = a.writable();
        lost_before_near = lost.count;
      }
    });
    co_await a.acquire();
    BOOST_TEST(a.writable());
    a.keep(lost.callback());
    store.fail_puts = 1000000;
    const bool noticed = co_await eventually([&] { return lost.count > 0; });
    BOOST_TEST_REQUIRE(noticed);
    BOOST_TEST(near == 1);
    BOOST_TEST(lost_before_near == 0);
    BOOST_TEST(held_when_near);
    BOOST_TEST(!writable_when_near);
    const std::optional<record> last = co_await stored(*files);
    BOOST_TEST_REQUIRE(last.has_value());
    // Not before the margin of the last record written (a timer never fires early).
    BOOST_TEST((near_at >= last->expires_at - a.safety_margin()));
    BOOST_TEST((near_at <= lost.first_at));
    BOOST_TEST(!a.writable());
    co_await sleep_for(3 * ttl);
    BOOST_TEST(near == 1);
  });
}

// The margin is a third of a short time to live, a sixth of a long one, and never under 2 s
// where the time to live allows.
BOOST_AUTO_TEST_CASE(safety_margin_by_time_to_live) {
  scene s;
  s3::object_store& files = s.store("envs/1/");
  const auto margin = [&](sm::duration ttl) {
    return sm::lease::lease(s.io.get_executor(), files, "owner-a", ttl).safety_margin();
  };
  BOOST_TEST((margin(30s) == 5s));
  BOOST_TEST((margin(60s) == 10s));
  BOOST_TEST((margin(9s) == 2s));
  BOOST_TEST((margin(3s) == 1s));
}

// A renewal that succeeds after the margin was reached makes the lease writable again; while the
// store works, the margin is never reached.
BOOST_AUTO_TEST_CASE(a_late_renewal_makes_it_writable_again) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 1200ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    sm::lease::lease a(ex, store, "owner-a", ttl);
    lost_calls lost;
    int near = 0;
    a.on_expiry_near([&] { ++near; });
    co_await a.acquire();
    a.keep(lost.callback());
    store.fail_puts = 1000000;
    const bool reached = co_await eventually([&] { return near > 0 || lost.count > 0; });
    BOOST_TEST_REQUIRE(reached);
    if (lost.count > 0) co_return;  // a machine stalled past the whole margin: nothing to judge
    BOOST_TEST(!a.writable());
    store.fail_puts = 0;
    const bool renewed = co_await eventually([&] { return a.writable() || lost.count > 0; });
    BOOST_TEST(renewed);
    if (lost.count > 0) co_return;  // the retry came after the expiry: a loss, rightly
    BOOST_TEST(a.held());
    BOOST_TEST(near == 1);
  });
}

BOOST_AUTO_TEST_CASE(renewal_survives_a_failing_store_until_it_recovers) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 1s;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    sm::lease::lease a(ex, store, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    store.fail_puts = 1;  // one renewal fails, the retry works
    const bool renewed = co_await eventually(
        [&] { return a.status()["counter"].get<std::uint64_t>() >= 3 || lost.count > 0; });
    BOOST_TEST_REQUIRE(renewed);
    BOOST_TEST(store.fail_puts == 0);
    // No one else wrote: even a late renewal (after a stall) is still ours, so never lost.
    BOOST_TEST(lost.count == 0);
    BOOST_TEST(a.held());
    BOOST_TEST(a.status()["last_error"].is_null());
  });
}

// A renewal whose write landed but whose answer was lost: the client's retry is refused (412,
// the ETag changed: by our own write). That is no takeover.
BOOST_AUTO_TEST_CASE(renewal_with_a_lost_answer_is_no_takeover) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    sm::lease::lease a(ex, store, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    store.replay_conditional = 1;
    const bool replayed = co_await eventually([&] { return store.replay_conditional == 0; });
    BOOST_TEST_REQUIRE(replayed);
    // Two more renewals after it: the lease goes on.
    const std::uint64_t counter = a.status()["counter"].get<std::uint64_t>();
    const bool renewed = co_await eventually([&] {
      return a.status()["counter"].get<std::uint64_t>() >= counter + 2 || lost.count > 0;
    });
    BOOST_TEST_REQUIRE(renewed);
    BOOST_TEST(lost.count == 0, "lost: " << lost.why);
    BOOST_TEST(a.held());
    const std::optional<record> there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
  });
}

BOOST_AUTO_TEST_CASE(acquire_with_a_lost_answer_or_a_conflict) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    // The create landed, its answer was lost and the retry refused: ours all the same.
    store.replay_conditional = 1;
    sm::lease::lease a(ex, store, "owner-a", long_ttl);
    co_await a.acquire();
    BOOST_TEST(a.held());
    BOOST_TEST(store.replay_conditional == 0);
    co_await a.release();
    // S3's 409 ConditionalRequestConflict (a concurrent conditional write): try again.
    store.conflict_conditional = 1;
    sm::lease::lease b(ex, store, "owner-b", long_ttl);
    const attempt tried = co_await try_acquire(b);
    BOOST_TEST(tried.won, tried.error);
    BOOST_TEST(store.conflict_conditional == 0);
    const std::optional<record> there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-b");
  });
}

// release() while a renewal is on its way to the store: the lease is still freed (not refused
// for the ETag the renewal changed), and that is no loss.
BOOST_AUTO_TEST_CASE(release_during_a_renewal) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    sm::lease::lease a(ex, store, "owner-a", ttl);
    sm::lease::lease b(ex, *files, "owner-b", long_ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    store.put_delay = 300ms;
    const int before = store.puts_started;
    const bool in_flight = co_await eventually([&] { return store.puts_started > before; });
    BOOST_TEST_REQUIRE(in_flight);
    co_await a.release();
    BOOST_TEST(!a.held());
    BOOST_TEST(store.puts_started == store.puts_finished);
    const std::optional<record> there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
    BOOST_TEST((there->expires_at <= system_clock::now()));
    const attempt taken = co_await try_acquire(b);  // B's time to live is a minute: no waiting
    BOOST_TEST(taken.won, taken.error);
    co_await sleep_for(3 * ttl);
    BOOST_TEST(lost.count == 0, "lost: " << lost.why);
    BOOST_TEST(!a.status().contains("lost"));
    BOOST_TEST(b.held());
  });
}

// A lease destroyed while its renewal is on its way to the store (the owner went away without
// releasing): nothing touches it afterwards (run under -Db_sanitize=address to see a use after
// free), its callback is never called, and the record ages out.
BOOST_AUTO_TEST_CASE(destroyed_during_a_renewal) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    lost_calls lost;
    {
      auto a = std::make_unique<sm::lease::lease>(ex, store, "owner-a", ttl);
      co_await a->acquire();
      a->keep(lost.callback());
      store.put_delay = 200ms;
      const int before = store.puts_started;
      const bool in_flight = co_await eventually([&] { return store.puts_started > before; });
      BOOST_TEST_REQUIRE(in_flight);
      a.reset();
    }
    const bool landed =
        co_await eventually([&] { return store.puts_finished == store.puts_started; });
    BOOST_TEST_REQUIRE(landed);
    const int puts = store.puts_started;
    co_await sleep_for(3 * ttl);
    BOOST_TEST(store.puts_started == puts);  // no renewal after the destruction
    BOOST_TEST(lost.count == 0);
  });
}

// ---------------------------------------------------------------------------------------------
// A store without conditional writes (Swift's s3api answers 501).

BOOST_AUTO_TEST_CASE(best_effort_when_conditional_writes_are_not_implemented) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store_a = s.wrapped(*files);
    test_store& store_b = s.wrapped(*files);
    store_a.refuse_conditional = store_b.refuse_conditional = true;
    sm::lease::lease a(ex, store_a, "owner-a", ttl);
    sm::lease::lease b(ex, store_b, "owner-b", long_ttl);
    lost_calls lost;
    co_await a.acquire();
    BOOST_TEST(a.held());
    BOOST_TEST(mode_of(a) == "best-effort");
    BOOST_TEST(a.status()["counter"].get<std::uint64_t>() == 1u);
    std::optional<record> there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");

    // Still a lease: a live one is refused to another owner, and renewal keeps it alive.
    a.keep(lost.callback());
    for (int i = 0; i < 3; ++i) {
      const std::optional<record> before = co_await stored(*files);
      BOOST_TEST_REQUIRE(before.has_value());
      const attempt tried = co_await try_acquire(b);
      if (tried.ended < before->expires_at) {
        BOOST_TEST(!tried.won);
        BOOST_TEST((tried.holder && tried.holder->owner == "owner-a"));
      }
      if (tried.won) co_return;  // a machine stalled past A's time to live: nothing to judge
      co_await sleep_for(ttl / 2);
    }
    const bool renewed =
        co_await eventually([&] { return a.status()["counter"].get<std::uint64_t>() >= 3; });
    BOOST_TEST(renewed);
    BOOST_TEST(lost.count == 0);
    BOOST_TEST(mode_of(a) == "best-effort");

    // Released: an expired record that still names A (never removed), so another owner takes
    // it at once and knows that A held it before: its own local state may be stale.
    co_await a.release();
    BOOST_TEST(!a.held());
    there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-a");
    BOOST_TEST((there->expires_at <= system_clock::now()));
    const attempt taken = co_await try_acquire(b);
    BOOST_TEST(taken.won, taken.error);
    BOOST_TEST(mode_of(b) == "best-effort");
    BOOST_TEST(b.previous_owner() == "owner-a");
    there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-b");
  });
}

BOOST_AUTO_TEST_CASE(best_effort_fencing) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    store.refuse_conditional = true;
    sm::lease::lease a(ex, store, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    BOOST_TEST(mode_of(a) == "best-effort");
    a.keep(lost.callback());
    const record theirs = some_record("owner-x", system_clock::now() + 1h, 100);
    co_await overwrite(*files, theirs);
    const bool noticed = co_await eventually([&] { return lost.count > 0; });
    BOOST_TEST_REQUIRE(noticed);
    BOOST_TEST(!a.held());
    BOOST_TEST(a.status()["lost"].get<std::string>().find("owner-x") != std::string::npos);
    co_await sleep_for(3 * ttl);
    BOOST_TEST(lost.count == 1);
    // Not overwritten by A's renewal, and not removed by A's release.
    co_await a.release();
    const std::optional<record> there = co_await stored(*files);
    BOOST_TEST_REQUIRE(there.has_value());
    BOOST_TEST(there->owner == "owner-x");
  });
}

BOOST_AUTO_TEST_CASE(best_effort_lost_when_lease_json_is_removed) {
  scene s;
  s.run([&](asio::any_io_executor ex) -> asio::awaitable<void> {
    const sm::duration ttl = 600ms;
    s3::object_store* files = &s.store("envs/1/");
    test_store& store = s.wrapped(*files);
    store.refuse_conditional = true;
    sm::lease::lease a(ex, store, "owner-a", ttl);
    lost_calls lost;
    co_await a.acquire();
    a.keep(lost.callback());
    co_await files->remove("lease.json");
    const bool noticed = co_await eventually([&] { return lost.count > 0; });
    BOOST_TEST_REQUIRE(noticed);
    BOOST_TEST(!a.held());
    BOOST_TEST(lost.why.find("removed") != std::string::npos, lost.why);
    // Not written back by a renewal.
    co_await sleep_for(3 * ttl);
    BOOST_TEST(lost.count == 1);
    const std::optional<s3::object_info> info = co_await files->head("lease.json");
    BOOST_TEST(!info.has_value());
  });
}

// ---------------------------------------------------------------------------------------------
// Races: two owners at once, on two threads (two machines), each with its own store object.

namespace {

struct race_result {
  bool won = false;
  std::string holder;  // held_elsewhere: its owner
  std::string error;   // anything else
};

race_result race_one(const fs::path& root, const std::string& prefix, const std::string& owner,
                     std::latch& start) {
  race_result result;
  asio::io_context io;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto store = s3::make_store(io.get_executor(), file_store_config(root, prefix));
        sm::lease::lease lease(io.get_executor(), *store, owner, long_ttl);
        start.arrive_and_wait();
        try {
          co_await lease.acquire();
          result.won = true;
        } catch (const held_elsewhere& e) {
          result.holder = e.holder().owner;
        } catch (const std::exception& e) {
          result.error = e.what();
        }
      },
      [&](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          result.error = x.what();
        }
      });
  io.run();
  return result;
}

}  // namespace

BOOST_AUTO_TEST_CASE(exactly_one_wins_a_race) {
  constexpr int rounds = 50;
  int wins_a = 0, wins_b = 0;
  for (int round = 0; round < rounds; ++round) {
    scene s;
    const std::string prefix = "race/" + std::to_string(round) + "/";
    s3::object_store* store = &s.store(prefix);
    // Odd rounds race for an expired lease (both take over with If-Match), even rounds for a
    // free one (both create with If-None-Match).
    const bool expired = round % 2 == 1;
    if (expired) {
      s.run([&](asio::any_io_executor) -> asio::awaitable<void> {
        const record old = some_record("owner-old", system_clock::now() - 1s, 7);
        co_await overwrite(*store, old);
      });
    }
    std::latch start(2);
    race_result a, b;
    std::thread thread_a([&] { a = race_one(s.tmp.path, prefix, "owner-a", start); });
    std::thread thread_b([&] { b = race_one(s.tmp.path, prefix, "owner-b", start); });
    thread_a.join();
    thread_b.join();
    sm::stop_offload_worker();
    BOOST_TEST_CONTEXT("round " << round << (expired ? " (expired lease)" : " (free lease)")) {
      BOOST_TEST(a.error.empty(), a.error);
      BOOST_TEST(b.error.empty(), b.error);
      BOOST_TEST(a.won + b.won == 1);
      const race_result& loser = a.won ? b : a;
      BOOST_TEST(loser.holder == (a.won ? "owner-a" : "owner-b"));
      std::optional<record> there;
      s.run(
          [&](asio::any_io_executor) -> asio::awaitable<void> { there = co_await stored(*store); });
      BOOST_TEST_REQUIRE(there.has_value());
      BOOST_TEST(there->owner == (a.won ? "owner-a" : "owner-b"));
      BOOST_TEST(there->counter == (expired ? 8u : 1u));
    }
    wins_a += a.won;
    wins_b += b.won;
  }
  BOOST_TEST_MESSAGE("owner-a won " << wins_a << ", owner-b won " << wins_b << " of " << rounds);
}
