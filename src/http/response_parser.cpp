#include "http/response_parser.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>

#include "http/ascii.hpp"

namespace sm::http {

namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<std::uint64_t> parse_number(std::string_view s, int base = 10) {
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n, base);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return n;
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9112 section 7.1; trailers are ignored. nullopt when malformed or cut short.
std::optional<std::string> decode_chunked(std::string_view in) {
  std::string out;
  for (;;) {
    const std::size_t line_end = in.find("\r\n");
    if (line_end == std::string_view::npos) return std::nullopt;
    std::string_view size_text = in.substr(0, line_end);
    size_text = trim_spaces(size_text.substr(0, size_text.find(';')));
    const std::optional<std::uint64_t> size = parse_number(size_text, 16);
    if (!size) return std::nullopt;
    in.remove_prefix(line_end + 2);
    if (*size == 0) return out;
    if (in.size() < *size + 2 || in.substr(*size, 2) != "\r\n") return std::nullopt;
    out.append(in.substr(0, *size));
    in.remove_prefix(*size + 2);
  }
}

}  // namespace

std::optional<parsed_response> parse_response(std::string_view raw) {
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) return std::nullopt;
  std::string_view head = raw.substr(0, head_end + 2);
  const std::string_view rest = raw.substr(head_end + 4);

  // "HTTP/1.1 200 OK"
  const std::size_t status_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, status_end);
  head.remove_prefix(status_end + 2);
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return std::nullopt;
  }
  const std::string_view code = status_line.substr(9, 3);
  if (!all_digits(code)) return std::nullopt;
  parsed_response response;
  response.status = static_cast<int>(*parse_number(code));

  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  while (!head.empty()) {
    const std::size_t line_end = head.find("\r\n");
    const std::string_view line = head.substr(0, line_end);
    head.remove_prefix(line_end + 2);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trim_spaces(line.substr(colon + 1));
    if (iequals(name, "content-length")) {
      content_length = parse_number(value);
      if (!content_length) return std::nullopt;
    } else if (iequals(name, "transfer-encoding")) {
      chunked = iequals(value, "chunked");
      if (!chunked) return std::nullopt;  // no client here asks for another coding
    }
  }
  if (chunked) {
    std::optional<std::string> body = decode_chunked(rest);
    if (!body) return std::nullopt;
    response.body = std::move(*body);
  } else if (content_length) {
    if (rest.size() < *content_length) return std::nullopt;  // cut short
    response.body = rest.substr(0, *content_length);
  } else {
    response.body = rest;
  }
  return response;
}

}  // namespace sm::http
