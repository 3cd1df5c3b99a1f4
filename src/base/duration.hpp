// Durations as users write them on the command line and in configuration: "250ms", "1s",
// "2m", "1h30m", "0". Pure functions, no I/O.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace sm {

using duration = std::chrono::milliseconds;

// Parses a non-negative duration made of one or more <integer><unit> parts, units ms, s, m, h
// ("1m30s"). A bare "0" is accepted; any other number needs a unit, so that "5" is never
// silently five milliseconds or five seconds. Returns nullopt for anything else.
std::optional<duration> parse_duration(std::string_view text);

// The shortest exact spelling: 1500ms -> "1500ms", 90000ms -> "90s", 0 -> "0s".
std::string format_duration(duration d);

}  // namespace sm
