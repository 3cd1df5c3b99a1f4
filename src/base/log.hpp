// The process's log: one line per event on stderr, as text for people or JSON lines for
// collectors. Only the orchestrating code (app, api) logs; libraries return errors instead.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace sm::log {

enum class level { debug, info, warn, error };
enum class format { text, json };

std::optional<level> parse_level(std::string_view name);
std::optional<format> parse_format(std::string_view name);

// Not thread-safe: called once at start-up, before anything logs.
void configure(level min_level, format fmt);
bool enabled(level l);

struct field {
  std::string_view key;
  std::string value;
};

// Each line goes out in a single write(2), so it never interleaves with a child's output.
void write(level l, std::string_view message, std::initializer_list<field> fields = {});

inline void debug(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<field> f = {}) {
  write(level::error, m, f);
}

// Appends `text` to `out` as the inside of a JSON string (quotes not included).
void append_json_escaped(std::string& out, std::string_view text);

}  // namespace sm::log
