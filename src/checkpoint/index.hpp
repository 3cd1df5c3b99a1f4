// A checkpoint's index and manifest as the object store holds them: plain functions over bytes,
// so that what comes back from the store (which this code does not trust) is parsed without I/O,
// unit-tested and fuzzed (tests/fuzz/checkpoint_index_fuzz.cpp).
//
// Layout under checkpoints/<id>/, format 2 (the manifest's "store" object says which):
//   files/<sha256>        the content of each regular file, named by its SHA-256: any path,
//                         however long or whatever its bytes, becomes a key of 70 characters;
//                         identical files go up once; an object is never replaced by other
//                         content (two machines racing on one id write disjoint keys, except
//                         for identical content)
//   index-<sha256>.json   every entry (path, type, mode, owner, mtime, size, xattrs, holes,
//                         link target; for a file, its content's sha256), named by its own hash
//   manifest.json         last, created only if absent; the local manifest plus
//                         "store": {"format": 2, "index_sha256", "index_bytes"}
// Format 1 (before hashes): files/<path>, index.json, no "store" object. Downloads still read
// it, without checksums to verify.
//
// Paths, link targets and xattr names are bytes; JSON strings must be UTF-8, so what is not goes
// in "<key>_hex" instead (lossless both ways).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "checkpoint/local_store.hpp"

namespace sm::checkpoint {

// What the store may hold at most: larger objects are refused before they are read whole.
inline constexpr std::uint64_t max_manifest_bytes = 1u << 20;  // 1 MiB (~1 KiB in practice)
inline constexpr std::uint64_t max_index_bytes = 64u << 20;    // 64 MiB (~200 bytes a file)
// JSON nesting deeper than this is refused before parsing (an entry is 4 deep).
inline constexpr unsigned max_index_depth = 8;
// At most this many holes are kept per file (a pathological file could have millions); a file
// with more comes back with its zeros written.
inline constexpr std::size_t max_holes = 4096;

inline constexpr unsigned current_format = 2;

// Anything wrong with an index or manifest from the store: the download is refused.
class index_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct index_entry {
  std::string path;  // relative to the checkpoint's directory
  // f(ile), d(irectory), l(ink: a symlink), h(ard link: another name of an earlier 'f' entry,
  // which alone is uploaded)
  char type = 'f';
  std::uint32_t mode = 0;  // permission bits, set-id and sticky included (07777)
  std::int64_t mtime_ns = 0;
  std::uint64_t size = 0;
  std::string target;                     // l: what the symlink points to; h: the earlier name
  std::optional<std::uint32_t> uid, gid;  // absent in an index written before they were kept
  std::vector<std::pair<std::string, std::string>> xattrs;  // name, value
  // f: the holes of a sparse file, [offset, length) each; the object holds zeros there, and a
  // download punches them again.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> holes;
  std::string sha256;  // f, format 2: of the content, lower-case hex (64 digits)

  bool operator==(const index_entry&) const = default;
};

// The index's text (one JSON array, newline-terminated). Never throws on odd bytes in names.
std::string index_to_text(const std::vector<index_entry>& entries);

// Parses and checks an index from the store for `format` (1 or 2). Throws index_error when it is
// not one: malformed or too deep JSON, a path out of the checkpoint, twice, or under something
// that is not an earlier directory of the index, an unknown type, a hard link to a file it does
// not hold, a hole past the end, a format 2 file without a well-formed sha256. Nothing else is
// thrown (bad_alloc aside); never recurses on the input's depth.
std::vector<index_entry> parse_index(std::string_view text, unsigned format);

// The object key of a file's content, relative to checkpoints/<id>/.
std::string file_key(const index_entry& e, unsigned format);
// The index's key, relative to checkpoints/<id>/.
std::string index_key(unsigned format, const std::string& index_sha256);

// What manifest.json in the store says.
struct remote_manifest {
  manifest local;  // what the local manifest.json holds
  unsigned format = 1;
  std::string index_sha256;       // format 2
  std::uint64_t index_bytes = 0;  // format 2
};

// The store's manifest.json: the local manifest's JSON `local_text` with the "store" object.
std::string remote_manifest_text(std::string_view local_text, const std::string& index_sha256,
                                 std::uint64_t index_bytes);

// Parses the store's manifest.json of checkpoint `id`; nullopt when it is not one (malformed,
// another id, a format 2 one without a well-formed index hash). Throws index_error for a format
// this code does not know (made by a newer state-manager).
std::optional<remote_manifest> parse_remote_manifest(std::string_view text, const std::string& id);

// Removes from `entries` what would give privilege on restore: the set-user-ID and set-group-ID
// bits of regular files, and extended attributes in the security.* namespace (file
// capabilities are security.capability). Returns how many entries lost something. (Device
// nodes never reach an index: uploads skip them, and an index naming one is refused.)
// A directory's set-group-ID bit stays: it only makes new files inherit the group.
std::uint64_t drop_privileged(std::vector<index_entry>& entries);

bool is_sha256_hex(std::string_view text);

}  // namespace sm::checkpoint
