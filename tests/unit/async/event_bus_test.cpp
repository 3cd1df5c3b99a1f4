#define BOOST_TEST_MODULE async_event_bus
#include <boost/test/unit_test.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>

#include "async/event_bus.hpp"

using namespace std::chrono_literals;
using sm::event_bus;
using kind = event_bus::subscription::item::kind;

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
}  // namespace

BOOST_AUTO_TEST_CASE(events_arrive_in_order_even_if_published_before_waiting) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    event_bus bus(io.get_executor());
    auto sub = bus.subscribe();
    bus.publish("a");
    bus.publish("b");
    auto first = co_await sub->next(10s);
    auto second = co_await sub->next(10s);
    BOOST_TEST((first.what == kind::event && first.text == "a"));
    BOOST_TEST((second.what == kind::event && second.text == "b"));
  });
}

BOOST_AUTO_TEST_CASE(every_subscriber_gets_every_event) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    event_bus bus(io.get_executor());
    auto one = bus.subscribe(), two = bus.subscribe();
    bus.publish("x");
    BOOST_TEST((co_await one->next(10s)).text == "x");
    BOOST_TEST((co_await two->next(10s)).text == "x");
  });
}

BOOST_AUTO_TEST_CASE(close_delivers_what_was_queued_then_ends) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    event_bus bus(io.get_executor());
    auto sub = bus.subscribe();
    bus.publish("last words");
    bus.close();
    BOOST_TEST((co_await sub->next(10s)).text == "last words");
    BOOST_TEST(((co_await sub->next(10s)).what == kind::closed));
    BOOST_TEST(((co_await bus.subscribe()->next(10s)).what == kind::closed));
  });
}

BOOST_AUTO_TEST_CASE(a_subscriber_too_far_behind_is_cut_off_not_buffered) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    event_bus bus(io.get_executor(), 3);
    auto slow = bus.subscribe();
    for (int i = 0; i < 4; ++i) bus.publish(std::to_string(i));
    BOOST_TEST(((co_await slow->next(10s)).what == kind::closed));
    auto fresh = bus.subscribe();  // others are unaffected
    bus.publish("next");
    BOOST_TEST((co_await fresh->next(10s)).text == "next");
  });
}

BOOST_AUTO_TEST_CASE(heartbeat_when_nothing_happens) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    event_bus bus(io.get_executor());
    auto sub = bus.subscribe();
    BOOST_TEST(((co_await sub->next(1ms)).what == kind::heartbeat));
  });
}

BOOST_AUTO_TEST_CASE(a_waiting_subscriber_is_woken_by_publish) {
  run([](asio::io_context& io) -> asio::awaitable<void> {
    event_bus bus(io.get_executor());
    auto sub = bus.subscribe();
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          bus.publish("woken");
          co_return;
        },
        asio::detached);
    const auto item = co_await sub->next(1h);  // would time the test out if not woken
    BOOST_TEST(item.text == "woken");
  });
}
