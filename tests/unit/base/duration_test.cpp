#define BOOST_TEST_MODULE duration
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include "base/duration.hpp"

using namespace std::chrono_literals;
using sm::duration;
using sm::format_duration;
using sm::parse_duration;

BOOST_AUTO_TEST_CASE(accepts_each_unit) {
  BOOST_TEST(parse_duration("250ms").value().count() == 250);
  BOOST_TEST(parse_duration("1s").value().count() == 1000);
  BOOST_TEST(parse_duration("2m").value().count() == 120'000);
  BOOST_TEST(parse_duration("1h").value().count() == 3'600'000);
  BOOST_TEST(parse_duration("0ms").value().count() == 0);
  BOOST_TEST(parse_duration("0s").value().count() == 0);
}

BOOST_AUTO_TEST_CASE(accepts_bare_zero) {
  auto d = parse_duration("0");
  BOOST_REQUIRE(d.has_value());
  BOOST_TEST(d->count() == 0);
}

BOOST_AUTO_TEST_CASE(accepts_compound) {
  BOOST_TEST(parse_duration("1h30m").value() == duration(90min));
  BOOST_TEST(parse_duration("1m30s").value() == duration(90s));
  BOOST_TEST(parse_duration("1s500ms").value().count() == 1500);
  BOOST_TEST(parse_duration("2h3m4s5ms").value().count() == 2 * 3'600'000 + 3 * 60'000 + 4000 + 5);
}

BOOST_AUTO_TEST_CASE(ms_is_not_minutes_then_s) {
  // "1ms" must be one millisecond, never "1m" followed by a stray "s".
  BOOST_TEST(parse_duration("1ms").value().count() == 1);
  BOOST_TEST(parse_duration("10m").value().count() == 600'000);
}

BOOST_AUTO_TEST_CASE(rejects_malformed) {
  for (const char* bad :
       {"",    "5",  "-1s",  "1x",    "s",   "ms", "1.5s", " 1s", "1s ", "1 s",
        "+1s", "1S", "1sec", "0x10s", "1s5", "h1", "00",   "1d",  "\t",  "1s\n"}) {
    BOOST_TEST_INFO("input: \"" << bad << "\"");
    BOOST_TEST(!parse_duration(bad).has_value());
  }
}

BOOST_AUTO_TEST_CASE(rejects_overflow) {
  BOOST_TEST(!parse_duration("99999999999999999999999999s").has_value());
  BOOST_TEST(!parse_duration("9223372036854775807ms").has_value());
  BOOST_TEST(!parse_duration("9223372036854775807h").has_value());
  BOOST_TEST(!parse_duration("18446744073709551616ms").has_value());
  BOOST_TEST(!parse_duration("5000000000000h").has_value());
  // Many large parts whose sum overflows even though each part alone might not.
  std::string many;
  for (int i = 0; i < 100; ++i) many += "100000000h";
  BOOST_TEST(!parse_duration(many).has_value());
}

BOOST_AUTO_TEST_CASE(large_but_reasonable_values_parse) {
  BOOST_TEST(parse_duration("8760h").value() == duration(std::chrono::hours(8760)));
  BOOST_TEST(parse_duration("86400000ms").value().count() == 86'400'000);
}

BOOST_AUTO_TEST_CASE(format_shortest_exact) {
  BOOST_TEST(format_duration(1500ms) == "1500ms");
  BOOST_TEST(format_duration(90'000ms) == "90s");
  BOOST_TEST(format_duration(0ms) == "0s");
  BOOST_TEST(format_duration(1s) == "1s");
  BOOST_TEST(format_duration(2min) == "2m");
  BOOST_TEST(format_duration(1h) == "1h");
  BOOST_TEST(format_duration(90min) == "90m");
  BOOST_TEST(format_duration(250ms) == "250ms");
}

BOOST_AUTO_TEST_CASE(format_round_trips) {
  for (long long ms : {0LL, 1LL, 999LL, 1000LL, 1001LL, 59'999LL, 60'000LL, 61'000LL, 3'600'000LL,
                       5'400'000LL, 3'600'001LL, 86'400'000LL, 123'456'789LL}) {
    const duration d{ms};
    const std::string text = format_duration(d);
    BOOST_TEST_INFO("ms=" << ms << " text=" << text);
    auto back = parse_duration(text);
    BOOST_REQUIRE(back.has_value());
    BOOST_TEST(back->count() == ms);
  }
}
