// Coverage-guided fuzzing of the request parser. The first input byte chooses how the rest is
// split into feeds, so that the fuzzer explores partial reads as well as whole ones. Invariants:
// never consume more than given; need_more means everything was taken; a complete request's
// body is within the limit; an error has a 4xx/5xx status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "http/request_parser.hpp"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t step = data[0] % 17 + 1;
  std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  sm::http::parser_limits limits;
  limits.max_header_bytes = 2048;  // small limits reach the limit paths sooner
  limits.max_request_line_bytes = 512;
  limits.max_body_bytes = 4096;
  sm::http::request_parser parser(limits);
  while (!input.empty()) {
    const std::string_view piece = input.substr(0, step);
    const auto result = parser.feed(piece);
    check(result.consumed <= piece.size());
    if (result.state == sm::http::request_parser::status::need_more) {
      check(result.consumed == piece.size());
    } else if (result.state == sm::http::request_parser::status::complete) {
      const sm::http::request r = parser.take_request();
      check(r.body.size() <= limits.max_body_bytes);
      check(!r.method.empty() && !r.path.empty());
      parser.reset();
    } else {
      check(parser.error_status() >= 400 && parser.error_status() < 600);
      return 0;
    }
    input.remove_prefix(result.consumed);
  }
  return 0;
}
