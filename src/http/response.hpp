// An HTTP response and its serialisation. Plain data, no I/O.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <asio/awaitable.hpp>

namespace sm::http {

// Where a streamed response writes its body, piece by piece, as it is produced.
class stream_writer {
 public:
  virtual ~stream_writer() = default;
  // False once the client is gone (or too slow to read): the stream should end.
  virtual asio::awaitable<bool> write(std::string_view data) = 0;
};

struct response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  std::string body;
  bool close = false;  // send "Connection: close" and close after writing
  // A streamed body (Server-Sent Events): when set, `body` is ignored, the head goes out without
  // Content-Length and with "Connection: close", then the stream runs until it returns, and the
  // connection closes.
  std::function<asio::awaitable<void>(stream_writer&)> stream;

  response& with_header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
};

std::string_view reason_phrase(int status);

// A JSON error body: {"error": "<message>"}; `extra` is a JSON object text whose members are
// appended (e.g. R"("details": [...])"), or empty.
response error_response(int status, std::string_view message, std::string_view extra = {});

// Writes the status line and headers (Content-Type, Content-Length, Date, Connection and the
// extra ones) into `out`; the body is not included, so it can be sent from its own buffer
// (or, for HEAD, not at all: Content-Length still describes the body GET would send).
// `version_minor` is the request's: an HTTP/1.0 client is told "Connection: keep-alive"
// explicitly, since closing is its default.
void serialize_head(const response& r, bool keep_alive, std::string_view date, std::string& out,
                    int version_minor = 1);

}  // namespace sm::http
