// Wall-clock time as the API shows it: RFC 3339 in UTC, and the HTTP Date format.
#pragma once

#include <chrono>
#include <string>

namespace sm {

using wall_time = std::chrono::system_clock::time_point;

// "2026-11-22T13:00:00Z", or with milliseconds "2026-11-22T13:00:00.123Z".
std::string format_rfc3339(wall_time t, bool with_millis = false);

// "Sun, 22 Nov 2026 13:00:00 GMT" (RFC 9110 IMF-fixdate).
std::string format_http_date(wall_time t);

}  // namespace sm
