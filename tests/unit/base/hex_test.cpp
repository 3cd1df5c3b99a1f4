#define BOOST_TEST_MODULE hex
#include <boost/test/unit_test.hpp>

#include <string>

#include "base/hex.hpp"

using sm::hex;
using sm::unhex;

BOOST_AUTO_TEST_CASE(round_trips_every_byte_value) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  const std::string text = hex(all);
  BOOST_TEST(text.size() == 512u);
  BOOST_TEST(text.substr(0, 6) == "000102");
  BOOST_TEST(text.substr(508) == "feff");
  BOOST_TEST(unhex(text).value() == all);
}

BOOST_AUTO_TEST_CASE(empty_is_empty) {
  BOOST_TEST(hex("").empty());
  BOOST_TEST(unhex("").value().empty());
}

BOOST_AUTO_TEST_CASE(accepts_upper_case) {
  BOOST_TEST(unhex("FFa0").value() == std::string("\xff\xa0"));
}

BOOST_AUTO_TEST_CASE(refuses_what_is_not_hex) {
  BOOST_TEST(!unhex("abc").has_value());  // odd length
  BOOST_TEST(!unhex("zz").has_value());
  BOOST_TEST(!unhex("0g").has_value());
  BOOST_TEST(!unhex(" 0").has_value());
}
