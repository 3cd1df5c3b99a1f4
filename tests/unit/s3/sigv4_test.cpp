#define BOOST_TEST_MODULE s3_sigv4
#include <boost/test/unit_test.hpp>

#include "s3/sigv4.hpp"

using namespace sm::s3;

// SigV4's URI encoding: the unreserved set stays; everything else, including the characters
// curl 7.88 leaves alone (* ' ( ) !) and every UTF-8 byte, is %XX in upper case.
BOOST_AUTO_TEST_CASE(uri_encoding) {
  BOOST_TEST(uri_encode("AZaz09-._~", false) == "AZaz09-._~");
  BOOST_TEST(uri_encode("a b", false) == "a%20b");
  BOOST_TEST(uri_encode("a+b=c", false) == "a%2Bb%3Dc");
  BOOST_TEST(uri_encode("*'()!", false) == "%2A%27%28%29%21");
  BOOST_TEST(uri_encode("dir/sub/file", true) == "dir/sub/file");
  BOOST_TEST(uri_encode("dir/sub/file", false) == "dir%2Fsub%2Ffile");
  BOOST_TEST(uri_encode("caf\xc3\xa9", true) == "caf%C3%A9");
  BOOST_TEST(uri_encode("a:b@c", true) == "a%3Ab%40c");
  BOOST_TEST(uri_encode("%", true) == "%25");
  BOOST_TEST(uri_encode(std::string("\0x", 2), true) == "%00x");
}

BOOST_AUTO_TEST_CASE(query_is_sorted_and_encoded) {
  BOOST_TEST(canonical_query({}) == "");
  // ?uploads (no value) becomes "uploads=", as SigV4 wants.
  BOOST_TEST(canonical_query({{"uploads", ""}}) == "uploads=");
  BOOST_TEST(canonical_query({{"prefix", "a b/c"}, {"list-type", "2"}, {"delimiter", "/"}}) ==
             "delimiter=%2F&list-type=2&prefix=a%20b%2Fc");
  BOOST_TEST(canonical_query({{"partNumber", "10"}, {"uploadId", "x+y="}}) ==
             "partNumber=10&uploadId=x%2By%3D");
  // Sorted by the encoded names (byte order: upper case before lower case).
  BOOST_TEST(canonical_query({{"b", "1"}, {"B", "2"}, {"a", "3"}}) == "B=2&a=3&b=1");
  // Same name: by value.
  BOOST_TEST(canonical_query({{"k", "2"}, {"k", "1"}}) == "k=1&k=2");
}

BOOST_AUTO_TEST_CASE(endpoints) {
  endpoint_parts e;
  BOOST_TEST(split_endpoint("http://127.0.0.1:9000", e));
  BOOST_TEST(e.scheme == "http");
  BOOST_TEST(e.host == "127.0.0.1:9000");
  BOOST_TEST(split_endpoint("https://s3.eu-west-1.amazonaws.com/", e));
  BOOST_TEST(e.host == "s3.eu-west-1.amazonaws.com");
  BOOST_TEST(!split_endpoint("ftp://host", e));
  BOOST_TEST(!split_endpoint("http://", e));
  BOOST_TEST(!split_endpoint("http://host/path", e));
  BOOST_TEST(!split_endpoint("http://user@host", e));
  BOOST_TEST(!split_endpoint("host:9000", e));
}

BOOST_AUTO_TEST_CASE(urls) {
  endpoint_parts e{"http", "127.0.0.1:9000"};
  BOOST_TEST(object_url(e, "bkt", false, "env/lease.json") ==
             "http://127.0.0.1:9000/bkt/env/lease.json");
  BOOST_TEST(object_url(e, "bkt", false, "a b+(1)*.txt") ==
             "http://127.0.0.1:9000/bkt/a%20b%2B%281%29%2A.txt");
  BOOST_TEST(object_url(e, "bkt", false, "", {{"list-type", "2"}, {"prefix", "db/"}}) ==
             "http://127.0.0.1:9000/bkt/?list-type=2&prefix=db%2F");
  BOOST_TEST(object_url(e, "bkt", false, "") == "http://127.0.0.1:9000/bkt");
  BOOST_TEST(object_url(e, "bkt", true, "k", {{"uploads", ""}}) ==
             "http://bkt.127.0.0.1:9000/k?uploads=");
  BOOST_TEST(sigv4_param("us-east-1") == "aws:amz:us-east-1:s3");
}
