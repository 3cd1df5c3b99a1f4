#include "base/file.hpp"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <system_error>

#include "base/fd.hpp"

namespace sm {

namespace {
[[noreturn]] void throw_errno(const std::string& what, const std::filesystem::path& path) {
  throw std::system_error(errno, std::generic_category(), what + " " + path.string());
}

}  // namespace

void fsync_directory_of(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  unique_fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("open directory", dir);
  if (::fsync(fd.get()) != 0) throw_errno("fsync directory", dir);
}

std::optional<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes,
                                     bool allow_pipes) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("open", path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat", path);
  if (allow_pipes && S_ISFIFO(st.st_mode)) {
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) {
      throw_errno("fcntl", path);
    }
  } else if (!S_ISREG(st.st_mode)) {
    throw std::system_error(EINVAL, std::generic_category(),
                            "not a regular file: " + path.string());
  }
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes) {
    throw std::system_error(
        EFBIG, std::generic_category(),
        "larger than " + std::to_string(max_bytes) + " bytes: " + path.string());
  }
  std::string content;
  content.reserve(static_cast<std::size_t>(st.st_size));
  char buffer[16384];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read", path);
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > max_bytes) {  // it grew while we read
      throw std::system_error(EFBIG, std::generic_category(), "file too large: " + path.string());
    }
  }
  return content;
}

void write_file_atomically(const std::filesystem::path& path, std::string_view content,
                           mode_t mode) {
  std::filesystem::path temporary = path;
  temporary += ".tmp";
  // A temporary left by a crash is stale: replace it. O_EXCL|O_NOFOLLOW then guarantee that
  // we write a file we created, never through a link someone put in its place.
  if (::unlink(temporary.c_str()) != 0 && errno != ENOENT) throw_errno("remove", temporary);
  unique_fd fd(
      ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (!fd) throw_errno("create", temporary);
  try {
    // O_CREAT's mode is filtered by the umask, and an older temporary may have another mode.
    if (::fchmod(fd.get(), mode) != 0) throw_errno("chmod", temporary);
    std::string_view rest = content;
    while (!rest.empty()) {
      const ssize_t n = ::write(fd.get(), rest.data(), rest.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("write", temporary);
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::fsync(fd.get()) != 0) throw_errno("fsync", temporary);
    if (::close(fd.release()) != 0) throw_errno("close", temporary);
    if (::rename(temporary.c_str(), path.c_str()) != 0) throw_errno("rename to", path);
  } catch (...) {
    ::unlink(temporary.c_str());
    throw;
  }
  fsync_directory_of(path);
}

std::filesystem::path with_suffix(const std::filesystem::path& path, std::string_view suffix) {
  std::filesystem::path out = path;
  out += std::string(suffix);
  return out;
}

std::filesystem::path set_file_aside(const std::filesystem::path& path, std::string_view suffix) {
  std::filesystem::path target = path;
  target += std::string(suffix);
  for (int n = 1; n < 10000; ++n) {
    // RENAME_NOREPLACE makes "is it free?" and "take it" one atomic step.
    if (::renameat2(AT_FDCWD, path.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) == 0) {
      fsync_directory_of(target);
      return target;
    }
    if (errno != EEXIST) throw_errno("rename aside", path);
    target = path;
    target += std::string(suffix) + "." + std::to_string(n);
  }
  throw std::system_error(EEXIST, std::generic_category(),
                          "no free name to set aside " + path.string());
}

void ensure_directory(const std::filesystem::path& dir, mode_t mode) {
  std::filesystem::path partial;
  for (const auto& part : dir) {
    partial /= part;
    if (::mkdir(partial.c_str(), mode) == 0 || errno == EEXIST) continue;
    throw_errno("create directory", partial);
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw_errno("stat", dir);
  if (!S_ISDIR(st.st_mode)) {
    throw std::system_error(ENOTDIR, std::generic_category(), "not a directory: " + dir.string());
  }
}

std::string read_token_file(const std::filesystem::path& file) {
  std::optional<std::string> text = read_file(file, 64 * 1024, /*allow_pipes=*/true);
  if (!text) throw std::runtime_error("token file " + file.string() + " does not exist");
  const auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!text->empty() && space(text->back())) text->pop_back();
  text->erase(text->begin(), std::find_if_not(text->begin(), text->end(), space));
  if (text->empty()) throw std::runtime_error("token file " + file.string() + " is empty");
  return *text;
}

}  // namespace sm
