// The client side's sans-I/O parser: a whole HTTP/1.x response, as read from a connection the
// server closed, in; its status and decoded body out. It never touches a socket (the
// checkpoint command's blocking client does the reading), so every malformed or cut-short
// answer is unit-tested as bytes.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sm::http {

struct parsed_response {
  int status = 0;
  std::string body;  // decoded: without chunk framing
};

// The status line ("HTTP/1.1 200 OK", the reason optional), the headers, and the body by
// Content-Length, chunked (RFC 9112 7.1; extensions and trailers ignored), or else up to the end.
// Bytes after a Content-Length body are ignored. nullopt when the response is malformed, uses a
// transfer coding other than chunked, or is cut short (fewer bytes than Content-Length, no last
// chunk, no blank line after the headers).
std::optional<parsed_response> parse_response(std::string_view raw);

}  // namespace sm::http
