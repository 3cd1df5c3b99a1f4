// A sans-I/O, incremental HTTP/1.1 request parser: bytes in, requests out. It never touches a
// socket, so every malformed input and every split of the input can be unit-tested.
//
// Use: feed() whatever arrived; it consumes bytes up to the end of one request and stops there,
// so pipelined requests stay in the caller's buffer. After `complete`, take_request(), reset(),
// and feed the rest. After `error`, the connection must answer error_status() and close: the
// input is no longer in sync with request boundaries.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "http/request.hpp"

namespace sm::http {

struct parser_limits {
  std::size_t max_header_bytes = 16 * 1024;       // request line + headers + blank line -> 431
  std::size_t max_body_bytes = 1024 * 1024;       // decoded body -> 413
  std::size_t max_request_line_bytes = 8 * 1024;  // -> 414
  std::size_t max_headers = 100;                  // -> 431
};

class request_parser {
 public:
  enum class status { need_more, complete, error };

  struct result {
    status state;
    std::size_t consumed;  // bytes of the input taken by this call
  };

  explicit request_parser(parser_limits limits = {});

  result feed(std::string_view input);

  // True once a byte of a request has arrived, not counting the empty lines that RFC 9112 2.2
  // lets a client send between requests: "is the client in the middle of a request?"
  bool request_started() const {
    return phase_ != phase::head || request_line_done_ || (!line_.empty() && line_ != "\r");
  }
  // True once the request line and headers are in (and valid): the body, if any, is next.
  bool headers_complete() const { return phase_ >= phase::body_fixed; }
  // The client sent "Expect: 100-continue" and waits for a 100 before sending its body.
  bool expects_continue() const { return expects_continue_; }
  // After an error: the status to answer (400, 413, 414, 431, 501, 505) and why.
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }

  request take_request() { return std::move(request_); }
  // Once headers_complete(): the request so far (method, target, headers; no body yet).
  const request& head() const { return request_; }
  void reset();

 private:
  enum class phase {
    head,            // request line and headers, line by line
    body_fixed,      // Content-Length bytes
    chunk_size,      // hex size line (with extensions)
    chunk_data,      // the chunk's bytes
    chunk_data_end,  // CRLF after the data
    trailers,        // trailer lines until an empty one
    done,
    failed,
  };

  result fail(int status, std::string message, std::size_t consumed);
  bool parse_request_line(std::string_view line);
  bool parse_header_line(std::string_view line);
  bool finish_head();  // validates framing headers, chooses the body phase
  // Takes one line (up to LF) from input into line_; true when a whole line is in line_.
  bool take_line(std::string_view input, std::size_t& pos, std::size_t limit, bool& too_long);

  parser_limits limits_;
  phase phase_ = phase::head;
  request request_;
  std::string line_;            // the line being assembled across feeds
  std::size_t head_bytes_ = 0;  // bytes of the head so far
  bool request_line_done_ = false;
  bool expects_continue_ = false;
  bool chunked_ = false;
  bool has_content_length_ = false;
  std::size_t remaining_ = 0;  // body bytes left (fixed) or chunk bytes left
  std::size_t trailer_bytes_ = 0;
  int error_status_ = 0;
  std::string error_message_;
};

}  // namespace sm::http
