#define BOOST_TEST_MODULE secret
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

#include "base/secret.hpp"

using sm::constant_time_equal;
using namespace std::string_view_literals;

BOOST_AUTO_TEST_CASE(equal_strings) {
  BOOST_TEST(constant_time_equal("s3cret-token", "s3cret-token"));
  BOOST_TEST(constant_time_equal("a", "a"));
}

BOOST_AUTO_TEST_CASE(different_same_length) {
  BOOST_TEST(!constant_time_equal("s3cret-tokeN", "s3cret-token"));
  BOOST_TEST(!constant_time_equal("X3cret-token", "s3cret-token"));
  BOOST_TEST(!constant_time_equal("b", "a"));
}

BOOST_AUTO_TEST_CASE(different_lengths) {
  BOOST_TEST(!constant_time_equal("short", "much-longer-secret"));
  BOOST_TEST(!constant_time_equal("much-longer-secret", "short"));
}

BOOST_AUTO_TEST_CASE(prefixes_are_not_equal) {
  BOOST_TEST(!constant_time_equal("abc", "abcd"));
  BOOST_TEST(!constant_time_equal("abcd", "abc"));
  // A given value that is the expected one plus trailing NULs is still different.
  BOOST_TEST(!constant_time_equal("abc\0"sv, "abc"sv));
  BOOST_TEST(!constant_time_equal("abc"sv, "abc\0"sv));
}

BOOST_AUTO_TEST_CASE(empty) {
  BOOST_TEST(constant_time_equal("", ""));
  BOOST_TEST(!constant_time_equal("", "x"));
  BOOST_TEST(!constant_time_equal("x", ""));
}

BOOST_AUTO_TEST_CASE(embedded_nul_and_high_bytes) {
  BOOST_TEST(constant_time_equal("a\0b"sv, "a\0b"sv));
  BOOST_TEST(!constant_time_equal("a\0b"sv, "a\0c"sv));
  BOOST_TEST(constant_time_equal("\xff\x80"sv, "\xff\x80"sv));
  BOOST_TEST(!constant_time_equal("\xff\x80"sv, "\xff\x81"sv));
}

BOOST_AUTO_TEST_CASE(every_single_byte_difference_detected) {
  const std::string expected = "0123456789abcdef0123456789abcdef";
  for (std::size_t i = 0; i < expected.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string given = expected;
      given[i] = static_cast<char>(given[i] ^ (1 << bit));
      BOOST_TEST_INFO("byte " << i << " bit " << bit);
      BOOST_TEST(!constant_time_equal(given, expected));
    }
  }
}
