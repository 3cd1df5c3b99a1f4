// Coverage-guided fuzzing of what a download reads from the store before it trusts anything:
// the checkpoint index and the manifest (src/checkpoint/index.hpp). The first input byte picks
// the parser and the format; the rest is the document. Invariants: bad input is index_error or
// nullopt, never another exception or a crash (ASan/UBSan watch for the rest); an accepted
// index is printed and parsed back to the same entries, and every path in it is relative and
// free of "." and ".." segments.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "checkpoint/index.hpp"

namespace {
void check(bool ok) {
  if (!ok) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
  using namespace sm::checkpoint;
  if (selector & 1) {
    try {
      const auto m = parse_remote_manifest(input, "v1");
      if (m) {
        check(m->local.id == "v1");
        check(m->format == 1 || (m->format == 2 && is_sha256_hex(m->index_sha256)));
      }
    } catch (const index_error&) {
    }
    return 0;
  }
  const unsigned format = (selector & 2) ? 2 : 1;
  std::vector<index_entry> entries;
  try {
    entries = parse_index(input, format);
  } catch (const index_error&) {
    return 0;
  }
  for (const index_entry& e : entries) {
    check(!e.path.empty() && e.path.front() != '/');
    check(e.path.find("/../") == std::string::npos && !e.path.starts_with("../"));
    check(e.path != ".." && !e.path.ends_with("/.."));
    check(e.mode <= 07777);
    if (format == 2 && e.type == 'f') check(is_sha256_hex(e.sha256));
  }
  check(parse_index(index_to_text(entries), format) == entries);
  drop_privileged(entries);
  return 0;
}
