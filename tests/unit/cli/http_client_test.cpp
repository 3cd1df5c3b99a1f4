#define BOOST_TEST_MODULE http_client
#include <boost/test/unit_test.hpp>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include "cli/http_client.hpp"

using namespace std::chrono_literals;
using sm::cli::exchange;
using sm::cli::http_error;
using sm::cli::http_url;
using sm::cli::parse_http_url;
using sm::cli::request_text;

namespace {

// A listener on 127.0.0.1 that accepts one connection, reads the request's head, sends
// `answer` and closes. Its port is in url().
class one_shot_server {
 public:
  explicit one_shot_server(std::string answer) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    BOOST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    BOOST_REQUIRE(::listen(fd_, 1) == 0);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, answer = std::move(answer)] {
      const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) return;
      char buffer[4096];
      while (received_.find("\r\n\r\n") == std::string::npos) {
        const ssize_t got = ::recv(client, buffer, sizeof buffer, 0);
        if (got <= 0) break;
        received_.append(buffer, std::size_t(got));
      }
      if (!answer.empty()) (void)!::send(client, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(client);
    });
  }
  ~one_shot_server() {
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  http_url url() const { return *parse_http_url("http://127.0.0.1:" + std::to_string(port_)); }
  // What the client sent; read once the exchange is over.
  const std::string& received() {
    thread_.join();
    return received_;
  }

 private:
  int fd_ = -1;
  unsigned short port_ = 0;
  std::thread thread_;
  std::string received_;
};

}  // namespace

BOOST_AUTO_TEST_CASE(urls) {
  std::optional<http_url> u = parse_http_url("http://127.0.0.1:8080");
  BOOST_REQUIRE(u);
  BOOST_TEST(u->host == "127.0.0.1");
  BOOST_TEST(u->port == "8080");
  BOOST_TEST(u->authority == "127.0.0.1:8080");
  BOOST_TEST(u->base_path == "");

  u = parse_http_url("HTTP://example.internal/api/v1//");
  BOOST_REQUIRE(u);
  BOOST_TEST(u->host == "example.internal");
  BOOST_TEST(u->port == "80");
  BOOST_TEST(u->base_path == "/api/v1");

  for (const char* bad :
       {"", "http://", "127.0.0.1:8080", "https://h", "http://:80", "http://h:", "http://h:0",
        "http://h:65536", "http://h:8x", "http://::1:80", "http://[::1", "http://[]:80",
        "http://[::1]x", "http://user@h", "http://h/p?q", "http://h/p#f", "http://h /"}) {
    BOOST_TEST(!parse_http_url(bad), bad);
  }
}

BOOST_AUTO_TEST_CASE(request_bytes) {
  const http_url url = *parse_http_url("http://h:81/sm/");
  BOOST_TEST(request_text(url, {"GET", "/checkpoints", std::nullopt, std::nullopt}) ==
             "GET /sm/checkpoints HTTP/1.1\r\nHost: h:81\r\nAccept: application/json\r\n"
             "Connection: close\r\n\r\n");
  BOOST_TEST(request_text(url, {"POST", "/restore", std::string("{}"), std::string("t")}) ==
             "POST /sm/restore HTTP/1.1\r\nHost: h:81\r\nAuthorization: Bearer t\r\n"
             "Accept: application/json\r\nContent-Type: application/json\r\n"
             "Content-Length: 2\r\nConnection: close\r\n\r\n{}");
}

BOOST_AUTO_TEST_CASE(an_answer_of_any_status) {
  one_shot_server server("HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\nno");
  const sm::http::parsed_response r =
      exchange(server.url(), {"DELETE", "/checkpoints/a%20b", std::nullopt, std::nullopt},
               {1000ms, 5000ms, nullptr});
  BOOST_TEST(r.status == 409);
  BOOST_TEST(r.body == "no");
  BOOST_TEST(server.received().starts_with("DELETE /checkpoints/a%20b HTTP/1.1\r\n"));
}

BOOST_AUTO_TEST_CASE(failures_say_where_they_happened) {
  auto failure_of = [](const http_url& url) -> std::optional<http_error::kind> {
    try {
      exchange(url, {"GET", "/", std::nullopt, std::nullopt}, {1000ms, 5000ms, nullptr});
    } catch (const http_error& e) {
      return e.failure();
    }
    return std::nullopt;
  };
  {
    one_shot_server server("");
    BOOST_TEST((failure_of(server.url()) == http_error::kind::unanswered));
  }
  {
    one_shot_server server("garbage\r\n\r\n");
    BOOST_TEST((failure_of(server.url()) == http_error::kind::malformed));
  }
  http_url closed;
  {
    one_shot_server server("HTTP/1.1 200 OK\r\n\r\n");
    closed = server.url();
    BOOST_TEST(!failure_of(closed).has_value());
  }
  BOOST_TEST((failure_of(closed) == http_error::kind::connect));  // nothing listens there now
}
