// Whole-file reads and crash-safe writes. These block: call them through sm::offload from the
// executor, never directly in a handler.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace sm {

// Reads a whole regular file of at most `max_bytes`. nullopt when it does not exist;
// std::system_error for any other failure, including a FIFO, device or directory in its place
// (opened without blocking and refused, so that start-up can never hang on one) and a file
// larger than `max_bytes` (EFBIG).
// With `allow_pipes`, a FIFO or pipe (`--token-file <(...)`) is read too, waiting for its
// writer: only for start-up, before anything is served.
std::optional<std::string> read_file(const std::filesystem::path& path,
                                     std::size_t max_bytes = 16 * 1024 * 1024,
                                     bool allow_pipes = false);

// The API token in `file` (may be a pipe: `--token-file <(...)`): the text between the
// whitespace an editor or a copy-paste adds. Throws std::runtime_error when the file does not
// exist or holds no token, std::system_error when it cannot be read. Used by the server and by
// the `checkpoint` command, which must agree on it.
std::string read_token_file(const std::filesystem::path& file);

// Replaces `path` with `content` so that a crash at any point leaves either the old file or the
// new one: write a temporary file `<path>.tmp` beside it (a leftover one is replaced, a symlink
// there is refused), fsync it, rename it over `path`, fsync the directory. Throws
// std::system_error naming the step that failed; the temporary is removed.
void write_file_atomically(const std::filesystem::path& path, std::string_view content,
                           mode_t mode);

// Makes the entries of the directory that holds `path` durable (a rename, a creation or a
// removal there): fsync of that directory. Throws std::system_error.
void fsync_directory_of(const std::filesystem::path& path);

// `<path><suffix>`: a name beside `path` ("data/env" -> "data/env.restore-aside").
std::filesystem::path with_suffix(const std::filesystem::path& path, std::string_view suffix);

// Renames `path` to `<path><suffix>`, or `<path><suffix>.N` with the first free N, so that an
// earlier file set aside is never overwritten; then fsyncs the directory. Returns the new name.
std::filesystem::path set_file_aside(const std::filesystem::path& path, std::string_view suffix);

// Creates `dir` and its parents if missing; throws if it exists and is not a directory.
void ensure_directory(const std::filesystem::path& dir, mode_t mode);

}  // namespace sm
