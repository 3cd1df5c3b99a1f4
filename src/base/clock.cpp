#include "base/clock.hpp"

#include <ctime>
#include <optional>
#include <string_view>

namespace sm {

namespace {
std::tm utc(wall_time t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm out{};
  gmtime_r(&seconds, &out);
  return out;
}
}  // namespace

std::string format_rfc3339(wall_time t, bool with_millis) {
  const std::tm tm = utc(t);
  char buf[40];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  if (with_millis) {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
    buf[n++] = '.';
    buf[n++] = char('0' + ms / 100);
    buf[n++] = char('0' + ms / 10 % 10);
    buf[n++] = char('0' + ms % 10);
  }
  buf[n++] = 'Z';
  return std::string(buf, n);
}

std::optional<wall_time> parse_rfc3339(std::string_view text) {
  std::size_t at = 0;
  auto number = [&](std::size_t width) -> std::optional<int> {
    if (text.size() - at < width) return std::nullopt;
    int value = 0;
    for (std::size_t i = 0; i < width; ++i) {
      const char c = text[at + i];
      if (c < '0' || c > '9') return std::nullopt;
      value = value * 10 + (c - '0');
    }
    at += width;
    return value;
  };
  auto one_of = [&](std::string_view choices) {
    if (at >= text.size() || choices.find(text[at]) == std::string_view::npos) return false;
    ++at;
    return true;
  };
  const auto year = number(4);
  if (!year || !one_of("-")) return std::nullopt;
  const auto month = number(2);
  if (!month || !one_of("-")) return std::nullopt;
  const auto day = number(2);
  if (!day || !one_of("Tt ")) return std::nullopt;
  const auto hour = number(2);
  if (!hour || !one_of(":")) return std::nullopt;
  const auto minute = number(2);
  if (!minute || !one_of(":")) return std::nullopt;
  const auto second = number(2);
  if (!second) return std::nullopt;
  const std::chrono::year_month_day date{std::chrono::year(*year),
                                         std::chrono::month(unsigned(*month)),
                                         std::chrono::day(unsigned(*day))};
  // 60: a leap second, which RFC 3339 allows; it lands on the next minute's first. The years
  // stay well inside what wall_time holds (libstdc++ counts nanoseconds in 64 bits: 1677-2262).
  if (*year < 1900 || *year > 2200 || !date.ok() || *hour > 23 || *minute > 59 || *second > 60) {
    return std::nullopt;
  }

  std::chrono::nanoseconds fraction{0};
  if (one_of(".")) {
    const std::size_t first = at;
    long long scale = 100000000;
    while (at < text.size() && text[at] >= '0' && text[at] <= '9') {
      fraction += std::chrono::nanoseconds((text[at] - '0') * scale);  // beyond 9 digits: 0
      scale /= 10;
      ++at;
    }
    if (at == first) return std::nullopt;
  }
  std::chrono::minutes offset{0};
  if (!one_of("Zz")) {
    if (at >= text.size()) return std::nullopt;
    const int sign = text[at] == '+' ? 1 : text[at] == '-' ? -1 : 0;
    if (sign == 0) return std::nullopt;
    ++at;
    const auto offset_hours = number(2);
    if (!offset_hours || !one_of(":")) return std::nullopt;
    const auto offset_minutes = number(2);
    if (!offset_minutes || *offset_hours > 23 || *offset_minutes > 59) return std::nullopt;
    offset = sign * (std::chrono::hours(*offset_hours) + std::chrono::minutes(*offset_minutes));
  }
  if (at != text.size()) return std::nullopt;
  const auto local = std::chrono::sys_days(date) + std::chrono::hours(*hour) +
                     std::chrono::minutes(*minute) + std::chrono::seconds(*second) + fraction;
  // 14:00+01:00 is 13:00 UTC.
  return std::chrono::time_point_cast<wall_time::duration>(local - offset);
}

std::string format_http_date(wall_time t) {
  const std::tm tm = utc(t);
  char buf[40];
  // strftime's %a and %b follow the C locale, which is what HTTP wants; we never call setlocale.
  const std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf, n);
}

}  // namespace sm
