#include "db/compress.hpp"

#include <fcntl.h>
#include <unistd.h>
#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "db/database.hpp"

namespace sm::db {

namespace {

// Level 1: replication is on the commit path's heels; the ratio difference to 3 is small for
// database pages, the speed difference is not.
constexpr int level = 1;

[[noreturn]] void fail(const std::string& what) {
  throw error("zstd: " + what);
}

struct fd_closer {
  int fd;
  ~fd_closer() {
    if (fd >= 0) ::close(fd);
  }
};

int open_or_fail(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (fd < 0) fail(path.string() + ": " + std::strerror(errno));
  return fd;
}

std::size_t read_some(int fd, char* into, std::size_t size, const std::filesystem::path& path) {
  for (;;) {
    const ssize_t n = ::read(fd, into, size);
    if (n >= 0) return std::size_t(n);
    if (errno != EINTR) fail(path.string() + ": " + std::strerror(errno));
  }
}

void write_all(int fd, const char* data, std::size_t size, const std::filesystem::path& path) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path.string() + ": " + std::strerror(errno));
    data += n;
    size -= std::size_t(n);
  }
}

// Streams `from` through `step` (compressing or decompressing) into `to`.
template <class Step>
void stream_file(const std::filesystem::path& from, const std::filesystem::path& to,
                 std::size_t in_size, std::size_t out_size, Step step) {
  fd_closer in{open_or_fail(from, O_RDONLY)};
  fd_closer out{open_or_fail(to, O_WRONLY | O_CREAT | O_TRUNC)};
  std::vector<char> input(in_size), output(out_size);
  bool last = false;
  while (!last) {
    const std::size_t got = read_some(in.fd, input.data(), input.size(), from);
    last = got == 0;
    ZSTD_inBuffer in_buffer{input.data(), got, 0};
    bool done = false;
    while (!done) {
      ZSTD_outBuffer out_buffer{output.data(), output.size(), 0};
      done = step(in_buffer, out_buffer, last);
      write_all(out.fd, output.data(), out_buffer.pos, to);
    }
  }
  if (::fsync(out.fd) != 0) fail(to.string() + ": " + std::strerror(errno));
}

}  // namespace

std::string compress(std::string_view data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const std::size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), level);
  if (ZSTD_isError(n)) fail(ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

std::string decompress(std::string_view data) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  std::vector<char> buffer(ZSTD_DStreamOutSize());
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  // 0 once a frame ended exactly where the input did; empty input is no frame at all.
  std::size_t left = 1;
  for (;;) {
    ZSTD_outBuffer o{buffer.data(), buffer.size(), 0};
    const std::size_t before = in.pos;
    const std::size_t hint = ZSTD_decompressStream(ctx.get(), &o, &in);
    if (ZSTD_isError(hint)) fail(std::string("corrupt data: ") + ZSTD_getErrorName(hint));
    out.append(buffer.data(), o.pos);
    // A call that neither read nor wrote only reports the next frame's header size.
    if (o.pos > 0 || in.pos > before) left = hint;
    if (in.pos == in.size && o.pos < o.size) break;
  }
  if (left != 0) fail("truncated data");
  return out;
}

void compress_file(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> ctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  ZSTD_CCtx_setParameter(ctx.get(), ZSTD_c_compressionLevel, level);
  stream_file(from, to, ZSTD_CStreamInSize(), ZSTD_CStreamOutSize(),
              [&](ZSTD_inBuffer& in, ZSTD_outBuffer& out, bool last) {
                const std::size_t left =
                    ZSTD_compressStream2(ctx.get(), &out, &in, last ? ZSTD_e_end : ZSTD_e_continue);
                if (ZSTD_isError(left)) fail(ZSTD_getErrorName(left));
                return last ? left == 0 : in.pos == in.size;
              });
}

void decompress_file(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::size_t pending = 1;  // as in decompress()
  stream_file(from, to, ZSTD_DStreamInSize(), ZSTD_DStreamOutSize(),
              [&](ZSTD_inBuffer& in, ZSTD_outBuffer& out, bool last) {
                if (last) return true;
                const std::size_t before = in.pos;
                const std::size_t hint = ZSTD_decompressStream(ctx.get(), &out, &in);
                if (ZSTD_isError(hint)) {
                  fail(from.string() + ": corrupt data: " + ZSTD_getErrorName(hint));
                }
                if (out.pos > 0 || in.pos > before) pending = hint;
                // Done with this input once it is consumed and the output was not filled.
                return in.pos == in.size && out.pos < out.size;
              });
  if (pending != 0) fail(from.string() + ": truncated data");
}

}  // namespace sm::db
