#define BOOST_TEST_MODULE async_gate
#include <boost/test/unit_test.hpp>

#include <optional>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "async/gate.hpp"

using namespace std::chrono_literals;
using sm::gate;

namespace {
// Runs `body` as a coroutine on a fresh executor until it finishes.
template <class F>
void run(F body) {
  asio::io_context io;
  bool finished = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        co_await body(io);
        finished = true;
      },
      asio::detached);
  io.run();
  BOOST_TEST(finished);
}

asio::awaitable<void> sleep_for(asio::io_context& io, std::chrono::milliseconds d) {
  asio::steady_timer t(io, d);
  std::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}
}  // namespace

BOOST_AUTO_TEST_CASE(passes_are_counted_and_a_closed_gate_admits_nothing) {
  asio::io_context io;
  gate g(io.get_executor());
  {
    std::optional<gate::pass> a = g.enter();
    std::optional<gate::pass> b = g.enter();
    BOOST_TEST(a.has_value());
    BOOST_TEST(g.held() == 2u);
    gate::pass moved = std::move(*b);  // a moved pass is still one pass
    b.reset();
    BOOST_TEST(g.held() == 2u);
  }
  BOOST_TEST(g.held() == 0u);
  g.close("released");
  g.close("second reason");
  BOOST_TEST(!g.enter().has_value());
  BOOST_TEST(g.closed_why() == "released");  // the first reason stays
  BOOST_TEST(!g.cancelled());
  g.cancel("lost");
  BOOST_TEST(g.cancelled());
  BOOST_TEST(g.closed_why() == "released");
}

BOOST_AUTO_TEST_CASE(wait_idle_returns_when_the_last_pass_goes) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    gate g(io.get_executor());
    BOOST_TEST(co_await g.wait_idle(0ms));  // nothing held: at once
    std::optional<gate::pass> held = g.enter();
    // A bound that passes first: false, and the pass is still held.
    BOOST_TEST(!co_await g.wait_idle(20ms));
    // Released by other work while we wait with a bound far away: true, well before it.
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await sleep_for(io, 10ms);
          held.reset();
        },
        asio::detached);
    const auto started = std::chrono::steady_clock::now();
    BOOST_TEST(co_await g.wait_idle(std::chrono::hours(24 * 365)));
    BOOST_TEST((std::chrono::steady_clock::now() - started < std::chrono::hours(1)));
    BOOST_TEST(g.held() == 0u);
  });
}

BOOST_AUTO_TEST_CASE(a_waiter_woken_while_new_work_entered_keeps_waiting) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    gate g(io.get_executor());
    std::optional<gate::pass> first = g.enter();
    std::optional<gate::pass> second;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await sleep_for(io, 5ms);
          first.reset();      // the count reaches 0 and wakes the waiter...
          second.emplace(g);  // ...but new work enters before it runs
          co_await sleep_for(io, 20ms);
          second.reset();
        },
        asio::detached);
    BOOST_TEST(co_await g.wait_idle(std::chrono::hours(1)));
    BOOST_TEST(!second.has_value());  // it returned only once the second pass went too
  });
}
