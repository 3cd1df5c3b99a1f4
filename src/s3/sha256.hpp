// SHA-256 of bytes and of files, by libcrypto (loaded on first use, as for the S3 signatures):
// the checksums of database copies and of checkpoint objects. Blocking: files are hashed on a
// worker thread, never on the executor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

namespace sm::s3 {

class sha256_digest {
 public:
  sha256_digest();
  ~sha256_digest();
  sha256_digest(const sha256_digest&) = delete;
  sha256_digest& operator=(const sha256_digest&) = delete;

  void update(const void* data, std::size_t size);
  // Lower-case hex; the digest is finished.
  std::string hex_digest();

 private:
  struct context;
  std::unique_ptr<context> ctx_;
};

// Lower-case hex.
std::string sha256_hex(std::string_view bytes);
// The content's SHA-256 (lower-case hex) and size of the file at `path`, read through
// (`follow_symlinks` false: a symlink is refused). Throws std::system_error.
std::pair<std::string, std::uint64_t> sha256_of_file(const std::filesystem::path& path,
                                                     bool follow_symlinks = true);

}  // namespace sm::s3
