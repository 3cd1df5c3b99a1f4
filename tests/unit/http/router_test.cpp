#define BOOST_TEST_MODULE router
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

#include <asio/awaitable.hpp>

#include "http/router.hpp"

using sm::http::path_params;
using sm::http::percent_decode;
using sm::http::request;
using sm::http::response;
using sm::http::router;
using kind = router::match::kind;
using namespace std::string_view_literals;

namespace sm::http {
std::ostream& operator<<(std::ostream& os, router::match::kind k) {
  switch (k) {
    case router::match::kind::found:
      return os << "found";
    case router::match::kind::not_found:
      return os << "not_found";
    case router::match::kind::method_not_allowed:
      return os << "method_not_allowed";
    case router::match::kind::bad_path:
      return os << "bad_path";
  }
  return os << "kind(" << static_cast<int>(k) << ")";
}
}  // namespace sm::http

namespace {

// Each handler is told apart by the status it would answer; find() never runs it.
sm::http::handler answering(int status) {
  return [status](const request&, const path_params&) -> asio::awaitable<response> {
    response r;
    r.status = status;
    co_return r;
  };
}

struct fixture {
  router r;
  // Remember which handler each route got, by address of the stored std::function.
  fixture() {
    r.add("GET", "/", answering(1));
    r.add("GET", "/config", answering(2));
    r.add("POST", "/config", answering(3));
    r.add("POST", "/checkpoint", answering(4));
    r.add("GET", "/checkpoints", answering(5));
    r.add("GET", "/checkpoints/{id}", answering(6));
    r.add("DELETE", "/checkpoints/{id}", answering(7));
    r.add("GET", "/a/{x}/b/{y}", answering(8));
    r.add("GET", "/healthz", answering(9));
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(find, fixture)

BOOST_AUTO_TEST_CASE(literal_routes) {
  const auto m = r.find("GET", "/config");
  BOOST_REQUIRE(m.outcome == kind::found);
  BOOST_REQUIRE(m.target != nullptr);
  BOOST_TEST(m.params.empty());
  const auto post = r.find("POST", "/config");
  BOOST_REQUIRE(post.outcome == kind::found);
  // GET and POST on the same path are different handlers.
  BOOST_TEST(post.target != m.target);
  BOOST_TEST(r.find("GET", "/healthz").outcome == kind::found);
}

BOOST_AUTO_TEST_CASE(root) {
  const auto m = r.find("GET", "/");
  BOOST_REQUIRE(m.outcome == kind::found);
  BOOST_TEST(m.params.empty());
  BOOST_TEST(m.target != r.find("GET", "/config").target);
}

BOOST_AUTO_TEST_CASE(same_route_same_target) {
  BOOST_TEST(r.find("GET", "/checkpoints/a").target == r.find("GET", "/checkpoints/b").target);
  BOOST_TEST(r.find("GET", "/checkpoints/a").target != r.find("DELETE", "/checkpoints/a").target);
  BOOST_TEST(r.find("GET", "/checkpoints/a").target != r.find("GET", "/checkpoints").target);
}

BOOST_AUTO_TEST_CASE(parameter) {
  const auto m = r.find("GET", "/checkpoints/test1");
  BOOST_REQUIRE(m.outcome == kind::found);
  BOOST_REQUIRE_EQUAL(m.params.size(), 1u);
  BOOST_TEST(m.params[0] == "test1");
}

BOOST_AUTO_TEST_CASE(parameters_in_order) {
  const auto m = r.find("GET", "/a/first/b/second");
  BOOST_REQUIRE(m.outcome == kind::found);
  BOOST_REQUIRE_EQUAL(m.params.size(), 2u);
  BOOST_TEST(m.params[0] == "first");
  BOOST_TEST(m.params[1] == "second");
}

BOOST_AUTO_TEST_CASE(parameter_percent_decoded) {
  const auto m = r.find("GET", "/checkpoints/a%20b%2Fc%2e");
  BOOST_REQUIRE(m.outcome == kind::found);
  BOOST_REQUIRE_EQUAL(m.params.size(), 1u);
  BOOST_TEST(m.params[0] == "a b/c.");
  // '+' is not a space in a path.
  const auto plus = r.find("GET", "/checkpoints/a+b");
  BOOST_REQUIRE(plus.outcome == kind::found);
  BOOST_TEST(plus.params[0] == "a+b");
}

BOOST_AUTO_TEST_CASE(parameter_must_not_be_empty) {
  const auto m = r.find("GET", "/checkpoints/");
  BOOST_TEST(m.outcome != kind::found);
  BOOST_TEST(r.find("GET", "/a//b/y").outcome != kind::found);
}

BOOST_AUTO_TEST_CASE(literal_segments_compare_decoded) {
  const auto m = r.find("GET", "/%63onfig");  // %63 = 'c'
  BOOST_TEST(m.outcome == kind::found);
  BOOST_TEST(m.target == r.find("GET", "/config").target);
}

BOOST_AUTO_TEST_CASE(encoded_slash_never_splits_a_literal) {
  r.add("GET", "/x/y", answering(10));
  // "/x%2Fy" is one segment "x/y": it must not reach the "/x/y" route.
  const auto m = r.find("GET", "/x%2Fy");
  BOOST_TEST(m.outcome != kind::found);
  BOOST_TEST((m.outcome == kind::not_found || m.outcome == kind::bad_path));
}

BOOST_AUTO_TEST_CASE(not_found) {
  for (std::string_view path : {"/nope"sv, "/configs"sv, "/confi"sv, "/CONFIG"sv,
                                "/checkpoints/a/b"sv, "/a/1/b"sv, "/a/1/c/2"sv, "//config"sv}) {
    BOOST_TEST_INFO("path " << path);
    const auto m = r.find("GET", path);
    BOOST_TEST(m.outcome == kind::not_found);
    BOOST_TEST(m.target == nullptr);
    BOOST_TEST(m.allow.empty());
  }
}

BOOST_AUTO_TEST_CASE(empty_router_not_found) {
  router empty;
  BOOST_TEST(empty.find("GET", "/").outcome == kind::not_found);
}

BOOST_AUTO_TEST_CASE(method_not_allowed_lists_methods) {
  const auto m = r.find("DELETE", "/config");
  BOOST_REQUIRE(m.outcome == kind::method_not_allowed);
  BOOST_TEST(m.target == nullptr);
  BOOST_TEST(m.allow == "GET, HEAD, POST");
}

BOOST_AUTO_TEST_CASE(method_not_allowed_post_only) {
  const auto m = r.find("GET", "/checkpoint");
  BOOST_REQUIRE(m.outcome == kind::method_not_allowed);
  BOOST_TEST(m.allow == "POST");
  // HEAD is only allowed where GET is.
  const auto head = r.find("HEAD", "/checkpoint");
  BOOST_REQUIRE(head.outcome == kind::method_not_allowed);
  BOOST_TEST(head.allow == "POST");
}

BOOST_AUTO_TEST_CASE(method_not_allowed_with_parameter) {
  const auto m = r.find("PUT", "/checkpoints/x");
  BOOST_REQUIRE(m.outcome == kind::method_not_allowed);
  BOOST_TEST(m.allow == "DELETE, GET, HEAD");
}

BOOST_AUTO_TEST_CASE(methods_are_case_sensitive) {
  const auto m = r.find("get", "/config");
  BOOST_TEST(m.outcome == kind::method_not_allowed);
}

BOOST_AUTO_TEST_CASE(head_matches_get) {
  const auto head = r.find("HEAD", "/checkpoints/abc");
  BOOST_REQUIRE(head.outcome == kind::found);
  BOOST_TEST(head.target == r.find("GET", "/checkpoints/abc").target);
  BOOST_REQUIRE_EQUAL(head.params.size(), 1u);
  BOOST_TEST(head.params[0] == "abc");
}

BOOST_AUTO_TEST_CASE(explicit_head_route_is_used) {
  router rr;
  rr.add("HEAD", "/x", answering(1));
  rr.add("GET", "/x", answering(2));
  const auto m = rr.find("HEAD", "/x");
  BOOST_REQUIRE(m.outcome == kind::found);
  BOOST_TEST(m.target != rr.find("GET", "/x").target);
  const auto other = rr.find("POST", "/x");
  BOOST_REQUIRE(other.outcome == kind::method_not_allowed);
  BOOST_TEST(other.allow == "GET, HEAD");  // no duplicate HEAD
}

BOOST_AUTO_TEST_CASE(bad_path_malformed_escapes) {
  for (std::string_view path : {"/checkpoints/%"sv, "/checkpoints/%2"sv, "/checkpoints/%zz"sv,
                                "/checkpoints/%g0"sv, "/checkpoints/a%0"sv, "/%"sv, "/config%"sv}) {
    BOOST_TEST_INFO("path " << path);
    const auto m = r.find("GET", path);
    BOOST_TEST(m.outcome == kind::bad_path);
    BOOST_TEST(m.target == nullptr);
  }
}

BOOST_AUTO_TEST_CASE(bad_path_nul) {
  BOOST_TEST(r.find("GET", "/checkpoints/a%00b").outcome == kind::bad_path);
  BOOST_TEST(r.find("GET", "/checkpoints/%00").outcome == kind::bad_path);
  BOOST_TEST(r.find("GET", "/config%00").outcome == kind::bad_path);
}

BOOST_AUTO_TEST_CASE(bad_path_not_absolute) {
  BOOST_TEST(r.find("GET", "").outcome == kind::bad_path);
  BOOST_TEST(r.find("GET", "config").outcome == kind::bad_path);
  BOOST_TEST(r.find("OPTIONS", "*").outcome == kind::bad_path);
}

BOOST_AUTO_TEST_CASE(trailing_slash_is_a_different_path) {
  // router.cpp: "/x/" and "/x" differ; the router does not guess they are one resource.
  BOOST_TEST(r.find("GET", "/config/").outcome == kind::not_found);
  BOOST_TEST(r.find("GET", "/checkpoints/").outcome == kind::not_found);
  BOOST_TEST(r.find("GET", "/checkpoints/x/").outcome == kind::not_found);
  router rr;
  rr.add("GET", "/dir/", answering(1));
  BOOST_TEST(rr.find("GET", "/dir/").outcome == kind::found);
  BOOST_TEST(rr.find("GET", "/dir").outcome == kind::not_found);
}

BOOST_AUTO_TEST_CASE(first_matching_route_wins) {
  router rr;
  rr.add("GET", "/checkpoints/latest", answering(1));
  rr.add("GET", "/checkpoints/{id}", answering(2));
  const auto literal = rr.find("GET", "/checkpoints/latest");
  const auto param = rr.find("GET", "/checkpoints/other");
  BOOST_REQUIRE(literal.outcome == kind::found);
  BOOST_REQUIRE(param.outcome == kind::found);
  BOOST_TEST(literal.target != param.target);
  BOOST_TEST(literal.params.empty());
  BOOST_REQUIRE_EQUAL(param.params.size(), 1u);
  BOOST_TEST(param.params[0] == "other");
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(decode)

BOOST_AUTO_TEST_CASE(plain_and_escapes) {
  std::string out;
  BOOST_TEST(percent_decode("abc", out));
  BOOST_TEST(out == "abc");
  BOOST_TEST(percent_decode("a%20b", out));
  BOOST_TEST(out == "a b");
  BOOST_TEST(percent_decode("%41%42%43", out));
  BOOST_TEST(out == "ABC");
  BOOST_TEST(percent_decode("%2f%2F", out));
  BOOST_TEST(out == "//");
  BOOST_TEST(percent_decode("%e2%82%ac", out));
  BOOST_TEST(out == "\xe2\x82\xac");
  BOOST_TEST(percent_decode("%ff", out));
  BOOST_TEST(out == "\xff");
  BOOST_TEST(percent_decode("100%25", out));
  BOOST_TEST(out == "100%");
  BOOST_TEST(percent_decode("%2541", out));  // decoded once only
  BOOST_TEST(out == "%41");
}

BOOST_AUTO_TEST_CASE(plus_left_alone) {
  std::string out;
  BOOST_TEST(percent_decode("a+b", out));
  BOOST_TEST(out == "a+b");
}

BOOST_AUTO_TEST_CASE(empty) {
  std::string out = "stale";
  BOOST_TEST(percent_decode("", out));
  BOOST_TEST(out.empty());
}

BOOST_AUTO_TEST_CASE(output_replaced_not_appended) {
  std::string out = "stale";
  BOOST_TEST(percent_decode("x", out));
  BOOST_TEST(out == "x");
}

BOOST_AUTO_TEST_CASE(malformed) {
  std::string out;
  for (std::string_view in : {"%"sv, "%4"sv, "a%"sv, "a%4"sv, "%zz"sv, "%4g"sv, "%g4"sv, "% 1"sv,
                              "%-1"sv, "%+1"sv, "%%"sv, "%%41"sv}) {
    BOOST_TEST_INFO("input " << in);
    BOOST_TEST(!percent_decode(in, out));
  }
}

BOOST_AUTO_TEST_CASE(nul_rejected) {
  std::string out;
  BOOST_TEST(!percent_decode("%00", out));
  BOOST_TEST(!percent_decode("a%00b", out));
  // A raw NUL byte (not escaped) is rejected as well.
  BOOST_TEST(!percent_decode("a\0b"sv, out));
}

BOOST_AUTO_TEST_SUITE_END()
