// Lower-case hexadecimal: for digests, binary values inside JSON (extended attributes in a
// checkpoint's index), and opaque tokens.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sm {

std::string hex(std::string_view bytes);

// nullopt for an odd length or a character that is not a hex digit (either case accepted).
std::optional<std::string> unhex(std::string_view text);

}  // namespace sm
