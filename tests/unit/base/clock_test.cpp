#define BOOST_TEST_MODULE clock
#include <boost/test/unit_test.hpp>

#include <chrono>

#include "base/clock.hpp"

using namespace std::chrono;
using sm::format_http_date;
using sm::format_rfc3339;
using sm::wall_time;

namespace {
// 2026-11-22T13:00:00Z, a Sunday.
wall_time sample() {
  return wall_time(sys_days(year(2026) / November / 22) + 13h);
}
}  // namespace

BOOST_AUTO_TEST_CASE(rfc3339_whole_seconds) {
  BOOST_TEST(format_rfc3339(sample()) == "2026-11-22T13:00:00Z");
  BOOST_TEST(format_rfc3339(wall_time{}) == "1970-01-01T00:00:00Z");
}

BOOST_AUTO_TEST_CASE(rfc3339_drops_fraction_without_millis) {
  BOOST_TEST(format_rfc3339(sample() + 999ms) == "2026-11-22T13:00:00Z");
}

BOOST_AUTO_TEST_CASE(rfc3339_with_millis) {
  BOOST_TEST(format_rfc3339(sample() + 123ms, true) == "2026-11-22T13:00:00.123Z");
  BOOST_TEST(format_rfc3339(sample() + 7ms, true) == "2026-11-22T13:00:00.007Z");
  BOOST_TEST(format_rfc3339(sample(), true) == "2026-11-22T13:00:00.000Z");
  BOOST_TEST(format_rfc3339(sample() + 59s + 999ms, true) == "2026-11-22T13:00:59.999Z");
}

BOOST_AUTO_TEST_CASE(http_date) {
  BOOST_TEST(format_http_date(sample()) == "Sun, 22 Nov 2026 13:00:00 GMT");
  BOOST_TEST(format_http_date(wall_time{}) == "Thu, 01 Jan 1970 00:00:00 GMT");
  BOOST_TEST(format_http_date(wall_time(sys_days(year(2024) / February / 29) + 23h + 59min +
                                        59s)) == "Thu, 29 Feb 2024 23:59:59 GMT");
}
