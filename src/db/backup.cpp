#include "db/backup.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "db/database.hpp"
#include "s3/dynamic.hpp"

namespace sm::db {

namespace {

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& what) {
  throw error("backup to " + file.string() + ": " + what);
}

void fsync_path(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("open for fsync: ") + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) fail(path, std::string("fsync: ") + std::strerror(saved));
}

}  // namespace

std::string sha256_file(const std::filesystem::path& file) {
  const auto& crypto = s3::lib::crypto();
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(crypto.md_ctx_new(), crypto.md_ctx_free);
  if (!ctx || crypto.digest_init(ctx.get(), crypto.sha256(), nullptr) != 1) {
    throw error("sha256: cannot initialise the digest");
  }
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error("sha256 of " + file.string() + ": " + std::strerror(errno));
  std::vector<unsigned char> buffer(1 << 20);
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int saved = errno;
      ::close(fd);
      throw error("sha256 of " + file.string() + ": " + std::strerror(saved));
    }
    if (n == 0) break;
    crypto.digest_update(ctx.get(), buffer.data(), std::size_t(n));
  }
  ::close(fd);
  unsigned char digest[32];
  unsigned int size = 0;
  crypto.digest_final(ctx.get(), digest, &size);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < size; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

backup_result backup(const std::filesystem::path& db, const std::filesystem::path& to) {
  std::error_code ec;
  std::filesystem::remove(to, ec);
  sqlite3* source = nullptr;
  if (sqlite3_open_v2(db.c_str(), &source, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    const std::string why = source ? sqlite3_errmsg(source) : "cannot open";
    sqlite3_close(source);
    fail(to, "opening " + db.string() + ": " + why);
  }
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> source_guard(source, sqlite3_close);
  // Never checkpoint (and delete the WAL) on close, even as the last connection.
  sqlite3_db_config(source, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_busy_timeout(source, 5000);
  sqlite3* copy = nullptr;
  if (sqlite3_open_v2(to.c_str(), &copy, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    const std::string why = copy ? sqlite3_errmsg(copy) : "cannot create";
    sqlite3_close(copy);
    fail(to, why);
  }
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> copy_guard(copy, sqlite3_close);
  sqlite3_exec(copy, "PRAGMA journal_mode=OFF", nullptr, nullptr, nullptr);
  sqlite3_backup* b = sqlite3_backup_init(copy, "main", source, "main");
  if (!b) fail(to, sqlite3_errmsg(copy));
  // All pages in one step: one read transaction, one consistent moment.
  int rc = sqlite3_backup_step(b, -1);
  while (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
    sqlite3_sleep(10);
    rc = sqlite3_backup_step(b, -1);
  }
  backup_result result;
  result.pages = std::uint32_t(sqlite3_backup_pagecount(b));
  sqlite3_backup_finish(b);
  if (rc != SQLITE_DONE) {
    const std::string why = sqlite3_errmsg(copy);
    copy_guard.reset();
    std::filesystem::remove(to, ec);
    fail(to, why.empty() ? sqlite3_errstr(rc) : why);
  }
  // The pages carry the source's WAL flag: the copy is a file on its own, in rollback mode.
  if (sqlite3_exec(copy, "PRAGMA journal_mode=DELETE", nullptr, nullptr, nullptr) != SQLITE_OK) {
    fail(to, std::string("journal mode: ") + sqlite3_errmsg(copy));
  }
  copy_guard.reset();
  source_guard.reset();
  fsync_path(to);
  result.bytes = std::filesystem::file_size(to, ec);
  result.sha256 = sha256_file(to);
  return result;
}

}  // namespace sm::db
