// The lease's own lane over S3 (lease::make_store): with every request slot of the main store
// taken by bulk uploads that the server holds (a checkpoint's 8 parts on a slow link), a
// lease write still goes through at once. Against a scripted fake S3 (the project's own HTTP
// server on loopback; no signature check).
#define BOOST_TEST_MODULE lease_lane
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "async/offload.hpp"
#include "http/server.hpp"
#include "lease/lease.hpp"
#include "s3/object_store.hpp"
#include "support/rethrow.hpp"

using namespace sm;
using namespace std::chrono_literals;

namespace {

constexpr auto deadline = 10s;  // far beyond a healthy answer; the bulk is held longer

// A fake S3 that answers lease.json at once and holds every other PUT until `let_go` is
// cancelled: bulk uploads that take all the main store's request slots.
struct fake_s3 {
  asio::io_context& io;
  asio::steady_timer let_go{io, asio::steady_timer::time_point::max()};
  int bulk_arrived = 0, lease_arrived = 0;
  bool released = false;  // once let go, later bulk requests are answered at once

  void release() {
    released = true;
    let_go.cancel();
  }
  std::unique_ptr<http::server> server;
  unsigned short port = 0;

  explicit fake_s3(asio::io_context& context) : io(context) {
    server = std::make_unique<http::server>(
        io.get_executor(), http::server_limits{},
        [this](const http::request& r) -> asio::awaitable<http::response> {
          http::response answer;
          answer.status = 200;
          answer.content_type = "application/xml";
          answer.headers.emplace_back("ETag", "\"e1\"");
          if (r.path.find("lease.json") != std::string::npos) {
            ++lease_arrived;
            co_return answer;
          }
          ++bulk_arrived;
          if (!released) {
            std::error_code ec;
            co_await let_go.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          }
          co_return answer;
        });
    port = server->listen({asio::ip::make_address("127.0.0.1"), 0}).port();
    asio::co_spawn(io, server->run(), asio::detached);
  }
};

s3::store_config config_for(unsigned short port) {
  s3::store_config c;
  c.endpoint = "http://127.0.0.1:" + std::to_string(port);
  c.bucket = "bkt";
  c.access_key = "key";
  c.secret_key = "secret";
  return c;
}

asio::awaitable<void> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  std::error_code ec;
  co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

template <typename Condition>
asio::awaitable<bool> eventually(Condition condition) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > end) co_return false;
    co_await sleep_for(10ms);
  }
  co_return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_lease_write_passes_the_bulk_uploads_that_hold_every_slot) {
  asio::io_context io;
  fake_s3 fake(io);
  const s3::store_config config = config_for(fake.port);
  std::unique_ptr<s3::object_store> bulk = s3::make_store(io.get_executor(), config);
  std::unique_ptr<s3::object_store> lane =
      lease::make_store(io.get_executor(), config, std::chrono::seconds(30));
  int bulk_done = 0;
  bool lease_written = false, all_held = false, bulk_waiting = false;
  std::exception_ptr failure;
  // The deadline for the whole case: a lease write stuck behind the bulk never returns by
  // itself (the bulk is held until it does).
  asio::steady_timer watchdog(io, deadline);
  watchdog.async_wait([&](std::error_code ec) {
    if (!ec) fake.release();
  });
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // Every slot of the main store, and one more request queued behind them.
        const unsigned uploads = config.max_parallel + 1;
        for (unsigned i = 0; i < uploads; ++i) {
          asio::co_spawn(
              io,
              [&, i]() -> asio::awaitable<void> {
                co_await bulk->put("checkpoints/v1/files/part-" + std::to_string(i),
                                   std::string(4096, 'x'));
                ++bulk_done;
              },
              asio::detached);
        }
        all_held = co_await eventually(
            [&] { return fake.bulk_arrived == static_cast<int>(config.max_parallel); });
        // The ninth waits for a slot: the main store is saturated.
        co_await sleep_for(100ms);
        bulk_waiting = fake.bulk_arrived == static_cast<int>(config.max_parallel);

        const std::string key = "lease.json";
        co_await lane->put(key, std::string("{}"));
        lease_written = bulk_done == 0;  // written while every bulk upload was still held

        fake.release();
        co_await eventually([&] { return bulk_done == static_cast<int>(uploads); });
        watchdog.cancel();
        co_await fake.server->stop(0ms);
        io.stop();
      },
      [&](std::exception_ptr e) {
        failure = e;
        fake.release();
      });
  io.run();
  sm::stop_offload_worker();
  test_support::fail_on(failure);
  BOOST_TEST(all_held);
  BOOST_TEST(bulk_waiting);
  BOOST_TEST(fake.lease_arrived == 1);
  BOOST_TEST(lease_written);
}
