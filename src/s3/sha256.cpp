#include "s3/sha256.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "base/hex.hpp"
#include "s3/dynamic.hpp"

namespace sm::s3 {

struct sha256_digest::context {
  EVP_MD_CTX* ctx = nullptr;
  ~context() {
    if (ctx) lib::crypto().md_ctx_free(ctx);
  }
};

sha256_digest::sha256_digest() : ctx_(std::make_unique<context>()) {
  const auto& crypto = lib::crypto();
  ctx_->ctx = crypto.md_ctx_new();
  if (!ctx_->ctx || crypto.digest_init(ctx_->ctx, crypto.sha256(), nullptr) != 1) {
    throw std::runtime_error("sha256: cannot initialise the digest");
  }
}

sha256_digest::~sha256_digest() = default;

void sha256_digest::update(const void* data, std::size_t size) {
  if (lib::crypto().digest_update(ctx_->ctx, data, size) != 1) {
    throw std::runtime_error("sha256: digest update failed");
  }
}

std::string sha256_digest::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (lib::crypto().digest_final(ctx_->ctx, digest, &size) != 1) {
    throw std::runtime_error("sha256: digest final failed");
  }
  return hex(std::string_view(reinterpret_cast<const char*>(digest), size));
}

std::string sha256_hex(std::string_view bytes) {
  sha256_digest d;
  d.update(bytes.data(), bytes.size());
  return d.hex_digest();
}

std::pair<std::string, std::uint64_t> sha256_of_file(const std::filesystem::path& path,
                                                     bool follow_symlinks) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (follow_symlinks ? 0 : O_NOFOLLOW));
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path.string());
  sha256_digest d;
  std::vector<char> buffer(1 << 20);
  std::uint64_t size = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      throw std::system_error(saved, std::generic_category(), "read " + path.string());
    }
    if (n == 0) break;
    d.update(buffer.data(), std::size_t(n));
    size += std::uint64_t(n);
  }
  ::close(fd);
  return {d.hex_digest(), size};
}

}  // namespace sm::s3
