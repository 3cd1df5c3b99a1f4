#include "base/log.hpp"

#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "base/clock.hpp"

namespace sm::log {

namespace {
level min_level_ = level::info;
format format_ = format::text;

constexpr std::string_view level_names[] = {"debug", "info", "warn", "error"};

std::string_view name_of(level l) {
  return level_names[static_cast<int>(l)];
}

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

void write_all(std::string_view line) {
  while (!line.empty()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // Nowhere left to report a failing stderr.
    line.remove_prefix(static_cast<std::size_t>(n));
  }
}
}  // namespace

std::optional<level> parse_level(std::string_view name) {
  for (int i = 0; i < 4; ++i) {
    if (name == level_names[i]) return static_cast<level>(i);
  }
  if (name == "warning") return level::warn;
  return std::nullopt;
}

std::optional<format> parse_format(std::string_view name) {
  if (name == "text") return format::text;
  if (name == "json") return format::json;
  return std::nullopt;
}

void configure(level min_level, format fmt) {
  min_level_ = min_level;
  format_ = fmt;
}

bool enabled(level l) {
  return l >= min_level_;
}

void append_json_escaped(std::string& out, std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (u < 0x20) {
          out += "\\u00";
          out += hex[u >> 4];
          out += hex[u & 15];
        } else {
          out += c;
        }
    }
  }
}

void write(level l, std::string_view message, std::initializer_list<field> fields) {
  if (!enabled(l)) return;
  const std::string time = format_rfc3339(std::chrono::system_clock::now(), true);
  std::string line;
  line.reserve(128);
  if (format_ == format::json) {
    line += "{\"time\":\"" + time + "\",\"level\":\"";
    line += name_of(l);
    line += "\",\"msg\":\"";
    append_json_escaped(line, message);
    line += '"';
    for (const field& f : fields) {
      line += ",\"";
      append_json_escaped(line, f.key);
      line += "\":\"";
      append_json_escaped(line, f.value);
      line += '"';
    }
    line += "}\n";
  } else {
    line += time;
    line += ' ';
    line += name_of(l);
    line.append(6 - name_of(l).size(), ' ');
    line += message;
    for (const field& f : fields) {
      line += ' ';
      line += f.key;
      line += '=';
      if (needs_quotes(f.value)) {
        line += '"';
        append_json_escaped(line, f.value);
        line += '"';
      } else {
        line += f.value;
      }
    }
    line += '\n';
  }
  write_all(line);
}

}  // namespace sm::log
