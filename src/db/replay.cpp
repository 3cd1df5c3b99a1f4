#include "db/replay.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "db/database.hpp"
#include "db/wal.hpp"

namespace sm::db {

namespace {

[[noreturn]] void fail(const std::filesystem::path& db, const std::string& what) {
  throw error("restoring " + db.string() + ": " + what);
}

struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0) ::close(fd);
  }
};

// The page size in a database file's header (bytes 16-17, big-endian; 1 means 65536); 0 for
// an empty file.
std::uint32_t database_page_size(int fd, const std::filesystem::path& db) {
  unsigned char header[18];
  const ssize_t n = ::pread(fd, header, sizeof header, 0);
  if (n == 0) return 0;
  if (n != sizeof header) fail(db, "not a database (short header)");
  if (std::memcmp(header, "SQLite format 3", 16) != 0) fail(db, "not a database");
  const std::uint32_t raw = (std::uint32_t(header[16]) << 8) | header[17];
  return raw == 1 ? 65536 : raw;
}

}  // namespace

replay_result apply_wal(const std::filesystem::path& db, std::span<const std::byte> wal) {
  std::string why;
  const auto h = wal::parse_header(wal, &why);
  if (!h) fail(db, "WAL " + why);
  const wal::scan_result scanned =
      wal::scan(wal.subspan(wal::header_size), *h, wal::header_size, h->sum);
  replay_result result;
  result.commits = scanned.commits;
  result.db_pages = scanned.db_pages;
  result.wal_end = scanned.commit_end;
  result.stopped = scanned.stopped;
  if (scanned.commits == 0) return result;

  fd_guard file{::open(db.c_str(), O_RDWR | O_CLOEXEC)};
  if (file.fd < 0) fail(db, std::strerror(errno));
  const std::uint32_t db_page_size = database_page_size(file.fd, db);
  if (db_page_size != 0 && db_page_size != h->page_size) {
    fail(db, "page size " + std::to_string(db_page_size) + " but the WAL's is " +
                 std::to_string(h->page_size));
  }
  // The last committed version of each page: later frames replace earlier ones.
  std::map<std::uint32_t, std::uint64_t> latest;  // page number -> frame offset
  for (std::uint64_t at = wal::header_size; at < scanned.commit_end; at += h->frame_size()) {
    const wal::frame_header f = wal::parse_frame_header(wal.subspan(at, wal::frame_header_size));
    latest[f.page] = at;
  }
  for (const auto& [page, at] : latest) {
    if (page == 0 || page > scanned.db_pages) continue;  // beyond the final size: cut below
    const std::byte* data = wal.data() + at + wal::frame_header_size;
    const off_t offset = off_t(page - 1) * off_t(h->page_size);
    std::size_t done = 0;
    while (done < h->page_size) {
      const ssize_t n = ::pwrite(file.fd, data + done, h->page_size - done, offset + off_t(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(db, std::string("write: ") + std::strerror(errno));
      done += std::size_t(n);
    }
    ++result.pages_written;
  }
  if (::ftruncate(file.fd, off_t(scanned.db_pages) * off_t(h->page_size)) != 0) {
    fail(db, std::string("truncate: ") + std::strerror(errno));
  }
  if (::fsync(file.fd) != 0) fail(db, std::string("fsync: ") + std::strerror(errno));
  return result;
}

}  // namespace sm::db
