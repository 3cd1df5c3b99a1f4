// Wall-clock time as the API shows it: RFC 3339 in UTC, and the HTTP Date format.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace sm {

using wall_time = std::chrono::system_clock::time_point;

// "2026-11-22T13:00:00Z", or with milliseconds "2026-11-22T13:00:00.123Z".
std::string format_rfc3339(wall_time t, bool with_millis = false);

// RFC 3339: "2026-11-22T13:00:00Z", "2026-11-22T13:00:00.250Z", "2026-11-22T14:00:00+01:00"
// ('t', 'z' and a space for 'T' accepted too; digits of a fraction beyond nanoseconds are
// dropped). nullopt for anything else, an impossible date or time, or a year outside 1900-2200.
// The one reader of the format: restore-db's --at and S3's LastModified both use it.
std::optional<wall_time> parse_rfc3339(std::string_view text);

// "Sun, 22 Nov 2026 13:00:00 GMT" (RFC 9110 IMF-fixdate).
std::string format_http_date(wall_time t);

}  // namespace sm
