#include "base/clock.hpp"

#include <ctime>

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

std::string format_http_date(wall_time t) {
  const std::tm tm = utc(t);
  char buf[40];
  // strftime's %a and %b follow the C locale, which is what HTTP wants; we never call setlocale.
  const std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf, n);
}

}  // namespace sm
