// Percent-encoding (RFC 3986 section 2.1): the one encoder and decoder of the project, for URL
// paths and query strings (SigV4's canonical requests, the router's path segments, the checkpoint
// command's request paths) and S3's encoding-type=url listings.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace sm {

// The unreserved characters (A-Z a-z 0-9 - . _ ~) and those listed in `keep` stay as they are;
// every other byte becomes %XX with upper-case hex digits, which is what SigV4 signs and what
// every URI reader accepts. percent_encode("a b/c", "/") == "a%20b/c".
std::string percent_encode(std::string_view text, std::string_view keep = {});

// How a '+' reads: as itself in paths (RFC 3986), as a space in form encoding (which S3 uses
// for encoding-type=url).
enum class plus_sign { literal, space };

// Decodes every %XX (either case of hex digit), once: "%2541" is "%41". nullopt when a '%' is not
// followed by two hex digits. Any byte may come out, NUL included: a caller that cannot hold one
// refuses it itself.
std::optional<std::string> percent_decode(std::string_view text,
                                          plus_sign plus = plus_sign::literal);

}  // namespace sm
