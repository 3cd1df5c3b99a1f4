#define BOOST_TEST_MODULE percent
#include <boost/test/unit_test.hpp>

#include <string>

#include "base/percent.hpp"

using namespace std::string_literals;
using sm::percent_decode;
using sm::percent_encode;
using sm::plus_sign;

BOOST_AUTO_TEST_CASE(encodes_all_but_the_unreserved) {
  BOOST_TEST(percent_encode("AZaz09-._~") == "AZaz09-._~");
  BOOST_TEST(percent_encode("a b") == "a%20b");
  BOOST_TEST(percent_encode("a+b=c&d") == "a%2Bb%3Dc%26d");
  BOOST_TEST(percent_encode("*'()!") == "%2A%27%28%29%21");
  BOOST_TEST(percent_encode("caf\xc3\xa9") == "caf%C3%A9");  // bytes, upper-case hex
  BOOST_TEST(percent_encode("\0\xff"s) == "%00%FF");
  BOOST_TEST(percent_encode("a/b c") == "a%2Fb%20c");
  BOOST_TEST(percent_encode("a/b c", "/") == "a/b%20c");
  BOOST_TEST(percent_encode("") == "");
}

BOOST_AUTO_TEST_CASE(decodes_once) {
  BOOST_TEST(percent_decode("a%20b").value() == "a b");
  BOOST_TEST(percent_decode("%2f%2F").value() == "//");
  BOOST_TEST(percent_decode("%2541").value() == "%41");
  BOOST_TEST(percent_decode("a%00b").value() == "a\0b"s);
  BOOST_TEST(percent_decode("").value() == "");
}

BOOST_AUTO_TEST_CASE(plus_is_a_space_only_in_forms) {
  BOOST_TEST(percent_decode("a+b").value() == "a+b");
  BOOST_TEST(percent_decode("a+b%2B", plus_sign::space).value() == "a b+");
}

BOOST_AUTO_TEST_CASE(refuses_broken_escapes) {
  for (const char* bad : {"%", "%4", "a%4", "%g0", "%0g", "%%41"}) {
    BOOST_TEST_INFO(bad);
    BOOST_TEST(!percent_decode(bad).has_value());
  }
}

BOOST_AUTO_TEST_CASE(round_trips_every_byte) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  BOOST_TEST(percent_decode(percent_encode(all)).value() == all);
  BOOST_TEST(percent_decode(percent_encode(all), plus_sign::space).value() == all);
}
