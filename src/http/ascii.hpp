// ASCII helpers shared by the parser and the router. HTTP's syntax is ASCII whatever the
// locale, so none of <cctype> is used.
#pragma once

#include <string_view>

namespace sm::http {

// 0-15 for a hex digit, -1 otherwise.
constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// ASCII case-insensitive equality, for header names and tokens.
bool iequals(std::string_view a, std::string_view b);

}  // namespace sm::http
