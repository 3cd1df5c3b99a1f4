#define BOOST_TEST_MODULE response_parser
#include <boost/test/unit_test.hpp>

#include <optional>
#include <string>

#include "http/response_parser.hpp"

using sm::http::parse_response;
using sm::http::parsed_response;

BOOST_AUTO_TEST_CASE(content_length_body) {
  const std::optional<parsed_response> r = parse_response(
      "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
      "content-length: 7\r\n\r\n{\"a\":1}extra");
  BOOST_REQUIRE(r);
  BOOST_TEST(r->status == 404);
  BOOST_TEST(r->body == "{\"a\":1}");
}

BOOST_AUTO_TEST_CASE(chunked_body) {
  const std::optional<parsed_response> r = parse_response(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nA;x=y\r\n0123456789\r\n"
      "0\r\nTrailer: 1\r\n\r\n");
  BOOST_REQUIRE(r);
  BOOST_TEST(r->status == 200);
  BOOST_TEST(r->body == "abc0123456789");
}

// Without a length the body runs to the close; a reason phrase is optional.
BOOST_AUTO_TEST_CASE(body_up_to_the_end) {
  const std::optional<parsed_response> r = parse_response("HTTP/1.0 200\r\n\r\nto the end");
  BOOST_REQUIRE(r);
  BOOST_TEST(r->status == 200);
  BOOST_TEST(r->body == "to the end");
}

BOOST_AUTO_TEST_CASE(malformed_or_cut_short) {
  for (const char* bad :
       {"", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
        "HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "garbage\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nx", "HTTP/1.1 200OK\r\n\r\n"}) {
    BOOST_TEST(!parse_response(bad), bad);
  }
}
