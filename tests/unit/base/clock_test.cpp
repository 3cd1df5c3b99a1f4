#define BOOST_TEST_MODULE clock
#include <boost/test/unit_test.hpp>

#include <chrono>

#include "base/clock.hpp"

using namespace std::chrono;
using sm::format_http_date;
using sm::format_rfc3339;
using sm::parse_rfc3339;
using sm::wall_time;

namespace {
// 2026-11-22T13:00:00Z, a Sunday.
wall_time sample() {
  return wall_time(sys_days(year(2026) / November / 22) + 13h);
}
// 2026-11-22 at hour:minute:second UTC, from its parts.
wall_time utc(int hour, int minute, int second) {
  return wall_time(sys_days(year(2026) / November / 22)) + hours(hour) + minutes(minute) +
         seconds(second);
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

BOOST_AUTO_TEST_CASE(rfc3339_parsed) {
  BOOST_TEST((parse_rfc3339("2026-11-22T13:00:00Z") == utc(13, 0, 0)));
  BOOST_TEST((parse_rfc3339("2026-11-22t13:00:00z") == utc(13, 0, 0)));
  BOOST_TEST((parse_rfc3339("2026-11-22 13:00:00Z") == utc(13, 0, 0)));
  BOOST_TEST((parse_rfc3339("2026-11-22T14:30:00+01:30") == utc(13, 0, 0)));
  BOOST_TEST((parse_rfc3339("2026-11-22T08:00:00-05:00") == utc(13, 0, 0)));
  BOOST_TEST((parse_rfc3339("2026-11-22T13:00:00.25Z") == utc(13, 0, 0) + 250ms));
  BOOST_TEST((parse_rfc3339("2026-11-22T13:00:00.123456789123Z") == utc(13, 0, 0) + 123456789ns));
  BOOST_TEST((parse_rfc3339("2026-11-22T12:59:60Z") == utc(13, 0, 0)));  // leap second
  BOOST_TEST((parse_rfc3339("2024-02-29T00:00:00Z").has_value()));
  for (const char* bad :
       {"", "2026-11-22", "2026-11-22T13:00Z", "2026-11-22T13:00:00", "2026-11-22T13:00:00.Z",
        "2026-11-22T13:00:00+0100", "2026-11-22T13:00:00Z ", "2026-13-01T00:00:00Z",
        "2025-02-29T00:00:00Z", "2026-11-22T24:00:00Z", "2026-11-22T13:60:00Z",
        "2026-11-22T13:00:00+24:00", "26-11-22T13:00:00Z", "yesterday", "1899-12-31T23:59:59Z",
        "2201-01-01T00:00:00Z", "9999-11-22T13:00:00Z"}) {
    BOOST_TEST_INFO(bad);
    BOOST_TEST(!parse_rfc3339(bad).has_value());
  }
}

BOOST_AUTO_TEST_CASE(rfc3339_round_trip) {
  const wall_time t = sample() + 123ms;
  BOOST_TEST((parse_rfc3339(format_rfc3339(t, true)) == t));
  BOOST_TEST((parse_rfc3339(format_rfc3339(t)) == sample()));
}
