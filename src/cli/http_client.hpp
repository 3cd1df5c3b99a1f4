// A blocking HTTP/1.1 client for the command-line tools: one request a connection, the answer
// read until the server closes it. Blocking is fine in a client process: nothing else waits on
// its thread. The bytes are parsed by http/response_parser, without I/O.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "http/response_parser.hpp"

namespace sm::cli {

// Where the API is: http://HOST[:PORT][/PREFIX]. HOST is an IPv4 address, [IPv6] or a name
// (resolved with getaddrinfo); PREFIX is for an API behind a reverse proxy.
struct http_url {
  std::string host;       // without brackets
  std::string port;       // "80" when not given
  std::string authority;  // HOST[:PORT] as written, for the Host header
  std::string base_path;  // "" or "/prefix", without a trailing '/'
};

// nullopt for anything else: another scheme, user info, a query, a bad port.
std::optional<http_url> parse_http_url(std::string_view text);

struct http_request {
  std::string method;
  std::string path;  // below the URL's base path, percent-encoded: "/checkpoints/a%20b"
  std::optional<std::string> body;   // sent as application/json
  std::optional<std::string> token;  // sent as "Authorization: Bearer <token>"
};

// The request's bytes: "Host" from the URL, "Accept: application/json", and "Connection: close",
// so that the answer ends where the server closes the connection.
std::string request_text(const http_url& url, const http_request& request);

// Why an exchange failed; what() is one line naming the cause.
class http_error : public std::runtime_error {
 public:
  enum class kind {
    connect,     // no address accepted a connection in time (or the name did not resolve)
    transfer,    // sending or reading failed, the server fell silent too long, or sent too much
    unanswered,  // the server closed the connection without a byte
    malformed,   // what the server sent is not an HTTP response
  };
  http_error(kind k, const std::string& what) : std::runtime_error(what), kind_(k) {}
  kind failure() const { return kind_; }

 private:
  kind kind_;
};

// How long an exchange may take.
struct http_wait {
  std::chrono::milliseconds connect_timeout;
  // The longest silence of the server once the request is sent; nullopt: wait as long as it
  // takes (for operations that take minutes).
  std::optional<std::chrono::milliseconds> idle_limit;
  // Runs on this thread each time the server has been silent for 100 ms (a progress poll).
  std::function<void()> while_waiting;
};

// Connects to the first address of `url` that accepts within wait.connect_timeout, sends
// `request`, reads until the server closes the connection (at most 64 MiB) and parses the answer.
// Any status is an answer. Throws http_error.
http::parsed_response exchange(const http_url& url, const http_request& request,
                               const http_wait& wait);

}  // namespace sm::cli
