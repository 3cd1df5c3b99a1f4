#define BOOST_TEST_MODULE supervisor_restart_schedule
#include <boost/test/unit_test.hpp>

#include "supervisor/supervised_process.hpp"

using namespace std::chrono_literals;
using sm::supervisor::process_settings;
using sm::supervisor::restart_schedule;
using time_point = std::chrono::steady_clock::time_point;

namespace {
const time_point t0{};
long ms(std::optional<sm::duration> d) {
  return d ? long(d->count()) : -1;
}
}  // namespace

BOOST_AUTO_TEST_CASE(fixed_delay_without_backoff) {
  process_settings s;
  s.restart_delay = 250ms;
  restart_schedule r(s);
  for (int i = 0; i < 5; ++i) BOOST_TEST(ms(r.after_exit(t0 + i * 1s, 0ms)) == 250);
}

BOOST_AUTO_TEST_CASE(backoff_doubles_up_to_the_maximum) {
  process_settings s;
  s.restart_delay = 100ms;
  s.backoff_max = 1s;
  restart_schedule r(s);
  const long expected[] = {100, 200, 400, 800, 1000, 1000};
  for (long e : expected) BOOST_TEST(ms(r.after_exit(t0, 10ms)) == e);
}

BOOST_AUTO_TEST_CASE(backoff_starts_at_100ms_when_the_delay_is_zero) {
  process_settings s;
  s.restart_delay = 0ms;
  s.backoff_max = 300ms;
  restart_schedule r(s);
  BOOST_TEST(ms(r.after_exit(t0, 0ms)) == 100);
  BOOST_TEST(ms(r.after_exit(t0, 0ms)) == 200);
  BOOST_TEST(ms(r.after_exit(t0, 0ms)) == 300);
}

BOOST_AUTO_TEST_CASE(a_long_enough_run_resets_the_backoff) {
  process_settings s;
  s.restart_delay = 100ms;
  s.backoff_max = 2s;
  restart_schedule r(s);
  r.after_exit(t0, 0ms);
  r.after_exit(t0, 0ms);
  BOOST_TEST(ms(r.after_exit(t0, 0ms)) == 400);
  BOOST_TEST(ms(r.after_exit(t0, 2s)) == 100);  // it ran as long as the maximum
  BOOST_TEST(ms(r.after_exit(t0, 1999ms)) == 200);
}

BOOST_AUTO_TEST_CASE(breaker_opens_at_the_nth_exit_within_the_window) {
  process_settings s;
  s.restart_delay = 0ms;
  s.restart_max = 3;
  s.restart_window = 10s;
  restart_schedule r(s);
  BOOST_TEST(r.after_exit(t0, 0ms).has_value());
  BOOST_TEST(r.after_exit(t0 + 1s, 0ms).has_value());
  BOOST_TEST(!r.after_exit(t0 + 2s, 0ms).has_value());
}

BOOST_AUTO_TEST_CASE(exits_leave_the_window) {
  process_settings s;
  s.restart_max = 3;
  s.restart_window = 10s;
  restart_schedule r(s);
  // Two exits, then a long quiet spell: they no longer count.
  r.after_exit(t0, 0ms);
  r.after_exit(t0 + 1s, 0ms);
  BOOST_TEST(r.after_exit(t0 + 11s, 0ms).has_value());
  BOOST_TEST(r.after_exit(t0 + 12s, 0ms).has_value());
  BOOST_TEST(!r.after_exit(t0 + 13s, 0ms).has_value());  // 11s, 12s, 13s: three in 10 s
}

BOOST_AUTO_TEST_CASE(no_breaker_when_max_is_zero) {
  process_settings s;
  restart_schedule r(s);
  for (int i = 0; i < 1000; ++i) BOOST_TEST_REQUIRE(r.after_exit(t0, 0ms).has_value());
}

// The state machine's table: the lives a process can have, and nothing else.
BOOST_AUTO_TEST_CASE(transition_table) {
  using p = sm::supervisor::supervised_process;
  using enum p::state;
  // A normal life, a restart, a stop during the restart delay, a failure.
  BOOST_TEST(p::allowed(pending, starting));
  BOOST_TEST(p::allowed(starting, running));
  BOOST_TEST(p::allowed(running, restarting));
  BOOST_TEST(p::allowed(restarting, starting));
  BOOST_TEST(p::allowed(restarting, stopping));
  BOOST_TEST(p::allowed(running, stopping));
  BOOST_TEST(p::allowed(stopping, stopped));
  BOOST_TEST(p::allowed(starting, restarting));  // exec failed, will retry
  BOOST_TEST(p::allowed(running, failed));
  BOOST_TEST(p::allowed(pending, stopped));  // stopped before it ever started
  // Health: running and degraded go both ways; a degraded process can exit or be stopped.
  BOOST_TEST(p::allowed(running, degraded));
  BOOST_TEST(p::allowed(degraded, running));
  BOOST_TEST(p::allowed(degraded, restarting));
  BOOST_TEST(p::allowed(degraded, stopping));
  BOOST_TEST(!p::allowed(starting, degraded));  // not running yet: nothing to degrade
  BOOST_TEST(!p::allowed(degraded, starting));
  // Failed is final; stopped only goes back to pending (rearm after an intentional stop); no
  // skipping the start; no running without starting.
  for (auto to : {pending, starting, running, degraded, restarting, stopping, stopped, failed}) {
    BOOST_TEST(p::allowed(stopped, to) == (to == pending));
    BOOST_TEST(!p::allowed(failed, to));
  }
  BOOST_TEST(!p::allowed(pending, running));
  BOOST_TEST(!p::allowed(restarting, running));
  BOOST_TEST(!p::allowed(stopping, running));
  BOOST_TEST(!p::allowed(stopping, restarting));
}
