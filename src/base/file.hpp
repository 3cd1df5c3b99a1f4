// Whole-file reads and crash-safe writes. These block: call them through sm::offload from the
// executor, never directly in a handler.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace sm {

// Reads a whole file. nullopt when it does not exist; std::system_error for any other failure.
std::optional<std::string> read_file(const std::filesystem::path& path);

// Replaces `path` with `content` so that a crash at any point leaves either the old file or the
// new one: write a temporary file beside it, fsync it, rename it over `path`, fsync the
// directory. Throws std::system_error naming the step that failed; the temporary is removed.
void write_file_atomically(const std::filesystem::path& path, std::string_view content,
                           mode_t mode);

// Renames `path` to `<path><suffix>`, or `<path><suffix>.N` with the first free N, so that an
// earlier file set aside is never overwritten. Returns the new name.
std::filesystem::path set_file_aside(const std::filesystem::path& path, std::string_view suffix);

// Creates `dir` and its parents if missing; throws if it exists and is not a directory.
void ensure_directory(const std::filesystem::path& dir, mode_t mode);

}  // namespace sm
