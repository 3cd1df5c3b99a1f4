// An HTTP/1.1 request as the parser delivers it. Plain data, no I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/ascii.hpp"

namespace sm::http {

struct request {
  std::string method;     // case-sensitive token, as sent ("GET")
  std::string target;     // as sent: "/checkpoints/a%20b?x=1"
  std::string path;       // the target's path, still percent-encoded: "/checkpoints/a%20b"
  std::string query;      // after '?', without it; empty if none
  int version_minor = 1;  // 0 or 1: HTTP/1.0, or HTTP/1.1 (also for HTTP/1.2 and up)
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent, values trimmed
  std::string body;                                          // decoded (chunked framing removed)
  bool keep_alive = true;

  // First value of a header, by case-insensitive name.
  std::optional<std::string_view> header(std::string_view name) const;
};

}  // namespace sm::http
