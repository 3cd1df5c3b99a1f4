#include "db/backup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sqlite3.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "db/database.hpp"
#include "s3/sha256.hpp"

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

using connection = std::unique_ptr<sqlite3, int (*)(sqlite3*)>;

connection open_connection(const std::filesystem::path& file, int flags,
                           const std::filesystem::path& shown) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    const std::string why = db ? sqlite3_errmsg(db) : "cannot open";
    sqlite3_close(db);
    fail(shown, "opening " + file.string() + ": " + why);
  }
  return connection(db, sqlite3_close);
}

void exec(sqlite3* db, const char* sql, const std::filesystem::path& shown) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    fail(shown, std::string(sql) + ": " + sqlite3_errmsg(db));
  }
}

bool reflink_unsupported(int error) {
  return error == EOPNOTSUPP || error == ENOTTY || error == EXDEV || error == EINVAL ||
         error == ENOSYS;
}

// A descriptor this process already has open on `file` (SQLite's, for a database that a
// connection of ours has open), found by device and inode; -1 if none. It is used, never
// closed: closing any descriptor of the file would drop our POSIX locks on it.
int open_descriptor_of(const std::filesystem::path& file) {
  struct stat target {};
  if (::stat(file.c_str(), &target) != 0) return -1;
  DIR* fds = ::opendir("/proc/self/fd");
  if (fds == nullptr) return -1;
  int found = -1;
  while (const dirent* entry = ::readdir(fds)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == ::dirfd(fds)) continue;
    struct stat st {};
    if (::fstat(int(fd), &st) != 0 || st.st_dev != target.st_dev || st.st_ino != target.st_ino) {
      continue;
    }
    const int mode = ::fcntl(int(fd), F_GETFL);
    if (mode >= 0 && (mode & O_ACCMODE) != O_WRONLY) {
      found = int(fd);
      break;
    }
  }
  ::closedir(fds);
  return found;
}

// FICLONE of `source` (an open descriptor) into a new file `to`; false where unsupported.
bool reflink_into(int source, const std::filesystem::path& to) {
  const int target = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (target < 0) fail(to, std::string("create: ") + std::strerror(errno));
  const int rc = ::ioctl(target, FICLONE, source);
  const int saved = errno;
  ::close(target);
  if (rc == 0) return true;
  std::error_code ec;
  std::filesystem::remove(to, ec);
  if (reflink_unsupported(saved)) return false;
  fail(to, std::string("reflink: ") + std::strerror(saved));
}

}  // namespace

std::optional<backup_result> clone(const std::filesystem::path& db,
                                   const std::filesystem::path& to) {
  std::error_code ec;
  std::filesystem::path wal = db, to_wal = to, to_shm = to;
  wal += "-wal";
  to_wal += "-wal";
  to_shm += "-shm";
  for (const auto& stale : {to, to_wal, to_shm}) std::filesystem::remove(stale, ec);
  auto discard = [&] {
    for (const auto& made : {to, to_wal, to_shm}) std::filesystem::remove(made, ec);
  };
  {
    const connection source = open_connection(db, SQLITE_OPEN_READWRITE, to);
    sqlite3_db_config(source.get(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
    sqlite3_busy_timeout(source.get(), int(clone_lock_patience.count()));
    const int fd = open_descriptor_of(db);
    if (fd < 0) return std::nullopt;
    // Writers wait from here to the rollback. A checkpoint may still copy WAL frames into the
    // database file meanwhile, but only frames the cloned WAL holds too: the pair is
    // consistent whichever of those pages the cloned database file already has. A writer
    // that never lets go of the lock leaves the copy to the backup API, which needs none.
    const int begun = sqlite3_exec(source.get(), "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    if (begun == SQLITE_BUSY) return std::nullopt;
    if (begun != SQLITE_OK)
      fail(to, std::string("BEGIN IMMEDIATE: ") + sqlite3_errmsg(source.get()));
    try {
      if (!reflink_into(fd, to)) {
        sqlite3_exec(source.get(), "ROLLBACK", nullptr, nullptr, nullptr);
        return std::nullopt;
      }
      // The WAL is never locked with POSIX locks (its readers and writers coordinate through
      // the -shm), so a descriptor of our own is safe here.
      const int wal_fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
      if (wal_fd >= 0) {
        const bool cloned = reflink_into(wal_fd, to_wal);
        ::close(wal_fd);
        if (!cloned) {
          sqlite3_exec(source.get(), "ROLLBACK", nullptr, nullptr, nullptr);
          discard();
          return std::nullopt;
        }
      } else if (errno != ENOENT) {
        fail(wal, std::string("open: ") + std::strerror(errno));
      }
    } catch (...) {
      sqlite3_exec(source.get(), "ROLLBACK", nullptr, nullptr, nullptr);
      discard();
      throw;
    }
    exec(source.get(), "ROLLBACK", to);
  }
  backup_result result;
  try {
    // The clone's WAL (recovered from the file alone: no -shm was copied) goes into it.
    const connection copy = open_connection(to, SQLITE_OPEN_READWRITE, to);
    exec(copy.get(), "PRAGMA wal_checkpoint(TRUNCATE)", to);
    exec(copy.get(), "PRAGMA journal_mode=DELETE", to);
    sqlite3_stmt* count = nullptr;
    if (sqlite3_prepare_v2(copy.get(), "PRAGMA page_count", -1, &count, nullptr) == SQLITE_OK &&
        sqlite3_step(count) == SQLITE_ROW) {
      result.pages = std::uint32_t(sqlite3_column_int64(count, 0));
    }
    sqlite3_finalize(count);
  } catch (...) {
    discard();
    throw;
  }
  fsync_path(to);
  result.bytes = std::filesystem::file_size(to, ec);
  result.sha256 = sha256_file(to);
  return result;
}

std::string sha256_file(const std::filesystem::path& file) {
  try {
    return s3::sha256_of_file(file).first;
  } catch (const std::exception& e) {
    throw error("sha256 of " + file.string() + ": " + e.what());
  }
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
