#define BOOST_TEST_MODULE response
#include <boost/test/unit_test.hpp>

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "http/response.hpp"

using sm::http::error_response;
using sm::http::reason_phrase;
using sm::http::response;
using sm::http::serialize_head;

namespace {
const std::string date = "Sun, 22 Nov 2026 13:00:00 GMT";

std::string head_of(const response& r, bool keep_alive = true) {
  std::string out;
  serialize_head(r, keep_alive, date, out);
  return out;
}

bool has_line(const std::string& head, std::string_view line) {
  return head.find("\r\n" + std::string(line) + "\r\n") != std::string::npos;
}

std::size_t count(const std::string& s, std::string_view what) {
  std::size_t n = 0;
  for (std::size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

BOOST_AUTO_TEST_CASE(status_line_and_basic_headers) {
  response r;
  r.body = "{\"ok\":true}";
  const std::string head = head_of(r);
  BOOST_TEST(head.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  BOOST_TEST(has_line(head, "Content-Type: application/json"));
  BOOST_TEST(has_line(head, "Content-Length: 11"));
  BOOST_TEST(has_line(head, "Date: " + date));
  // The head ends with exactly one blank line and carries no body.
  BOOST_TEST(head.size() >= 4u);
  BOOST_TEST(head.substr(head.size() - 4) == "\r\n\r\n");
  BOOST_TEST(count(head, "\r\n\r\n") == 1u);
  BOOST_TEST(head.find("{\"ok\":true}") == std::string::npos);
  BOOST_TEST(head.find("Connection: close") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(http10_keep_alive_is_acknowledged) {
  // Closing is HTTP/1.0's default: a kept connection must be announced, or the client waits.
  response r;
  r.body = "{}";
  std::string out;
  serialize_head(r, true, "date", out, 0);
  BOOST_TEST(out.find("Connection: keep-alive\r\n") != std::string::npos);
  out.clear();
  serialize_head(r, false, "date", out, 0);
  BOOST_TEST(out.find("Connection: close\r\n") != std::string::npos);
  out.clear();
  serialize_head(r, true, "date", out, 1);
  BOOST_TEST(out.find("Connection:") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(appends_to_out) {
  response r;
  std::string out = "previous";
  serialize_head(r, true, date, out);
  BOOST_TEST(out.rfind("previousHTTP/1.1 200 OK\r\n", 0) == 0);
}

BOOST_AUTO_TEST_CASE(content_length_matches_body) {
  for (std::size_t n : {0u, 1u, 9u, 10u, 12345u}) {
    response r;
    r.body.assign(n, 'x');
    BOOST_TEST_INFO("body size " << n);
    BOOST_TEST(has_line(head_of(r), "Content-Length: " + std::to_string(n)));
  }
}

BOOST_AUTO_TEST_CASE(status_lines_with_reasons) {
  struct {
    int status;
    const char* line;
  } cases[] = {{201, "HTTP/1.1 201 Created\r\n"},
               {204, "HTTP/1.1 204 No Content\r\n"},
               {400, "HTTP/1.1 400 Bad Request\r\n"},
               {404, "HTTP/1.1 404 Not Found\r\n"},
               {405, "HTTP/1.1 405 Method Not Allowed\r\n"},
               {409, "HTTP/1.1 409 Conflict\r\n"},
               {413, "HTTP/1.1 413 Content Too Large\r\n"},
               {414, "HTTP/1.1 414 URI Too Long\r\n"},
               {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
               {500, "HTTP/1.1 500 Internal Server Error\r\n"},
               {501, "HTTP/1.1 501 Not Implemented\r\n"},
               {503, "HTTP/1.1 503 Service Unavailable\r\n"},
               {505, "HTTP/1.1 505 HTTP Version Not Supported\r\n"}};
  for (const auto& c : cases) {
    response r;
    r.status = c.status;
    BOOST_TEST_INFO("status " << c.status);
    BOOST_TEST(head_of(r).rfind(c.line, 0) == 0);
  }
}

BOOST_AUTO_TEST_CASE(reason_phrases) {
  BOOST_TEST(reason_phrase(200) == "OK");
  BOOST_TEST(reason_phrase(404) == "Not Found");
  BOOST_TEST(reason_phrase(100) == "Continue");
  BOOST_TEST(reason_phrase(401) == "Unauthorized");
  BOOST_TEST(reason_phrase(411) == "Length Required");
  // An unknown status still gets a non-empty reason, so the status line stays valid.
  BOOST_TEST(!reason_phrase(599).empty());
}

BOOST_AUTO_TEST_CASE(connection_close_when_not_keep_alive) {
  response r;
  const std::string head = head_of(r, false);
  BOOST_TEST(has_line(head, "Connection: close"));
  BOOST_TEST(count(head, "Connection:") == 1u);
}

BOOST_AUTO_TEST_CASE(connection_close_when_response_closes) {
  response r;
  r.close = true;
  const std::string head = head_of(r, true);
  BOOST_TEST(has_line(head, "Connection: close"));
  BOOST_TEST(count(head, "Connection:") == 1u);
}

BOOST_AUTO_TEST_CASE(extra_headers_in_order) {
  response r;
  r.with_header("Allow", "GET, HEAD").with_header("X-Request-Id", "42");
  BOOST_TEST(r.headers.size() == 2u);
  const std::string head = head_of(r);
  BOOST_TEST(has_line(head, "Allow: GET, HEAD"));
  BOOST_TEST(has_line(head, "X-Request-Id: 42"));
  BOOST_TEST(head.find("Allow: GET, HEAD") < head.find("X-Request-Id: 42"));
}

BOOST_AUTO_TEST_CASE(custom_content_type) {
  response r;
  r.content_type = "text/plain; version=0.0.4";
  r.body = "metric 1\n";
  const std::string head = head_of(r);
  BOOST_TEST(has_line(head, "Content-Type: text/plain; version=0.0.4"));
  BOOST_TEST(count(head, "Content-Type:") == 1u);
}

BOOST_AUTO_TEST_CASE(each_line_ends_with_crlf) {
  response r;
  r.body = "x";
  r.with_header("X-A", "1");
  const std::string head = head_of(r, false);
  for (std::size_t i = 0; i < head.size(); ++i) {
    if (head[i] == '\n') {
      BOOST_TEST_INFO("at " << i);
      BOOST_TEST((i > 0 && head[i - 1] == '\r'));
    }
  }
}

BOOST_AUTO_TEST_CASE(error_response_is_json) {
  const response r = error_response(404, "no such checkpoint");
  BOOST_TEST(r.status == 404);
  BOOST_TEST(r.content_type == "application/json");
  const auto j = nlohmann::json::parse(r.body);
  BOOST_TEST(j.is_object());
  BOOST_TEST(j.at("error") == "no such checkpoint");
  BOOST_TEST(j.size() == 1u);
}

BOOST_AUTO_TEST_CASE(error_response_escapes_message) {
  const std::string message = "bad \"id\"\\ with\nnewline and \x01 control";
  const response r = error_response(400, message);
  const auto j = nlohmann::json::parse(r.body);
  BOOST_TEST(j.at("error").get<std::string>() == message);
}

BOOST_AUTO_TEST_CASE(error_response_with_extra_members) {
  const response r =
      error_response(400, "invalid configuration",
                     R"("details": [{"path": "storage.bucket", "message": "required"}])");
  const auto j = nlohmann::json::parse(r.body);
  BOOST_TEST(j.at("error") == "invalid configuration");
  BOOST_REQUIRE(j.at("details").is_array());
  BOOST_TEST(j.at("details").at(0).at("path") == "storage.bucket");
}

BOOST_AUTO_TEST_CASE(error_response_content_length_consistent) {
  const response r = error_response(409, "busy");
  std::string head;
  serialize_head(r, true, date, head);
  BOOST_TEST(has_line(head, "Content-Length: " + std::to_string(r.body.size())));
  BOOST_TEST(head.rfind("HTTP/1.1 409 Conflict\r\n", 0) == 0);
}
